"""``run.reapStuck``: recover, or fail with a stored reason, runs that stopped making progress.

Ours departs from the original: a run with a queued or leased job, or with a suspended stage, is
never reaped (its owner is alive), and an orphaned PENDING stage is re-enqueued instead.
"""

from __future__ import annotations

from datetime import timedelta

from workflow_engine import Status
from workflow_engine.kernel.commands import RunReapStuck

THRESHOLD_MS = 900_000
PAST_THRESHOLD = timedelta(minutes=16)


def _reap(env, threshold_ms=THRESHOLD_MS):
    result = env.kernel.dispatch(RunReapStuck(stuck_threshold_ms=threshold_ms))
    return (result.transitioned, result.failed)


def _stuck(env, workflow_id="one-stage"):
    """A RUNNING run whose stage is RUNNING but whose worker and job are gone."""
    run_id = env.start(workflow_id)
    job = env.jobs.dequeue("worker-1")
    stage = env.stages(run_id)[0]
    env.persistence.update_stage(stage.id, status=Status.RUNNING)
    env.jobs.fail(job.id, "worker vanished", should_retry=False, lease_token=job.lease_token)
    return run_id


def test_a_run_with_no_activity_and_nothing_live_is_failed_with_a_stored_reason(env):
    run_id = _stuck(env)
    env.clock.advance(PAST_THRESHOLD)

    assert _reap(env) == (1, 1)

    run = env.run(run_id)
    message = "Stuck run reaped after 900000ms inactivity"
    assert run.status == Status.FAILED
    assert run.completed_at == env.clock.now()
    assert run.error_message == message
    assert run.output == {
        "error": {
            "code": "STUCK_RUN_REAPED",
            "message": message,
            "stage_statuses": [{"stage_id": "count", "status": "RUNNING"}],
        }
    }
    assert env.last_event(run_id, "workflow:failed")["error"] == message


def test_a_run_with_recent_activity_is_not_reaped(env):
    run_id = _stuck(env)
    env.clock.advance(timedelta(minutes=14))

    assert _reap(env) == (0, 0)
    assert env.run(run_id).status == Status.RUNNING


def test_pending_and_completed_runs_are_ignored(env):
    completed = env.start()
    env.finish(completed)
    pending = env.create()
    env.clock.advance(timedelta(hours=2))

    assert _reap(env) == (0, 0)
    assert env.run(pending).status == Status.PENDING
    assert env.run(completed).status == Status.COMPLETED


def test_a_run_whose_job_is_still_queued_is_not_reaped(env):
    run_id = env.start()
    env.clock.advance(timedelta(hours=2))

    assert _reap(env) == (0, 0)
    assert env.run(run_id).status == Status.RUNNING


def test_a_long_stage_with_a_live_lease_is_not_reaped(env):
    run_id = env.start()
    job = env.jobs.dequeue("worker-1")
    env.persistence.update_stage(env.stage(run_id, "count").id, status=Status.RUNNING)
    env.clock.advance(timedelta(hours=2))
    env.jobs.touch_job(job.id, lease_token=job.lease_token)

    assert _reap(env) == (0, 0)
    assert env.run(run_id).status == Status.RUNNING


def test_a_run_waiting_on_a_suspended_stage_is_not_reaped(env):
    run_id = env.start("async-batch")
    env.drain()
    env.clock.advance(timedelta(minutes=50))  # before max_wait (1 h); poll not run

    assert _reap(env) == (0, 0)
    assert env.stage(run_id, "batch").status == Status.SUSPENDED


def test_an_orphaned_pending_stage_is_re_enqueued_instead_of_failed(env):
    run_id = env.start()
    env.jobs.clear()  # the job message and row were lost
    env.clock.advance(PAST_THRESHOLD)

    assert _reap(env) == (0, 0)

    assert env.run(run_id).status == Status.RUNNING
    (job,) = env.jobs_of(run_id)
    assert (job.stage_id, job.status) == ("count", Status.PENDING)
    assert env.finish(run_id).status == Status.COMPLETED


def test_a_settled_run_that_missed_its_transition_is_transitioned(env):
    run_id = env.start()
    env.drain()  # the host died before dispatching run.transition
    env.clock.advance(PAST_THRESHOLD)

    assert _reap(env) == (1, 0)
    assert env.run(run_id).status == Status.COMPLETED


def test_a_failed_stage_that_missed_its_transition_fails_the_run_with_its_error(env):
    run_id = env.start("failing")
    for _ in range(3):
        env.drain()
        env.clock.advance(timedelta(minutes=1))
    env.clock.advance(PAST_THRESHOLD)

    assert _reap(env) == (1, 1)
    assert env.run(run_id).error_message == "ValueError: boom"


def test_a_run_that_recovered_after_selection_is_skipped(env):
    run_id = _stuck(env)
    env.clock.advance(PAST_THRESHOLD)
    real_get_stuck_runs = env.persistence.get_stuck_runs

    def select_then_recover(since):
        candidates = real_get_stuck_runs(since)
        env.persistence.update_run(run_id, status=Status.COMPLETED)
        return candidates

    env.persistence.get_stuck_runs = select_then_recover

    assert _reap(env) == (0, 0)
    assert env.run(run_id).status == Status.COMPLETED


def test_a_reaped_run_is_not_reaped_twice(env):
    run_id = _stuck(env)
    env.clock.advance(PAST_THRESHOLD)
    _reap(env)
    env.clock.advance(PAST_THRESHOLD)

    assert _reap(env) == (0, 0)
    assert env.event_types(run_id).count("workflow:failed") == 1


def test_transitioned_and_failed_count_every_reaped_run(env):
    for _ in range(2):
        _stuck(env)
    env.clock.advance(PAST_THRESHOLD)

    assert _reap(env) == (2, 2)
