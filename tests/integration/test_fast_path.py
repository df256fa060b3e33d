"""Statements run straight through psycopg on Postgres: same rows, same errors, same recovery."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, event

from tests.sql_databases import PostgresDatabase
from workflow_engine.persistence.sql import SqlPersistence
from workflow_engine.persistence.sql.fast import FastConnection
from workflow_engine.records import NewRun, NewStage
from workflow_engine.status import Status

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_database: PostgresDatabase) -> Iterator[Engine]:
    with pg_database.fresh() as engine:
        yield engine


def new_run(run_id: str) -> NewRun:
    return NewRun(id=run_id, workflow_id="wf", workflow_name="Wf", workflow_type="wf", input={})


def test_a_reused_statement_returns_the_rows_sqlalchemy_returns(engine: Engine) -> None:
    persistence = SqlPersistence(engine)
    run = persistence.create_run(new_run("run-1"))
    stage = persistence.create_stage(
        NewStage(
            workflow_run_id=run.id, stage_id="s", stage_name="S", stage_number=1, execution_group=1
        )
    )
    first = persistence.update_stage(stage.id, status=Status.RUNNING, metrics={"n": 1.5})
    # The first run of a statement object goes through SQLAlchemy, later ones do not.
    reads = [persistence.get_stages_by_run(run.id) for _ in range(3)]
    assert reads[0] == reads[1] == reads[2] == [first]
    assert first.metrics == {"n": 1.5} and first.status is Status.RUNNING
    assert first.updated_at.utcoffset() is not None  # aware UTC, as the column type returns


def test_a_constraint_violation_is_sqlalchemys_typed_error(engine: Engine) -> None:
    persistence = SqlPersistence(engine)
    for run_id in ("a", "b"):
        persistence.create_run(new_run(run_id))  # the insert statement is reused from here on
    with pytest.raises(ValueError, match="already exists"):
        persistence.create_run(new_run("a"))
    assert {run.id for run in persistence.list_runs()} == {"a", "b"}


def test_an_engine_with_a_listener_sees_every_statement(engine: Engine) -> None:
    persistence = SqlPersistence(engine)
    persistence.create_run(new_run("run-1"))
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    for _ in range(3):
        persistence.get_run("run-1")
    assert len([sql for sql in seen if "FROM workflow_runs" in sql]) == 3


def test_a_connection_dropped_under_a_statement_is_invalidated_and_replaced(
    engine: Engine,
) -> None:
    persistence = SqlPersistence(engine)
    persistence.create_run(new_run("run-1"))
    statement = sa.select(sa.literal(1))
    with engine.connect() as held:
        fast = FastConnection(held.execution_options(isolation_level="AUTOCOMMIT"))
        assert [fast.execute(statement).scalar() for _ in range(2)] == [1, 1]  # planned now
        with engine.connect() as admin:
            pid = fast.connection.driver_connection.info.backend_pid
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sa.exc.DBAPIError) as failure:
            fast.execute(statement)
        assert failure.value.connection_invalidated
    # SQLAlchemy's handler discarded the connection: the next call works on a new one.
    assert persistence.get_run_status("run-1") == Status.PENDING
