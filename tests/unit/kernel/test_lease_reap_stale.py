"""``lease.reapStale``: release jobs whose lease expired, fail those with no attempts left."""

from __future__ import annotations

from datetime import timedelta

from workflow_engine import Status
from workflow_engine.kernel.commands import LeaseReapStale, RunReapStuck, RunRerunFrom

THRESHOLD_MS = 300_000


def _reap(env, threshold_ms=THRESHOLD_MS):
    return env.kernel.dispatch(LeaseReapStale(stale_threshold_ms=threshold_ms)).released


def _lease_and_lose(env, run_id):
    """A worker leases the run's job, marks its stage RUNNING, then vanishes."""
    job = env.jobs.dequeue("worker-1")
    env.persistence.update_stage(env.stages(run_id)[0].id, status=Status.RUNNING)
    env.clock.advance(timedelta(minutes=6))
    return job


def test_releases_a_job_whose_lease_expired(env):
    run_id = env.start()
    leased = _lease_and_lose(env, run_id)

    assert _reap(env) == 1

    job = env.jobs.get_job(leased.id)
    assert job.status == Status.PENDING
    assert (job.worker_id, job.locked_at, job.lease_token) == (None, None, None)
    assert job.attempt == 1
    assert env.run(run_id).status == Status.RUNNING


def test_releases_nothing_when_no_lease_is_stale(env):
    assert _reap(env) == 0


def test_a_fresh_lease_is_kept(env):
    env.start()
    leased = env.jobs.dequeue("worker-1")
    env.clock.advance(timedelta(minutes=4))

    assert _reap(env) == 0
    assert env.jobs.get_job(leased.id).status == Status.RUNNING


def test_a_heartbeat_keeps_a_long_job_leased(env):
    env.start()
    leased = env.jobs.dequeue("worker-1")
    for _ in range(6):
        env.clock.advance(timedelta(minutes=4))
        env.jobs.touch_job(leased.id, lease_token=leased.lease_token)

    assert _reap(env) == 0


def test_a_job_with_no_attempts_left_fails_its_stage_and_run(env_factory):
    env = env_factory(default_max_attempts=1)
    run_id = env.start()
    leased = _lease_and_lose(env, run_id)

    assert _reap(env) == 1

    message = "Lease expired after 1 attempts: the worker was lost"
    job = env.jobs.get_job(leased.id)
    assert (job.status, job.last_error) == (Status.FAILED, message)
    stage = env.stage(run_id, "count")
    assert (stage.status, stage.error_message, stage.lease_token) == (Status.FAILED, message, None)
    run = env.run(run_id)
    assert (run.status, run.error_message) == (Status.FAILED, message)
    assert env.event_types(run_id)[-2:] == ["stage:failed", "workflow:failed"]


def test_a_lost_job_is_retried_until_its_attempts_are_used_up(env):
    run_id = env.start()
    for attempt in (1, 2):
        _lease_and_lose(env, run_id)
        assert _reap(env) == 1
        assert env.job_of(run_id, "count").attempt == attempt
        assert env.run(run_id).status == Status.RUNNING
    _lease_and_lose(env, run_id)

    _reap(env)

    assert env.job_of(run_id, "count").status == Status.FAILED
    assert env.run(run_id).status == Status.FAILED


def test_an_exhausted_job_that_never_started_its_stage_fails_the_stage_and_run(env_factory):
    env = env_factory(default_max_attempts=1)
    run_id = env.start()
    env.jobs.dequeue("worker-1")  # leased, but the worker died before marking the stage RUNNING
    env.clock.advance(timedelta(minutes=6))

    assert _reap(env) == 1

    assert env.stage(run_id, "count").status == Status.FAILED
    assert env.run(run_id).status == Status.FAILED
    assert env.event_types(run_id)[-2:] == ["stage:failed", "workflow:failed"]


def test_an_exhausted_job_does_not_come_back_through_the_stuck_run_reaper(env_factory):
    env = env_factory(default_max_attempts=1)
    run_id = env.start()
    env.jobs.dequeue("worker-1")
    env.clock.advance(timedelta(minutes=6))
    _reap(env)
    env.clock.advance(timedelta(minutes=16))

    env.kernel.dispatch(RunReapStuck(stuck_threshold_ms=900_000))

    assert [job.status for job in env.jobs_of(run_id)] == [Status.FAILED]


def test_an_exhausted_job_of_a_completed_stage_leaves_the_stage_alone(env_factory):
    env = env_factory(default_max_attempts=1)
    run_id = env.start("two-stage")
    env.jobs.dequeue("worker-1")
    env.execute(run_id, "count")  # the stage finished, then the worker died before acking
    env.clock.advance(timedelta(minutes=6))

    assert _reap(env) == 1

    assert env.stage(run_id, "count").status == Status.COMPLETED
    assert env.run(run_id).status == Status.RUNNING
    assert "stage:failed" not in env.event_types(run_id)


def test_an_exhausted_job_from_before_a_rerun_leaves_the_new_stage_alone(env_factory):
    env = env_factory(default_max_attempts=1)
    run_id = env.start()
    env.jobs.dequeue("worker-1")
    env.persistence.update_stage(env.stage(run_id, "count").id, status=Status.RUNNING)
    env.persistence.update_run(run_id, status=Status.FAILED)
    env.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="count"))
    env.clock.advance(timedelta(minutes=6))

    assert _reap(env) == 1  # the old lease

    assert env.stage(run_id, "count").status == Status.PENDING
    assert env.run(run_id).status == Status.RUNNING
    assert env.finish(run_id).status == Status.COMPLETED
