"""Idempotency keys: a repeated key replays the first result without running the command again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from workflow_engine import IdempotencyInProgressError, InvalidInputError, Status
from workflow_engine.kernel.commands import RunCreate, RunRerunFrom

TEXT = {"text": "a b c"}


def _create(env, key, workflow_id="one-stage", input=TEXT):
    return env.kernel.dispatch(RunCreate(idempotency_key=key, workflow_id=workflow_id, input=input))


def _hold(env, key, command_type="run.create"):
    """Leave an in-progress marker, as a dispatch that is still running (or crashed) would."""
    acquired = env.persistence.acquire_idempotency_key(
        key, command_type, now=env.clock.now(), stale_in_progress_after_ms=None
    )
    assert acquired.status == "acquired"


# -- replay ---------------------------------------------------------------------------------------
def test_a_repeated_run_create_returns_the_first_result_and_creates_one_run(env):
    first = _create(env, "order-42")
    second = _create(env, "order-42")

    assert second == first
    assert len(env.persistence.get_all_runs()) == 1


def test_a_replay_does_not_compare_the_other_fields(env):
    first = _create(env, "order-42")

    second = _create(env, "order-42", workflow_id="two-stage", input={"text": "other"})

    assert second.workflow_run_id == first.workflow_run_id
    assert env.run(first.workflow_run_id).workflow_id == "one-stage"


def test_a_replay_writes_no_new_outbox_events(env):
    run_id = _create(env, "order-42").workflow_run_id

    _create(env, "order-42")

    assert env.event_types(run_id) == ["workflow:created"]


def test_a_replay_returns_the_stored_result_even_after_the_run_moved_on(env):
    run_id = _create(env, "order-42").workflow_run_id
    env.claim()

    replay = _create(env, "order-42")

    assert (replay.workflow_run_id, replay.status) == (run_id, Status.PENDING)
    assert env.run(run_id).status == Status.RUNNING


def test_a_different_key_creates_a_new_run(env):
    first = _create(env, "order-42")
    second = _create(env, "order-43")

    assert first.workflow_run_id != second.workflow_run_id
    assert len(env.persistence.get_all_runs()) == 2


def test_a_repeated_job_execute_key_replays_without_running_the_stage(env):
    run_id = env.start("failing")
    first = env.execute(run_id, "explode", idempotency_key="job:1:attempt:1")

    second = env.execute(run_id, "explode", idempotency_key="job:1:attempt:1")

    assert second == first
    assert second.error == "ValueError: boom"
    assert env.probe.called("explode") == 1
    assert env.event_types(run_id).count("stage:started") == 1


def test_a_new_job_execute_key_runs_the_stage_again(env):
    run_id = env.start("failing")
    env.execute(run_id, "explode", idempotency_key="job:1:attempt:1")

    env.execute(run_id, "explode", idempotency_key="job:1:attempt:2")

    assert env.probe.called("explode") == 2


def test_a_completed_stage_is_not_run_again_even_without_a_key(env):
    run_id = env.start()
    env.execute(run_id, "count")

    env.execute(run_id, "count")

    assert env.probe.called("count") == 1


def test_a_repeated_rerun_key_does_not_rerun_twice(env):
    run_id = env.start("two-stage")
    env.finish(run_id)
    first = env.kernel.dispatch(
        RunRerunFrom(workflow_run_id=run_id, from_stage_id="double", idempotency_key="again")
    )
    new_double = env.stage(run_id, "double")

    second = env.kernel.dispatch(
        RunRerunFrom(workflow_run_id=run_id, from_stage_id="double", idempotency_key="again")
    )

    assert second == first
    assert env.stage(run_id, "double").id == new_double.id
    assert env.event_types(run_id).count("workflow:started") == 2


def test_keys_are_scoped_by_command_type(env):
    run_id = _create(env, "shared").workflow_run_id
    env.claim()
    env.finish(run_id)

    rerun = env.kernel.dispatch(
        RunRerunFrom(workflow_run_id=run_id, from_stage_id="count", idempotency_key="shared")
    )

    assert rerun.deleted_stages == ["count"]
    assert env.run(run_id).status == Status.RUNNING


# -- in progress ----------------------------------------------------------------------------------
def test_a_key_still_in_progress_is_rejected(env):
    _hold(env, "order-42")

    with pytest.raises(IdempotencyInProgressError) as caught:
        _create(env, "order-42")

    assert (caught.value.key, caught.value.command_type) == ("order-42", "run.create")
    assert str(caught.value) == (
        'Command "run.create" with idempotency key "order-42" is already in progress'
    )
    assert env.persistence.get_all_runs() == []


def test_a_stale_in_progress_key_is_reclaimed_after_ten_minutes(env):
    _hold(env, "order-42")
    env.clock.advance(timedelta(minutes=10))

    result = _create(env, "order-42")

    assert env.run(result.workflow_run_id).status == Status.PENDING


def test_an_in_progress_key_younger_than_ten_minutes_is_not_reclaimed(env):
    _hold(env, "order-42")
    env.clock.advance(timedelta(minutes=10) - timedelta(seconds=1))

    with pytest.raises(IdempotencyInProgressError):
        _create(env, "order-42")


def test_the_stale_threshold_is_a_kernel_option(env_factory):
    env = env_factory(idempotency_stale_in_progress_ms=1_000)
    _hold(env, "order-42")
    env.clock.advance(timedelta(seconds=1))

    assert _create(env, "order-42").status == Status.PENDING


def test_reclaiming_can_be_turned_off(env_factory):
    env = env_factory(idempotency_stale_in_progress_ms=None)
    _hold(env, "order-42")
    env.clock.advance(timedelta(days=30))

    with pytest.raises(IdempotencyInProgressError):
        _create(env, "order-42")


# -- failures -------------------------------------------------------------------------------------
def test_the_key_is_released_when_the_command_fails(env):
    with pytest.raises(InvalidInputError):
        _create(env, "order-42", input={})

    result = _create(env, "order-42")

    assert env.run(result.workflow_run_id).input == TEXT


def test_a_command_that_fails_in_its_transaction_leaves_no_run_and_no_events(env):
    real_append = env.persistence.append_outbox_events

    def outbox_down(events):
        raise RuntimeError("outbox down")

    env.persistence.append_outbox_events = outbox_down
    with pytest.raises(RuntimeError, match="outbox down"):
        _create(env, "order-42")
    env.persistence.append_outbox_events = real_append

    assert env.persistence.get_all_runs() == []
    assert env.persistence.get_all_outbox_events() == []
    assert env.event_types(_create(env, "order-42").workflow_run_id) == ["workflow:created"]


def test_the_key_is_completed_in_the_same_transaction_as_the_run(env):
    def cannot_complete(key, command_type, result):
        raise RuntimeError("key table down")

    env.persistence.complete_idempotency_key = cannot_complete

    with pytest.raises(RuntimeError, match="key table down"):
        _create(env, "order-42")

    assert env.persistence.get_all_runs() == []
    assert env.persistence.get_all_outbox_events() == []


def test_a_duplicate_delivery_while_the_stage_runs_is_rejected_as_in_progress(env):
    seen = []

    def redeliver(ctx):
        try:
            env.execute(ctx.workflow_run_id, "count", idempotency_key="job:1:attempt:1")
        except IdempotencyInProgressError as exc:
            seen.append(exc.command_type)

    env.probe.hooks["count"] = redeliver
    run_id = env.start()

    result = env.execute(run_id, "count", idempotency_key="job:1:attempt:1")

    assert seen == ["job.execute"]
    assert result.outcome == "completed"
    assert env.probe.called("count") == 1
