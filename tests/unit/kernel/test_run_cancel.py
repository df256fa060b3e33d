"""``run.cancel``: cancel a PENDING or RUNNING run, its open stages and its queued jobs."""

from __future__ import annotations

from workflow_engine import Status
from workflow_engine.kernel.commands import RunCancel


def _cancel(env, run_id, reason=None):
    return env.kernel.dispatch(RunCancel(workflow_run_id=run_id, reason=reason))


def test_cancels_a_running_run_with_its_stages_and_queued_jobs(env):
    run_id = env.start("parallel")
    env.execute(run_id, "left")

    result = _cancel(env, run_id, reason="user asked")

    run = env.run(run_id)
    assert result.cancelled is True
    assert run.status == Status.CANCELLED
    assert run.completed_at == env.clock.now()
    assert env.stage_statuses(run_id) == {"left": Status.COMPLETED, "right": Status.CANCELLED}
    right = env.stage(run_id, "right")
    assert right.completed_at == env.clock.now()
    # env.execute ran "left" without leasing its job, so both jobs were still queued
    assert {job.stage_id: job.status for job in env.jobs_of(run_id)} == {
        "left": Status.CANCELLED,
        "right": Status.CANCELLED,
    }


def test_emits_workflow_cancelled_with_the_reason(env):
    run_id = env.start()

    _cancel(env, run_id, reason="user asked")

    event = env.last_event(run_id, "workflow:cancelled")
    assert event["reason"] == "user asked"
    assert event["timestamp"] == env.clock.now().isoformat()
    assert env.event_types(run_id)[-1] == "workflow:cancelled"


def test_a_pending_run_can_be_cancelled(env):
    run_id = env.create()

    assert _cancel(env, run_id).cancelled is True
    assert env.run(run_id).status == Status.CANCELLED
    assert env.claim().claimed == []


def test_a_completed_run_is_not_cancelled(env):
    run_id = env.start()
    env.finish(run_id)
    events_before = env.event_types(run_id)

    assert _cancel(env, run_id).cancelled is False
    assert env.run(run_id).status == Status.COMPLETED
    assert env.event_types(run_id) == events_before


def test_an_unknown_run_is_not_cancelled(env):
    assert _cancel(env, "no-such-run").cancelled is False
    assert env.persistence.get_all_outbox_events() == []


def test_cancelling_twice_reports_false_the_second_time(env):
    run_id = env.start()

    assert _cancel(env, run_id).cancelled is True
    assert _cancel(env, run_id).cancelled is False
    assert env.event_types(run_id).count("workflow:cancelled") == 1


def test_a_job_that_is_running_is_left_to_its_worker(env):
    run_id = env.start()
    leased = env.jobs.dequeue("worker-1")

    _cancel(env, run_id)

    job = env.jobs.get_job(leased.id)
    assert job.status == Status.RUNNING
    assert job.lease_token == leased.lease_token


def test_a_suspended_stage_and_its_job_are_cancelled(env):
    run_id = env.start("async-batch")
    env.drain()
    assert env.stage(run_id, "batch").status == Status.SUSPENDED

    _cancel(env, run_id)

    batch = env.stage(run_id, "batch")
    assert batch.status == Status.CANCELLED
    assert batch.next_poll_at is None
    assert env.job_of(run_id, "batch").status == Status.CANCELLED
    assert env.poll().checked == 0
