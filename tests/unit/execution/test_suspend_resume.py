"""Suspending a stage for external work and resuming it when check_completion says ready."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import CompletionCheck, Status, Suspend, define_async_batch_stage, define_stage
from workflow_engine.testing import FakeClock


class Doc(BaseModel):
    text: str


class Summary(BaseModel):
    summary: str


class Batch:
    """An external batch API: ``ready`` decides what check_completion answers."""

    def __init__(self) -> None:
        self.ready = False
        self.executed = 0
        self.checks: list[dict[str, Any]] = []
        self.execute_resume_states: list[Any] = []
        self.check_resume_states: list[Any] = []

    def execute(self, ctx):
        self.executed += 1
        self.execute_resume_states.append(ctx.resume_state)
        return Suspend(
            state={"batch_id": f"batch-{ctx.input.text}", "count": 1},
            poll_interval=timedelta(minutes=5),
            max_wait=timedelta(hours=2),
        )

    def check(self, state, ctx):
        self.checks.append(state)
        self.check_resume_states.append(ctx.resume_state)
        if not self.ready:
            return CompletionCheck(ready=False)
        return CompletionCheck(ready=True, output={"summary": f"done {state['batch_id']}"})


@pytest.fixture
def batch() -> Batch:
    return Batch()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def harness(make_harness, build_workflow, batch, clock):
    summarise = define_async_batch_stage(
        id="summarise",
        name="Summarise",
        input=Doc,
        output=Summary,
        execute=batch.execute,
        check_completion=batch.check,
    )
    publish = define_stage(
        id="publish",
        name="Publish",
        input=Summary,
        output=Summary,
        execute=lambda ctx: Summary(summary=ctx.input.summary.upper()),
    )
    prepare = define_stage(
        id="prepare", name="Prepare", input=Doc, output=Doc, execute=lambda ctx: ctx.input
    )
    return make_harness(build_workflow(Doc, prepare, summarise, publish), clock=clock)


def test_a_suspending_stage_is_stored_suspended_with_its_state(harness, clock):
    start = clock.now()
    run_id = harness.create_run("wf", {"text": "t1"})

    harness.step()

    assert harness.get_run(run_id).status == Status.RUNNING
    row = harness.stages_by_id(run_id)["summarise"]
    assert row.status == Status.SUSPENDED
    assert row.suspended_state == {"batch_id": "batch-t1", "count": 1}
    assert row.next_poll_at == start + timedelta(minutes=5)
    assert row.poll_interval == 5 * 60 * 1000
    assert row.max_wait_until == start + timedelta(hours=2)
    assert row.completed_at is None
    assert "publish" not in harness.stages_by_id(run_id)


def test_suspension_emits_stage_and_workflow_suspended_events(harness, clock):
    run_id = harness.create_run("wf", {"text": "t1"})
    harness.step()
    harness.flush()

    events = harness.run_events(run_id)
    suspended = [e for e in events if e["type"] == "stage:suspended"]
    assert [e["type"] for e in events][-2:] == ["stage:suspended", "workflow:suspended"]
    assert suspended[0]["stage_id"] == "summarise"
    assert suspended[0]["next_poll_at"] == (clock.now() + timedelta(minutes=5)).isoformat()
    assert events[-1]["stage_id"] == "summarise"


def test_nothing_is_checked_before_the_next_poll_is_due(harness, batch, clock):
    harness.create_run("wf", {"text": "t1"})
    harness.step()

    clock.advance(timedelta(minutes=4, seconds=59))
    harness.step()

    assert batch.checks == []


def test_a_ready_stage_completes_and_the_run_continues_to_the_next_group(harness, batch, clock):
    run_id = harness.create_run("wf", {"text": "t1"})
    harness.step()
    batch.ready = True

    clock.advance(timedelta(minutes=5))
    harness.step()

    run = harness.get_run(run_id)
    assert run.status == Status.COMPLETED
    assert run.output == {"summary": "DONE BATCH-T1"}
    row = harness.stages_by_id(run_id)["summarise"]
    assert (row.status, row.output, row.next_poll_at) == (
        Status.COMPLETED,
        {"summary": "done batch-t1"},
        None,
    )
    assert row.duration == 5 * 60 * 1000
    assert batch.executed == 1


def test_execute_is_not_called_again_and_resume_state_reaches_check_completion(harness, batch):
    batch.ready = True

    run = harness.run("wf", {"text": "t2"})

    assert run.status == Status.COMPLETED
    assert batch.executed == 1
    assert batch.execute_resume_states == [None]
    assert batch.checks == [{"batch_id": "batch-t2", "count": 1}]
    assert batch.check_resume_states == [{"batch_id": "batch-t2", "count": 1}]


def test_completed_stages_are_kept_while_another_is_suspended(harness):
    run_id = harness.create_run("wf", {"text": "t1"})
    harness.step()

    prepare = harness.stages_by_id(run_id)["prepare"]

    assert (prepare.status, prepare.output) == (Status.COMPLETED, {"text": "t1"})


def test_a_parallel_group_waits_for_its_suspended_member(make_harness, build_workflow, batch):
    clock = FakeClock()
    summarise = define_async_batch_stage(
        id="summarise",
        name="Summarise",
        input=Doc,
        output=Summary,
        execute=batch.execute,
        check_completion=batch.check,
    )
    quick = define_stage(
        id="quick", name="Quick", input=Doc, output=Summary, execute=lambda c: Summary(summary="q")
    )
    after_calls: list[dict[str, Any]] = []
    after = define_stage(
        id="after",
        name="After",
        input=None,
        output=Summary,
        execute=lambda ctx: after_calls.append(dict(ctx.workflow_context)) or Summary(summary="a"),
    )
    h = make_harness(build_workflow(Doc, [summarise, quick], after), clock=clock)
    run_id = h.create_run("wf", {"text": "p"})

    h.step()
    clock.advance(timedelta(minutes=5))
    h.step()

    assert h.stages_by_id(run_id)["quick"].status == Status.COMPLETED
    assert h.stages_by_id(run_id)["summarise"].status == Status.SUSPENDED
    assert after_calls == []
    batch.ready = True
    assert h.drive(run_id).status == Status.COMPLETED
    assert after_calls == [{"summarise": {"summary": "done batch-p"}, "quick": {"summary": "q"}}]
