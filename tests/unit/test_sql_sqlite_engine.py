"""How SQLite engines are set up: WAL, foreign keys, ``BEGIN IMMEDIATE`` writers that queue
instead of failing, and readers that never wait for a writer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.sql_databases import SqliteTemplate
from workflow_engine.persistence.sql import SqlPersistence, create_engine
from workflow_engine.persistence.sql.dialect import same_database
from workflow_engine.ports import Persistence
from workflow_engine.records import NewRun


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("template"))


def new_run(run_id: str) -> NewRun:
    return NewRun(id=run_id, workflow_id="wf", workflow_name="Wf", workflow_type="wf")


def test_a_plain_engine_is_configured_on_first_use(
    template: SqliteTemplate, tmp_path: Path
) -> None:
    engine = sa.create_engine(template.copy_to(tmp_path))  # not made by create_engine
    with engine.connect() as conn:  # a connection pooled before the adapters saw the engine
        conn.exec_driver_sql("SELECT 1")
    persistence = SqlPersistence(engine)
    persistence.create_run(new_run("r1"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert persistence.get_run("r1") is not None
    engine.dispose()


def test_readers_do_not_wait_for_an_open_write_transaction(
    template: SqliteTemplate, tmp_path: Path
) -> None:
    engine = create_engine(template.copy_to(tmp_path))
    persistence = SqlPersistence(engine)
    persistence.create_run(new_run("before"))
    seen: list[object] = []

    def body(tx: Persistence) -> None:
        tx.create_run(new_run("inside"))
        reader = threading.Thread(
            target=lambda: seen.append([r.id for r in persistence.list_runs()])
        )
        started = time.monotonic()
        reader.start()
        reader.join(timeout=10)
        seen.append(time.monotonic() - started)

    persistence.with_transaction(body)
    assert seen[0] == ["before"] and isinstance(seen[1], float) and seen[1] < 2
    engine.dispose()


def test_a_second_writer_queues_behind_the_first(template: SqliteTemplate, tmp_path: Path) -> None:
    engine = create_engine(template.copy_to(tmp_path))
    persistence = SqlPersistence(engine)
    order: list[str] = []
    errors: list[BaseException] = []
    inside = threading.Event()

    def slow(tx: Persistence) -> None:
        tx.create_run(new_run("first"))
        inside.set()
        time.sleep(0.3)
        order.append("first committed")

    def second() -> None:
        inside.wait()
        try:
            persistence.create_run(new_run("second"))
            order.append("second written")
        except BaseException as error:
            errors.append(error)

    writer = threading.Thread(target=second)
    writer.start()
    persistence.with_transaction(slow)
    writer.join(timeout=10)
    assert errors == [] and order == ["first committed", "second written"]
    engine.dispose()


def test_postgres_urls_use_psycopg_3() -> None:
    engine = create_engine("postgresql://user@db.example/app", prepare_threshold=None)
    assert engine.url.drivername == "postgresql+psycopg"
    assert same_database(engine, create_engine("postgresql+psycopg://other@db.example/app"))
    assert not same_database(engine, create_engine("postgresql://user@db.example/other"))


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        create_engine("mysql://user@db.example/app")
