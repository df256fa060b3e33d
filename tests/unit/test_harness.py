"""WorkflowTestHarness: whole runs in memory, time moved only by the harness's FakeClock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import (
    CompletionCheck,
    Status,
    Suspend,
    WorkflowBuilder,
    WorkflowNotFoundError,
    create_plugin_runner,
    define_async_batch_stage,
    define_plugin,
    define_stage,
)
from workflow_engine.kernel.commands import RunCancel
from workflow_engine.testing import FakeClock, WorkflowTestHarness
from workflow_engine.testing.clock import DEFAULT_START


class In(BaseModel):
    text: str


class Out(BaseModel):
    words: int


class Cfg(BaseModel):
    factor: int = 1


def count(ctx: Any) -> Out:
    return Out(words=len(ctx.input.text.split()) * ctx.config.factor)


COUNT = define_stage(id="count", name="Count", input=In, output=Out, config=Cfg, execute=count)
WC = WorkflowBuilder("wc", "Word count", input=In, output=Out).pipe(COUNT).build()


def batch_stage(
    stage_id: str, clock: FakeClock, checks: list[datetime], ready_after: int, **suspend: Any
) -> Any:
    """An async-batch stage that records when it is checked and is ready at the n-th check."""

    def execute(ctx: Any) -> Suspend:
        return Suspend(state={"id": stage_id}, **suspend)

    def check(state: dict[str, Any], ctx: Any) -> CompletionCheck[Any]:
        checks.append(clock.now())
        if len(checks) < ready_after:
            return CompletionCheck(ready=False, next_check_in=30)
        return CompletionCheck(ready=True, output={"words": len(checks)})

    return define_async_batch_stage(
        id=stage_id, name=stage_id, input=In, output=Out, execute=execute, check_completion=check
    )


def test_runs_a_workflow_to_completion_without_moving_the_clock() -> None:
    harness = WorkflowTestHarness(WC)
    run = harness.run("wc", {"text": "a b c"})
    assert run.status == Status.COMPLETED
    assert run.output == {"words": 3}
    assert harness.clock.now() == DEFAULT_START
    assert [e["type"] for e in harness.events.events] == [
        "workflow:created",
        "workflow:started",
        "stage:started",
        "stage:completed",
        "workflow:completed",
    ]


def test_passes_config_to_the_run() -> None:
    harness = WorkflowTestHarness(WC)
    run = harness.run("wc", {"text": "a b"}, config={"count": {"factor": 10}})
    assert run.output == {"words": 20}


def test_advances_the_clock_to_each_poll_of_a_suspended_stage() -> None:
    clock = FakeClock()
    checks: list[datetime] = []
    wf = (
        WorkflowBuilder("b", "B", input=In, output=Out)
        .pipe(batch_stage("batch", clock, checks, ready_after=3, poll_interval=60))
        .build()
    )
    harness = WorkflowTestHarness(wf, clock=clock)
    run = harness.drive(harness.create_run("b", {"text": "x"}))

    assert run.status == Status.COMPLETED
    assert run.output == {"words": 3}
    start = DEFAULT_START
    assert checks == [
        start + timedelta(seconds=60),
        start + timedelta(seconds=90),
        start + timedelta(seconds=120),
    ]
    assert harness.clock.now() == start + timedelta(seconds=120)
    types = [e["type"] for e in harness.events.events]
    assert types.count("stage:suspended") == 1
    assert types[-1] == "workflow:completed"


def test_parallel_suspended_stages_are_polled_at_their_own_times() -> None:
    fast: list[datetime] = []
    slow: list[datetime] = []
    clock = FakeClock()
    wf = (
        WorkflowBuilder("p", "P", input=In, output=Out)
        .parallel(
            [
                batch_stage("fast", clock, fast, ready_after=1, poll_interval=10),
                batch_stage("slow", clock, slow, ready_after=1, poll_interval=100),
            ]
        )
        .build()
    )
    run = WorkflowTestHarness(wf, clock=clock).run("p", {"text": "x"})
    assert run.status == Status.COMPLETED
    assert fast == [DEFAULT_START + timedelta(seconds=10)]
    assert slow == [DEFAULT_START + timedelta(seconds=100)]
    assert run.output == {"fast": {"words": 1}, "slow": {"words": 1}}


def test_a_suspended_stage_that_exceeds_max_wait_fails_the_run() -> None:
    clock = FakeClock()
    checks: list[datetime] = []
    wf = (
        WorkflowBuilder("t", "T", input=In, output=Out)
        .pipe(
            batch_stage("batch", clock, checks, ready_after=10**6, poll_interval=60, max_wait=150)
        )
        .build()
    )
    harness = WorkflowTestHarness(wf, clock=clock)
    run = harness.run("t", {"text": "x"})
    assert run.status == Status.FAILED
    assert "exceeded maxWaitUntil" in (run.error_message or "")
    assert harness.clock.now() >= DEFAULT_START + timedelta(seconds=150)
    assert harness.events.events[-1]["type"] == "workflow:failed"


def test_waits_out_retry_backoff_on_the_fake_clock() -> None:
    attempts: list[datetime] = []

    def flaky(ctx: Any) -> Out:
        attempts.append(harness.clock.now())
        if len(attempts) < 3:
            raise RuntimeError("flaky")
        return Out(words=1)

    stage = define_stage(id="flaky", name="Flaky", input=In, output=Out, execute=flaky)
    harness = WorkflowTestHarness(
        WorkflowBuilder("f", "F", input=In, output=Out).pipe(stage).build()
    )
    run = harness.run("f", {"text": "x"})
    assert run.status == Status.COMPLETED
    assert attempts == [
        DEFAULT_START,
        DEFAULT_START + timedelta(seconds=2),
        DEFAULT_START + timedelta(seconds=6),
    ]


def test_a_failing_stage_ends_the_run_failed() -> None:
    def boom(ctx: Any) -> Out:
        raise ValueError("bad text")

    stage = define_stage(id="boom", name="Boom", input=In, output=Out, execute=boom, max_attempts=1)
    harness = WorkflowTestHarness(
        WorkflowBuilder("x", "X", input=In, output=Out).pipe(stage).build()
    )
    run = harness.run("x", {"text": "x"})
    assert run.status == Status.FAILED
    assert run.error_message == "ValueError: bad text"
    assert [s.status for s in harness.get_stages(run.id)] == [Status.FAILED]


def test_a_cancelled_run_is_returned_as_it_is() -> None:
    harness = WorkflowTestHarness(WC)
    run_id = harness.create_run("wc", {"text": "a"})
    harness.kernel.dispatch(RunCancel(workflow_run_id=run_id))
    assert harness.drive(run_id).status == Status.CANCELLED
    assert harness.jobs.get_all_jobs() == []


def test_raises_a_clear_error_when_nothing_can_move_the_run() -> None:
    harness = WorkflowTestHarness(WC)
    run_id = harness.create_run("wc", {"text": "a"})
    harness.host.run_maintenance_tick()  # claimed: its job is queued
    harness.jobs.clear()  # ... and then the queue loses it
    with pytest.raises(RuntimeError, match=rf"run {run_id} is RUNNING and nothing can move it"):
        harness.drive(run_id)


def test_gives_up_after_max_rounds() -> None:
    clock = FakeClock()
    checks: list[datetime] = []
    wf = (
        WorkflowBuilder("n", "N", input=In, output=Out)
        .pipe(
            batch_stage("batch", clock, checks, ready_after=10**6, poll_interval=60, max_wait=10**6)
        )
        .build()
    )
    harness = WorkflowTestHarness(wf, clock=clock)
    run_id = harness.create_run("n", {"text": "x"})
    with pytest.raises(RuntimeError, match=rf"run {run_id} did not finish in 5 rounds"):
        harness.drive(run_id, max_rounds=5)
    assert 1 <= len(checks) <= 5


def test_an_unknown_workflow_is_a_typed_error() -> None:
    harness = WorkflowTestHarness(WC)
    with pytest.raises(WorkflowNotFoundError):
        harness.run("nope", {"text": "a"})
    assert harness.persistence.get_all_runs() == []


def test_get_run_of_an_unknown_id_raises() -> None:
    with pytest.raises(KeyError, match="no run nope"):
        WorkflowTestHarness(WC).get_run("nope")


def test_delivers_events_to_a_given_event_sink() -> None:
    seen: list[str] = []
    runner = create_plugin_runner(
        plugins=[
            define_plugin(
                id="p", name="P", on=["workflow:completed"], handle=lambda e: seen.append(e["type"])
            )
        ]
    )
    harness = WorkflowTestHarness(WC, event_sink=runner)
    harness.run("wc", {"text": "a"})
    assert seen == ["workflow:completed"]
    assert harness.events.events == []


def test_uses_a_given_clock_and_kernel_options() -> None:
    clock = FakeClock(datetime.fromisoformat("2030-06-01T12:00:00+00:00"))
    harness = WorkflowTestHarness(WC, clock=clock, inline_output_max_bytes=1)
    run = harness.run("wc", {"text": "a b"})
    assert run.created_at == clock.now()
    [stage] = harness.get_stages(run.id)
    assert stage.output is None and stage.output_ref is not None  # the option reached the kernel
    assert run.output == {"words": 2}


def test_several_workflows_and_repeated_runs() -> None:
    other = WorkflowBuilder("other", "Other", input=In, output=Out).pipe(COUNT).build()
    harness = WorkflowTestHarness(WC, other)
    first = harness.run("wc", {"text": "a"})
    second = harness.run("other", {"text": "a b"})
    third = harness.run("wc", {"text": "a b c"})
    assert (first.output, second.output, third.output) == (
        {"words": 1},
        {"words": 2},
        {"words": 3},
    )
    assert len({first.id, second.id, third.id}) == 3
