"""``RunWaiter`` (``WorkflowClient.wait``) on Postgres: woken by the run's own NOTIFY, without
reading the status again for every other run that ends meanwhile."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine

from workflow_engine.persistence.sql import SqlPersistence
from workflow_engine.records import NewRun
from workflow_engine.status import Status
from workflow_engine.waiting import RunWaiter

pytestmark = pytest.mark.integration


class CountingPersistence:
    """The real persistence, counting status reads."""

    def __init__(self, persistence: SqlPersistence) -> None:
        self.persistence = persistence
        self.status_reads = 0

    def get_run_status(self, run_id: str) -> Status | None:
        self.status_reads += 1
        return self.persistence.get_run_status(run_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.persistence, name)


def running_run(persistence: SqlPersistence) -> str:
    new = NewRun(workflow_id="w", workflow_name="W", workflow_type="test", status=Status.RUNNING)
    return persistence.create_run(new).id


class SignallingWaiter(RunWaiter):
    """A waiter that says when it starts waiting for a notification (after a status read
    found the run still going)."""

    def __init__(self, engine: Engine, persistence: Any) -> None:
        super().__init__(engine, persistence)
        self.waiting = threading.Event()

    def _await_notification(self, *args: Any) -> None:
        self.waiting.set()
        super()._await_notification(*args)


def test_a_waiter_wakes_for_its_run_and_passes_over_the_others(migrated_pg: Engine) -> None:
    persistence = SqlPersistence(migrated_pg)
    target = running_run(persistence)
    others = [running_run(persistence) for _ in range(30)]
    counting = CountingPersistence(persistence)
    waiter = SignallingWaiter(migrated_pg, counting)

    def finish_runs() -> None:
        waiter.waiting.wait(10)
        for run_id in others:
            persistence.update_run(run_id, status=Status.COMPLETED)
        persistence.update_run(target, status=Status.FAILED)

    finisher = threading.Thread(target=finish_runs)
    finisher.start()
    try:
        assert waiter.wait(target, timeout=30) == Status.FAILED
    finally:
        finisher.join(10)
        waiter.close()
    # one read before waiting, one after the run's own notification (plus, on a very slow
    # machine, one per second of periodic re-check): not one per other run that ended
    assert counting.status_reads <= 3, counting.status_reads


def test_a_run_that_ended_before_the_wait_is_returned_at_once(migrated_pg: Engine) -> None:
    persistence = SqlPersistence(migrated_pg)
    run_id = running_run(persistence)
    persistence.update_run(run_id, status=Status.COMPLETED)
    waiter = RunWaiter(migrated_pg, persistence)
    try:
        assert waiter.wait(run_id, timeout=5) == Status.COMPLETED
    finally:
        waiter.close()
