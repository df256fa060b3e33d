"""``run.transition``: advance, complete or fail a run once its current group has settled."""

from __future__ import annotations

from datetime import timedelta

from workflow_engine import StageResult, Status


def _flaky(ctx):
    raise RuntimeError("flaky")


def test_noop_for_a_missing_run(env):
    assert env.transition("no-such-run").action == "noop"


def test_noop_for_a_completed_run(env):
    run_id = env.start()
    env.finish(run_id)
    events_before = env.event_types(run_id)

    result = env.transition(run_id)

    assert (result.action, result.next_group) == ("noop", None)
    assert env.event_types(run_id) == events_before


def test_noop_for_a_pending_run_without_stages(env):
    run_id = env.create()

    result = env.transition(run_id)

    assert result.action == "noop"
    assert env.run(run_id).status == Status.PENDING
    assert env.stages(run_id) == []
    assert env.jobs_of(run_id) == []


def test_noop_while_a_stage_is_still_active(env):
    run_id = env.start("parallel")
    env.execute(run_id, "left")

    result = env.transition(run_id)

    assert result.action == "noop"
    assert env.stage_statuses(run_id) == {"left": Status.COMPLETED, "right": Status.PENDING}


def test_noop_when_the_workflow_is_no_longer_registered(env):
    run_id = env.start()
    env.execute(run_id, "count")
    env.unregister("one-stage")

    assert env.transition(run_id).action == "noop"
    assert env.run(run_id).status == Status.RUNNING


def test_advances_to_the_next_group_and_enqueues_it(env):
    run_id = env.start("two-stage")
    env.execute(run_id, "count")
    events_before = env.event_types(run_id)

    result = env.transition(run_id)

    assert (result.action, result.next_group) == ("advanced", 2)
    double = env.stage(run_id, "double")
    assert (double.status, double.execution_group, double.stage_number) == (
        Status.PENDING,
        2,
        2,
    )
    job = env.job_of(run_id, "double")
    assert (job.status, job.payload) == (Status.PENDING, {"config": env.run(run_id).config})
    assert env.event_types(run_id) == events_before  # advancing emits nothing


def test_the_next_group_inherits_the_highest_stage_attempt(env):
    run_id = env.start("two-stage")
    count = env.stage(run_id, "count")
    env.persistence.update_stage(count.id, attempt=4)
    env.execute(run_id, "count")

    env.transition(run_id)

    assert env.stage(run_id, "double").attempt == 4


def test_a_second_transition_does_not_advance_again(env):
    run_id = env.start("two-stage")
    env.execute(run_id, "count")
    env.transition(run_id)

    again = env.transition(run_id)

    assert again.action == "noop"
    assert len([job for job in env.jobs_of(run_id) if job.stage_id == "double"]) == 1


def test_completes_the_run_with_the_last_output_and_duration(env):
    run_id = env.start("two-stage")
    env.clock.advance(timedelta(seconds=2))
    env.execute(run_id, "count")
    env.transition(run_id)
    env.clock.advance(timedelta(seconds=3))
    env.execute(run_id, "double")

    result = env.transition(run_id)

    run = env.run(run_id)
    assert result.action == "completed"
    assert run.status == Status.COMPLETED
    assert run.output == {"value": 6}
    assert run.completed_at == env.clock.now()
    assert run.duration == 5000  # since the run was created
    event = env.last_event(run_id, "workflow:completed")
    assert event == {
        "type": "workflow:completed",
        "timestamp": env.clock.now().isoformat(),
        "workflow_run_id": run_id,
        "duration": 5000,
        "output": {"value": 6},
        "total_cost": 0.0,
        "total_tokens": 0,
    }


def test_completion_adds_up_stage_costs_and_tokens(env):
    env.probe.hooks["count"] = lambda ctx: StageResult(
        output={"words": 3}, metrics={"total_cost": 0.5, "total_tokens": 100}
    )
    env.probe.hooks["double"] = lambda ctx: StageResult(
        output={"value": 6}, metrics={"total_cost": 0.25, "total_tokens": 20}
    )
    run_id = env.start("two-stage")

    run = env.finish(run_id)

    assert (run.total_cost, run.total_tokens) == (0.75, 120)
    event = env.last_event(run_id, "workflow:completed")
    assert (event["total_cost"], event["total_tokens"]) == (0.75, 120)


def test_a_parallel_last_group_output_is_keyed_by_stage_id(env):
    run_id = env.start("fan-out")
    env.execute(run_id, "left")
    env.execute(run_id, "right")

    env.transition(run_id)

    assert env.run(run_id).output == {"left": {"words": 3}, "right": {"letters": 3}}


def test_completion_reads_a_large_output_from_the_blob_store(env_factory):
    env = env_factory(inline_output_max_bytes=10)
    run_id = env.start()
    env.execute(run_id, "count")
    assert env.stage(run_id, "count").output_ref is not None

    env.transition(run_id)

    assert env.run(run_id).output == {"words": 3}


def test_fails_the_run_when_a_stage_failed_for_good(env):
    run_id = env.start("failing")
    env.execute(run_id, "explode")

    result = env.transition(run_id)

    run = env.run(run_id)
    assert result.action == "failed"
    assert run.status == Status.FAILED
    assert run.error_message == "ValueError: boom"
    assert run.completed_at == env.clock.now()
    assert env.last_event(run_id, "workflow:failed")["error"] == "ValueError: boom"
    assert "double" not in env.stage_statuses(run_id)


def test_noop_when_another_transition_moved_the_run_first(env):
    run_id = env.start("two-stage")
    env.execute(run_id, "count")
    real_get_run = env.persistence.get_run

    def stale_get_run(rid):
        run = real_get_run(rid)
        return run.model_copy(update={"version": run.version - 1}) if run else run

    env.persistence.get_run = stale_get_run

    result = env.transition(run_id)

    env.persistence.get_run = real_get_run
    assert result.action == "noop"
    assert "double" not in env.stage_statuses(run_id)
    assert [job.stage_id for job in env.jobs_of(run_id)] == ["count"]


def test_a_failed_stage_with_a_queued_retry_does_not_fail_the_run(env):
    env.probe.hooks["left"] = _flaky
    run_id = env.start("parallel")
    env.drain()  # left fails (retry queued with back-off), right completes

    result = env.transition(run_id)

    assert result.action == "noop"
    assert env.run(run_id).status == Status.RUNNING
    left_job = env.job_of(run_id, "left")
    assert (left_job.status, left_job.attempt) == (Status.PENDING, 1)
    assert env.stage_statuses(run_id) == {"left": Status.FAILED, "right": Status.COMPLETED}


def test_the_run_fails_once_the_retries_are_used_up(env):
    env.probe.hooks["left"] = _flaky
    run_id = env.start("parallel")
    for _ in range(3):
        env.drain()
        env.clock.advance(timedelta(minutes=1))

    result = env.transition(run_id)

    assert env.job_of(run_id, "left").status == Status.FAILED
    assert env.probe.called("left") == 3
    assert result.action == "failed"
    assert env.run(run_id).error_message == "RuntimeError: flaky"
