"""The :class:`~workflow_engine.ports.JobTransport` port as a table: ``job_queue``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from workflow_engine.clock import Clock, SystemClock
from workflow_engine.errors import RecordNotFoundError
from workflow_engine.persistence.sql.dialect import ConnectionSource, same_database
from workflow_engine.persistence.sql.persistence import SqlPersistence
from workflow_engine.persistence.sql.queries import is_status, param, params
from workflow_engine.persistence.sql.tables import job_queue
from workflow_engine.persistence.sql.types import AnyRow, UtcDateTime, new_id
from workflow_engine.persistence.sql.values import DEFAULT_MAX_JSON_BYTES, json_value
from workflow_engine.ports import Persistence, StaleJobs
from workflow_engine.records import JobRecord, NewJob, enqueued_job
from workflow_engine.status import Status

__all__ = ["SqlJobQueue"]

jq = job_queue

_LEASE_CLEARED: dict[str, Any] = {"worker_id": None, "locked_at": None, "lease_token": None}

# The statements, built once (see ``queries``); ``p_now`` is always the clock's time.
_DUE = sa.and_(
    is_status(jq.c.status, Status.PENDING),
    sa.or_(jq.c.next_poll_at.is_(None), jq.c.next_poll_at <= param("now", UtcDateTime())),
)
_BEST_DUE_JOB = (
    sa.select(jq.c.id)
    .where(_DUE)
    .order_by(jq.c.priority.desc(), jq.c.created_at)
    .limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)


def _lease(where: sa.ColumnElement[bool]) -> sa.Update:
    """Lease the job ``where`` picks: attempt + 1, new ``p_lease_token``, ``p_worker_id``."""
    return (
        sa.update(jq)
        .where(where)
        .values(
            status=Status.RUNNING,
            attempt=jq.c.attempt + 1,
            worker_id=param("worker_id"),
            locked_at=param("now"),
            started_at=sa.func.coalesce(jq.c.started_at, param("now", UtcDateTime())),
            lease_token=param("lease_token"),
            updated_at=param("now"),
        )
        .returning(*jq.c)
    )


#: One statement: ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)``.
#: The subquery alone decides (see ``queries.CLAIM_PENDING_RUN`` for why nothing is repeated).
_DEQUEUE = _lease(jq.c.id == _BEST_DUE_JOB)
_CLAIM = _lease(sa.and_(jq.c.id == param("id"), _DUE))
_INSERT = sa.insert(jq)
_JOB = sa.select(jq).where(jq.c.id == param("id"))
_JOB_EXISTS = sa.select(jq.c.id).where(jq.c.id == param("id"))
_JOBS_OF_RUN = (
    sa.select(jq).where(jq.c.workflow_run_id == param("run_id")).order_by(jq.c.created_at, jq.c.id)
)
_DUE_JOBS = (
    sa.select(jq).where(_DUE).order_by(jq.c.priority.desc(), jq.c.created_at).limit(param("limit"))
)

_END_LEASE_VALUES: dict[str, dict[str, Any]] = {
    "complete": {
        "status": Status.COMPLETED,
        "completed_at": param("now"),
        "locked_at": None,
        "lease_token": None,
    },
    "suspend": {
        "status": Status.SUSPENDED,
        "next_poll_at": param("next_poll_at"),
        **_LEASE_CLEARED,
    },
    "touch": {"locked_at": param("now")},
}


def _holds_lease(with_token: bool) -> sa.ColumnElement[bool]:
    """A RUNNING job whose lease is ``p_lease_token`` (any lease without a token)."""
    running = is_status(jq.c.status, Status.RUNNING)
    return sa.and_(running, jq.c.lease_token == param("lease_token")) if with_token else running


@cache
def _end_lease(action: str, with_token: bool) -> sa.Update:
    """Complete, suspend or touch job ``p_id`` while its lease holds.

    Without a token, ``complete`` also accepts a SUSPENDED job (a resumed stage finishing).
    """
    where = _holds_lease(with_token)
    if action == "complete" and not with_token:
        where = sa.or_(where, is_status(jq.c.status, Status.SUSPENDED))
    return (
        sa.update(jq)
        .where(jq.c.id == param("id"), where)
        .values(updated_at=param("now"), **_END_LEASE_VALUES[action])
    )


def _job(row: AnyRow) -> JobRecord:
    return JobRecord.model_validate(dict(row._mapping))


class SqlJobQueue:
    """Jobs as rows, leased with ``FOR UPDATE SKIP LOCKED`` (Postgres) or under SQLite's
    write lock. The row is the source of truth; a broker message is only a wake-up.

    A lease sets a fresh ``lease_token`` (the fencing token): ``complete``, ``suspend``,
    ``fail`` and ``touch_job`` given a token act only while that lease is current. A retried
    failure waits ``2**attempt`` seconds (``next_poll_at``); a stale lease goes back to PENDING
    until the job's attempts are used up, then FAILED. Times come from ``clock``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        worker_id: str | None = None,
        default_max_attempts: int = 3,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.worker_id = worker_id or f"worker-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.default_max_attempts = default_max_attempts
        self.max_json_bytes = max_json_bytes
        self._db = ConnectionSource(engine)

    @property
    def engine(self) -> Engine:
        """The engine the queue writes through."""
        return self._db.engine

    # -- enqueue ------------------------------------------------------------------------------
    def enqueue(self, job: NewJob, *, tx: Persistence | None = None) -> str:
        """Enqueue one job; return its id."""
        return self.enqueue_parallel([job], tx=tx)[0]

    def enqueue_parallel(
        self, jobs: Sequence[NewJob], *, tx: Persistence | None = None
    ) -> list[str]:
        """Enqueue jobs (one multi-row insert); with ``tx``, they exist iff it commits.

        A ``tx`` that is a :class:`SqlPersistence` bound to a transaction on this queue's
        database gets the rows in that very transaction; any other ``tx`` inserts them from
        an ``after_commit`` callback.
        """
        rows = [self._new_record(job).model_dump() for job in jobs]
        if not rows:
            return []
        if self._joinable(tx) is not None:
            with self._db.write() as conn:  # (joins that transaction)
                self._insert(conn, rows)
        elif tx is not None:
            tx.after_commit(lambda: self._insert_now(rows))
        else:
            self._insert_now(rows)
        return [row["id"] for row in rows]

    def _joinable(self, tx: Persistence | None) -> Connection | None:
        if not isinstance(tx, SqlPersistence) or tx.connection is None:
            return None
        return tx.connection if same_database(tx.engine, self._db.engine) else None

    def _new_record(self, job: NewJob) -> JobRecord:
        payload = json_value("job_queue.payload", job.payload, self.max_json_bytes)
        return enqueued_job(
            job, job.id or new_id(), self.clock.now(), self.default_max_attempts, payload
        )

    def _insert_now(self, rows: list[dict[str, Any]]) -> None:
        with self._db.statement() as conn:
            self._insert(conn, rows)

    @staticmethod
    def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
        try:
            # (one row as a mapping: a statement with one parameter set takes the fast path)
            conn.execute(_INSERT, rows[0] if len(rows) == 1 else rows)
        except sa.exc.IntegrityError as error:
            ids = ", ".join(row["id"] for row in rows)
            raise ValueError(f"Job id(s) already enqueued (one of {ids})") from error

    # -- leasing ------------------------------------------------------------------------------
    def dequeue(self, worker_id: str | None = None) -> JobRecord | None:
        """Lease the highest-priority, oldest due PENDING job (attempt + 1, new lease token).

        One statement; on Postgres ``SKIP LOCKED`` lets concurrent workers take different
        jobs, on SQLite the write lock serialises them.
        """
        return self._lease_one(_DEQUEUE, None, worker_id)

    def claim(self, job_id: str, worker_id: str | None = None) -> JobRecord | None:
        """Lease this job if it is PENDING and due; ``None`` otherwise."""
        return self._lease_one(_CLAIM, job_id, worker_id)

    def _lease_one(
        self, stmt: sa.Update, job_id: str | None, worker_id: str | None
    ) -> JobRecord | None:
        bound = params(
            id=job_id,
            now=self.clock.now(),
            worker_id=worker_id or self.worker_id,
            lease_token=uuid.uuid4().hex,
        )
        with self._db.statement() as conn:
            row = conn.execute(stmt, bound).first()
        return _job(row) if row is not None else None

    # -- ending a lease -----------------------------------------------------------------------
    def _end_lease(self, action: str, job_id: str, lease_token: str | None, **values: Any) -> bool:
        """Run ``action``; ``False`` if the lease does not hold; raise if the job is unknown."""
        stmt = _end_lease(action, lease_token is not None)
        bound = params(id=job_id, now=self.clock.now(), lease_token=lease_token, **values)
        with self._db.statement() as conn:
            if conn.execute(stmt, bound).rowcount == 1:
                return True
            if conn.scalar(_JOB_EXISTS, params(id=job_id)) is None:
                raise RecordNotFoundError(f"Job {job_id} not found")
        return False

    def complete(
        self, job_id: str, *, lease_token: str | None = None, tx: Persistence | None = None
    ) -> bool:
        """Mark the job COMPLETED (a SUSPENDED one too when no ``lease_token`` is given).

        With ``tx`` (see :meth:`enqueue_parallel`), in that transaction; a ``tx`` on another
        database completes the job once it commits, and ``True`` is returned.
        """
        if tx is not None and self._joinable(tx) is None:
            tx.after_commit(lambda: self.complete(job_id, lease_token=lease_token))
            return True
        return self._end_lease("complete", job_id, lease_token)

    def suspend(
        self, job_id: str, next_poll_at: datetime, *, lease_token: str | None = None
    ) -> bool:
        """Park a RUNNING job as SUSPENDED until ``next_poll_at``; release its lease."""
        return self._end_lease("suspend", job_id, lease_token, next_poll_at=next_poll_at)

    def fail(
        self,
        job_id: str,
        error: str,
        should_retry: bool = False,
        *,
        lease_token: str | None = None,
    ) -> bool:
        """Retry (PENDING after a 2**attempt s back-off) while attempts remain, else FAILED.

        With ``lease_token``, act only while that lease is current; return whether it did.
        """
        now = self.clock.now()
        read = (
            sa.select(jq.c.attempt, jq.c.max_attempts)
            .where(jq.c.id == param("id"), _holds_lease(lease_token is not None))
            .with_for_update()
        )
        with self._db.write() as conn:
            row = conn.execute(read, params(id=job_id, lease_token=lease_token)).first()
            if row is None:
                if conn.scalar(_JOB_EXISTS, params(id=job_id)) is None:
                    raise RecordNotFoundError(f"Job {job_id} not found")
                return False
            attempt, max_attempts = row
            if should_retry and attempt < max_attempts:
                values = {
                    "status": Status.PENDING,
                    "next_poll_at": now + timedelta(seconds=2**attempt),
                    **_LEASE_CLEARED,
                }
            else:
                values = {
                    "status": Status.FAILED,
                    "completed_at": now,
                    "locked_at": None,
                    "lease_token": None,
                }
            conn.execute(
                sa.update(jq)
                .where(jq.c.id == job_id)
                .values(last_error=error, updated_at=now, **values)
            )
        return True

    def touch_job(self, job_id: str, *, lease_token: str | None = None) -> bool:
        """Heartbeat: renew the lease of a RUNNING job (``False`` if not held or unknown)."""
        try:
            return self._end_lease("touch", job_id, lease_token)
        except RecordNotFoundError:
            return False

    # -- maintenance --------------------------------------------------------------------------
    def release_stale_jobs(self, threshold_ms: int = 300_000) -> int:
        """Handle RUNNING jobs whose lease is older than the threshold; return how many."""
        stale = self.reap_stale_jobs(threshold_ms)
        return len(stale.released) + len(stale.exhausted)

    def reap_stale_jobs(self, threshold_ms: int = 300_000) -> StaleJobs:
        """Put expired leases back to PENDING, or FAILED once their attempts are used up."""
        now = self.clock.now()
        stale = sa.and_(
            is_status(jq.c.status, Status.RUNNING),
            jq.c.locked_at < now - timedelta(milliseconds=threshold_ms),
        )
        message = (
            sa.literal("Lease expired after ")
            + sa.cast(jq.c.attempt, sa.String())
            + sa.literal(" attempts: the worker was lost")
        )
        exhaust = (
            sa.update(jq)
            .where(stale, jq.c.attempt >= jq.c.max_attempts)
            .values(
                status=Status.FAILED,
                completed_at=now,
                last_error=message,
                locked_at=None,
                lease_token=None,
                updated_at=now,
            )
            .returning(*jq.c)
        )
        release = (
            sa.update(jq)
            .where(stale, jq.c.attempt < jq.c.max_attempts)
            .values(status=Status.PENDING, updated_at=now, **_LEASE_CLEARED)
            .returning(*jq.c)
        )
        with self._db.write() as conn:
            exhausted = [_job(row) for row in conn.execute(exhaust)]
            released = [_job(row) for row in conn.execute(release)]
        return StaleJobs(released=released, exhausted=exhausted)

    def cancel_by_run(self, workflow_run_id: str) -> int:
        """Cancel the run's PENDING and SUSPENDED jobs; return how many."""
        now = self.clock.now()
        stmt = (
            sa.update(jq)
            .where(
                jq.c.workflow_run_id == workflow_run_id,
                jq.c.status.in_([Status.PENDING, Status.SUSPENDED]),
            )
            .values(status=Status.CANCELLED, completed_at=now, updated_at=now)
        )
        with self._db.statement() as conn:
            return conn.execute(stmt).rowcount

    def close_suspended(self, workflow_run_id: str, stage_id: str, status: Status) -> int:
        """End the SUSPENDED job rows of one stage with ``status``; return how many."""
        now = self.clock.now()
        stmt = (
            sa.update(jq)
            .where(
                jq.c.workflow_run_id == workflow_run_id,
                jq.c.stage_id == stage_id,
                is_status(jq.c.status, Status.SUSPENDED),
            )
            .values(status=status, completed_at=now, updated_at=now)
        )
        with self._db.statement() as conn:
            return conn.execute(stmt).rowcount

    # -- queries ------------------------------------------------------------------------------
    def get_due_pending_jobs(self, limit: int = 100) -> list[JobRecord]:
        """PENDING jobs that are due, by priority (highest first) then age."""
        with self._db.read() as conn:
            rows = conn.execute(_DUE_JOBS, params(now=self.clock.now(), limit=limit))
            return [_job(row) for row in rows]

    def get_jobs_by_workflow_run(self, workflow_run_id: str) -> list[JobRecord]:
        """Every job of the run, any status, oldest first."""
        with self._db.read() as conn:
            return [_job(row) for row in conn.execute(_JOBS_OF_RUN, params(run_id=workflow_run_id))]

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job, or ``None``."""
        with self._db.read() as conn:
            row = conn.execute(_JOB, params(id=job_id)).first()
        return _job(row) if row is not None else None
