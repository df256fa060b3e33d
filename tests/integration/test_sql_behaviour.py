"""SQL adapter behaviour beyond the port suites, on Postgres and on SQLite.

How transactions join (the kernel's "state changed" and "job enqueued" commit together), and
bad input: typed errors, nothing half-written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from tests.sql_databases import PostgresDatabase, SqliteTemplate
from workflow_engine.errors import PayloadTooLargeError, RecordNotFoundError
from workflow_engine.persistence.sql import (
    InvalidValueError,
    SqlJobQueue,
    SqlPersistence,
    create_engine,
    upgrade,
)
from workflow_engine.persistence.sql.tables import job_queue
from workflow_engine.ports import Persistence
from workflow_engine.records import LogLevel, NewJob, NewOutboxEvent, NewRun, NewStage
from workflow_engine.status import Status
from workflow_engine.testing import FakeClock

pytestmark = pytest.mark.integration

T = TypeVar("T")


class Boom(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(
    request: pytest.FixtureRequest,
    pg_database: PostgresDatabase,
    sqlite_template: SqliteTemplate,
    tmp_path: Path,
) -> Iterator[Engine]:
    if request.param == "postgresql":
        with pg_database.fresh() as engine:
            yield engine
    else:
        with sqlite_template.clone(tmp_path) as engine:
            yield engine


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def persistence(engine: Engine, clock: FakeClock) -> SqlPersistence:
    return SqlPersistence(engine, clock=clock)


@pytest.fixture
def queue(engine: Engine, clock: FakeClock) -> SqlJobQueue:
    return SqlJobQueue(engine, clock=clock, worker_id="w")


def new_run(**fields: Any) -> NewRun:
    return NewRun(workflow_id="wf", workflow_name="Wf", workflow_type="wf", **fields)


def new_job(run_id: str = "run-1", stage_id: str = "s1") -> NewJob:
    return NewJob(workflow_run_id=run_id, workflow_id="wf", stage_id=stage_id)


def in_other_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on another thread (which has no open transaction) and return its result."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(fn())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the other thread hung"
    if errors:
        raise errors[0]
    return results[0]


def count_jobs(conn: sa.Connection) -> int:
    return int(conn.scalar(sa.select(sa.func.count()).select_from(job_queue)) or 0)


# -- joining transactions ----------------------------------------------------------------------
def test_enqueue_with_tx_writes_the_rows_in_that_transaction(
    persistence: SqlPersistence, queue: SqlJobQueue
) -> None:
    def body(tx: Persistence) -> None:
        assert isinstance(tx, SqlPersistence) and tx.connection is not None
        tx.create_run(new_run(id="run-1"))
        queue.enqueue_parallel([new_job(stage_id="a"), new_job(stage_id="b")], tx=tx)
        # Same connection: the rows are there; any other connection: not yet.
        assert count_jobs(tx.connection) == 2
        assert in_other_thread(lambda: queue.get_jobs_by_workflow_run("run-1")) == []
        assert in_other_thread(lambda: persistence.get_run("run-1")) is None

    persistence.with_transaction(body)
    assert len(queue.get_jobs_by_workflow_run("run-1")) == 2


def test_rolled_back_transaction_leaves_neither_state_nor_jobs(
    persistence: SqlPersistence, queue: SqlJobQueue
) -> None:
    def body(tx: Persistence) -> NoReturn:
        tx.create_run(new_run(id="run-1"))
        queue.enqueue_parallel([new_job(), new_job(stage_id="s2")], tx=tx)
        tx.append_outbox_events(
            [
                NewOutboxEvent(
                    workflow_run_id="run-1",
                    event_type="workflow:created",
                    payload={},
                    causation_id="c",
                    occurred_at=datetime.now(UTC),
                )
            ]
        )
        raise Boom

    with pytest.raises(Boom):
        persistence.with_transaction(body)
    assert persistence.get_run("run-1") is None
    assert queue.get_jobs_by_workflow_run("run-1") == []
    assert persistence.get_outbox_events("run-1") == []


def test_a_queue_on_another_database_enqueues_after_commit(
    persistence: SqlPersistence, tmp_path: Path, clock: FakeClock
) -> None:
    other = create_engine(f"sqlite:///{tmp_path}/other-queue.db")
    upgrade(other)
    queue = SqlJobQueue(other, clock=clock)
    try:

        def body(tx: Persistence) -> list[str]:
            ids = queue.enqueue_parallel([new_job()], tx=tx)
            assert queue.get_job(ids[0]) is None  # waits for the commit
            return ids

        [job_id] = persistence.with_transaction(body)
        assert queue.get_job(job_id) is not None

        with pytest.raises(Boom):
            persistence.with_transaction(
                lambda tx: (queue.enqueue(new_job(run_id="run-2"), tx=tx), _raise())
            )
        assert queue.get_jobs_by_workflow_run("run-2") == []
    finally:
        other.dispose()


def _raise() -> NoReturn:
    raise Boom


def test_calls_on_this_thread_join_its_open_transaction(
    persistence: SqlPersistence, queue: SqlJobQueue
) -> None:
    """Un-bound calls made inside a transaction join it: they see its writes, roll back with
    it, and on SQLite never wait for the write lock their own thread holds."""
    started = time.monotonic()

    def body(tx: Persistence) -> NoReturn:
        run = tx.create_run(new_run(id="run-1"))
        assert persistence.get_run("run-1") == run
        persistence.update_run("run-1", status=Status.RUNNING)
        queue.enqueue(new_job())
        assert len(queue.get_jobs_by_workflow_run("run-1")) == 1
        raise Boom

    with pytest.raises(Boom):
        persistence.with_transaction(body)
    assert time.monotonic() - started < 5
    assert persistence.get_run("run-1") is None
    assert queue.get_jobs_by_workflow_run("run-1") == []


def test_other_threads_do_not_see_uncommitted_writes(persistence: SqlPersistence) -> None:
    seen: list[object] = []

    def body(tx: Persistence) -> None:
        tx.create_run(new_run(id="run-1"))
        seen.append(in_other_thread(lambda: persistence.get_run("run-1")))
        seen.append(in_other_thread(lambda: len(persistence.list_runs())))

    persistence.with_transaction(body)
    assert seen == [None, 0]
    assert persistence.get_run("run-1") is not None


def _event(run_id: str) -> NewOutboxEvent:
    return NewOutboxEvent(
        workflow_run_id=run_id,
        event_type="stage:completed",
        payload={},
        causation_id="c",
        occurred_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("rolled_back", [False, True])
def test_an_appender_to_a_run_waits_for_the_open_transaction_numbering_it(
    persistence: SqlPersistence, rolled_back: bool
) -> None:
    """Both append to a run with no events yet; the second waits on the counter row (SQLite:
    the write lock), then numbers after the first, or from 1 if the first rolled back."""
    first: list[list[int]] = []
    second: list[list[int]] = []

    def append_second() -> None:
        events = persistence.append_outbox_events([_event("run-1"), _event("run-1")])
        second.append([e.sequence for e in events])

    other = threading.Thread(target=append_second)

    def body(tx: Persistence) -> None:
        events = tx.append_outbox_events([_event("run-1"), _event("run-2"), _event("run-1")])
        first.append([e.sequence for e in events])
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive(), "the second appender did not wait"
        if rolled_back:
            raise Boom

    if rolled_back:
        with pytest.raises(Boom):
            persistence.with_transaction(body)
    else:
        persistence.with_transaction(body)
    other.join(timeout=30)
    assert not other.is_alive(), "the second appender hung"
    assert first == [[1, 1, 2]]
    assert second == ([[1, 2]] if rolled_back else [[3, 4]])
    expected = [1, 2] if rolled_back else [1, 2, 3, 4]
    assert [e.sequence for e in persistence.get_outbox_events("run-1")] == expected


def _wait_for_a_lock_waiter(engine: Engine) -> None:
    """Until a session of ``engine``'s Postgres database waits on a lock (10 s deadline)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while not conn.execute(query).scalar():
            assert time.monotonic() < deadline, "nobody waited for the run's lock"
            time.sleep(0.01)


@pytest.fixture
def pg_persistence(pg_database: PostgresDatabase) -> Iterator[SqlPersistence]:
    with pg_database.fresh() as engine:
        yield SqlPersistence(engine)


def test_a_settler_waiting_for_the_run_lock_then_reads_the_stage_its_holder_committed(
    pg_persistence: SqlPersistence,
) -> None:
    """Two parallel stages settle at once: the second, blocked on the run's lock, must see the
    first's COMPLETED stage once it gets the lock (or neither would advance the run). Postgres
    only: SQLite serialises whole write transactions, so nobody waits inside one."""
    persistence, engine = pg_persistence, pg_persistence.engine
    run = persistence.create_run(new_run())
    first, second = (
        persistence.create_stage(
            NewStage(
                workflow_run_id=run.id,
                stage_id=stage_id,
                stage_name=stage_id,
                stage_number=number,
                execution_group=1,
                status=Status.RUNNING,
            )
        )
        for number, stage_id in enumerate(("a", "b"), start=1)
    )
    seen: list[dict[str, Status]] = []

    def settle_second() -> None:
        def body(tx: Persistence) -> None:
            locked = tx.lock_run(run.id)
            assert locked is not None
            seen.append({stage.stage_id: stage.status for stage in locked.stages})

        persistence.with_transaction(body)

    other = threading.Thread(target=settle_second)

    def settle_first(tx: Persistence) -> None:
        assert tx.lock_run(run.id) is not None
        tx.update_stage(first.id, status=Status.COMPLETED)
        other.start()
        _wait_for_a_lock_waiter(engine)

    persistence.with_transaction(settle_first)
    other.join(timeout=30)
    assert seen == [{"a": Status.COMPLETED, "b": Status.RUNNING}]
    assert second.status == Status.RUNNING


def test_idempotency_result_commits_with_the_command(
    persistence: SqlPersistence, clock: FakeClock
) -> None:
    acquired = persistence.acquire_idempotency_key(
        "order-42", "run.create", now=clock.now(), stale_in_progress_after_ms=None
    )
    assert acquired.status == "acquired"

    def command(tx: Persistence) -> str:
        run = tx.create_run(new_run())
        tx.complete_idempotency_key("order-42", "run.create", {"workflow_run_id": run.id})
        return run.id

    run_id = persistence.with_transaction(command)
    replay = persistence.acquire_idempotency_key(
        "order-42", "run.create", now=clock.now(), stale_in_progress_after_ms=None
    )
    assert (replay.status, replay.result) == ("replay", {"workflow_run_id": run_id})


# -- bad input ---------------------------------------------------------------------------------
def test_non_json_input_is_refused_and_nothing_written(persistence: SqlPersistence) -> None:
    with pytest.raises(InvalidValueError, match=r"workflow_runs\.input is not JSON"):
        persistence.create_run(new_run(input={"when": object()}))
    assert persistence.list_runs() == []


def test_nan_and_nul_are_refused(persistence: SqlPersistence) -> None:
    with pytest.raises(InvalidValueError):
        persistence.create_run(new_run(input={"x": float("nan")}))
    with pytest.raises(InvalidValueError, match="NUL"):
        persistence.create_run(new_run(input={"x": "a\x00b"}))
    assert persistence.list_runs() == []


def test_json_values_are_stored_in_json_form(persistence: SqlPersistence) -> None:
    moment = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    run = persistence.create_run(new_run(input={"at": moment, "pair": (1, 2)}))
    stored = persistence.get_run(run.id)
    assert stored is not None and stored.input == {"at": "2025-05-01T12:00:00Z", "pair": [1, 2]}
    assert run.input == stored.input


def test_oversized_values_are_refused(engine: Engine, clock: FakeClock) -> None:
    persistence = SqlPersistence(engine, clock=clock, max_json_bytes=1_000)
    queue = SqlJobQueue(engine, clock=clock, max_json_bytes=1_000)
    big = {"text": "x" * 2_000}
    with pytest.raises(PayloadTooLargeError) as raised:
        persistence.create_run(new_run(input=big))
    assert raised.value.limit == 1_000 and "workflow_runs.input" in str(raised.value)
    with pytest.raises(PayloadTooLargeError):
        queue.enqueue(NewJob(workflow_run_id="r", workflow_id="wf", stage_id="s", payload=big))
    assert persistence.list_runs() == [] and queue.get_jobs_by_workflow_run("r") == []


def test_a_bad_value_rolls_back_the_whole_transaction(
    persistence: SqlPersistence, queue: SqlJobQueue
) -> None:
    def body(tx: Persistence) -> None:
        run = tx.create_run(new_run(id="run-1"))
        stage = tx.create_stage(
            NewStage(
                workflow_run_id=run.id,
                stage_id="s1",
                stage_name="S1",
                stage_number=1,
                execution_group=1,
            )
        )
        queue.enqueue(new_job(), tx=tx)
        tx.update_stage(stage.id, status=Status.COMPLETED, output={"bad": object()})

    with pytest.raises(InvalidValueError, match=r"workflow_stages\.output"):
        persistence.with_transaction(body)
    assert persistence.get_run("run-1") is None
    assert queue.get_jobs_by_workflow_run("run-1") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "NOPE"),
        ("duration", "soon"),
        ("started_at", datetime(2025, 1, 1)),  # naive
        ("priority", [1]),
    ],
)
def test_ill_typed_fields_are_refused(
    persistence: SqlPersistence, field: str, value: object
) -> None:
    run = persistence.create_run(new_run())
    with pytest.raises(InvalidValueError):
        persistence.update_run(run.id, **{field: value})
    assert persistence.get_run(run.id) == run


def test_unknown_ids_raise_typed_errors(persistence: SqlPersistence, queue: SqlJobQueue) -> None:
    with pytest.raises(RecordNotFoundError):
        persistence.update_stage("nope", status=Status.RUNNING)
    with pytest.raises(RecordNotFoundError):
        persistence.mark_outbox_plugin_delivered("nope", "audit")
    with pytest.raises(RecordNotFoundError):
        queue.fail("nope", "error")
    assert queue.touch_job("nope") is False
    with pytest.raises(RecordNotFoundError, match="WorkflowRun nope not found"):
        persistence.create_stage(
            NewStage(
                workflow_run_id="nope",
                stage_id="s",
                stage_name="S",
                stage_number=1,
                execution_group=1,
            )
        )
    with pytest.raises(RecordNotFoundError):
        persistence.create_log(level=LogLevel.INFO, message="x", workflow_run_id="nope")


def test_a_duplicate_run_id_is_refused(persistence: SqlPersistence) -> None:
    run = persistence.create_run(new_run(id="run-1"))
    with pytest.raises(ValueError, match="already exists"):
        persistence.create_run(new_run(id="run-1", priority=9))
    assert persistence.get_run("run-1") == run


def test_timestamps_are_stored_as_utc_instants(persistence: SqlPersistence) -> None:
    run = persistence.create_run(new_run())
    local = datetime(2025, 6, 1, 14, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    persistence.update_run(run.id, started_at=local)
    stored = persistence.get_run(run.id)
    assert stored is not None and stored.started_at == local
    assert stored.started_at.tzinfo == UTC and stored.started_at.hour == 12


def test_log_levels_and_metadata_round_trip(persistence: SqlPersistence) -> None:
    run = persistence.create_run(new_run())
    persistence.create_log(
        level=LogLevel.WARN, message="careful", workflow_run_id=run.id, metadata={"k": [1]}
    )
    [log] = persistence.get_logs_by_run(run.id)
    assert (log.level, log.message, log.metadata) == (LogLevel.WARN, "careful", {"k": [1]})
