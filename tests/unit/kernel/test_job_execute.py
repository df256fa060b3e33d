"""``job.execute``: mark the stage RUNNING, run it outside any transaction, record the result."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from workflow_engine import (
    NonRetryableError,
    RunNotFoundError,
    StageNotFoundError,
    StageResult,
    Status,
    Suspend,
    WorkflowBuilder,
    WorkflowNotFoundError,
    define_stage,
)
from workflow_engine.kernel.commands import JobExecute, RunCancel
from workflow_engine.records import LogLevel


def _flaky(ctx):
    raise RuntimeError("flaky")


def _logs(env, run_id, level):
    return [log.message for log in env.persistence.get_logs_by_run(run_id) if log.level == level]


# -- success --------------------------------------------------------------------------------------
def test_a_sync_stage_completes_with_its_output_stored_inline(env):
    run_id = env.start()

    def take_two_seconds(ctx):
        env.clock.advance(2)

    env.probe.hooks["count"] = take_two_seconds

    result = env.execute(run_id, "count")

    assert (result.outcome, result.output, result.ghost) == ("completed", {"words": 3}, False)
    stage = env.stage(run_id, "count")
    assert stage.status == Status.COMPLETED
    assert (stage.output, stage.output_ref) == ({"words": 3}, None)
    assert stage.completed_at == env.clock.now()
    assert stage.duration == 2000
    assert stage.error_message is None


def test_emits_stage_started_then_stage_completed(env):
    run_id = env.start()

    env.execute(run_id, "count")

    started, completed = env.events(run_id)[-2:]
    assert started == {
        "type": "stage:started",
        "timestamp": env.clock.now().isoformat(),
        "workflow_run_id": run_id,
        "stage_id": "count",
        "stage_name": "Count words",
        "stage_number": 1,
    }
    assert completed["type"] == "stage:completed"
    assert (completed["stage_id"], completed["stage_name"], completed["duration"]) == (
        "count",
        "Count words",
        0,
    )


def test_a_large_output_goes_to_the_blob_store(env_factory):
    env = env_factory(inline_output_max_bytes=10)
    run_id = env.start()

    result = env.execute(run_id, "count")

    stage = env.stage(run_id, "count")
    assert result.output == {"words": 3}
    assert stage.output is None
    assert stage.output_ref == f"workflow-v2/one-stage/{run_id}/count/output.json"
    assert env.blobs.get(stage.output_ref) == {"words": 3}


def test_artifacts_are_written_to_blobs_beside_the_output(env):
    env.probe.hooks["count"] = lambda ctx: StageResult(
        output={"words": 3}, artifacts={"raw text": {"text": "a b c"}}
    )
    run_id = env.start()

    env.execute(run_id, "count")

    key = f"workflow-v2/one-stage/{run_id}/count/artifacts/raw%20text.json"
    assert env.stage(run_id, "count").artifact_keys == {"raw text": key}
    assert env.blobs.get(key) == {"text": "a b c"}


def test_metrics_are_stored_on_the_stage(env):
    env.probe.hooks["count"] = lambda ctx: StageResult(
        output={"words": 3}, metrics={"total_tokens": 12}
    )
    run_id = env.start()

    env.execute(run_id, "count")

    assert env.stage(run_id, "count").metrics == {"total_tokens": 12}


def test_the_stage_is_visible_as_running_while_it_executes(env):
    seen = []
    env.probe.hooks["count"] = lambda ctx: seen.append(
        env.persistence.get_stage(ctx.workflow_run_id, "count").status
    )
    run_id = env.start()

    env.execute(run_id, "count")

    assert seen == [Status.RUNNING]


def test_progress_events_are_written_before_the_completion_event(env):
    def report(ctx):
        ctx.progress(25, "quarter")
        ctx.progress(75, "most", batch=2)

    env.probe.hooks["count"] = report
    run_id = env.start()
    assert env.event_types(run_id)[-1] == "workflow:started"

    env.execute(run_id, "count")

    events = env.events(run_id)[-4:]
    assert [e["type"] for e in events] == [
        "stage:started",
        "stage:progress",
        "stage:progress",
        "stage:completed",
    ]
    assert (events[1]["progress"], events[1]["message"], events[1]["details"]) == (
        25.0,
        "quarter",
        None,
    )
    assert events[2]["details"] == {"batch": 2}


def test_a_later_group_gets_the_previous_output_as_input(env):
    run_id = env.start("two-stage")
    env.execute(run_id, "count")
    env.transition(run_id)

    result = env.execute(run_id, "double")

    call = env.probe.calls[-1]
    assert call.input.words == 3
    assert call.workflow_context == {"count": {"words": 3}}
    assert result.output == {"value": 6}


def test_a_stage_after_a_parallel_group_gets_outputs_keyed_by_stage_id(env):
    run_id = env.start("parallel")
    env.execute(run_id, "left")
    env.execute(run_id, "right")
    env.transition(run_id)

    result = env.execute(run_id, "join")

    call = env.probe.calls[-1]
    assert (call.input.left.words, call.input.right.letters) == (3, 3)
    assert result.output == {"total": 6}


def test_the_context_carries_the_attempt_and_a_stable_idempotency_key(env):
    run_id = env.start()
    env.persistence.update_stage(env.stage(run_id, "count").id, attempt=2)

    env.execute(run_id, "count")

    call = env.probe.calls[-1]
    assert call.attempt == 2
    assert call.idempotency_key == f"{run_id}:count:2"


def test_the_stage_gets_its_config_slice_as_a_model(env):
    run_id = env.start(config={"count": {"multiplier": 4}})

    result = env.execute(run_id, "count")

    assert env.probe.calls[-1].config.multiplier == 4
    assert env.probe.calls[-1].config.label == "count"
    assert result.output == {"words": 12}


def test_a_missing_stage_row_is_created_with_its_config_slice(env):
    run_id = env.start(config={"count": {"multiplier": 2}})
    env.persistence.delete_stage(env.stage(run_id, "count").id)

    env.execute(run_id, "count")

    stage = env.stage(run_id, "count")
    assert (stage.status, stage.execution_group, stage.stage_number) == (Status.COMPLETED, 1, 1)
    assert stage.config == {"multiplier": 2, "label": "count"}


def test_a_config_that_fails_its_schema_logs_a_warning_and_runs_with_raw_values(env):
    env.probe.hooks["count"] = lambda ctx: {"words": 1}
    run_id = env.start()

    result = env.execute(run_id, "count", config={"count": {"multiplier": "x"}})

    assert result.outcome == "completed"
    assert env.probe.calls[-1].config.multiplier == "x"
    (warning,) = _logs(env, run_id, LogLevel.WARN)
    assert "falling back to raw config" in warning


def test_an_async_stage_runs_to_completion(env):
    class Nothing(BaseModel):
        pass

    class Answer(BaseModel):
        answer: int

    async def compute(ctx):
        return Answer(answer=42)

    stage = define_stage(id="answer", name="Answer", input=None, output=Answer, execute=compute)
    env.registry.register(WorkflowBuilder("async", "Async", input=Nothing).pipe(stage).build())
    run_id = env.start("async", input={})

    result = env.execute(run_id, "answer")

    assert result.output == {"answer": 42}
    assert env.stage(run_id, "answer").status == Status.COMPLETED


# -- failure --------------------------------------------------------------------------------------
def test_a_raising_stage_fails_with_its_error_and_leaves_the_run_running(env):
    run_id = env.start("failing")

    result = env.execute(run_id, "explode")

    assert (result.outcome, result.error, result.retryable, result.ghost) == (
        "failed",
        "ValueError: boom",
        None,
        False,
    )
    stage = env.stage(run_id, "explode")
    assert (stage.status, stage.error_message) == (Status.FAILED, "ValueError: boom")
    assert stage.completed_at == env.clock.now()
    assert env.run(run_id).status == Status.RUNNING


def test_a_failure_emits_stage_failed_and_writes_an_error_log(env):
    run_id = env.start("failing")

    env.execute(run_id, "explode")

    event = env.last_event(run_id, "stage:failed")
    assert (event["stage_id"], event["stage_name"], event["error"]) == (
        "explode",
        "Explode",
        "ValueError: boom",
    )
    assert _logs(env, run_id, LogLevel.ERROR) == ["Stage explode failed: ValueError: boom"]


def test_a_non_retryable_error_is_reported_as_not_retryable(env):
    def refuse(ctx):
        raise NonRetryableError("bad request")

    env.probe.hooks["count"] = refuse
    run_id = env.start()

    result = env.execute(run_id, "count")

    assert (result.error, result.retryable) == ("bad request", False)


def test_an_invalid_output_fails_the_stage_without_retry(env):
    env.probe.hooks["count"] = lambda ctx: {"words": "many"}
    run_id = env.start()

    result = env.execute(run_id, "count")

    assert result.outcome == "failed"
    assert result.retryable is False
    assert result.error.startswith("Stage count returned an invalid output: words:")
    assert env.stage(run_id, "count").output is None


def test_invalid_stage_input_fails_without_calling_the_stage(env):
    run_id = env.start()
    env.persistence.update_run(run_id, input={"txt": "a"})

    result = env.execute(run_id, "count")

    assert result.retryable is False
    assert result.error == "Invalid input for stage count: text: Field required"
    assert env.probe.called("count") == 0


def test_a_missing_previous_group_output_fails_loudly(env):
    run_id = env.start("two-stage")

    result = env.execute(run_id, "double")

    assert result.outcome == "failed"
    assert result.error == "Stage double is missing the output of execution group 1 (count)"
    assert env.probe.called("double") == 0
    assert env.stage(run_id, "double").status == Status.FAILED


def test_returning_suspend_from_a_sync_stage_fails_it(env):
    env.probe.hooks["count"] = lambda ctx: Suspend(state={})
    run_id = env.start()

    result = env.execute(run_id, "count")

    assert result.outcome == "failed"
    assert "is not an async-batch stage" in result.error


def test_an_output_over_the_payload_limit_fails_without_retry(env_factory):
    env = env_factory(max_payload_bytes=200, inline_output_max_bytes=100)
    env.probe.hooks["count"] = lambda ctx: StageResult(
        output={"words": 1}, artifacts={"big": "x" * 500}
    )
    run_id = env.start()

    result = env.execute(run_id, "count")

    assert result.retryable is False
    assert "more than the limit of 200 bytes" in result.error
    assert env.blobs.size == 0


def test_a_retry_after_a_failure_completes_and_clears_the_error(env):
    run_id = env.start()
    env.probe.hooks["count"] = _flaky
    env.execute(run_id, "count")
    env.probe.hooks.clear()

    result = env.execute(run_id, "count")

    stage = env.stage(run_id, "count")
    assert result.outcome == "completed"
    assert (stage.status, stage.error_message) == (Status.COMPLETED, None)


# -- suspension -----------------------------------------------------------------------------------
def test_an_async_batch_stage_suspends_with_its_state_and_poll_times(env):
    run_id = env.start("async-batch")
    now = env.clock.now()

    result = env.execute(run_id, "batch")

    assert (result.outcome, result.next_poll_at) == ("suspended", now + timedelta(seconds=30))
    stage = env.stage(run_id, "batch")
    assert stage.status == Status.SUSPENDED
    assert stage.suspended_state == {"batch_id": "b-1"}
    assert stage.next_poll_at == now + timedelta(seconds=30)
    assert stage.poll_interval == 30_000
    assert stage.max_wait_until == now + timedelta(hours=1)


def test_a_suspension_emits_stage_and_workflow_suspended_and_schedules_a_poll(env):
    run_id = env.start("async-batch")
    due = env.clock.now() + timedelta(seconds=30)

    env.execute(run_id, "batch")

    suspended, workflow_suspended = env.events(run_id)[-2:]
    assert (suspended["type"], suspended["stage_id"], suspended["next_poll_at"]) == (
        "stage:suspended",
        "batch",
        due.isoformat(),
    )
    assert (workflow_suspended["type"], workflow_suspended["stage_id"]) == (
        "workflow:suspended",
        "batch",
    )
    assert [(s["command_type"], s["payload"], s["run_at"]) for s in env.scheduler.scheduled] == [
        ("stage.pollSuspended", {"workflow_run_id": run_id, "stage_id": "batch"}, due)
    ]


def test_a_suspended_stage_leaves_its_run_running(env):
    run_id = env.start("async-batch")

    env.execute(run_id, "batch")

    assert env.run(run_id).status == Status.RUNNING


def test_an_explicit_next_poll_at_is_honoured(env):
    at = env.clock.now() + timedelta(minutes=7)
    env.probe.suspend = Suspend(state={"batch_id": "b-2"}, next_poll_at=at)
    run_id = env.start("async-batch")

    result = env.execute(run_id, "batch")

    assert result.next_poll_at == at
    assert env.stage(run_id, "batch").next_poll_at == at


def test_a_suspended_state_over_the_payload_limit_fails_the_stage(env_factory):
    env = env_factory(max_payload_bytes=100, inline_output_max_bytes=50)
    env.probe.suspend = Suspend(state={"blob": "x" * 200})
    run_id = env.start("async-batch")

    result = env.execute(run_id, "batch")

    assert (result.outcome, result.retryable) == ("failed", False)
    assert result.error.startswith("The suspended state of stage batch is")
    assert env.stage(run_id, "batch").status == Status.FAILED


# -- preconditions and ghosts ---------------------------------------------------------------------
def test_an_unknown_workflow_raises(env):
    run_id = env.start()

    with pytest.raises(WorkflowNotFoundError):
        env.kernel.dispatch(
            JobExecute(workflow_run_id=run_id, workflow_id="nope", stage_id="count")
        )


def test_an_unknown_stage_raises(env):
    run_id = env.start()

    with pytest.raises(StageNotFoundError, match="Stage nope not found in workflow one-stage"):
        env.execute(run_id, "nope")


def test_an_unknown_run_raises(env):
    with pytest.raises(RunNotFoundError, match="WorkflowRun nope not found"):
        env.kernel.dispatch(
            JobExecute(workflow_run_id="nope", workflow_id="one-stage", stage_id="count")
        )


def test_a_job_of_a_run_that_is_not_running_is_a_ghost(env):
    run_id = env.create()
    events_before = env.event_types(run_id)

    result = env.execute(run_id, "count")

    assert (result.outcome, result.ghost, result.retryable) == ("failed", True, False)
    assert result.error == f"Run {run_id} is PENDING, expected RUNNING — ghost job discarded"
    assert env.stages(run_id) == []
    assert env.event_types(run_id) == events_before
    assert env.probe.called("count") == 0


def test_a_run_cancelled_while_the_stage_runs_discards_its_result(env):
    def cancel_then_report(ctx):
        env.kernel.dispatch(RunCancel(workflow_run_id=ctx.workflow_run_id))
        ctx.progress(50, "half")

    env.probe.hooks["count"] = cancel_then_report
    run_id = env.start()

    result = env.execute(run_id, "count")

    assert result.ghost is True
    assert "is CANCELLED, expected RUNNING" in result.error
    assert env.stage(run_id, "count").status == Status.CANCELLED
    assert env.stage(run_id, "count").output is None
    types = env.event_types(run_id)
    assert types[-1] == "workflow:cancelled"
    assert "stage:progress" not in types and "stage:completed" not in types


def test_an_already_completed_stage_is_not_executed_again(env):
    run_id = env.start()
    env.execute(run_id, "count")
    events_before = env.event_types(run_id)

    result = env.execute(run_id, "count")

    assert (result.outcome, result.output) == ("completed", {"words": 3})
    assert env.probe.called("count") == 1
    assert env.event_types(run_id) == events_before


def test_a_result_from_a_lease_that_was_taken_over_is_discarded(env):
    def newer_attempt_takes_over(ctx):
        env.persistence.update_stage(ctx.stage_record_id, lease_token="newer-lease")

    env.probe.hooks["count"] = newer_attempt_takes_over
    run_id = env.start()

    result = env.execute(run_id, "count", lease_token="older-lease")

    assert result.ghost is True
    assert result.error == "Stage count was taken over by a newer attempt — stale result discarded"
    stage = env.stage(run_id, "count")
    assert (stage.status, stage.output) == (Status.RUNNING, None)
    assert "stage:completed" not in env.event_types(run_id)


def test_the_lease_token_is_recorded_on_the_stage_while_it_runs(env):
    seen = []
    env.probe.hooks["count"] = lambda ctx: seen.append(
        env.persistence.get_stage_by_id(ctx.stage_record_id).lease_token
    )
    run_id = env.start()

    env.execute(run_id, "count", lease_token="lease-1")

    assert seen == ["lease-1"]
