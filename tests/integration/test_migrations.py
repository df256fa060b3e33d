"""The Alembic migrations make exactly the schema of ``tables.py``, and nothing else does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from workflow_engine.persistence.sql import SqlPersistence, create_engine, metadata, upgrade
from workflow_engine.persistence.sql.migrate import (
    VERSION_TABLE,
    alembic_config,
    current,
    downgrade,
)
from workflow_engine.persistence.sql.tables import outbox_events
from workflow_engine.records import NewOutboxEvent

pytestmark = pytest.mark.integration

TABLES = {table.name for table in metadata.sorted_tables}
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
INDEXES = {index.name for table in metadata.sorted_tables for index in table.indexes}


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        return list(compare_metadata(context, metadata))


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


@pytest.fixture
def empty_pg(pg_engine: Engine) -> Iterator[Engine]:
    """The root ``pg_engine`` (a fresh, empty database), configured for the adapters."""
    yield create_engine(pg_engine.url.render_as_string(hide_password=False))


def test_migrations_on_empty_postgres_match_the_metadata(empty_pg: Engine) -> None:
    assert _tables(empty_pg) == set() and current(empty_pg) is None
    upgrade(empty_pg)
    assert _differences(empty_pg) == []
    assert _tables(empty_pg) == TABLES | {VERSION_TABLE}
    assert current(empty_pg) == HEAD
    empty_pg.dispose()


def test_upgrade_is_idempotent_and_downgrade_removes_everything(empty_pg: Engine) -> None:
    upgrade(empty_pg)
    upgrade(empty_pg)
    assert current(empty_pg) == HEAD
    downgrade(empty_pg, "base")
    assert _tables(empty_pg) == {VERSION_TABLE} and current(empty_pg) is None
    upgrade(empty_pg)
    assert _differences(empty_pg) == []
    empty_pg.dispose()


def test_concurrent_upgrades_apply_once(empty_pg: Engine) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(empty_pg)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and current(empty_pg) == HEAD
    empty_pg.dispose()


def test_upgrade_accepts_a_url(empty_pg: Engine) -> None:
    upgrade(empty_pg.url.render_as_string(hide_password=False))
    assert current(empty_pg) == HEAD
    empty_pg.dispose()


def test_partial_indexes_exist_on_postgres(empty_pg: Engine) -> None:
    upgrade(empty_pg)
    with empty_pg.connect() as conn:
        definitions = dict(
            conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes")).all()
        )
    assert "WHERE ((status)::text = 'PENDING'::text)" in definitions["ix_job_queue_pending"]
    assert "priority DESC" in definitions["ix_workflow_runs_pending"]
    assert "published_at IS NULL" in definitions["ix_outbox_events_unpublished"]
    empty_pg.dispose()


def test_migrations_on_sqlite_make_every_table_and_index(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/state.db")
    upgrade(engine)
    inspector = sa.inspect(engine)
    assert set(inspector.get_table_names()) == TABLES | {VERSION_TABLE}
    found = {index["name"] for name in TABLES for index in inspector.get_indexes(name)}
    assert found >= INDEXES
    # SQLite cannot reflect DESC or partial-index predicates; everything else must match.
    known = {"ix_job_queue_pending", "ix_workflow_runs_pending"}
    leftover = [
        diff
        for diff in _differences(engine)
        if not (isinstance(diff, tuple) and getattr(diff[1], "name", None) in known)
    ]
    assert leftover == []
    downgrade(engine, "base")
    assert set(sa.inspect(engine).get_table_names()) == {VERSION_TABLE}
    engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_outbox_numbering_continues_across_the_counter_migration(
    dialect: str, empty_pg: Engine, tmp_path: Path
) -> None:
    engine = empty_pg if dialect == "postgresql" else create_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine, "0002")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(outbox_events),
            [
                {
                    "id": f"e{run_id}{sequence}",
                    "created_at": now,
                    "workflow_run_id": run_id,
                    "sequence": sequence,
                    "event_type": "t",
                    "payload": {},
                    "causation_id": "c",
                    "occurred_at": now,
                    "retry_count": 0,
                    "delivered_plugins": [],
                }
                for run_id, last in (("a", 3), ("b", 1))
                for sequence in range(1, last + 1)
            ],
        )
    upgrade(engine)
    appended = SqlPersistence(engine).append_outbox_events(
        [
            NewOutboxEvent(
                workflow_run_id=run_id,
                event_type="t",
                payload={},
                causation_id="c",
                occurred_at=now,
            )
            for run_id in ("a", "b", "c")
        ]
    )
    assert [(e.workflow_run_id, e.sequence) for e in appended] == [("a", 4), ("b", 2), ("c", 1)]
    engine.dispose()
