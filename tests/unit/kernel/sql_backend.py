"""SQL adapters for the kernel suite, with the few test helpers the in-memory ones have.

The kernel suite runs on the in-memory adapters and, with ``--kernel-backends``, on
``SqlPersistence`` + ``SqlJobQueue`` over Postgres or SQLite (see the root conftest).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.sql_databases import PostgresDatabase, SqliteTemplate
from workflow_engine.clock import Clock
from workflow_engine.persistence.sql import SqlJobQueue, SqlPersistence
from workflow_engine.persistence.sql.tables import job_queue, outbox_events, workflow_runs
from workflow_engine.records import OutboxEventRecord, WorkflowRunRecord


class TestSqlPersistence(SqlPersistence):
    """``SqlPersistence`` plus the listing helpers the kernel tests use."""

    __test__ = False

    def get_all_runs(self) -> list[WorkflowRunRecord]:
        return [WorkflowRunRecord.model_validate(row) for row in self._rows(workflow_runs)]

    def get_all_outbox_events(self) -> list[OutboxEventRecord]:
        return [OutboxEventRecord.model_validate(row) for row in self._rows(outbox_events)]

    def _rows(self, table: sa.Table) -> Iterator[dict[str, Any]]:
        query = sa.select(table).order_by(table.c.created_at, table.c.id)
        with self._db.read() as conn:  # joins the thread's open transaction, if any
            rows = [dict(row._mapping) for row in conn.execute(query)]
        yield from rows


class TestSqlJobQueue(SqlJobQueue):
    """``SqlJobQueue`` plus the helpers the kernel tests use."""

    __test__ = False

    def clear(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(job_queue))


class SqlBackend:
    """Hands out engines on freshly migrated databases, one per kernel environment."""

    def __init__(self, kind: str, database_url: str | None, directory: Path) -> None:
        self.kind = kind
        self._directory = directory
        self._postgres = PostgresDatabase(database_url) if kind == "postgres" else None
        self._sqlite = SqliteTemplate(directory) if kind == "sqlite" else None
        self._open = ExitStack()
        self._count = 0

    def adapters(self, clock: Clock, worker_id: str) -> tuple[TestSqlPersistence, TestSqlJobQueue]:
        engine = self._engine()
        return TestSqlPersistence(engine, clock=clock), TestSqlJobQueue(
            engine, clock=clock, worker_id=worker_id
        )

    def _engine(self) -> Engine:
        manager: AbstractContextManager[Engine]
        if self._postgres is not None:
            manager = self._postgres.fresh()
        else:
            assert self._sqlite is not None
            self._count += 1
            directory = self._directory / f"env{self._count}"
            directory.mkdir()
            manager = self._sqlite.clone(directory)
        return self._open.enter_context(manager)

    def release(self) -> None:
        """Dispose of the engines handed out for the test that just ended."""
        self._open.close()

    def close(self) -> None:
        self.release()
        if self._postgres is not None:
            self._postgres.close()
