"""``run.claimPending``: claim PENDING runs one transaction each, prepare and enqueue group 1."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from workflow_engine import Status, WorkflowBuilder, define_stage
from workflow_engine.records import LogLevel, NewStage


def test_claims_a_run_and_enqueues_its_first_group(env):
    run_id = env.create("two-stage", priority=7)
    env.clock.advance(5)

    result = env.claim(worker_id="w-9")

    run = env.run(run_id)
    (claimed,) = result.claimed
    assert (claimed.workflow_run_id, claimed.workflow_id) == (run_id, "two-stage")
    assert run.status == Status.RUNNING
    assert run.started_at == env.clock.now()
    (job,) = env.jobs_of(run_id)
    assert claimed.job_ids == [job.id]
    assert (job.stage_id, job.status, job.priority, job.attempt) == (
        "count",
        Status.PENDING,
        7,
        0,
    )
    assert job.payload == {"config": run.config}


def test_creates_pending_rows_for_the_first_group_only(env):
    run_id = env.create("two-stage", config={"count": {"multiplier": 2}})

    env.claim()

    (stage,) = env.stages(run_id)
    assert (stage.stage_id, stage.status, stage.execution_group, stage.stage_number) == (
        "count",
        Status.PENDING,
        1,
        1,
    )
    assert stage.attempt == 0
    assert stage.config == {"multiplier": 2, "label": "count"}


def test_emits_workflow_started(env):
    run_id = env.create()

    env.claim()

    assert env.event_types(run_id) == ["workflow:created", "workflow:started"]


def test_returns_nothing_when_no_run_is_pending(env):
    assert env.claim().claimed == []


def test_honours_max_claims(env):
    run_ids = [env.create() for _ in range(3)]

    first = env.claim(max_claims=2)
    second = env.claim(max_claims=2)

    assert [c.workflow_run_id for c in first.claimed] == run_ids[:2]
    assert [c.workflow_run_id for c in second.claimed] == run_ids[2:]


def test_max_claims_zero_claims_nothing(env):
    run_id = env.create()

    assert env.claim(max_claims=0).claimed == []
    assert env.run(run_id).status == Status.PENDING


def test_claims_by_priority_then_oldest_first(env):
    low = env.create(priority=1)
    env.clock.advance(1)
    high_old = env.create(priority=9)
    env.clock.advance(1)
    high_new = env.create(priority=9)

    claimed = [c.workflow_run_id for c in env.claim().claimed]

    assert claimed == [high_old, high_new, low]


def test_a_parallel_first_group_enqueues_every_stage(env):
    run_id = env.create("parallel")

    (claimed,) = env.claim().claimed

    jobs = env.jobs_of(run_id)
    assert sorted(job.stage_id for job in jobs) == ["left", "right"]
    assert sorted(claimed.job_ids) == sorted(job.id for job in jobs)
    assert env.stage_statuses(run_id) == {"left": Status.PENDING, "right": Status.PENDING}


def test_a_run_whose_workflow_vanished_fails_with_a_stored_reason(env):
    run_id = env.create()
    env.unregister("one-stage")

    result = env.claim(worker_id="w-3")

    run = env.run(run_id)
    assert result.claimed == []
    assert run.status == Status.FAILED
    assert run.completed_at == env.clock.now()
    assert run.error_message == "Workflow one-stage not found in registry"
    assert run.output == {
        "error": {
            "code": "WORKFLOW_NOT_FOUND",
            "message": "Workflow one-stage not found in registry",
            "worker_id": "w-3",
        }
    }
    assert env.last_event(run_id, "workflow:failed")["error"] == run.error_message
    assert [log.level for log in env.persistence.get_logs_by_run(run_id)] == [LogLevel.ERROR]
    assert env.jobs_of(run_id) == []


def test_an_orphaned_pending_row_from_an_earlier_claim_is_reused(env):
    run_id = env.create()
    orphan = env.persistence.create_stage(
        NewStage(
            workflow_run_id=run_id,
            stage_id="count",
            stage_name="Count words",
            stage_number=1,
            execution_group=1,
        )
    )

    (claimed,) = env.claim().claimed

    (stage,) = env.stages(run_id)
    assert stage.id == orphan.id
    assert len(claimed.job_ids) == 1


def test_stages_already_running_or_completed_are_not_enqueued_again(env):
    run_id = env.create("parallel")
    for stage_id, number, status in (("left", 1, Status.RUNNING), ("right", 2, Status.COMPLETED)):
        env.persistence.create_stage(
            NewStage(
                workflow_run_id=run_id,
                stage_id=stage_id,
                stage_name=stage_id,
                stage_number=number,
                execution_group=1,
                status=status,
            )
        )

    (claimed,) = env.claim().claimed

    assert claimed.job_ids == []
    assert env.jobs_of(run_id) == []
    assert env.stage_statuses(run_id) == {"left": Status.RUNNING, "right": Status.COMPLETED}


def test_an_unexpected_error_fails_only_that_run_and_the_loop_goes_on(env):
    broken = env.create()
    env.clock.advance(1)
    healthy = env.create("two-stage")
    real_get = env.registry.get_workflow
    broken_ids = {broken}

    def flaky_get_workflow(workflow_id):
        claiming = [r for r in env.persistence.get_all_runs() if r.status == Status.RUNNING]
        if any(r.id in broken_ids for r in claiming):
            raise RuntimeError("registry unavailable")
        return real_get(workflow_id)

    env.registry.get_workflow = flaky_get_workflow

    result = env.claim()

    assert [c.workflow_run_id for c in result.claimed] == [healthy]
    failed = env.run(broken)
    assert failed.status == Status.FAILED
    assert failed.output["error"]["code"] == "CLAIM_FAILED"
    assert failed.output["error"]["message"] == (
        "Claiming the run failed: RuntimeError: registry unavailable"
    )
    assert env.jobs_of(broken) == []
    assert env.stages(broken) == []
    assert env.event_types(broken) == ["workflow:created", "workflow:failed"]
    assert env.run(healthy).status == Status.RUNNING


def test_jobs_of_a_rolled_back_claim_are_never_enqueued(env):
    run_id = env.create()
    real_append = env.persistence.append_outbox_events
    failures = []

    def append_failing_once(events):
        if not failures and any(e.event_type == "workflow:started" for e in events):
            failures.append(True)
            raise RuntimeError("outbox down")
        return real_append(events)

    env.persistence.append_outbox_events = append_failing_once

    result = env.claim()

    assert result.claimed == []
    assert env.jobs_of(run_id) == []  # the enqueue waited for a commit that never came
    assert env.stages(run_id) == []
    assert env.run(run_id).output["error"]["code"] == "CLAIM_FAILED"


def test_claiming_bumps_the_run_version(env):
    run_id = env.create()

    env.claim()

    assert env.run(run_id).version == 2


def test_a_run_created_later_waits_for_the_next_claim(env):
    first = env.create()
    env.claim()
    env.clock.advance(timedelta(seconds=1))
    second = env.create()

    assert [c.workflow_run_id for c in env.claim().claimed] == [second]
    assert env.run(first).status == Status.RUNNING


class Nothing(BaseModel):
    pass


def test_jobs_carry_the_stage_attempt_limit_and_queue(env):
    routed = define_stage(
        id="routed",
        name="Routed",
        input=None,
        output=Nothing,
        execute=lambda ctx: Nothing(),
        queue="gpu",
        max_attempts=5,
    )
    env.registry.register(WorkflowBuilder("routed", "Routed", input=Nothing).pipe(routed).build())
    routed_run = env.create("routed", input={})
    plain_run = env.create()

    env.claim()

    routed_job = env.job_of(routed_run, "routed")
    plain_job = env.job_of(plain_run, "count")
    assert (routed_job.queue, routed_job.max_attempts) == ("gpu", 5)
    assert (plain_job.queue, plain_job.max_attempts) == (None, 3)
