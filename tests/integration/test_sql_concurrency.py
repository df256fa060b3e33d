"""Real processes against one database: claims and dequeues never double up, and a process
killed mid-command leaves either its whole transaction or nothing.

Four processes drain 1,000 pending runs and then 5,000 jobs; every run and job must be taken
exactly once, on Postgres (``FOR UPDATE SKIP LOCKED``) and on SQLite (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.sql_databases import PostgresDatabase, SqliteTemplate
from workflow_engine.persistence.sql import SqlJobQueue, SqlPersistence, create_engine
from workflow_engine.persistence.sql.tables import job_queue, workflow_runs
from workflow_engine.ports import Persistence
from workflow_engine.records import NewJob, NewOutboxEvent, NewRun
from workflow_engine.status import Status

pytestmark = pytest.mark.integration

RUNS, JOBS, PROCESSES = 1_000, 5_000, 4

# fork: children start in milliseconds and share nothing but the URL (engines are made anew).
context = multiprocessing.get_context("fork")


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url_of(
    request: pytest.FixtureRequest,
    pg_database: PostgresDatabase,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> Iterator[str]:
    """The URL of an empty migrated database (closed in this process before forking)."""
    if request.param == "postgresql":
        with pg_database.fresh():
            yield pg_database.database_url
    else:
        yield SqliteTemplate(tmp_path_factory.mktemp("template")).copy_to(tmp_path)


def _drain(url: str, start: Any, out: Connection) -> None:
    """Child: claim runs until none is left, then dequeue jobs until none is left."""
    engine = create_engine(url)
    persistence, queue = SqlPersistence(engine), SqlJobQueue(engine)
    start.wait()
    runs = []
    while (run := persistence.claim_next_pending_run()) is not None:
        runs.append(run.id)
    jobs = []
    while (job := queue.dequeue()) is not None:
        jobs.append(job.id)
    out.send((runs, jobs))
    engine.dispose()


def _seed(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url)
    persistence, queue = SqlPersistence(engine), SqlJobQueue(engine)
    rows = [
        NewRun(id=f"run-{i:04d}", workflow_id="wf", workflow_name="Wf", workflow_type="wf")
        for i in range(RUNS)
    ]
    run_ids = persistence.with_transaction(lambda tx: {tx.create_run(row).id for row in rows})
    jobs = [
        NewJob(workflow_run_id=f"run-{i % RUNS:04d}", workflow_id="wf", stage_id=f"s{i}")
        for i in range(JOBS)
    ]
    job_ids = set(queue.enqueue_parallel(jobs))
    engine.dispose()
    return run_ids, job_ids


def test_processes_take_each_run_and_job_exactly_once(database_url_of: str) -> None:
    run_ids, job_ids = _seed(database_url_of)
    start = context.Event()
    pipes = [context.Pipe(duplex=False) for _ in range(PROCESSES)]
    children = [
        context.Process(target=_drain, args=(database_url_of, start, sender)) for _, sender in pipes
    ]
    for child in children:
        child.start()
    start.set()
    results = [receiver.recv() for receiver, _ in pipes]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0

    claimed_runs = [run for runs, _ in results for run in runs]
    dequeued_jobs = [job for _, jobs in results for job in jobs]
    assert len(claimed_runs) == RUNS and set(claimed_runs) == run_ids
    assert len(dequeued_jobs) == JOBS and set(dequeued_jobs) == job_ids
    assert sum(1 for runs, jobs in results if runs or jobs) >= 2, "one process did everything"

    engine = create_engine(database_url_of)
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                sa.select(workflow_runs.c.status, sa.func.count()).group_by(workflow_runs.c.status)
            ).all()
        )
        attempts = conn.execute(
            sa.select(job_queue.c.status, job_queue.c.attempt, sa.func.count()).group_by(
                job_queue.c.status, job_queue.c.attempt
            )
        ).all()
    engine.dispose()
    assert statuses == {Status.RUNNING: RUNS}
    assert [tuple(row) for row in attempts] == [(Status.RUNNING, 1, JOBS)]


# -- crash consistency -------------------------------------------------------------------------
def _create_run_then_die(url: str, killed_inside: bool) -> None:
    """Child: the shape of the kernel's ``run.create``, killed before it can reply."""
    engine = create_engine(url)
    persistence, queue = SqlPersistence(engine), SqlJobQueue(engine)
    persistence.acquire_idempotency_key(
        "order-42", "run.create", now=persistence.clock.now(), stale_in_progress_after_ms=None
    )

    def command(tx: Persistence) -> str:
        run = tx.create_run(
            NewRun(id="run-1", workflow_id="wf", workflow_name="Wf", workflow_type="wf")
        )
        queue.enqueue(NewJob(workflow_run_id=run.id, workflow_id="wf", stage_id="s1"), tx=tx)
        tx.append_outbox_events(
            [
                NewOutboxEvent(
                    workflow_run_id=run.id,
                    event_type="workflow:created",
                    payload={"type": "workflow:created"},
                    causation_id="cmd-1",
                    occurred_at=persistence.clock.now(),
                )
            ]
        )
        tx.complete_idempotency_key("order-42", "run.create", {"workflow_run_id": run.id})
        if killed_inside:
            os.kill(os.getpid(), signal.SIGKILL)
        return run.id

    persistence.with_transaction(command)
    os.kill(os.getpid(), signal.SIGKILL)  # committed, but the caller never hears back


@pytest.mark.parametrize("killed_inside", [False, True], ids=["after-commit", "inside-tx"])
def test_a_killed_process_leaves_all_or_nothing(database_url_of: str, killed_inside: bool) -> None:
    child = context.Process(target=_create_run_then_die, args=(database_url_of, killed_inside))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL

    engine = create_engine(database_url_of)
    persistence, queue = SqlPersistence(engine), SqlJobQueue(engine)
    now = persistence.clock.now()
    replay = persistence.acquire_idempotency_key(
        "order-42", "run.create", now=now, stale_in_progress_after_ms=None
    )
    if killed_inside:
        assert persistence.get_run("run-1") is None
        assert queue.get_jobs_by_workflow_run("run-1") == []
        assert persistence.get_outbox_events("run-1") == []
        # The marker taken before the transaction stays until it is stale, then is reclaimed.
        assert replay.status == "in_progress"
        reclaimed = persistence.acquire_idempotency_key(
            "order-42", "run.create", now=now, stale_in_progress_after_ms=0
        )
        assert reclaimed.status == "acquired"
    else:
        assert (replay.status, replay.result) == ("replay", {"workflow_run_id": "run-1"})
        assert persistence.get_run("run-1") is not None
        assert len(queue.get_jobs_by_workflow_run("run-1")) == 1
        assert len(persistence.get_outbox_events("run-1")) == 1
    engine.dispose()
