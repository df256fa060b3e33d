"""``run.rerunFrom``: delete a finished run's stages from a group on, and run them again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from workflow_engine import (
    InvalidStateError,
    RunNotFoundError,
    StageNotFoundError,
    StageResult,
    Status,
    WorkflowEngineError,
)
from workflow_engine.kernel.commands import RunRerunFrom


def _rerun(env, run_id, stage_id, **kw):
    return env.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id=stage_id, **kw))


def _finished(env, workflow_id="two-stage"):
    run_id = env.start(workflow_id)
    assert env.finish(run_id).status in (Status.COMPLETED, Status.FAILED)
    return run_id


def test_recreates_the_target_group_as_fresh_pending_rows(env):
    run_id = _finished(env)
    old_double = env.stage(run_id, "double")

    result = _rerun(env, run_id, "double")

    assert result.model_dump() == {
        "workflow_run_id": run_id,
        "from_stage_id": "double",
        "deleted_stages": ["double"],
    }
    double = env.stage(run_id, "double")
    assert double.id != old_double.id
    assert (double.status, double.output, double.completed_at) == (Status.PENDING, None, None)
    assert env.stage(run_id, "count").status == Status.COMPLETED


def test_the_new_rows_get_the_previous_attempt_plus_one(env):
    run_id = _finished(env)
    _rerun(env, run_id, "double")
    env.finish(run_id)

    _rerun(env, run_id, "double")

    assert env.stage(run_id, "double").attempt == 2
    assert env.stage(run_id, "count").attempt == 0


def test_rerun_from_the_first_stage_deletes_every_group_and_re_enqueues_group_one(env):
    run_id = _finished(env)
    jobs_before = len(env.jobs_of(run_id))

    result = _rerun(env, run_id, "count")

    assert result.deleted_stages == ["count", "double"]
    assert env.stage_statuses(run_id) == {"count": Status.PENDING}
    new_jobs = env.jobs_of(run_id)[jobs_before:]
    assert [(job.stage_id, job.status) for job in new_jobs] == [("count", Status.PENDING)]


def test_the_run_is_running_again_with_its_results_cleared(env):
    env.probe.hooks["double"] = lambda ctx: StageResult(
        output={"value": 6}, metrics={"total_cost": 1.5, "total_tokens": 9}
    )
    run_id = _finished(env)
    env.clock.advance(timedelta(minutes=5))

    _rerun(env, run_id, "double")

    run = env.run(run_id)
    assert run.status == Status.RUNNING
    assert run.started_at == env.clock.now()
    assert (run.completed_at, run.duration, run.output, run.error_message) == (
        None,
        None,
        None,
        None,
    )
    assert (run.total_cost, run.total_tokens) == (0.0, 0)


def test_emits_workflow_started(env):
    run_id = _finished(env)

    _rerun(env, run_id, "double")

    assert env.event_types(run_id)[-1] == "workflow:started"


def test_a_failed_run_can_be_rerun_and_complete(env):
    run_id = _finished(env, "failing")
    env.probe.hooks["explode"] = lambda ctx: {"words": 1}

    _rerun(env, run_id, "explode")

    run = env.finish(run_id)
    assert run.status == Status.COMPLETED
    assert run.output == {"value": 2}


def test_downstream_groups_inherit_the_rerun_attempt(env):
    run_id = _finished(env)

    _rerun(env, run_id, "count")
    env.finish(run_id)

    assert {s.stage_id: s.attempt for s in env.stages(run_id)} == {"count": 1, "double": 1}
    assert [call.attempt for call in env.probe.calls if call.stage_id == "double"] == [0, 1]


def test_earlier_outputs_feed_the_rerun_stage(env):
    run_id = _finished(env)
    calls_before = env.probe.called("count")

    _rerun(env, run_id, "double")
    run = env.finish(run_id)

    assert env.probe.called("count") == calls_before
    assert env.probe.calls[-1].input.words == 3
    assert run.output == {"value": 6}


def test_blobs_of_deleted_stages_are_removed(env_factory):
    env = env_factory(inline_output_max_bytes=10)
    run_id = _finished(env)
    count_ref = env.stage(run_id, "count").output_ref
    double_ref = env.stage(run_id, "double").output_ref
    assert env.blobs.has(count_ref) and env.blobs.has(double_ref)

    _rerun(env, run_id, "double")

    assert env.blobs.has(count_ref)
    assert not env.blobs.has(double_ref)


def test_an_unknown_run_raises_run_not_found(env):
    with pytest.raises(RunNotFoundError, match="WorkflowRun nope not found"):
        _rerun(env, "nope", "count")


def test_a_running_run_cannot_be_rerun_and_nothing_changes(env):
    run_id = env.start("two-stage")
    stages_before = env.stages(run_id)

    with pytest.raises(InvalidStateError) as caught:
        _rerun(env, run_id, "count")

    assert str(caught.value) == (
        "Cannot rerun workflow in RUNNING state. Must be COMPLETED or FAILED."
    )
    assert env.stages(run_id) == stages_before
    assert len(env.jobs_of(run_id)) == 1


def test_an_unknown_stage_raises_stage_not_found(env):
    run_id = _finished(env)

    with pytest.raises(StageNotFoundError, match="Stage nope not found in workflow two-stage"):
        _rerun(env, run_id, "nope")

    assert env.run(run_id).status == Status.COMPLETED


def test_a_later_group_needs_earlier_stages_to_have_run(env):
    run_id = env.create("two-stage")
    env.persistence.update_run(run_id, status=Status.FAILED)

    with pytest.raises(WorkflowEngineError, match="previous stages have not been executed"):
        _rerun(env, run_id, "double")

    assert env.stages(run_id) == []


def test_a_rerun_that_fails_to_commit_keeps_the_old_stages_and_enqueues_nothing(env):
    run_id = _finished(env)
    stages_before = env.stages(run_id)
    jobs_before = env.jobs_of(run_id)

    def outbox_down(events):
        raise RuntimeError("outbox down")

    env.persistence.append_outbox_events = outbox_down

    with pytest.raises(RuntimeError, match="outbox down"):
        _rerun(env, run_id, "count")

    assert env.stages(run_id) == stages_before
    assert env.jobs_of(run_id) == jobs_before
    assert env.run(run_id).status == Status.COMPLETED
