"""``stage.pollSuspended``: ask due suspended stages whether their external work is done."""

from __future__ import annotations

from datetime import timedelta

from workflow_engine import CompletionCheck, Status
from workflow_engine.kernel.commands import RunCancel

POLL_INTERVAL = timedelta(seconds=30)


def _suspended(env):
    """A RUNNING ``async-batch`` run whose ``batch`` stage (and job) are SUSPENDED, now due."""
    run_id = env.start("async-batch")
    env.drain()
    assert env.stage(run_id, "batch").status == Status.SUSPENDED
    assert env.job_of(run_id, "batch").status == Status.SUSPENDED
    env.clock.advance(POLL_INTERVAL)
    return run_id


def _counts(result):
    return (result.checked, result.resumed, result.failed)


def test_a_ready_stage_is_completed_with_its_output(env):
    run_id = _suspended(env)

    result = env.poll()

    assert _counts(result) == (1, 1, 0)
    assert result.resumed_workflow_run_ids == [run_id]
    stage = env.stage(run_id, "batch")
    assert (stage.status, stage.output, stage.next_poll_at) == (
        Status.COMPLETED,
        {"words": 7},
        None,
    )
    assert stage.duration == 30_000
    event = env.last_event(run_id, "stage:completed")
    assert (event["stage_id"], event["duration"]) == ("batch", 30_000)


def test_resuming_closes_the_suspended_job_row(env):
    run_id = _suspended(env)

    env.poll()

    assert env.job_of(run_id, "batch").status == Status.COMPLETED


def test_a_resumed_run_moves_on_when_transitioned(env):
    run_id = _suspended(env)
    env.poll()

    assert env.transition(run_id).action == "advanced"
    env.drain()
    env.transition(run_id)

    assert env.run(run_id).output == {"value": 14}


def test_a_ready_check_without_output_completes_the_stage_without_one(env):
    env.probe.check = lambda state, ctx: CompletionCheck(ready=True)
    run_id = _suspended(env)

    result = env.poll()

    stage = env.stage(run_id, "batch")
    assert _counts(result) == (1, 1, 0)
    assert (stage.status, stage.output, stage.output_ref) == (Status.COMPLETED, None, None)


def test_an_invalid_output_fails_the_stage_and_the_run(env):
    env.probe.check = lambda state, ctx: CompletionCheck(ready=True, output={"words": "lots"})
    run_id = _suspended(env)

    result = env.poll()

    assert _counts(result) == (1, 0, 1)
    stage = env.stage(run_id, "batch")
    assert stage.status == Status.FAILED
    assert stage.error_message.startswith("Stage batch returned an invalid output: words:")
    assert env.run(run_id).status == Status.FAILED


def test_a_large_resumed_output_goes_to_the_blob_store(env_factory):
    env = env_factory(inline_output_max_bytes=5)
    run_id = _suspended(env)

    env.poll()

    stage = env.stage(run_id, "batch")
    assert stage.output is None
    assert env.blobs.get(stage.output_ref) == {"words": 7}


def test_check_completion_gets_the_suspended_state_and_the_stage_context(env):
    run_id = _suspended(env)

    env.poll()

    assert env.probe.checks == [
        {"state": {"batch_id": "b-1"}, "stage_id": "batch", "attempt": 0},
    ]
    assert env.run(run_id).status == Status.RUNNING


def test_a_stage_that_is_not_ready_is_rescheduled_after_next_check_in(env):
    env.probe.check = lambda state, ctx: CompletionCheck(ready=False, next_check_in=10)
    run_id = _suspended(env)
    events_before = env.event_types(run_id)
    env.scheduler.scheduled.clear()

    result = env.poll()

    assert _counts(result) == (1, 0, 0)
    stage = env.stage(run_id, "batch")
    assert stage.status == Status.SUSPENDED
    assert stage.next_poll_at == env.clock.now() + timedelta(seconds=10)
    assert env.event_types(run_id) == events_before
    assert [s["run_at"] for s in env.scheduler.scheduled] == [stage.next_poll_at]


def test_without_next_check_in_the_poll_interval_is_used(env):
    env.probe.check = lambda state, ctx: CompletionCheck(ready=False)
    run_id = _suspended(env)

    env.poll()

    assert env.stage(run_id, "batch").next_poll_at == env.clock.now() + POLL_INTERVAL


def test_nothing_is_checked_when_nothing_is_suspended(env):
    env.start()

    result = env.poll()

    assert _counts(result) == (0, 0, 0)
    assert result.resumed_workflow_run_ids == []


def test_a_stage_is_not_checked_before_its_next_poll(env):
    run_id = _suspended(env)
    env.clock.advance(-timedelta(seconds=1))

    assert _counts(env.poll()) == (0, 0, 0)
    assert env.probe.checks == []
    assert env.stage(run_id, "batch").status == Status.SUSPENDED


def test_a_check_error_fails_the_stage_and_the_run(env):
    env.probe.check = lambda state, ctx: CompletionCheck(ready=False, error="batch rejected")
    run_id = _suspended(env)

    result = env.poll()

    assert _counts(result) == (1, 0, 1)
    stage = env.stage(run_id, "batch")
    assert (stage.status, stage.error_message, stage.next_poll_at) == (
        Status.FAILED,
        "batch rejected",
        None,
    )
    run = env.run(run_id)
    assert (run.status, run.error_message) == (Status.FAILED, "batch rejected")
    assert env.event_types(run_id)[-2:] == ["stage:failed", "workflow:failed"]
    assert env.last_event(run_id, "stage:failed")["error"] == "batch rejected"


def test_a_failed_check_closes_the_suspended_job_row(env):
    env.probe.check = lambda state, ctx: CompletionCheck(ready=False, error="batch rejected")
    run_id = _suspended(env)

    env.poll()

    assert env.job_of(run_id, "batch").status == Status.FAILED


def test_a_raising_check_fails_the_stage_and_the_run_with_its_message(env):
    def provider_down(state, ctx):
        raise RuntimeError("provider down")

    env.probe.check = provider_down
    run_id = _suspended(env)

    result = env.poll()

    assert result.failed == 1
    assert env.stage(run_id, "batch").error_message == "RuntimeError: provider down"
    assert env.run(run_id).status == Status.FAILED


def test_a_stage_past_its_max_wait_fails(env):
    env.probe.check = lambda state, ctx: CompletionCheck(ready=False)
    run_id = _suspended(env)
    max_wait_until = env.stage(run_id, "batch").max_wait_until
    env.clock.set(max_wait_until)

    result = env.poll()

    assert result.failed == 1
    message = f"Stage batch exceeded maxWaitUntil ({max_wait_until.isoformat()}) while suspended"
    assert env.stage(run_id, "batch").error_message == message
    assert env.run(run_id).error_message == message


def test_a_stage_only_past_its_next_poll_is_not_timed_out(env):
    env.probe.check = lambda state, ctx: CompletionCheck(ready=False)
    run_id = _suspended(env)
    env.clock.set(env.stage(run_id, "batch").max_wait_until - timedelta(seconds=1))

    assert _counts(env.poll()) == (1, 0, 0)
    assert env.stage(run_id, "batch").status == Status.SUSPENDED


def test_a_run_cancelled_during_the_check_is_not_completed(env):
    def cancel_then_ready(state, ctx):
        env.kernel.dispatch(RunCancel(workflow_run_id=ctx.workflow_run_id))
        return CompletionCheck(ready=True, output={"words": 7})

    env.probe.check = cancel_then_ready
    run_id = _suspended(env)

    result = env.poll()

    assert _counts(result) == (1, 0, 0)
    assert result.resumed_workflow_run_ids == []
    stage = env.stage(run_id, "batch")
    assert (stage.status, stage.output) == (Status.CANCELLED, None)
    assert "stage:completed" not in env.event_types(run_id)
    assert env.job_of(run_id, "batch").status == Status.CANCELLED


def test_a_suspended_stage_of_a_run_that_stopped_is_cancelled_with_its_job(env):
    run_id = _suspended(env)
    env.persistence.update_run(run_id, status=Status.FAILED)

    result = env.poll()

    assert _counts(result) == (1, 0, 0)
    assert env.probe.checks == []
    assert env.stage(run_id, "batch").status == Status.CANCELLED
    assert env.job_of(run_id, "batch").status == Status.CANCELLED


def test_a_stage_whose_workflow_is_gone_fails_its_run(env):
    run_id = _suspended(env)
    env.unregister("async-batch")

    result = env.poll()

    assert _counts(result) == (1, 0, 1)
    message = "Workflow async-batch not found in registry"
    assert env.stage(run_id, "batch").error_message == message
    run = env.run(run_id)
    assert (run.status, run.error_message) == (Status.FAILED, message)
    assert env.job_of(run_id, "batch").status == Status.FAILED


def test_max_checks_bounds_one_poll(env):
    run_ids = [_suspended(env) for _ in range(3)]

    first = env.poll(max_checks=2)
    second = env.poll(max_checks=2)

    assert _counts(first) == (2, 2, 0)
    assert _counts(second) == (1, 1, 0)
    assert sorted(first.resumed_workflow_run_ids + second.resumed_workflow_run_ids) == sorted(
        run_ids
    )


def test_a_poll_can_be_limited_to_one_run(env):
    other = _suspended(env)
    run_id = _suspended(env)

    result = env.poll(workflow_run_id=run_id)

    assert result.resumed_workflow_run_ids == [run_id]
    assert env.stage(other, "batch").status == Status.SUSPENDED


def test_a_run_that_stops_during_the_check_still_gets_its_suspended_job_closed(env):
    def run_fails_meanwhile(state, ctx):
        env.persistence.update_run(ctx.workflow_run_id, status=Status.FAILED)
        return CompletionCheck(ready=True, output={"words": 7})

    env.probe.check = run_fails_meanwhile
    run_id = _suspended(env)

    result = env.poll()

    assert _counts(result) == (1, 0, 0)
    assert env.stage(run_id, "batch").status == Status.CANCELLED
    assert env.job_of(run_id, "batch").status == Status.CANCELLED
