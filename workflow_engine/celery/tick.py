"""The maintenance tick, run by beat: one at a time across every beat and worker process.

On Postgres the tick holds a transaction-level advisory lock (nothing outlives the
transaction, so it is safe behind PgBouncer); on SQLite, an exclusive lock on a file beside
the database. A tick that finds the lock taken does nothing: every step is safe to skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from workflow_engine.celery.context import EngineContext
from workflow_engine.hosts.support import TickResult, run_maintenance_tick

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
        result = run_maintenance_tick(context.kernel, context.worker_id, context.host_config)
        republished = context.transport.republish_lost_jobs(
            timedelta(seconds=context.settings.republish_after_seconds),
            context.settings.max_republish_per_tick,
        )
        return CeleryTickResult(**result.model_dump(), republished=republished)


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
