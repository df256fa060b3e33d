"""An in-memory :class:`~workflow_engine.ports.JobTransport` with leases and retry back-off."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from workflow_engine.clock import Clock, SystemClock
from workflow_engine.errors import RecordNotFoundError
from workflow_engine.ports import Persistence, StaleJobs
from workflow_engine.records import JobRecord, NewJob, leased_job_fields
from workflow_engine.status import Status
from workflow_engine.testing._json import store_json
from workflow_engine.testing._records import build_record, copy_record, new_id, replace_fields

_LEASE_CLEARED: dict[str, Any] = {"worker_id": None, "locked_at": None, "lease_token": None}


_new_id = new_id


def _holds_lease(job: JobRecord, lease_token: str | None) -> bool:
    """A RUNNING job whose lease is ``lease_token`` (any lease when it is ``None``)."""
    return job.status == Status.RUNNING and (lease_token is None or lease_token == job.lease_token)


def _can_complete(job: JobRecord, lease_token: str | None) -> bool:
    """Its lease holds, or it is a SUSPENDED job (a resumed stage) and no token was given."""
    resumed = lease_token is None and job.status == Status.SUSPENDED
    return resumed or _holds_lease(job, lease_token)


class InMemoryJobQueue:
    """Job rows in a dict, leased to one worker at a time. Thread-safe.

    Same semantics as the SQL queue: a dequeue or claim leases the job with a fresh
    ``lease_token``; ``complete``/``suspend``/``fail``/``touch_job`` given a token act only while
    that lease is current; a retried failure waits ``2**attempt`` seconds; jobs enqueued with
    ``tx=`` appear only when that transaction commits.

    Jobs are indexed by run and by status (kept current by ``_store``), so a dequeue looks only
    at PENDING jobs; records handed out share all but their ``payload`` with the stored row.
    """

    def __init__(
        self,
        worker_id: str | None = None,
        *,
        clock: Clock | None = None,
        default_max_attempts: int = 3,
    ) -> None:
        self.worker_id = worker_id or f"worker-{os.getpid()}-{_new_id()[:8]}"
        self.clock: Clock = clock or SystemClock()
        self.default_max_attempts = default_max_attempts
        self._jobs: dict[str, JobRecord] = {}
        self._seq: dict[str, int] = {}  # insertion number of each job
        self._by_run: dict[str, list[str]] = {}
        self._by_status: dict[Status, dict[str, None]] = {}
        # PENDING jobs -> (their dequeue order, when they are due)
        self._pending: dict[str, tuple[tuple[int, datetime, int], datetime | None]] = {}
        self._lock = threading.RLock()

    def _store(self, job: JobRecord) -> None:
        """Insert or replace a row, keeping the indexes current."""
        old = self._jobs.get(job.id)
        if old is None:
            self._seq[job.id] = len(self._seq)
            self._by_run.setdefault(job.workflow_run_id, []).append(job.id)
        elif old.status != job.status:
            del self._by_status[old.status][job.id]
        if old is None or old.status != job.status:
            self._by_status.setdefault(job.status, {})[job.id] = None
        if job.status == Status.PENDING:
            order = (-job.priority, job.created_at, self._seq[job.id])
            self._pending[job.id] = (order, job.next_poll_at)
        elif old is not None and old.status == Status.PENDING:
            del self._pending[job.id]
        self._jobs[job.id] = job

    def _with_status(self, status: Status) -> list[JobRecord]:
        """Jobs with this status, in insertion order."""
        ids = sorted(self._by_status.get(status, ()), key=self._seq.__getitem__)
        return [self._jobs[job_id] for job_id in ids]

    def _of_run(self, workflow_run_id: str) -> list[JobRecord]:
        """The run's jobs, in insertion order."""
        return [self._jobs[job_id] for job_id in self._by_run.get(workflow_run_id, ())]

    # -- enqueue ------------------------------------------------------------------------------
    def enqueue(self, job: NewJob, *, tx: Persistence | None = None) -> str:
        """Enqueue one job; return its id."""
        return self.enqueue_parallel([job], tx=tx)[0]

    def enqueue_parallel(
        self, jobs: Sequence[NewJob], *, tx: Persistence | None = None
    ) -> list[str]:
        """Enqueue jobs; with ``tx``, they exist if and only if that transaction commits."""
        pairs = [(job.id or _new_id(), job) for job in jobs]
        if tx is None:
            self._insert(pairs)
        else:
            tx.after_commit(lambda: self._insert(pairs))
        return [job_id for job_id, _ in pairs]

    def _insert(self, pairs: Sequence[tuple[str, NewJob]]) -> None:
        with self._lock:
            duplicates = [job_id for job_id, _ in pairs if job_id in self._jobs]
            if duplicates:
                raise ValueError(f"Job id(s) already enqueued: {', '.join(duplicates)}")
            for job_id, job in pairs:
                self._store(self._new_record(job_id, job))

    def _new_record(self, job_id: str, job: NewJob) -> JobRecord:
        now = self.clock.now()
        values = {
            "id": job_id,
            "created_at": now,
            "updated_at": now,
            "workflow_run_id": job.workflow_run_id,
            "workflow_id": job.workflow_id,
            "stage_id": job.stage_id,
            "priority": job.priority,
            "max_attempts": job.max_attempts or self.default_max_attempts,
            "next_poll_at": job.scheduled_for,
            "payload": store_json(job.payload),
            "queue": job.queue,
            **leased_job_fields(job, now),
        }
        if type(job_id) is str and type(values["max_attempts"]) is int:
            return build_record(JobRecord, values)  # the rest comes from a validated NewJob
        return JobRecord(**values)

    # -- leasing ------------------------------------------------------------------------------
    def _is_due(self, job: JobRecord, now: datetime) -> bool:
        due = job.next_poll_at is None or job.next_poll_at <= now
        return job.status == Status.PENDING and due

    def _due_ids(self, now: datetime) -> list[tuple[tuple[int, datetime, int], str]]:
        """``(dequeue order, id)`` of the due PENDING jobs, unsorted."""
        return [
            (order, job_id)
            for job_id, (order, due_at) in self._pending.items()
            if due_at is None or due_at <= now
        ]

    def _due(self, now: datetime) -> list[JobRecord]:
        """Due PENDING jobs by priority (highest first), then age, then insertion."""
        return [self._jobs[job_id] for _, job_id in sorted(self._due_ids(now))]

    def _set(self, job: JobRecord, **changes: Any) -> JobRecord:
        updated = replace_fields(job, {**changes, "updated_at": self.clock.now()})
        self._store(updated)
        return updated

    def _lease(self, job: JobRecord, worker_id: str | None) -> JobRecord:
        now = self.clock.now()
        return self._set(
            job,
            status=Status.RUNNING,
            attempt=job.attempt + 1,
            worker_id=worker_id or self.worker_id,
            locked_at=now,
            started_at=job.started_at or now,
            lease_token=_new_id(),
        )

    def dequeue(self, worker_id: str | None = None) -> JobRecord | None:
        """Lease the highest-priority, oldest due PENDING job (attempt + 1, new lease token)."""
        with self._lock:
            due = self._due_ids(self.clock.now())
            if not due:
                return None
            return copy_record(self._lease(self._jobs[min(due)[1]], worker_id))

    def claim(self, job_id: str, worker_id: str | None = None) -> JobRecord | None:
        """Lease this job if it is PENDING and due; ``None`` otherwise."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not self._is_due(job, self.clock.now()):
                return None
            return copy_record(self._lease(job, worker_id))

    def _require(self, job_id: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None:
            raise RecordNotFoundError(f"Job {job_id} not found")
        return job

    # -- ending a lease -----------------------------------------------------------------------
    def complete(
        self, job_id: str, *, lease_token: str | None = None, tx: Persistence | None = None
    ) -> bool:
        """Mark the job COMPLETED (a SUSPENDED one too when no ``lease_token`` is given).

        With ``tx``, the lease is checked now and the job completed when ``tx`` commits.
        """
        if tx is not None:
            with self._lock:
                holds = _can_complete(self._require(job_id), lease_token)
            if holds:
                tx.after_commit(lambda: self.complete(job_id, lease_token=lease_token))
            return holds
        with self._lock:
            job = self._require(job_id)
            if not _can_complete(job, lease_token):
                return False
            self._set(
                job,
                status=Status.COMPLETED,
                completed_at=self.clock.now(),
                locked_at=None,
                lease_token=None,
            )
            return True

    def suspend(
        self, job_id: str, next_poll_at: datetime, *, lease_token: str | None = None
    ) -> bool:
        """Park a RUNNING job as SUSPENDED until ``next_poll_at``; release its lease."""
        with self._lock:
            job = self._require(job_id)
            if not _holds_lease(job, lease_token):
                return False
            self._set(job, status=Status.SUSPENDED, next_poll_at=next_poll_at, **_LEASE_CLEARED)
            return True

    def fail(
        self,
        job_id: str,
        error: str,
        should_retry: bool = False,
        *,
        lease_token: str | None = None,
    ) -> bool:
        """Retry (PENDING after a 2**attempt s back-off) while attempts remain, else FAILED."""
        with self._lock:
            job = self._require(job_id)
            if not _holds_lease(job, lease_token):
                return False
            now = self.clock.now()
            if should_retry and job.attempt < job.max_attempts:
                backoff = timedelta(seconds=2**job.attempt)
                self._set(
                    job,
                    status=Status.PENDING,
                    next_poll_at=now + backoff,
                    last_error=error,
                    **_LEASE_CLEARED,
                )
            else:
                self._set(
                    job,
                    status=Status.FAILED,
                    completed_at=now,
                    last_error=error,
                    locked_at=None,
                    lease_token=None,
                )
            return True

    def touch_job(self, job_id: str, *, lease_token: str | None = None) -> bool:
        """Heartbeat: renew the lease of a RUNNING job."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not _holds_lease(job, lease_token):
                return False
            self._set(job, locked_at=self.clock.now())
            return True

    # -- maintenance --------------------------------------------------------------------------
    def release_stale_jobs(self, threshold_ms: int = 300_000) -> int:
        """Handle RUNNING jobs whose lease is older than the threshold; return how many."""
        stale = self.reap_stale_jobs(threshold_ms)
        return len(stale.released) + len(stale.exhausted)

    def reap_stale_jobs(self, threshold_ms: int = 300_000) -> StaleJobs:
        """Put expired leases back to PENDING, or FAILED once their attempts are used up."""
        released: list[JobRecord] = []
        exhausted: list[JobRecord] = []
        with self._lock:
            now = self.clock.now()
            cutoff = now - timedelta(milliseconds=threshold_ms)
            for job in self._with_status(Status.RUNNING):
                if job.locked_at is None or job.locked_at >= cutoff:
                    continue
                if job.attempt >= job.max_attempts:
                    exhausted.append(self._exhaust(job, now))
                else:
                    released.append(self._set(job, status=Status.PENDING, **_LEASE_CLEARED))
        return StaleJobs(
            released=[copy_record(job) for job in released],
            exhausted=[copy_record(job) for job in exhausted],
        )

    def _exhaust(self, job: JobRecord, now: datetime) -> JobRecord:
        message = f"Lease expired after {job.attempt} attempts: the worker was lost"
        return self._set(
            job,
            status=Status.FAILED,
            completed_at=now,
            last_error=message,
            locked_at=None,
            lease_token=None,
        )

    def cancel_by_run(self, workflow_run_id: str) -> int:
        """Cancel the run's PENDING and SUSPENDED jobs; return how many."""
        open_statuses = (Status.PENDING, Status.SUSPENDED)
        with self._lock:
            jobs = [job for job in self._of_run(workflow_run_id) if job.status in open_statuses]
            for job in jobs:
                self._set(job, status=Status.CANCELLED, completed_at=self.clock.now())
            return len(jobs)

    def close_suspended(self, workflow_run_id: str, stage_id: str, status: Status) -> int:
        """End the SUSPENDED job rows of one stage with ``status``; return how many."""
        with self._lock:
            jobs = [
                job
                for job in self._of_run(workflow_run_id)
                if job.stage_id == stage_id and job.status == Status.SUSPENDED
            ]
            for job in jobs:
                self._set(job, status=status, completed_at=self.clock.now())
            return len(jobs)

    # -- queries ------------------------------------------------------------------------------
    def get_due_pending_jobs(self, limit: int = 100) -> list[JobRecord]:
        """PENDING jobs that are due, by priority (highest first) then age."""
        with self._lock:
            return [copy_record(job) for job in self._due(self.clock.now())[:limit]]

    def get_jobs_by_workflow_run(self, workflow_run_id: str) -> list[JobRecord]:
        """Every job of the run, any status, oldest first."""
        with self._lock:
            return [copy_record(job) for job in self._of_run(workflow_run_id)]

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job, or ``None``."""
        with self._lock:
            job = self._jobs.get(job_id)
            return copy_record(job) if job is not None else None

    # -- test helpers -------------------------------------------------------------------------
    def clear(self) -> None:
        """Delete every job."""
        with self._lock:
            self._jobs.clear()
            self._seq.clear()
            self._by_run.clear()
            self._by_status.clear()
            self._pending.clear()

    def get_all_jobs(self) -> list[JobRecord]:
        """Every job, in insertion order."""
        with self._lock:
            return [copy_record(job) for job in self._jobs.values()]

    def get_jobs_by_status(self, status: Status) -> list[JobRecord]:
        """Every job with this status, in insertion order."""
        with self._lock:
            jobs = self._with_status(status)
        return [copy_record(job) for job in jobs]

    def set_job_locked_at(self, job_id: str, locked_at: datetime | None) -> None:
        """Backdate (or clear) a job's lease time, e.g. to simulate a lost worker."""
        with self._lock:
            self._set(self._require(job_id), locked_at=locked_at)

    def set_job_next_poll_at(self, job_id: str, next_poll_at: datetime | None) -> None:
        """Change when a job becomes due."""
        with self._lock:
            self._set(self._require(job_id), next_poll_at=next_poll_at)
