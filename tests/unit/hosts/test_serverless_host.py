"""The serverless host (reference §9.3, tests §13.6): handle_job, process_available_jobs, tick."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import (
    CompletionCheck,
    NonRetryableError,
    Status,
    Suspend,
    Workflow,
    WorkflowBuilder,
    WorkflowRegistry,
    define_async_batch_stage,
    define_stage,
)
from workflow_engine.hosts.serverless import ServerlessHost, create_serverless_host
from workflow_engine.kernel import Kernel, create_kernel
from workflow_engine.kernel.commands import RunCreate
from workflow_engine.testing import (
    CollectingEventSink,
    FakeClock,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
)


class In(BaseModel):
    text: str


class Out(BaseModel):
    words: int


class Doubled(BaseModel):
    words: int
    doubled: int


def count(ctx: Any) -> Out:
    return Out(words=len(ctx.input.text.split()))


COUNT = define_stage(id="count", name="Count", input=In, output=Out, execute=count)
DOUBLE = define_stage(
    id="double",
    name="Double",
    input=Out,
    output=Doubled,
    execute=lambda ctx: Doubled(words=ctx.input.words, doubled=2 * ctx.input.words),
)
ONE = WorkflowBuilder("one", "One stage", input=In, output=Out).pipe(COUNT).build()
TWO = (
    WorkflowBuilder("two", "Two stages", input=In, output=Doubled).pipe(COUNT).pipe(DOUBLE).build()
)


class DictRegistry:
    def __init__(self, *workflows: Workflow[Any, Any]) -> None:
        self.workflows = {wf.id: wf for wf in workflows}

    def get_workflow(self, workflow_id: str) -> Workflow[Any, Any] | None:
        return self.workflows.get(workflow_id)


class Env:
    def __init__(
        self, *workflows: Workflow[Any, Any], registry: Any = None, **tunables: Any
    ) -> None:
        self.clock = FakeClock()
        self.persistence = InMemoryWorkflowPersistence(clock=self.clock)
        self.jobs = InMemoryJobQueue("host-1", clock=self.clock)
        self.sink = CollectingEventSink()
        self.kernel: Kernel = create_kernel(
            persistence=self.persistence,
            blob_store=InMemoryBlobStore(),
            job_transport=self.jobs,
            event_sink=self.sink,
            registry=registry or WorkflowRegistry(workflows or (ONE, TWO)),
            clock=self.clock,
        )
        self.host: ServerlessHost = create_serverless_host(
            kernel=self.kernel, job_transport=self.jobs, worker_id="host-1", **tunables
        )
        self.created = 0

    def create(self, workflow_id: str = "one", text: str = "a b c", **fields: Any) -> str:
        self.created += 1
        return self.kernel.dispatch(
            RunCreate(
                idempotency_key=f"k{self.created}",
                workflow_id=workflow_id,
                input={"text": text},
                **fields,
            )
        ).workflow_run_id

    def claim_and_dequeue(self) -> Any:
        self.host.run_maintenance_tick()
        job = self.jobs.dequeue("host-1")
        assert job is not None
        return job

    def run(self, run_id: str) -> Any:
        run = self.persistence.get_run(run_id)
        assert run is not None
        return run

    def types(self, run_id: str) -> list[str]:
        return [e.event_type for e in self.persistence.get_outbox_events(run_id)]


def stage_workflow(fn: Callable[[Any], Any], max_attempts: int | None = None) -> Workflow[Any, Any]:
    stage = define_stage(
        id="work", name="Work", input=In, output=Out, execute=fn, max_attempts=max_attempts
    )
    return WorkflowBuilder("wf", "Wf", input=In, output=Out).pipe(stage).build()


# -- handle_job -----------------------------------------------------------------------------------
def test_handle_job_runs_a_single_stage_workflow_to_completion() -> None:
    env = Env()
    run_id = env.create(text="one two three four")
    job = env.claim_and_dequeue()
    outcome = env.host.handle_job(job)
    assert outcome.outcome == "completed"
    assert outcome.error is None
    run = env.run(run_id)
    assert run.status == Status.COMPLETED
    assert run.output == {"words": 4}
    assert env.jobs.get_job(job.id).status == Status.COMPLETED


def test_handle_job_runs_a_two_stage_workflow_one_job_at_a_time() -> None:
    env = Env()
    run_id = env.create("two", text="x y")
    first = env.claim_and_dequeue()
    assert env.host.handle_job(first).outcome == "completed"
    assert env.run(run_id).status == Status.RUNNING  # stage 2 enqueued at once, no tick needed
    second = env.jobs.dequeue("host-1")
    assert second is not None
    assert second.stage_id == "double"
    assert env.host.handle_job(second).outcome == "completed"
    assert env.run(run_id).output == {"words": 2, "doubled": 4}


def test_handle_job_accepts_a_queue_message_mapping() -> None:
    env = Env()
    run_id = env.create()
    job = env.claim_and_dequeue()
    message = {
        "job_id": job.id,
        "workflow_run_id": job.workflow_run_id,
        "workflow_id": job.workflow_id,
        "stage_id": job.stage_id,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "payload": job.payload,
    }
    outcome = env.host.handle_job(message)
    assert outcome.outcome == "completed"
    assert env.run(run_id).status == Status.COMPLETED
    assert env.jobs.get_job(job.id).status == Status.COMPLETED


def test_handle_job_returns_a_failed_outcome_for_a_throwing_stage() -> None:
    def boom(ctx: Any) -> Out:
        raise ValueError("cannot count today")

    env = Env(stage_workflow(boom))
    run_id = env.create("wf")
    outcome = env.host.handle_job(env.claim_and_dequeue())
    assert outcome.outcome == "failed"
    assert outcome.error == "ValueError: cannot count today"
    assert "stage:failed" in env.types(run_id)


def test_a_stage_failure_with_no_attempts_left_fails_the_run_at_once() -> None:
    def boom(ctx: Any) -> Out:
        raise NonRetryableError("bad document")

    env = Env(stage_workflow(boom))
    run_id = env.create("wf")
    env.host.handle_job(env.claim_and_dequeue())
    run = env.run(run_id)  # failed promptly by run.transition, not by the stuck reaper
    assert run.status == Status.FAILED
    assert run.error_message == "bad document"
    assert env.types(run_id)[-1] == "workflow:failed"


# -- process_available_jobs -----------------------------------------------------------------------
def test_process_available_jobs_single_stage() -> None:
    env = Env()
    run_id = env.create()
    env.host.run_maintenance_tick()
    result = env.host.process_available_jobs()
    assert (result.processed, result.succeeded, result.failed) == (1, 1, 0)
    assert env.run(run_id).status == Status.COMPLETED


def test_process_available_jobs_across_invocations_for_two_stages() -> None:
    env = Env()
    run_id = env.create("two")
    env.host.run_maintenance_tick()
    first = env.host.process_available_jobs(max_jobs=1)
    assert first.processed == 1
    assert env.run(run_id).status == Status.RUNNING
    second = env.host.process_available_jobs(max_jobs=1)
    assert second.processed == 1
    assert env.run(run_id).status == Status.COMPLETED
    assert env.host.process_available_jobs(max_jobs=1).processed == 0


def test_process_available_jobs_honours_max_jobs() -> None:
    env = Env()
    runs = [env.create() for _ in range(3)]
    env.host.run_maintenance_tick()
    assert env.host.process_available_jobs(max_jobs=2).processed == 2
    statuses = sorted(env.run(r).status for r in runs)
    assert statuses == [Status.COMPLETED, Status.COMPLETED, Status.RUNNING]
    assert env.host.process_available_jobs(max_jobs=5).processed == 1


def test_process_available_jobs_is_zero_when_the_queue_is_empty() -> None:
    env = Env()
    result = env.host.process_available_jobs(max_jobs=10)
    assert (result.processed, result.succeeded, result.failed) == (0, 0, 0)


def test_process_available_jobs_counts_failures_and_suspensions() -> None:
    def maybe(ctx: Any) -> Out:
        if ctx.input.text == "fail":
            raise NonRetryableError("no")
        return Out(words=1)

    batch = define_async_batch_stage(
        id="b",
        name="B",
        input=In,
        output=Out,
        execute=lambda ctx: Suspend(state={}),
        check_completion=lambda state, ctx: CompletionCheck(ready=False),
    )
    suspending = WorkflowBuilder("sus", "Sus", input=In, output=Out).pipe(batch).build()
    env = Env(stage_workflow(maybe), suspending)
    env.create("wf", text="fail")
    env.create("wf", text="ok")
    env.create("sus")
    env.host.run_maintenance_tick()
    result = env.host.process_available_jobs(max_jobs=10)
    assert (result.processed, result.succeeded, result.failed) == (3, 2, 1)


# -- the maintenance tick -------------------------------------------------------------------------
def test_tick_returns_structured_counts() -> None:
    env = Env()
    env.create()
    env.create()
    tick = env.host.run_maintenance_tick()
    assert tick.claimed == 2
    assert tick.suspended_checked == 0
    assert tick.stale_released == 0
    assert tick.events_flushed == 4  # created + started, twice
    assert tick.stuck_reaped == 0
    again = env.host.run_maintenance_tick()
    assert (again.claimed, again.events_flushed) == (0, 0)


def test_tick_flushes_the_outbox_to_the_event_sink() -> None:
    env = Env()
    run_id = env.create()
    env.host.run_maintenance_tick()
    env.host.process_available_jobs()
    assert env.sink.events[-1]["type"] == "workflow:started"
    env.host.run_maintenance_tick()
    types = [e["type"] for e in env.sink.events]
    assert types == [
        "workflow:created",
        "workflow:started",
        "stage:started",
        "stage:completed",
        "workflow:completed",
    ]
    assert all(e["workflow_run_id"] == run_id for e in env.sink.events)


def test_tick_counts_stale_leases() -> None:
    env = Env(stale_lease_threshold_ms=60_000)
    env.create()
    job = env.claim_and_dequeue()  # the worker dies holding the lease
    env.clock.advance(60)
    assert env.host.run_maintenance_tick().stale_released == 0
    env.clock.advance(1)
    assert env.host.run_maintenance_tick().stale_released == 1
    assert env.jobs.get_job(job.id).status == Status.PENDING


def test_tick_counts_stuck_runs_it_fails() -> None:
    registry = DictRegistry(ONE)
    env = Env(stale_lease_threshold_ms=60_000, stuck_threshold_ms=120_000, registry=registry)
    run_id = env.create()
    env.host.run_maintenance_tick()
    registry.workflows.clear()  # the deployment lost the workflow: its job cannot run
    assert env.host.process_available_jobs().failed == 1
    env.clock.advance(119)
    assert env.host.run_maintenance_tick().stuck_reaped == 0
    env.clock.advance(2)
    assert env.host.run_maintenance_tick().stuck_reaped == 1
    run = env.run(run_id)
    assert run.status == Status.FAILED
    assert run.output["error"]["code"] == "STUCK_RUN_REAPED"


def test_tick_resumes_a_suspended_stage_and_transitions_the_run() -> None:
    checks: list[dict[str, Any]] = []

    def check(state: dict[str, Any], ctx: Any) -> CompletionCheck[Any]:
        checks.append(state)
        if len(checks) < 2:
            return CompletionCheck(ready=False, next_check_in=30)
        return CompletionCheck(ready=True, output={"words": 11})

    batch = define_async_batch_stage(
        id="batch",
        name="Batch",
        input=In,
        output=Out,
        execute=lambda ctx: Suspend(state={"id": "b1"}, poll_interval=60),
        check_completion=check,
    )
    wf = WorkflowBuilder("b", "B", input=In, output=Doubled).pipe(batch).pipe(DOUBLE).build()
    env = Env(wf)
    run_id = env.create("b")
    assert env.host.handle_job(env.claim_and_dequeue()).outcome == "suspended"
    assert env.host.run_maintenance_tick().suspended_checked == 0  # not due yet
    env.clock.advance(60)
    assert env.host.run_maintenance_tick().suspended_checked == 1  # not ready
    env.clock.advance(30)
    assert env.host.run_maintenance_tick().suspended_checked == 1  # ready: transitioned
    assert checks == [{"id": "b1"}, {"id": "b1"}]
    [job] = [j for j in env.jobs.get_jobs_by_workflow_run(run_id) if j.stage_id == "double"]
    assert job.status == Status.PENDING
    env.host.process_available_jobs()
    assert env.run(run_id).output == {"words": 11, "doubled": 22}


def test_one_failing_tick_step_does_not_stop_the_others() -> None:
    class BrokenClaim(InMemoryWorkflowPersistence):
        def claim_next_pending_run(self) -> Any:
            raise ConnectionError("claim query failed")

    env = Env()
    env.persistence = BrokenClaim(clock=env.clock)
    env.kernel = create_kernel(
        persistence=env.persistence,
        blob_store=InMemoryBlobStore(),
        job_transport=env.jobs,
        event_sink=env.sink,
        registry=WorkflowRegistry([ONE]),
        clock=env.clock,
    )
    host = create_serverless_host(kernel=env.kernel, job_transport=env.jobs, worker_id="h")
    env.create()
    tick = host.run_maintenance_tick()
    assert tick.claimed == 0
    assert tick.events_flushed == 1  # workflow:created still went out


# -- retries, attempts ----------------------------------------------------------------------------
def test_retry_backoff_of_two_to_the_attempt_seconds_is_honoured() -> None:
    attempts: list[int] = []

    def flaky(ctx: Any) -> Out:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("try again")
        return Out(words=1)

    env = Env(stage_workflow(flaky))
    run_id = env.create("wf")
    env.host.run_maintenance_tick()
    assert env.host.process_available_jobs(max_jobs=10).failed == 1
    [job] = env.jobs.get_jobs_by_workflow_run(run_id)
    assert job.next_poll_at == env.clock.now() + timedelta(seconds=2)

    env.clock.advance(1.9)
    assert env.host.process_available_jobs(max_jobs=10).processed == 0
    env.clock.advance(0.1)
    assert env.host.process_available_jobs(max_jobs=10).failed == 1  # attempt 2: wait 4 s
    env.clock.advance(3.9)
    assert env.host.process_available_jobs(max_jobs=10).processed == 0
    env.clock.advance(0.1)
    assert env.host.process_available_jobs(max_jobs=10).succeeded == 1
    assert len(attempts) == 3
    assert env.run(run_id).status == Status.COMPLETED


def test_the_attempt_limit_is_honoured() -> None:
    attempts: list[int] = []

    def always(ctx: Any) -> Out:
        attempts.append(ctx.attempt)
        raise RuntimeError("still broken")

    env = Env(stage_workflow(always, max_attempts=2))
    run_id = env.create("wf")
    env.host.run_maintenance_tick()
    for _ in range(5):
        env.host.process_available_jobs(max_jobs=10)
        env.clock.advance(60)
    assert len(attempts) == 2
    [job] = env.jobs.get_jobs_by_workflow_run(run_id)
    assert (job.status, job.attempt) == (Status.FAILED, 2)
    assert env.run(run_id).status == Status.FAILED
    assert env.types(run_id).count("stage:failed") == 2
    assert env.types(run_id).count("workflow:failed") == 1


def test_default_attempt_limit_is_three() -> None:
    env = Env(stage_workflow(lambda ctx: (_ for _ in ()).throw(RuntimeError("x"))))
    run_id = env.create("wf")
    env.host.run_maintenance_tick()
    for _ in range(6):
        env.host.process_available_jobs(max_jobs=10)
        env.clock.advance(60)
    [job] = env.jobs.get_jobs_by_workflow_run(run_id)
    assert (job.status, job.attempt, job.max_attempts) == (Status.FAILED, 3, 3)


# -- configuration --------------------------------------------------------------------------------
def test_an_unknown_tunable_is_a_clear_error() -> None:
    env = Env()
    with pytest.raises(ValueError, match="stale_lease_treshold_ms"):
        create_serverless_host(
            kernel=env.kernel, job_transport=env.jobs, worker_id="x", stale_lease_treshold_ms=1
        )


def test_an_invalid_tunable_value_is_rejected() -> None:
    env = Env()
    with pytest.raises(ValueError, match="job_heartbeat_interval_ms"):
        create_serverless_host(
            kernel=env.kernel, job_transport=env.jobs, worker_id="x", job_heartbeat_interval_ms=0
        )


def test_tunables_reach_the_tick() -> None:
    env = Env(max_claims_per_tick=2, max_outbox_flush_per_tick=1)
    for _ in range(3):
        env.create()
    tick = env.host.run_maintenance_tick()
    assert (tick.claimed, tick.events_flushed) == (2, 1)


# -- the lease keeper -----------------------------------------------------------------------------
def test_lease_keeper_heartbeat_renews_locked_at_while_a_job_runs() -> None:
    observed: dict[str, Any] = {}

    def slow(ctx: Any) -> Out:
        [job] = env.jobs.get_jobs_by_status(Status.RUNNING)
        observed["dequeued_at"] = job.locked_at
        later = env.clock.advance(30)
        deadline = time.monotonic() + 5
        while env.jobs.get_job(job.id).locked_at != later:
            assert time.monotonic() < deadline, "the heartbeat never renewed the lease"
            threading.Event().wait(0.005)
        observed["renewed_to"] = env.jobs.get_job(job.id).locked_at
        return Out(words=1)

    env = Env(stage_workflow(slow), job_heartbeat_interval_ms=20)
    run_id = env.create("wf")
    env.host.run_maintenance_tick()
    assert env.host.process_available_jobs().succeeded == 1
    assert observed["renewed_to"] == observed["dequeued_at"] + timedelta(seconds=30)
    assert env.run(run_id).status == Status.COMPLETED


def test_lease_keeper_stops_renewing_a_job_once_it_is_done() -> None:
    touches: list[str] = []

    class CountingQueue(InMemoryJobQueue):
        def touch_job(self, job_id: str, *, lease_token: str | None = None) -> bool:
            touches.append(job_id)
            return super().touch_job(job_id, lease_token=lease_token)

    def beats(ctx: Any) -> Out:
        [job] = env.jobs.get_jobs_by_status(Status.RUNNING)
        deadline = time.monotonic() + 5
        while touches.count(job.id) < 3:
            assert time.monotonic() < deadline, "no heartbeat"
            threading.Event().wait(0.005)
        return Out(words=1)

    env = Env(stage_workflow(beats), job_heartbeat_interval_ms=10)
    env.jobs = CountingQueue("host-1", clock=env.clock)
    env.kernel = create_kernel(
        persistence=env.persistence,
        blob_store=InMemoryBlobStore(),
        job_transport=env.jobs,
        event_sink=env.sink,
        registry=WorkflowRegistry([stage_workflow(beats)]),
        clock=env.clock,
    )
    env.host = create_serverless_host(
        kernel=env.kernel, job_transport=env.jobs, worker_id="h", job_heartbeat_interval_ms=10
    )
    first, second = env.create("wf"), env.create("wf")
    env.host.run_maintenance_tick()
    assert env.host.process_available_jobs(max_jobs=2).succeeded == 2
    [job_a] = env.jobs.get_jobs_by_workflow_run(first)
    [job_b] = env.jobs.get_jobs_by_workflow_run(second)
    after_b_started = touches[touches.index(job_b.id) :]
    assert job_a.id not in after_b_started
    assert env.run(second).status == Status.COMPLETED
