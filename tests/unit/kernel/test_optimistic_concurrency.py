"""Optimistic concurrency: every write bumps a row's ``version``; a stale expectation fails."""

from __future__ import annotations

import pytest

from workflow_engine import StaleVersionError, Status


def test_a_run_starts_at_version_one_and_every_update_bumps_it(env):
    run_id = env.create()
    assert env.run(run_id).version == 1

    env.persistence.update_run(run_id, priority=3)
    env.persistence.update_run(run_id, priority=4)

    assert env.run(run_id).version == 3


def test_a_stage_starts_at_version_one_and_every_update_bumps_it(env):
    run_id = env.start()
    stage = env.stage(run_id, "count")
    assert stage.version == 1

    env.execute(run_id, "count")  # RUNNING, then COMPLETED

    assert env.stage(run_id, "count").version == 3


def test_an_update_with_the_current_version_succeeds(env):
    run_id = env.create()

    updated = env.persistence.update_run(run_id, expected_version=1, priority=8)

    assert (updated.version, updated.priority) == (2, 8)


def test_an_update_with_a_stale_run_version_fails_and_changes_nothing(env):
    run_id = env.create()
    env.persistence.update_run(run_id, priority=8)

    with pytest.raises(StaleVersionError) as caught:
        env.persistence.update_run(run_id, expected_version=1, priority=1)

    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert "WorkflowRun" in str(caught.value) and "expected 1" in str(caught.value)
    assert env.run(run_id).priority == 8


def test_an_update_with_a_stale_stage_version_fails(env):
    run_id = env.start()
    stage = env.stage(run_id, "count")
    env.persistence.update_stage(stage.id, status=Status.RUNNING)

    with pytest.raises(StaleVersionError, match="WorkflowStage"):
        env.persistence.update_stage(stage.id, expected_version=1, status=Status.FAILED)

    assert env.stage(run_id, "count").status == Status.RUNNING


def test_claiming_a_pending_run_bumps_its_version(env):
    run_id = env.create()

    claimed = env.persistence.claim_next_pending_run()

    assert claimed.id == run_id
    assert (claimed.version, env.run(run_id).version) == (2, 2)


def test_each_kernel_decision_on_a_run_bumps_its_version_once(env):
    run_id = env.start("two-stage")  # created 1, claimed 2
    env.execute(run_id, "count")  # stage writes leave the run row alone
    assert env.run(run_id).version == 2

    env.transition(run_id)  # advancing claims the run
    assert env.run(run_id).version == 3
