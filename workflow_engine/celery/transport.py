"""``CeleryJobTransport``: job rows in the database, a Celery message per job after commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.engine import Engine

from workflow_engine.celery.publisher import DEFAULT_QUEUE, Publisher
from workflow_engine.clock import Clock
from workflow_engine.persistence.sql import SqlJobQueue
from workflow_engine.persistence.sql.tables import job_queue
from workflow_engine.ports import Persistence, StaleJobs
from workflow_engine.records import NewJob
from workflow_engine.status import Status


class CeleryJobTransport(SqlJobQueue):
    """A SQL job queue that wakes Celery workers.

    Enqueued rows are written in the caller's transaction; the ``execute_job`` message is sent
    only once it commits. A message is a wake-up, nothing more: the task leases the row, and a
    duplicate or stale message finds nothing to lease. Retries get an ETA message when their
    back-off is short (``eta_max_delay``); longer waits, and messages the broker lost, are
    re-sent by :meth:`republish_lost_jobs` from the maintenance tick.
    """

    def __init__(
        self,
        engine: Engine,
        app: Celery,
        *,
        queue: str = DEFAULT_QUEUE,
        clock: Clock | None = None,
        worker_id: str | None = None,
        default_max_attempts: int = 3,
        eta_max_delay: timedelta = timedelta(minutes=10),
    ) -> None:
        super().__init__(
            engine, clock=clock, worker_id=worker_id, default_max_attempts=default_max_attempts
        )
        self.publisher = Publisher(app, queue)
        self.eta_max_delay = eta_max_delay

    def enqueue_parallel(
        self, jobs: Sequence[NewJob], *, tx: Persistence | None = None
    ) -> list[str]:
        """Write the job rows (in ``tx`` when given), then publish one wake-up per job that
        is not enqueued already leased (its worker runs it without one)."""
        ids = super().enqueue_parallel(jobs, tx=tx)
        wakeups = [
            (job_id, job) for job_id, job in zip(ids, jobs, strict=True) if job.lease_token is None
        ]

        def publish() -> None:
            for job_id, job in wakeups:
                self._wake(job_id, job.queue, job.priority, job.scheduled_for)

        if tx is None:
            publish()
        else:
            tx.after_commit(publish)
        return ids

    def fail(
        self,
        job_id: str,
        error: str,
        should_retry: bool = False,
        *,
        lease_token: str | None = None,
    ) -> bool:
        """Fail the lease; a retry is woken at the end of its back-off."""
        failed = super().fail(job_id, error, should_retry, lease_token=lease_token)
        if failed and should_retry:
            job = self.get_job(job_id)
            if job is not None and job.status == Status.PENDING:
                self._wake(job.id, job.queue, job.priority, job.next_poll_at)
        return failed

    def reap_stale_jobs(self, threshold_ms: int = 300_000) -> StaleJobs:
        """Release expired leases and wake a worker for each released job at once."""
        stale = super().reap_stale_jobs(threshold_ms)
        for job in stale.released:
            self._wake(job.id, job.queue, job.priority, None)
        return stale

    def republish_lost_jobs(self, older_than: timedelta, limit: int) -> int:
        """Re-send wake-ups for due PENDING jobs untouched for ``older_than``; return how many.

        Their message was lost (a broker restart, an eviction) or is stuck behind a backlog;
        either way a duplicate is harmless. Touching ``updated_at`` spaces the re-sends out.
        """
        cutoff = self.clock.now() - older_than
        lost = [job for job in self.get_due_pending_jobs(limit) if job.updated_at <= cutoff]
        if not lost:
            return 0
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(job_queue)
                .where(job_queue.c.id.in_([job.id for job in lost]))
                .where(job_queue.c.status == Status.PENDING.value)
                .values(updated_at=self.clock.now())
            )
        for job in lost:
            self.publisher.execute_job(job.id, queue=job.queue, priority=job.priority)
        return len(lost)

    def _wake(self, job_id: str, queue: str | None, priority: int, due: datetime | None) -> None:
        eta = None
        if due is not None:
            delay = due - self.clock.now()
            if delay > self.eta_max_delay:
                return  # a long wait lives in the database; the tick wakes it when due
            eta = due if delay > timedelta(0) else None
        self.publisher.execute_job(job_id, queue=queue, priority=priority, eta=eta)
