"""``JobExecute.lease_next_to`` and ``RunClaimPending.lease_first_job``: the transaction that
enqueues a group starts one of its stages for the worker that asked, which runs it next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.unit.kernel.conftest import KernelEnv, TextIn, WordCount
from workflow_engine import WorkflowBuilder, define_stage
from workflow_engine.kernel.commands import JobExecute, JobExecuteResult, RunClaimPending
from workflow_engine.kernel.runtime import StartedStages
from workflow_engine.records import JobRecord, LockedRun
from workflow_engine.status import Status


def execute(
    env: KernelEnv, job: JobRecord, worker_id: str | None = "worker-1", *, started: bool = False
) -> JobExecuteResult:
    """What a worker does with a leased job: execute it, settling it, asking for the next
    (``started``: the job is a ``next_job``)."""
    return env.kernel.dispatch(
        JobExecute(
            workflow_run_id=job.workflow_run_id,
            workflow_id=job.workflow_id,
            stage_id=job.stage_id,
            config=job.payload.get("config") or {},
            job_id=job.id,
            lease_token=job.lease_token,
            settle=True,
            lease_next_to=worker_id,
            stage_started=started,
        )
    )


def started_events(env: KernelEnv, run_id: str, stage_id: str) -> int:
    return sum(
        1
        for event in env.persistence.get_outbox_events(run_id)
        if event.event_type == "stage:started" and event.payload["stage_id"] == stage_id
    )


def first_job(env: KernelEnv, workflow_id: str) -> tuple[str, JobRecord]:
    run_id = env.create(workflow_id)
    env.claim()
    job = env.jobs.dequeue("worker-1")
    assert job is not None
    return run_id, job


def test_a_settled_stage_starts_the_next_one_leased_to_the_worker(env: KernelEnv) -> None:
    run_id, job = first_job(env, "two-stage")

    result = execute(env, job)

    next_job = result.next_job
    assert result.outcome == "completed" and next_job is not None
    assert (next_job.stage_id, next_job.status) == ("double", Status.RUNNING)
    assert (next_job.worker_id, next_job.attempt) == ("worker-1", 1)
    # the job the worker was handed is the row the transport stores, leased under its token
    assert env.jobs.get_job(next_job.id) == next_job
    stage = env.stage(run_id, "double")
    assert (stage.status, stage.lease_token) == (Status.RUNNING, next_job.lease_token)
    assert started_events(env, run_id, "double") == 1
    assert env.jobs.dequeue("worker-2") is None  # nothing left for another worker to lease


def test_the_started_stage_runs_without_a_second_start(env: KernelEnv) -> None:
    run_id, job = first_job(env, "two-stage")
    next_job = execute(env, job).next_job
    assert next_job is not None

    last = execute(env, next_job, started=True)

    assert (last.outcome, last.output, last.next_job) == ("completed", {"value": 6}, None)
    assert env.run(run_id).status == Status.COMPLETED
    assert env.probe.called("double") == 1
    assert started_events(env, run_id, "double") == 1
    assert env.jobs.get_job(next_job.id).status == Status.COMPLETED  # type: ignore[union-attr]


def test_a_claim_starts_the_first_stage_of_the_run_it_claims(env: KernelEnv) -> None:
    run_id = env.create("two-stage")

    result = env.kernel.dispatch(RunClaimPending(worker_id="worker-1", lease_first_job=True))

    next_job = result.next_job
    assert next_job is not None and next_job.stage_id == "count"
    assert [claim.job_ids for claim in result.claimed] == [[next_job.id]]
    assert env.stage(run_id, "count").lease_token == next_job.lease_token
    assert env.event_types(run_id) == ["workflow:created", "workflow:started", "stage:started"]
    assert execute(env, next_job, started=True).outcome == "completed"
    assert env.probe.called("count") == 1


def test_a_claim_of_several_runs_starts_one_stage_and_queues_the_others(env: KernelEnv) -> None:
    run_ids = [env.create("two-stage") for _ in range(3)]

    result = env.kernel.dispatch(RunClaimPending(worker_id="worker-1", lease_first_job=True))

    assert [claim.workflow_run_id for claim in result.claimed] == run_ids
    next_job = result.next_job
    assert next_job is not None and next_job.workflow_run_id == run_ids[0]
    # the other runs' first jobs wait for any worker, none leased to this one
    queued = [env.jobs.dequeue("worker-2") for _ in run_ids[1:]]
    assert sorted(job.workflow_run_id for job in queued if job is not None) == sorted(run_ids[1:])
    assert [env.stage(run_id, "count").status for run_id in run_ids[1:]] == [Status.PENDING] * 2


def test_in_a_parallel_group_one_stage_is_started_and_the_others_queued(env: KernelEnv) -> None:
    run_id = env.create("parallel")

    result = env.kernel.dispatch(RunClaimPending(worker_id="worker-1", lease_first_job=True))

    assert result.next_job is not None and result.next_job.stage_id == "left"
    assert env.stage(run_id, "right").status == Status.PENDING
    queued = env.jobs.dequeue("worker-2")
    assert queued is not None and queued.stage_id == "right"


def test_a_next_stage_routed_to_another_queue_is_left_to_that_queue(env: KernelEnv) -> None:
    def count(ctx: Any) -> WordCount:
        return WordCount(words=len(ctx.input.text.split()))

    def again(ctx: Any) -> WordCount:
        return WordCount(words=ctx.input.words)

    workflow = (
        WorkflowBuilder("routed", "Routed", input=TextIn)
        .pipe(define_stage(id="count", name="Count", input=TextIn, output=WordCount, execute=count))
        .pipe(
            define_stage(
                id="gpu", name="GPU", input=WordCount, output=WordCount, execute=again, queue="gpu"
            )
        )
        .build()
    )
    env.registry.register(workflow)
    run_id, job = first_job(env, "routed")

    result = execute(env, job)

    assert result.outcome == "completed" and result.next_job is None
    assert env.stage(run_id, "gpu").status == Status.PENDING
    routed = env.jobs.dequeue("gpu-worker")
    assert routed is not None and routed.queue == "gpu"


def test_without_lease_next_to_the_next_stage_is_only_queued(env: KernelEnv) -> None:
    run_id, job = first_job(env, "two-stage")

    result = execute(env, job, worker_id=None)

    assert result.next_job is None
    assert env.stage(run_id, "double").status == Status.PENDING
    assert started_events(env, run_id, "double") == 0


def test_the_next_job_is_a_hand_off_not_part_of_the_result_json(env: KernelEnv) -> None:
    _, job = first_job(env, "two-stage")

    result = execute(env, job)

    assert result.next_job is not None
    assert "next_job" not in result.model_dump(mode="json")


def test_a_worker_lost_before_running_its_started_stage_is_taken_over_once(
    env: KernelEnv,
) -> None:
    run_id, job = first_job(env, "two-stage")
    lost = execute(env, job).next_job
    assert lost is not None
    env.clock.advance(600)
    assert env.jobs.release_stale_jobs(threshold_ms=300_000) == 1
    taken_over = env.jobs.dequeue("worker-2")
    assert taken_over is not None and taken_over.attempt == 2

    assert execute(env, taken_over, worker_id="worker-2").outcome == "completed"
    late = execute(env, lost, started=True)  # the lost worker comes back

    assert (late.outcome, late.ghost, late.next_job) == ("failed", True, None)
    assert env.probe.called("double") == 1
    assert env.run(run_id).status == Status.COMPLETED
    events = [event.event_type for event in env.persistence.get_outbox_events(run_id)]
    assert events.count("stage:completed") == 2 and events.count("workflow:completed") == 1


def cancel_then_run_the_started_stage(
    env: KernelEnv, held_up: float
) -> tuple[str, JobExecuteResult]:
    """Settle a run's first stage (which starts the second for this worker), cancel the run,
    and run the started stage ``held_up`` seconds later."""
    run_id, job = first_job(env, "two-stage")
    next_job = execute(env, job).next_job
    assert next_job is not None
    env.kernel.dispatch({"type": "run.cancel", "workflow_run_id": run_id})
    env.clock.advance(held_up)
    return run_id, execute(env, next_job, started=True)


def test_a_started_stage_whose_run_was_cancelled_while_its_worker_was_held_up_is_not_run(
    env: KernelEnv,
) -> None:
    # (older than a hand-off is used: the database decides)
    _, result = cancel_then_run_the_started_stage(env, held_up=2)

    assert (result.outcome, result.ghost) == ("failed", True)
    assert env.probe.called("double") == 0


def test_a_started_stage_runs_from_what_its_commit_wrote_without_reading_it_back(
    env: KernelEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    for name in ("get_run", "get_stages_by_run"):
        real = getattr(env.persistence, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            reads.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(env.persistence, name, counted)

    def reads_to_run_the_second_stage(held_up: float) -> int:
        run_id, job = first_job(env, "two-stage")
        next_job = execute(env, job).next_job
        assert next_job is not None
        env.clock.advance(held_up)
        reads.clear()
        assert execute(env, next_job, started=True).outcome == "completed"
        assert env.run(run_id).output == {"value": 2 * env.stage(run_id, "count").output["words"]}
        assert started_events(env, run_id, "double") == 1
        return len(reads)

    # (a backend's lock_run may read through get_run itself: compare with a stale hand-off)
    assert reads_to_run_the_second_stage(0) == reads_to_run_the_second_stage(2) - 2
    assert env.probe.called("double") == 2


def test_a_run_cancelled_just_after_the_commit_that_started_its_stage_keeps_no_result(
    env: KernelEnv,
) -> None:
    # (runs from the hand-off; its result is checked when recorded)
    run_id, result = cancel_then_run_the_started_stage(env, held_up=0)

    assert (result.outcome, result.ghost) == ("failed", True)
    assert env.run(run_id).status == Status.CANCELLED
    assert env.stage(run_id, "double").status != Status.COMPLETED
    events = [event.event_type for event in env.persistence.get_outbox_events(run_id)]
    assert events.count("stage:completed") == 1  # the first stage's only


def test_a_hand_off_is_used_once_and_not_when_stale() -> None:
    started = StartedStages()
    now = datetime(2025, 1, 1, tzinfo=UTC)
    snapshot = LockedRun(run=None, stages=[])  # type: ignore[arg-type]
    started.put("a", now, snapshot)
    started.put("b", now, snapshot)

    assert started.take("a", now + timedelta(milliseconds=999)) is snapshot
    assert started.take("a", now) is None
    assert started.take("b", now + StartedStages.MAX_AGE + timedelta(microseconds=1)) is None
    assert started.take("unknown", now) is None


def test_hand_offs_never_taken_make_room_for_new_ones() -> None:
    started = StartedStages()
    now = datetime(2025, 1, 1, tzinfo=UTC)
    snapshot = LockedRun(run=None, stages=[])  # type: ignore[arg-type]
    for index in range(StartedStages.CAPACITY + 1):
        started.put(str(index), now, snapshot)

    assert started.take("0", now) is None
    assert started.take(str(StartedStages.CAPACITY), now) is snapshot

    started.put("old", now, snapshot)
    started.put("new", now + StartedStages.MAX_AGE * 2, snapshot)
    assert started._by_token.keys() == {"new"}  # the stale one is gone, not just unused


def test_a_job_said_to_be_started_that_is_not_takes_the_usual_path(env: KernelEnv) -> None:
    run_id, job = first_job(env, "two-stage")

    result = execute(env, job, worker_id=None, started=True)

    assert result.outcome == "completed"
    assert started_events(env, run_id, "count") == 1
    assert env.stage(run_id, "count").status == Status.COMPLETED
