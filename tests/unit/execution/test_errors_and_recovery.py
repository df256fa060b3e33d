"""Failures: retries with back-off, non-retryable errors, bad outputs, and rerun_from."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import (
    NonRetryableError,
    StageResult,
    Status,
    Suspend,
    define_stage,
)
from workflow_engine.records import LogLevel
from workflow_engine.testing import FakeClock


class Text(BaseModel):
    text: str


class Count(BaseModel):
    words: int


class Flaky:
    """Raises ``error`` on the first ``failures`` calls, then returns ``Count(words=calls)``."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ValueError("upstream timed out")
        self.calls = 0
        self.keys: list[str] = []
        self.attempts: list[int] = []

    def __call__(self, ctx) -> Count:
        self.calls += 1
        self.keys.append(ctx.idempotency_key)
        self.attempts.append(ctx.attempt)
        if self.calls <= self.failures:
            raise self.error
        return Count(words=self.calls)


class Counter:
    def __init__(self, output: Any = None) -> None:
        self.calls = 0
        self.output = output

    def __call__(self, ctx) -> Any:
        self.calls += 1
        return self.output if self.output is not None else Count(words=len(ctx.input.text))


def stage(stage_id: str, execute, *, input=Text, output=Count, **options):
    return define_stage(
        id=stage_id, name=stage_id.title(), input=input, output=output, execute=execute, **options
    )


def test_a_raising_stage_fails_with_the_exception_type_and_message(make_harness, build_workflow):
    h = make_harness(build_workflow(Text, stage("parse", Flaky(99))))

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert run.error_message == "ValueError: upstream timed out"
    row = h.stages_by_id(run.id)["parse"]
    assert (row.status, row.error_message) == (Status.FAILED, "ValueError: upstream timed out")
    assert run.completed_at is not None


def test_an_async_stage_error_is_caught_the_same_way(make_harness, build_workflow):
    async def broken(ctx):
        raise KeyError("missing")

    h = make_harness(build_workflow(Text, stage("parse", broken)))

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert run.error_message == "KeyError: 'missing'"


def test_a_failing_stage_is_retried_with_back_off_until_attempts_run_out(
    make_harness, build_workflow
):
    clock = FakeClock()
    flaky = Flaky(99)
    h = make_harness(build_workflow(Text, stage("parse", flaky)), clock=clock)
    start = clock.now()

    run = h.run("wf", {"text": "x"})

    assert flaky.calls == 3
    assert run.status == Status.FAILED
    assert clock.now() - start == timedelta(seconds=2 + 4)
    [job] = h.jobs.get_jobs_by_workflow_run(run.id)
    assert (job.status, job.attempt, job.last_error) == (
        Status.FAILED,
        3,
        "ValueError: upstream timed out",
    )
    assert h.stage_events(run.id, "parse") == ["stage:started", "stage:failed"] * 3
    assert h.event_types(run.id)[-1] == "workflow:failed"


def test_the_run_keeps_running_while_a_retry_is_pending(make_harness, build_workflow):
    clock = FakeClock()
    h = make_harness(build_workflow(Text, stage("parse", Flaky(1))), clock=clock)
    run_id = h.create_run("wf", {"text": "x"})

    h.step()

    assert h.get_run(run_id).status == Status.RUNNING
    assert h.stages_by_id(run_id)["parse"].status == Status.FAILED
    clock.advance(2)
    h.step()
    assert h.get_run(run_id).status == Status.COMPLETED


def test_a_stage_that_succeeds_on_retry_completes_the_run(make_harness, build_workflow):
    flaky = Flaky(2)
    h = make_harness(build_workflow(Text, stage("parse", flaky)))

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.COMPLETED
    assert run.output == {"words": 3}
    row = h.stages_by_id(run.id)["parse"]
    assert (row.status, row.error_message) == (Status.COMPLETED, None)
    assert len(set(flaky.keys)) == 1
    assert flaky.attempts == [0, 0, 0]


@pytest.mark.parametrize(
    ("stage_attempts", "kernel_default", "expected_calls"), [(1, None, 1), (None, 5, 5), (4, 2, 4)]
)
def test_attempt_limit_comes_from_the_stage_or_the_kernel_default(
    make_harness, build_workflow, stage_attempts, kernel_default, expected_calls
):
    flaky = Flaky(99)
    options = {} if kernel_default is None else {"default_max_attempts": kernel_default}
    h = make_harness(
        build_workflow(Text, stage("parse", flaky, max_attempts=stage_attempts)), **options
    )

    h.run("wf", {"text": "x"})

    assert flaky.calls == expected_calls


def test_later_stages_never_run_after_a_failure(make_harness, build_workflow):
    later = Counter()
    h = make_harness(
        build_workflow(
            Text,
            stage("ok", Counter(Text(text="x")), output=Text),
            stage("broken", Flaky(99)),
            stage("later", later, input=None),
        )
    )

    run = h.run("wf", {"text": "x"})

    assert later.calls == 0
    assert set(h.stages_by_id(run.id)) == {"ok", "broken"}
    assert h.stages_by_id(run.id)["ok"].status == Status.COMPLETED
    assert "later" not in {e.get("stage_id") for e in h.run_events(run.id)}
    assert "later" not in {job.stage_id for job in h.jobs.get_jobs_by_workflow_run(run.id)}


def test_a_failing_parallel_sibling_fails_the_run_but_not_the_other_sibling(
    make_harness, build_workflow
):
    next_group = Counter()
    h = make_harness(
        build_workflow(
            Text,
            [stage("good", Counter()), stage("bad", Flaky(99))],
            stage("after", next_group, input=None),
        )
    )

    run = h.run("wf", {"text": "abc"})

    rows = h.stages_by_id(run.id)
    assert (rows["good"].status, rows["good"].output) == (Status.COMPLETED, {"words": 3})
    assert rows["bad"].status == Status.FAILED
    assert run.status == Status.FAILED
    assert next_group.calls == 0


def test_non_retryable_error_fails_at_once(make_harness, build_workflow):
    flaky = Flaky(99, NonRetryableError("account closed"))
    h = make_harness(build_workflow(Text, stage("charge", flaky)))

    run = h.run("wf", {"text": "x"})

    assert flaky.calls == 1
    assert run.status == Status.FAILED
    assert run.error_message == "account closed"
    assert h.jobs.get_jobs_by_workflow_run(run.id)[0].attempt == 1


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ({"words": "many"}, "Stage bad returned an invalid output: words: "),
        ({}, "Stage bad returned an invalid output: words: Field required"),
        (Text(text="x"), "Stage bad returned an invalid output: words: Field required"),
        (None, "Stage bad returned an invalid output: (root): "),
        ([1, 2], "Stage bad returned an invalid output: (root): "),
    ],
)
def test_an_invalid_output_fails_the_stage_at_once_with_a_clear_message(
    make_harness, build_workflow, returned, message
):
    calls: list[str] = []

    def bad(ctx):
        calls.append(ctx.stage_id)
        return returned

    h = make_harness(build_workflow(Text, stage("bad", bad)))

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert run.error_message.startswith(message)
    assert calls == ["bad"]
    assert h.stages_by_id(run.id)["bad"].output is None


def test_an_output_that_is_not_json_serialisable_fails_the_stage(make_harness, build_workflow):
    class Loose(BaseModel):
        data: Any

    h = make_harness(
        build_workflow(Text, stage("bad", lambda ctx: Loose(data=object()), output=Loose))
    )

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert "Stage bad returned an output that is not JSON-serialisable" in run.error_message
    assert h.jobs.get_jobs_by_workflow_run(run.id)[0].attempt == 1


@pytest.mark.parametrize("field", ["metrics", "artifacts"])
def test_metrics_or_artifacts_that_are_not_json_serialisable_fail_the_stage(
    make_harness, build_workflow, field
):
    result = StageResult(output=Count(words=1), **{field: {"bad": object()}})
    h = make_harness(build_workflow(Text, stage("bad", lambda ctx: result)))

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert "Stage bad" in run.error_message
    assert "not JSON-serialisable" in run.error_message
    assert h.stages_by_id(run.id)["bad"].status == Status.FAILED


def test_an_input_that_does_not_match_the_stage_model_fails_without_calling_it(
    make_harness, build_workflow
):
    wrong = Counter()
    h = make_harness(
        build_workflow(Text, stage("first", Counter()), stage("second", wrong, input=Text))
    )

    run = h.run("wf", {"text": "x"})

    assert wrong.calls == 0
    assert run.status == Status.FAILED
    assert run.error_message.startswith("Invalid input for stage second: text: ")


def test_returning_suspend_from_a_sync_stage_fails_it(make_harness, build_workflow):
    h = make_harness(
        build_workflow(Text, stage("sync", lambda ctx: Suspend(state={"batch_id": "b"})))
    )

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert "returned Suspend but is not an async-batch stage" in run.error_message


def test_failures_write_error_logs_for_the_stage_and_the_run(make_harness, build_workflow):
    h = make_harness(build_workflow(Text, stage("parse", Flaky(99), max_attempts=1)))

    run = h.run("wf", {"text": "x"})

    row = h.stages_by_id(run.id)["parse"]
    logs = [
        (log.level, log.message, log.workflow_stage_id)
        for log in h.persistence.get_logs_by_run(run.id)
    ]
    assert (LogLevel.ERROR, "Stage parse failed: ValueError: upstream timed out", row.id) in logs
    assert (LogLevel.ERROR, "Workflow failed: ValueError: upstream timed out", None) in logs


def test_rerun_from_a_failed_stage_reuses_earlier_outputs(make_harness, build_workflow):
    upstream = Counter(Text(text="hello world"))
    flaky = Flaky(3)
    h = make_harness(
        build_workflow(Text, stage("fetch", upstream, output=Text), stage("parse", flaky))
    )
    run = h.run("wf", {"text": "x"})
    assert run.status == Status.FAILED
    fetch_row = h.stages_by_id(run.id)["fetch"]

    result = h.rerun_from(run.id, "parse")
    rerun = h.drive(run.id)

    assert result.deleted_stages == ["parse"]
    assert rerun.status == Status.COMPLETED
    assert rerun.error_message is None
    assert rerun.output == {"words": 4}
    assert upstream.calls == 1
    rows = h.stages_by_id(run.id)
    assert rows["fetch"].id == fetch_row.id
    assert (rows["parse"].attempt, rows["fetch"].attempt) == (1, 0)
    assert flaky.attempts[-1] == 1
    assert flaky.keys[-1] != flaky.keys[0]
