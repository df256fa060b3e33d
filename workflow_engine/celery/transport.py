"""``CeleryJobTransport``: job rows in the database, a Celery message per job after commit."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.engine import Engine

from workflow_engine.celery.publisher import DEFAULT_QUEUE, Publisher
from workflow_engine.clock import Clock
from workflow_engine.persistence.sql import SqlJobQueue
from workflow_engine.persistence.sql.tables import job_queue
from workflow_engine.ports import Persistence, StaleJobs
from workflow_engine.records import JobRecord, NewJob
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
        self._local = threading.local()

    @contextmanager
    def keeping_one(self, queue: str | None, worker_id: str) -> Iterator[list[JobRecord]]:
        """Lease to ``worker_id``, instead of publishing, the first due job on ``queue``
        (``None``: the default) that this thread's transactions enqueue within the block; once
        its transaction commits, the leased job lands in the yielded list.

        A worker that finished a stage runs the kept job, the run's next stage, at once: no
        broker round trip and no lease round trip per stage. Should it die first, the lease
        expires and the reaper re-queues the job, as for a worker lost mid-stage.
        """
        keeper = self._local.keeper = _Keeper(queue, worker_id)
        try:
            yield keeper.kept
        finally:
            self._local.keeper = None

    def enqueue_parallel(
        self, jobs: Sequence[NewJob], *, tx: Persistence | None = None
    ) -> list[str]:
        """Write the job rows (in ``tx`` when given), then publish one wake-up per job, but
        for the one a :meth:`keeping_one` block leases."""
        keeper: _Keeper | None = getattr(self._local, "keeper", None)
        joined = keeper is not None and self._joinable(tx) is not None
        index = keeper.pick(jobs) if keeper is not None and joined else None
        if keeper is None or index is None or tx is None:
            ids = super().enqueue_parallel(jobs, tx=tx)
        else:
            ids, leased = self.enqueue_leased(jobs, index, keeper.worker_id, tx=tx)
            tx.after_commit(partial(keeper.kept.append, leased))
        wakeups = [
            (job_id, job)
            for position, (job_id, job) in enumerate(zip(ids, jobs, strict=True))
            if position != index
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


class _Keeper:
    """The job :meth:`CeleryJobTransport.keeping_one` keeps (at most one per block)."""

    def __init__(self, queue: str | None, worker_id: str) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.kept: list[JobRecord] = []
        self._picked = False

    def pick(self, jobs: Sequence[NewJob]) -> int | None:
        """The index of the job to lease, if this block has not picked one yet."""
        if self._picked:
            return None
        for index, job in enumerate(jobs):
            if job.queue == self.queue and job.scheduled_for is None:
                self._picked = True
                return index
        return None
