"""``WorkflowClient.create_run(connection=...)`` joins the caller's transaction on real Postgres:
the run exists if and only if the caller commits, and the worker's wake-up (a ``claim_pending``
message, counted on a real Redis queue nobody consumes) is published only after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.integration.webapps import broker_url, claim_wakeups, count_rows, engine_db
from workflow_engine.client import WorkflowClient
from workflow_engine.errors import InvalidInputError, WorkflowNotFoundError
from workflow_engine.settings import EngineSettings

__all__ = ["broker_url", "engine_db"]  # fixtures

QUEUE = "client-tx"


@pytest.fixture
def client(engine_db: str, broker_url: str) -> Iterator[WorkflowClient]:
    settings = EngineSettings(database_url=engine_db, broker_url=broker_url, queue=QUEUE)
    client = WorkflowClient(settings)
    yield client
    client.close()


@pytest.fixture
def app_engine(engine_db: str) -> Iterator[Engine]:
    """The application's own engine on the same database, with a table of its own."""
    engine = sa.create_engine(engine_db)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id serial PRIMARY KEY, run_id text)"))
    yield engine
    engine.dispose()


@contextmanager
def connection_tx(engine: Engine) -> Iterator[tuple[Any, Callable[[], None], Callable[[], None]]]:
    """A Core connection in a transaction: (connection, commit, rollback)."""
    with engine.connect() as conn:
        tx = conn.begin()
        yield conn, tx.commit, tx.rollback


@contextmanager
def session_tx(engine: Engine) -> Iterator[tuple[Any, Callable[[], None], Callable[[], None]]]:
    """An ORM session (what Flask-SQLAlchemy's ``db.session`` is): (session, commit, rollback)."""
    with Session(engine) as session:
        yield session, session.commit, session.rollback


CALLERS: dict[str, Callable[[Engine], AbstractContextManager[Any]]] = {
    "connection": connection_tx,
    "session": session_tx,
}


def insert_order(conn: Any, run_id: str) -> None:
    conn.execute(sa.text("INSERT INTO orders (run_id) VALUES (:r)"), {"r": run_id})


@pytest.mark.integration
@pytest.mark.parametrize("kind", CALLERS)
def test_a_rolled_back_transaction_leaves_no_run_and_sends_nothing(
    kind: str, client: WorkflowClient, app_engine: Engine, broker_url: str
) -> None:
    with CALLERS[kind](app_engine) as (conn, _commit, rollback):
        run_id = client.create_run(
            "noop-chain", {"n": 1}, idempotency_key="order-1", connection=conn
        )
        insert_order(conn, run_id)
        # inside the transaction: the run is there for the caller, nobody else sees it
        assert conn.execute(sa.text("SELECT count(*) FROM workflow_runs")).scalar_one() == 1
        assert count_rows(app_engine, "workflow_runs") == 0
        rollback()
    for table in ("workflow_runs", "outbox_events", "idempotency_keys", "orders"):
        assert count_rows(app_engine, table) == 0, table
    assert claim_wakeups(broker_url, QUEUE) == 0


@pytest.mark.integration
@pytest.mark.parametrize("kind", CALLERS)
def test_a_committed_transaction_has_the_run_and_exactly_one_wakeup(
    kind: str, client: WorkflowClient, app_engine: Engine, broker_url: str
) -> None:
    with CALLERS[kind](app_engine) as (conn, commit, _rollback):
        run_id = client.create_run("noop-chain", {"n": 1}, connection=conn)
        insert_order(conn, run_id)
        assert claim_wakeups(broker_url, QUEUE) == 0  # not before the commit
        commit()
    assert client.get_run(run_id).status == "PENDING"
    assert count_rows(app_engine, "orders") == 1
    assert count_rows(app_engine, "outbox_events") == 1
    assert claim_wakeups(broker_url, QUEUE) == 1


@pytest.mark.integration
@pytest.mark.parametrize("kind", CALLERS)
def test_a_refused_run_leaves_the_callers_transaction_usable(
    kind: str, client: WorkflowClient, app_engine: Engine, broker_url: str
) -> None:
    with CALLERS[kind](app_engine) as (conn, commit, _rollback):
        insert_order(conn, "none")
        with pytest.raises(InvalidInputError):
            client.create_run("noop-chain", {"n": "not a number"}, connection=conn)
        with pytest.raises(WorkflowNotFoundError):
            client.create_run("no-such-workflow", {}, connection=conn)
        commit()
    assert count_rows(app_engine, "orders") == 1  # the caller's own write survived
    assert count_rows(app_engine, "workflow_runs") == 0
    assert count_rows(app_engine, "idempotency_keys") == 0
    assert claim_wakeups(broker_url, QUEUE) == 0


@pytest.mark.integration
def test_the_same_idempotency_key_in_two_transactions_is_one_run(
    client: WorkflowClient, app_engine: Engine, broker_url: str
) -> None:
    ids = []
    for _ in range(2):
        with Session(app_engine) as session:
            ids.append(client.create_run("noop-chain", {}, idempotency_key="k", connection=session))
            session.commit()
    assert ids[0] == ids[1]
    assert count_rows(app_engine, "workflow_runs") == 1


@pytest.mark.integration
def test_a_savepoint_released_inside_a_rolled_back_session_sends_nothing(
    client: WorkflowClient, app_engine: Engine, broker_url: str
) -> None:
    with Session(app_engine) as session:
        with session.begin_nested():
            client.create_run("noop-chain", {}, connection=session)
        # the savepoint was released, but the transaction is not committed yet
        assert claim_wakeups(broker_url, QUEUE) == 0
        session.rollback()
    with Session(app_engine) as session:  # the next transaction does not inherit the wake-up
        session.execute(sa.text("SELECT 1"))
        session.commit()
    assert count_rows(app_engine, "workflow_runs") == 0
    assert claim_wakeups(broker_url, QUEUE) == 0


@pytest.mark.integration
def test_a_connection_on_another_database_is_refused(
    client: WorkflowClient, pg_engine: Engine, database_url: str
) -> None:
    other = sa.create_engine(database_url)  # the server's maintenance database
    try:
        with other.connect() as conn, pytest.raises(ValueError, match="cannot join"):
            client.create_run("noop-chain", {}, connection=conn)
    finally:
        other.dispose()


@pytest.mark.integration
def test_a_connection_in_autocommit_mode_is_refused(
    client: WorkflowClient, app_engine: Engine
) -> None:
    with app_engine.connect() as conn:
        autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(ValueError, match="AUTOCOMMIT"):
            client.create_run("noop-chain", {}, connection=autocommit)
    assert count_rows(app_engine, "workflow_runs") == 0
