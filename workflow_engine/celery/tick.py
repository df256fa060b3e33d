"""The maintenance tick, run by beat: one at a time across every beat and worker process.

On Postgres the tick holds a transaction-level advisory lock (nothing outlives the
transaction, so it is safe behind PgBouncer); on SQLite, an exclusive lock on a file beside
the database. A tick that finds the lock taken does nothing: every step is safe to skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from workflow_engine.celery.context import EngineContext
from workflow_engine.hosts.support import TickResult, run_maintenance_tick
from workflow_engine.persistence.sql.tables import maintenance_ticks

# Any fixed 64-bit number works; this one spells "wf-tick".
TICK_LOCK_KEY = 0x77662D7469636B


class CeleryTickResult(TickResult):
    """A tick's counts, plus the wake-ups re-sent for lost messages."""

    republished: int = 0


def run_tick(context: EngineContext) -> CeleryTickResult | None:
    """Run one maintenance tick unless another process is running one; ``None`` if skipped."""
    with exclusive_tick(context.engine) as acquired:
        if not acquired:
            return None
        started_at = datetime.now(UTC)
        result = run_maintenance_tick(context.kernel, context.worker_id, context.host_config)
        republished = context.transport.republish_lost_jobs(
            timedelta(seconds=context.settings.republish_after_seconds),
            context.settings.max_republish_per_tick,
        )
        outcome = CeleryTickResult(**result.model_dump(), republished=republished)
        record_tick(context.engine, context.worker_id, started_at, outcome)
        return outcome


def record_tick(
    engine: Engine, worker_id: str, started_at: datetime, result: CeleryTickResult
) -> None:
    """Write the tick to ``maintenance_ticks`` (while the lock is still held)."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(maintenance_ticks).values(
                id=uuid.uuid4().hex,
                worker_id=worker_id,
                started_at=started_at,
                finished_at=datetime.now(UTC),
                result=result.model_dump(),
            )
        )


def last_tick(engine: Engine) -> datetime | None:
    """When the most recent maintenance tick finished (for health checks)."""
    with engine.connect() as conn:
        finished: datetime | None = conn.scalar(
            sa.select(sa.func.max(maintenance_ticks.c.finished_at))
        )
    return finished


@contextlib.contextmanager
def exclusive_tick(engine: Engine) -> Iterator[bool]:
    """Yield whether this process holds the tick lock; it is released on exit."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn, conn.begin():
            yield _try_advisory_lock(conn)
        return
    with _file_lock(engine) as acquired:
        yield acquired


def _try_advisory_lock(conn: Connection) -> bool:
    return bool(
        conn.scalar(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": TICK_LOCK_KEY})
    )


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[bool]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield True  # a private in-memory database has a single process
        return
    fd = os.open(f"{database}.tick.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
