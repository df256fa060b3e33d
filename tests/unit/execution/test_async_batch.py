"""Async-batch stages: poll timing, CompletionCheck outcomes, max_wait, and mixed groups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import (
    CompletionCheck,
    LogLevel,
    Status,
    Suspend,
    define_async_batch_stage,
    define_stage,
)
from workflow_engine.testing import FakeClock


class Doc(BaseModel):
    text: str


class Summary(BaseModel):
    summary: str


class BatchConfig(BaseModel):
    model: str = "small"
    temperature: float = 0.5


def batch_stage(stage_id, execute, check, *, input=Doc, output=Summary, config=None):
    return define_async_batch_stage(
        id=stage_id,
        name=stage_id.title(),
        input=input,
        output=output,
        config=config,
        execute=execute,
        check_completion=check,
    )


def suspend_with(**options):
    return lambda ctx: Suspend(state={"batch_id": "b1"}, **options)


class Poller:
    """check_completion that answers not-ready until call ``ready_on``; records when it ran."""

    def __init__(self, clock: FakeClock, ready_on: int = 1, **not_ready: Any) -> None:
        self.clock = clock
        self.ready_on = ready_on
        self.not_ready = not_ready
        self.times: list[datetime] = []

    def __call__(self, state, ctx) -> CompletionCheck:
        self.times.append(self.clock.now())
        if len(self.times) < self.ready_on:
            return CompletionCheck(ready=False, **self.not_ready)
        return CompletionCheck(ready=True, output={"summary": state["batch_id"]})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(make_harness, build_workflow, clock):
    """``engine(group, ...)``: a harness over a workflow of those groups, sharing ``clock``."""
    return lambda *groups: make_harness(build_workflow(Doc, *groups), clock=clock)


# -- poll timing -------------------------------------------------------------------------------
@pytest.mark.parametrize("interval", [90, 90.0, timedelta(seconds=90)])
def test_poll_interval_as_seconds_or_timedelta_sets_the_first_poll(engine, clock, interval):
    poller = Poller(clock)
    h = engine(batch_stage("b", suspend_with(poll_interval=interval), poller))
    start = clock.now()

    run = h.run("wf", {"text": "x"})

    row = h.stages_by_id(run.id)["b"]
    assert row.poll_interval == 90_000
    assert poller.times == [start + timedelta(seconds=90)]
    assert run.status == Status.COMPLETED


def test_an_explicit_next_poll_at_overrides_the_interval(engine, clock):
    first_poll = datetime(2025, 1, 1, 0, 0, 7, tzinfo=UTC)
    poller = Poller(clock)
    h = engine(batch_stage("b", suspend_with(poll_interval=600, next_poll_at=first_poll), poller))
    run_id = h.create_run("wf", {"text": "x"})

    h.step()

    assert h.stages_by_id(run_id)["b"].next_poll_at == first_poll
    assert h.drive(run_id).status == Status.COMPLETED
    assert poller.times == [first_poll]


@pytest.mark.parametrize("check_in", [15, timedelta(seconds=15)])
def test_not_ready_with_next_check_in_reschedules_after_that_delay(engine, clock, check_in):
    poller = Poller(clock, ready_on=3, next_check_in=check_in)
    h = engine(batch_stage("b", suspend_with(poll_interval=60), poller))
    start = clock.now()

    run = h.run("wf", {"text": "x"})

    assert poller.times == [start + timedelta(seconds=s) for s in (60, 75, 90)]
    assert run.status == Status.COMPLETED


def test_not_ready_without_next_check_in_waits_the_poll_interval_again(engine, clock):
    poller = Poller(clock, ready_on=3)
    h = engine(batch_stage("b", suspend_with(poll_interval=timedelta(minutes=2)), poller))
    start = clock.now()
    run_id = h.create_run("wf", {"text": "x"})

    h.step()
    clock.advance(timedelta(minutes=2))
    h.step()

    assert h.stages_by_id(run_id)["b"].next_poll_at == start + timedelta(minutes=4)
    assert h.drive(run_id).status == Status.COMPLETED
    assert poller.times == [start + timedelta(minutes=m) for m in (2, 4, 6)]


# -- CompletionCheck outcomes ------------------------------------------------------------------
def test_a_completion_error_fails_the_stage_and_the_run(engine, clock):
    later: list[str] = []
    h = engine(
        batch_stage(
            "b",
            suspend_with(poll_interval=10),
            lambda state, ctx: CompletionCheck(ready=False, error="batch b1 expired"),
        ),
        define_stage(
            id="later",
            name="Later",
            input=None,
            output=Summary,
            execute=lambda ctx: later.append("ran") or Summary(summary=""),
        ),
    )

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert run.error_message == "batch b1 expired"
    row = h.stages_by_id(run.id)["b"]
    assert (row.status, row.error_message, row.next_poll_at) == (
        Status.FAILED,
        "batch b1 expired",
        None,
    )
    assert later == []
    assert h.event_types(run.id)[-2:] == ["stage:failed", "workflow:failed"]


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda state, ctx: 1 / 0, "ZeroDivisionError: division by zero"),
        (lambda state, ctx: True, "must return CompletionCheck, not bool"),
        (
            lambda state, ctx: CompletionCheck(ready=True, output={"wrong": 1}),
            "Stage b returned an invalid output: summary: Field required",
        ),
    ],
)
def test_a_broken_check_or_an_invalid_output_fails_the_stage(engine, check, message):
    h = engine(batch_stage("b", suspend_with(poll_interval=10), check))

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert message in run.error_message
    assert h.stages_by_id(run.id)["b"].status == Status.FAILED


def test_max_wait_exceeded_fails_the_stage_and_the_run(engine, clock):
    poller = Poller(clock, ready_on=99)
    h = engine(batch_stage("b", suspend_with(poll_interval=60, max_wait=150), poller))
    start = clock.now()

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert "exceeded maxWaitUntil" in run.error_message
    assert poller.times == [start + timedelta(seconds=s) for s in (60, 120, 180)]
    assert h.stages_by_id(run.id)["b"].max_wait_until == start + timedelta(seconds=150)


def test_async_execute_and_async_check_completion_work(engine, clock):
    async def submit(ctx):
        return Suspend(state={"batch_id": ctx.input.text}, poll_interval=5)

    async def check(state, ctx):
        return CompletionCheck(ready=True, output=Summary(summary=f"async {state['batch_id']}"))

    h = engine(batch_stage("b", submit, check))

    run = h.run("wf", {"text": "job"})

    assert run.status == Status.COMPLETED
    assert run.output == {"summary": "async job"}


def test_ready_without_output_fails_the_next_group_for_missing_output(engine):
    h = engine(
        batch_stage(
            "b", suspend_with(poll_interval=5), lambda state, ctx: CompletionCheck(ready=True)
        ),
        define_stage(
            id="next", name="Next", input=Summary, output=Summary, execute=lambda ctx: ctx.input
        ),
    )

    run = h.run("wf", {"text": "x"})

    row = h.stages_by_id(run.id)["b"]
    assert (row.status, row.output, row.output_ref) == (Status.COMPLETED, None, None)
    assert run.status == Status.FAILED
    assert "missing the output of execution group 1" in run.error_message


def test_an_async_batch_stage_may_finish_without_suspending(engine):
    never: list[str] = []
    h = engine(
        batch_stage(
            "b",
            lambda ctx: Summary(summary="cached"),
            lambda state, ctx: never.append("checked") or CompletionCheck(ready=True),
        )
    )

    run = h.run("wf", {"text": "x"})

    assert run.output == {"summary": "cached"}
    assert never == []
    assert "stage:suspended" not in h.event_types(run.id)


def test_suspend_and_completion_metrics_are_merged_into_the_stage_and_run_totals(engine):
    h = engine(
        batch_stage(
            "b",
            lambda ctx: Suspend(
                state={"batch_id": "b1"}, poll_interval=5, metrics={"requests": 10}
            ),
            lambda state, ctx: CompletionCheck(
                ready=True,
                output={"summary": "s"},
                metrics={"total_cost": 1.5, "total_tokens": 300},
            ),
        )
    )

    run = h.run("wf", {"text": "x"})

    assert h.stages_by_id(run.id)["b"].metrics == {
        "requests": 10,
        "total_cost": 1.5,
        "total_tokens": 300,
    }
    assert (run.total_cost, run.total_tokens) == (1.5, 300)


def test_check_completion_context_has_config_storage_and_logging(engine):
    seen: dict[str, Any] = {}

    def submit(ctx):
        ctx.storage.save("request.json", {"prompt": ctx.input.text})
        return Suspend(state={"batch_id": "b1", "sent_at": datetime(2025, 2, 1, tzinfo=UTC)})

    def check(state, ctx):
        seen.update(
            state=state,
            config=ctx.config,
            input=ctx.input,
            stage=(ctx.stage_id, ctx.stage_name, ctx.stage_number),
            saved=ctx.storage.load("request.json"),
        )
        ctx.log("warning", "still slow", batch=state["batch_id"])
        return CompletionCheck(ready=True, output={"summary": "ok"})

    h = engine(batch_stage("batch", submit, check, config=BatchConfig))

    run = h.run("wf", {"text": "prompt"}, config={"batch": {"model": "large"}})

    assert seen["state"] == {"batch_id": "b1", "sent_at": "2025-02-01T00:00:00Z"}
    assert seen["config"] == BatchConfig(model="large", temperature=0.5)
    assert seen["input"] is None
    assert seen["stage"] == ("batch", "Batch", 1)
    assert seen["saved"] == {"prompt": "prompt"}
    [log] = h.persistence.get_logs_by_run(run.id)
    assert (log.level, log.message, log.metadata) == (LogLevel.WARN, "still slow", {"batch": "b1"})
    assert log.workflow_stage_id == h.stages_by_id(run.id)["batch"].id


# -- composition -------------------------------------------------------------------------------
def test_a_mixed_parallel_group_advances_only_when_every_member_is_done(engine, clock):
    poller = Poller(clock, ready_on=2)
    merged: list[Any] = []

    class Both(BaseModel):
        slow: Summary
        fast: Summary

    h = engine(
        [
            batch_stage("slow", suspend_with(poll_interval=30), poller),
            define_stage(
                id="fast",
                name="Fast",
                input=Doc,
                output=Summary,
                execute=lambda ctx: Summary(summary="fast"),
            ),
        ],
        define_stage(
            id="merge",
            name="Merge",
            input=Both,
            output=Summary,
            execute=lambda ctx: (
                merged.append(clock.now())
                or Summary(summary=ctx.input.slow.summary + "+" + ctx.input.fast.summary)
            ),
        ),
    )
    start = clock.now()

    run = h.run("wf", {"text": "x"})

    assert run.output == {"summary": "b1+fast"}
    assert merged == [start + timedelta(seconds=60)]


def test_chained_async_stages_pass_outputs_along(engine, clock):
    def submit(prefix):
        return lambda ctx: Suspend(
            state={
                "batch_id": prefix
                + getattr(ctx.input, "text", "")
                + getattr(ctx.input, "summary", "")
            },
            poll_interval=10,
        )

    h = engine(
        batch_stage("first", submit("1:"), Poller(clock)),
        batch_stage("second", submit("2:"), Poller(clock), input=Summary),
    )
    start = clock.now()

    run = h.run("wf", {"text": "doc"})

    assert run.status == Status.COMPLETED
    assert run.output == {"summary": "2:1:doc"}
    rows = h.stages_by_id(run.id)
    assert rows["first"].completed_at == start + timedelta(seconds=10)
    assert rows["second"].completed_at == start + timedelta(seconds=20)
    assert h.event_types(run.id).count("stage:suspended") == 2
