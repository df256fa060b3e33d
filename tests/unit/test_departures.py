"""Each bug of the original (reference §14.1) that we fix (contract §6) does not happen here.

Every test drives the real kernel and serverless host over the in-memory adapters, with a
FakeClock; threads only where the bug is a race, and then with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import (
    CompletionCheck,
    StageResult,
    Status,
    Suspend,
    Workflow,
    WorkflowBuilder,
    create_plugin_runner,
    define_async_batch_stage,
    define_plugin,
    define_stage,
)
from workflow_engine.hosts.serverless import ServerlessHost, create_serverless_host
from workflow_engine.kernel import Kernel, create_kernel
from workflow_engine.kernel.commands import (
    JobExecute,
    LeaseReapStale,
    OutboxFlush,
    PluginReplayDLQ,
    RetentionExpire,
    RunCancel,
    RunClaimPending,
    RunCreate,
    RunReapStuck,
    RunRerunFrom,
    RunTransition,
    StagePollSuspended,
)
from workflow_engine.ports import EventSink
from workflow_engine.testing import (
    CollectingEventSink,
    FakeClock,
    InMemoryAICallLogger,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
)

MINUTE = 60_000
STALE_MS = 5 * MINUTE
STUCK_MS = 15 * MINUTE


# -- models, workflows ----------------------------------------------------------------------------
class In(BaseModel):
    text: str


class Out(BaseModel):
    words: int


class Big(BaseModel):
    payload: str


def count_stage(stage_id: str = "count", fn: Callable[[Any], Any] | None = None) -> Any:
    def execute(ctx: Any) -> Any:
        if fn is not None:
            return fn(ctx)
        return Out(words=len(ctx.input.text.split()))

    return define_stage(id=stage_id, name=stage_id.title(), input=In, output=Out, execute=execute)


def single(fn: Callable[[Any], Any] | None = None, workflow_id: str = "wc") -> Workflow[Any, Any]:
    return (
        WorkflowBuilder(workflow_id, "Word count", input=In, output=Out)
        .pipe(count_stage(fn=fn))
        .build()
    )


def batch_workflow(
    check: Callable[[dict[str, Any], Any], Any],
    *,
    poll_interval: float = 60,
    max_wait: float = 3600,
) -> Workflow[Any, Any]:
    def execute(ctx: Any) -> Suspend:
        return Suspend(state={"batch_id": "b-1"}, poll_interval=poll_interval, max_wait=max_wait)

    stage = define_async_batch_stage(
        id="batch",
        name="Batch",
        input=In,
        output=Out,
        execute=execute,
        check_completion=check,
    )
    return WorkflowBuilder("batch-wf", "Batch", input=In, output=Out).pipe(stage).build()


class MutableRegistry:
    """A registry tests can change under a running engine."""

    def __init__(self, *workflows: Workflow[Any, Any]) -> None:
        self.workflows = {wf.id: wf for wf in workflows}

    def get_workflow(self, workflow_id: str) -> Workflow[Any, Any] | None:
        return self.workflows.get(workflow_id)


# -- engine ---------------------------------------------------------------------------------------
@dataclass
class Engine:
    clock: FakeClock
    persistence: InMemoryWorkflowPersistence
    jobs: InMemoryJobQueue
    blobs: InMemoryBlobStore
    sink: EventSink
    registry: MutableRegistry
    kernel: Kernel
    host: ServerlessHost
    keys: list[str] = field(default_factory=list)

    def create(self, workflow_id: str = "wc", input: Any = None, **fields: Any) -> str:
        key = fields.pop("idempotency_key", f"key-{len(self.keys)}")
        self.keys.append(key)
        result = self.kernel.dispatch(
            RunCreate(
                idempotency_key=key,
                workflow_id=workflow_id,
                input=input if input is not None else {"text": "a b c"},
                **fields,
            )
        )
        return result.workflow_run_id

    def claim(self, max_claims: int = 10) -> list[str]:
        result = self.kernel.dispatch(RunClaimPending(worker_id="w", max_claims=max_claims))
        return [claimed.workflow_run_id for claimed in result.claimed]

    def work(self, max_jobs: int = 100) -> int:
        return self.host.process_available_jobs(max_jobs=max_jobs).processed

    def run(self, run_id: str) -> Any:
        run = self.persistence.get_run(run_id)
        assert run is not None
        return run

    def stage(self, run_id: str, stage_id: str) -> Any:
        stage = self.persistence.get_stage(run_id, stage_id)
        assert stage is not None
        return stage

    def outbox(self, run_id: str, event_type: str | None = None) -> list[dict[str, Any]]:
        return [
            event.payload
            for event in self.persistence.get_outbox_events(run_id)
            if event_type is None or event.event_type == event_type
        ]

    def jobs_of(self, run_id: str) -> list[Any]:
        return self.jobs.get_jobs_by_workflow_run(run_id)


def make_engine(
    *workflows: Workflow[Any, Any],
    persistence: InMemoryWorkflowPersistence | None = None,
    jobs: InMemoryJobQueue | None = None,
    blobs: InMemoryBlobStore | None = None,
    sink: EventSink | None = None,
    clock: FakeClock | None = None,
    host_options: dict[str, Any] | None = None,
    **kernel_options: Any,
) -> Engine:
    clock = clock or FakeClock()
    persistence = persistence or InMemoryWorkflowPersistence(clock=clock)
    persistence.clock = clock
    jobs = jobs or InMemoryJobQueue("w", clock=clock)
    jobs.clock = clock
    blobs = blobs or InMemoryBlobStore(clock=clock)
    sink = sink or CollectingEventSink()
    registry = MutableRegistry(*workflows)
    kernel = create_kernel(
        persistence=persistence,
        blob_store=blobs,
        job_transport=jobs,
        event_sink=sink,
        registry=registry,
        clock=clock,
        **kernel_options,
    )
    host = create_serverless_host(
        kernel=kernel, job_transport=jobs, worker_id="w", **(host_options or {})
    )
    return Engine(clock, persistence, jobs, blobs, sink, registry, kernel, host)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


# =================================================================================================
# 1. Long stages are not reaped while their lease is alive.
# =================================================================================================
def test_long_stage_with_a_live_lease_is_neither_released_nor_reaped_as_stuck() -> None:
    seen: dict[str, Any] = {"released": []}

    def long_running(ctx: Any) -> Out:
        [job] = e.jobs.get_jobs_by_status(Status.RUNNING)
        for _ in range(6):  # 6 x 4 min = 24 min: past the lease and the stuck thresholds
            e.clock.advance(timedelta(minutes=4))
            assert e.jobs.touch_job(job.id, lease_token=job.lease_token)  # the heartbeat
            released = e.kernel.dispatch(LeaseReapStale(stale_threshold_ms=STALE_MS)).released
            seen["released"].append(released)
        seen["stuck"] = e.kernel.dispatch(RunReapStuck(stuck_threshold_ms=STUCK_MS))
        return Out(words=1)

    e = make_engine(single(long_running))
    run_id = e.create()
    e.claim()
    assert e.work() == 1

    assert seen["released"] == [0] * 6
    assert seen["stuck"].failed == 0
    assert e.run(run_id).status == Status.COMPLETED
    assert len(e.outbox(run_id, "stage:completed")) == 1
    assert e.outbox(run_id, "workflow:failed") == []


def test_a_lease_without_heartbeat_is_released_so_the_thresholds_above_are_real() -> None:
    seen: dict[str, int] = {}

    def silent(ctx: Any) -> Out:
        e.clock.advance(timedelta(minutes=6))
        seen["released"] = e.kernel.dispatch(LeaseReapStale(stale_threshold_ms=STALE_MS)).released
        return Out(words=1)

    e = make_engine(single(silent))
    e.create()
    e.claim()
    e.work(max_jobs=1)
    assert seen["released"] == 1


def test_host_heartbeat_keeps_a_long_stage_alive_through_maintenance_ticks() -> None:
    seen: dict[str, Any] = {"released": [], "stuck": []}

    def long_running(ctx: Any) -> Out:
        [job] = e.jobs.get_jobs_by_status(Status.RUNNING)
        for _ in range(4):  # 4 x 5 min = 20 min with the real lease keeper thread renewing
            now = e.clock.advance(timedelta(minutes=5))
            wait_until(
                lambda now=now: e.jobs.get_job(job.id).locked_at == now,  # type: ignore[misc]
                "the heartbeat to renew the lease",
            )
            tick = e.host.run_maintenance_tick()
            seen["released"].append(tick.stale_released)
            seen["stuck"].append(tick.stuck_reaped)
        return Out(words=1)

    e = make_engine(single(long_running), host_options={"job_heartbeat_interval_ms": 20})
    run_id = e.create()
    e.claim()
    assert e.work(max_jobs=1) == 1
    assert seen["released"] == [0, 0, 0, 0]
    assert seen["stuck"] == [0, 0, 0, 0]
    assert e.run(run_id).status == Status.COMPLETED


def test_suspended_stage_polled_less_often_than_the_stuck_threshold_is_not_reaped() -> None:
    wf = batch_workflow(
        lambda state, ctx: CompletionCheck(ready=True, output={"words": 7}),
        poll_interval=2 * 3600,
        max_wait=6 * 3600,
    )
    e = make_engine(wf)
    run_id = e.create("batch-wf")
    e.host.run_maintenance_tick()
    e.work()
    assert e.stage(run_id, "batch").status == Status.SUSPENDED

    e.clock.advance(timedelta(hours=1, minutes=59))
    tick = e.host.run_maintenance_tick()
    assert tick.stuck_reaped == 0
    assert e.run(run_id).status == Status.RUNNING

    e.clock.advance(timedelta(minutes=1))
    tick = e.host.run_maintenance_tick()
    assert tick.suspended_checked == 1
    assert e.run(run_id).status == Status.COMPLETED
    assert e.run(run_id).output == {"words": 7}


# =================================================================================================
# 2. Jobs are enqueued only after the claiming transaction commits.
# =================================================================================================
class WatchingQueue(InMemoryJobQueue):
    """Records, at every enqueue, whether the new jobs were already visible to workers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enqueues: list[tuple[bool, list[bool]]] = []

    def enqueue_parallel(self, jobs: Any, *, tx: Any = None) -> list[str]:
        ids = super().enqueue_parallel(jobs, tx=tx)
        self.enqueues.append((tx is not None, [self.get_job(i) is not None for i in ids]))
        return ids


def test_claim_transition_and_rerun_enqueue_jobs_invisible_until_commit() -> None:
    wf = (
        WorkflowBuilder("two", "Two", input=In, output=Out)
        .pipe(count_stage("first"))
        .pipe(
            define_stage(
                id="second", name="Second", input=Out, output=Out, execute=lambda c: c.input
            )
        )
        .build()
    )
    queue = WatchingQueue("w")
    e = make_engine(wf, jobs=queue)
    run_id = e.create("two")
    e.claim()
    e.work()
    assert e.run(run_id).status == Status.COMPLETED
    e.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="first"))

    assert len(queue.enqueues) == 3  # claim, transition to group 2, rerun
    for joined_tx, visible in queue.enqueues:
        assert joined_tx
        assert visible == [False]
    assert len(e.jobs_of(run_id)) == 3


def test_a_worker_racing_the_claim_only_sees_a_running_run() -> None:
    outcomes: list[Any] = []

    class RacingQueue(InMemoryJobQueue):
        def enqueue_parallel(self, jobs: Any, *, tx: Any = None) -> list[str]:
            ids = super().enqueue_parallel(jobs, tx=tx)

            def fast_worker() -> None:  # runs the moment the jobs become visible
                job = self.dequeue("fast")
                assert job is not None
                outcomes.append(e.host.handle_job(job))

            tx.after_commit(fast_worker)
            return ids

    e = make_engine(single(), jobs=RacingQueue("w"))
    run_id = e.create()
    e.claim()
    assert [o.outcome for o in outcomes] == ["completed"]
    assert e.run(run_id).status == Status.COMPLETED


def test_a_rerun_whose_transaction_fails_after_enqueue_leaves_no_job_and_no_change() -> None:
    class FailOnStarted(InMemoryWorkflowPersistence):
        armed = False

        def append_outbox_events(self, events: Any) -> Any:
            if self.armed and any(ev.event_type == "workflow:started" for ev in events):
                raise ConnectionError("database went away")
            return super().append_outbox_events(events)

    persistence = FailOnStarted()
    e = make_engine(single(lambda ctx: Out(words=4)), persistence=persistence)
    run_id = e.create()
    e.claim()
    e.work()
    before_stages = e.persistence.get_stages_by_run(run_id)
    before_jobs = e.jobs_of(run_id)
    persistence.armed = True

    with pytest.raises(ConnectionError):
        e.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="count"))

    assert e.jobs_of(run_id) == before_jobs
    assert e.persistence.get_stages_by_run(run_id) == before_stages
    assert e.run(run_id).status == Status.COMPLETED
    assert e.run(run_id).output == {"words": 4}


# =================================================================================================
# 3. Pre-flight failures count against the attempt limit.
# =================================================================================================
def test_job_of_a_workflow_removed_from_the_registry_fails_once_and_the_run_ends_failed() -> None:
    e = make_engine(single())
    run_id = e.create()
    e.claim()
    del e.registry.workflows["wc"]

    result = e.host.process_available_jobs(max_jobs=10)
    assert (result.processed, result.failed) == (1, 1)
    [job] = e.jobs_of(run_id)
    assert job.status == Status.FAILED
    assert job.attempt == 1
    assert "not found in registry" in (job.last_error or "")

    for _ in range(5):  # ticks over 25 minutes: no new job, no loop
        e.clock.advance(timedelta(minutes=5))
        e.host.run_maintenance_tick()
        assert e.work() == 0
    assert len(e.jobs_of(run_id)) == 1
    run = e.run(run_id)
    assert run.status == Status.FAILED
    assert run.output["error"]["code"] == "STUCK_RUN_REAPED"


class FlakyPersistence(InMemoryWorkflowPersistence):
    """``lock_run`` (read by job.execute before the stage runs) fails while ``down``."""

    down = False

    def lock_run(self, run_id: str) -> Any:
        if self.down:
            raise ConnectionError("database unavailable")
        return super().lock_run(run_id)


def test_a_job_whose_execute_keeps_raising_uses_its_attempts_with_backoff_then_fails() -> None:
    persistence = FlakyPersistence()
    e = make_engine(single(), persistence=persistence)
    run_id = e.create()
    e.claim()
    persistence.down = True

    assert e.work() == 1
    [job] = e.jobs_of(run_id)
    assert (job.status, job.attempt) == (Status.PENDING, 1)
    assert job.next_poll_at == e.clock.now() + timedelta(seconds=2)
    assert e.work() == 0  # backing off
    e.clock.advance(2)
    assert e.work() == 1
    e.clock.advance(4)
    assert e.work() == 1
    [job] = e.jobs_of(run_id)
    assert (job.status, job.attempt) == (Status.FAILED, 3)
    assert "database unavailable" in (job.last_error or "")


def test_exhausted_preflight_failures_end_the_run_instead_of_looping_through_the_reaper() -> None:
    persistence = FlakyPersistence()
    e = make_engine(single(), persistence=persistence)
    run_id = e.create()
    e.claim()
    persistence.down = True
    for _ in range(3):
        e.work()
        e.clock.advance(10)

    for _ in range(12):  # an hour of maintenance
        e.clock.advance(timedelta(minutes=5))
        e.host.run_maintenance_tick()
        e.work()

    assert len(e.jobs_of(run_id)) == 1, "the reaper re-enqueued a job that had given up"
    run = e.run(run_id)
    assert run.status == Status.FAILED
    assert run.output["error"]["message"]


# =================================================================================================
# 4. A lease carries a fencing token: a stale worker's late result is discarded.
# =================================================================================================
def test_stale_worker_finishing_after_the_new_owner_is_discarded() -> None:
    calls: list[int] = []

    def stage(ctx: Any) -> Out:
        calls.append(len(calls) + 1)
        if len(calls) == 1:  # the first worker stalls past its lease
            e.clock.advance(timedelta(minutes=6))
            assert e.kernel.dispatch(LeaseReapStale(stale_threshold_ms=STALE_MS)).released == 1
            other = create_serverless_host(kernel=e.kernel, job_transport=e.jobs, worker_id="w2")
            assert other.process_available_jobs(max_jobs=1).succeeded == 1
            return Out(words=1)
        return Out(words=2)

    e = make_engine(single(stage))
    run_id = e.create()
    e.claim()
    job = e.jobs.dequeue("w1")
    assert job is not None
    outcome = e.host.handle_job(job)

    assert outcome.outcome == "failed"
    assert "discarded" in (outcome.error or "")
    assert calls == [1, 2]
    run = e.run(run_id)
    assert run.status == Status.COMPLETED
    assert run.output == {"words": 2}
    assert len(e.outbox(run_id, "stage:completed")) == 1
    assert len(e.outbox(run_id, "workflow:completed")) == 1
    [final] = e.jobs_of(run_id)
    assert (final.status, final.attempt) == (Status.COMPLETED, 2)


def test_stale_worker_finishing_while_the_new_owner_runs_is_discarded() -> None:
    second_started = threading.Event()
    release_second = threading.Event()
    calls: list[str] = []

    def stage(ctx: Any) -> Out:
        if not calls:
            calls.append("first")
            e.clock.advance(timedelta(minutes=6))
            e.kernel.dispatch(LeaseReapStale(stale_threshold_ms=STALE_MS))
            second.start()
            assert second_started.wait(5)
            return Out(words=1)  # late: the stage now belongs to the second lease
        calls.append("second")
        second_started.set()
        assert release_second.wait(5)
        return Out(words=2)

    e = make_engine(single(stage))
    other = create_serverless_host(kernel=e.kernel, job_transport=e.jobs, worker_id="w2")
    second_outcomes: list[Any] = []
    second = threading.Thread(
        target=lambda: second_outcomes.append(other.process_available_jobs(max_jobs=1))
    )
    run_id = e.create()
    e.claim()
    job = e.jobs.dequeue("w1")
    assert job is not None
    first_outcome = e.host.handle_job(job)
    assert first_outcome.outcome == "failed"
    assert "taken over" in (first_outcome.error or "")
    assert e.stage(run_id, "count").status == Status.RUNNING

    release_second.set()
    second.join(5)
    assert second_outcomes[0].succeeded == 1
    assert e.run(run_id).output == {"words": 2}
    assert len(e.outbox(run_id, "stage:completed")) == 1
    assert len(e.outbox(run_id, "workflow:completed")) == 1


# =================================================================================================
# 5. Each claimed run is its own transaction.
# =================================================================================================
def test_claim_pending_fails_only_the_run_whose_preparation_raises() -> None:
    class BreaksOneRun(InMemoryWorkflowPersistence):
        bad_run: str | None = None

        def upsert_stage(self, workflow_run_id: str, stage_id: str, **kwargs: Any) -> Any:
            if workflow_run_id == self.bad_run and stage_id == "b":
                raise RuntimeError("disk full")
            return super().upsert_stage(workflow_run_id, stage_id, **kwargs)

    wf = (
        WorkflowBuilder("par", "Par", input=In, output=Out)
        .parallel([count_stage("a"), count_stage("b")])
        .build()
    )
    persistence = BreaksOneRun()
    e = make_engine(wf, persistence=persistence)
    first = e.create("par")
    e.clock.advance(1)
    persistence.bad_run = bad = e.create("par")
    e.clock.advance(1)
    last = e.create("par")

    assert e.claim() == [first, last]

    failed = e.run(bad)
    assert failed.status == Status.FAILED
    assert failed.output["error"]["code"] == "CLAIM_FAILED"
    assert "disk full" in failed.output["error"]["message"]
    assert e.persistence.get_stages_by_run(bad) == []  # stage a's row rolled back
    assert e.jobs_of(bad) == []
    assert [ev["type"] for ev in e.outbox(bad)] == ["workflow:created", "workflow:failed"]
    for good in (first, last):
        assert e.run(good).status == Status.RUNNING
        assert len(e.jobs_of(good)) == 2
        assert len(e.persistence.get_stages_by_run(good)) == 2
    e.work()
    assert e.run(first).status == e.run(last).status == Status.COMPLETED


# =================================================================================================
# 6. Suspended job rows are closed on every path.
# =================================================================================================
def _suspend(e: Engine) -> str:
    run_id = e.create("batch-wf")
    e.claim()
    assert e.work() == 1
    [job] = e.jobs_of(run_id)
    assert job.status == Status.SUSPENDED
    return run_id


def _poll_check(behaviour: str) -> Callable[[dict[str, Any], Any], Any]:
    def check(state: dict[str, Any], ctx: Any) -> CompletionCheck[Any]:
        assert state == {"batch_id": "b-1"}
        if behaviour == "resume":
            return CompletionCheck(ready=True, output={"words": 5})
        if behaviour == "error":
            return CompletionCheck(ready=False, error="provider rejected the batch")
        if behaviour == "raise":
            raise RuntimeError("provider unreachable")
        return CompletionCheck(ready=False)

    return check


@pytest.mark.parametrize(
    ("behaviour", "run_status", "job_status", "message"),
    [
        ("resume", Status.COMPLETED, Status.COMPLETED, None),
        ("error", Status.FAILED, Status.FAILED, "provider rejected the batch"),
        ("raise", Status.FAILED, Status.FAILED, "provider unreachable"),
        ("timeout", Status.FAILED, Status.FAILED, "exceeded maxWaitUntil"),
    ],
)
def test_suspended_job_row_is_closed_when_the_stage_settles(
    behaviour: str, run_status: Status, job_status: Status, message: str | None
) -> None:
    e = make_engine(batch_workflow(_poll_check(behaviour), poll_interval=60, max_wait=90))
    run_id = _suspend(e)
    e.clock.advance(120)  # due, and past max_wait
    e.host.run_maintenance_tick()

    assert e.run(run_id).status == run_status
    [job] = e.jobs_of(run_id)
    assert job.status == job_status
    if message is not None:
        assert message in (e.run(run_id).error_message or "")
        assert message in (e.stage(run_id, "batch").error_message or "")


def test_suspended_job_row_is_closed_on_cancel_and_the_stage_is_not_polled() -> None:
    polls: list[int] = []
    e = make_engine(
        batch_workflow(
            lambda s, c: polls.append(1) or CompletionCheck(ready=True, output={"words": 1})
        )
    )
    run_id = _suspend(e)
    assert e.kernel.dispatch(RunCancel(workflow_run_id=run_id, reason="user")).cancelled
    [job] = e.jobs_of(run_id)
    assert job.status == Status.CANCELLED
    assert e.stage(run_id, "batch").status == Status.CANCELLED
    e.clock.advance(3600)
    e.host.run_maintenance_tick()
    assert polls == []
    assert e.run(run_id).status == Status.CANCELLED


# =================================================================================================
# 7. A stage that cannot be polled fails its run.
# =================================================================================================
def _replacement(kind: str) -> Workflow[Any, Any] | None:
    if kind == "workflow missing":
        return None
    stage_id = "batch" if kind == "no check_completion" else "renamed"
    stage = define_stage(
        id=stage_id, name="X", input=In, output=Out, execute=lambda c: Out(words=0)
    )
    return WorkflowBuilder("batch-wf", "Batch v2", input=In, output=Out).pipe(stage).build()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("workflow missing", "Workflow batch-wf not found in registry"),
        ("no check_completion", "has no check_completion"),
        ("stage missing", "Stage batch not found in workflow batch-wf"),
    ],
)
def test_a_stage_that_cannot_be_polled_fails_its_run(kind: str, reason: str) -> None:
    e = make_engine(batch_workflow(_poll_check("resume")))
    run_id = _suspend(e)
    replacement = _replacement(kind)
    if replacement is None:
        del e.registry.workflows["batch-wf"]
    else:
        e.registry.workflows["batch-wf"] = replacement
    e.clock.advance(120)

    result = e.kernel.dispatch(StagePollSuspended())
    assert (result.checked, result.failed) == (1, 1)
    run = e.run(run_id)
    assert run.status == Status.FAILED
    assert reason in (run.error_message or "")
    assert e.stage(run_id, "batch").status == Status.FAILED
    assert [job.status for job in e.jobs_of(run_id)] == [Status.FAILED]
    assert len(e.outbox(run_id, "workflow:failed")) == 1


# =================================================================================================
# 8. run.transition never enqueues work for a run nobody claimed.
# =================================================================================================
def test_transition_of_a_pending_run_without_stages_is_a_noop() -> None:
    e = make_engine(single())
    run_id = e.create()
    result = e.kernel.dispatch(RunTransition(workflow_run_id=run_id))
    assert result.action == "noop"
    assert e.run(run_id).status == Status.PENDING
    assert e.persistence.get_stages_by_run(run_id) == []
    assert e.jobs_of(run_id) == []
    assert [ev["type"] for ev in e.outbox(run_id)] == ["workflow:created"]
    # and the run is still claimed and run normally, once
    assert e.claim() == [run_id]
    e.work()
    assert e.run(run_id).status == Status.COMPLETED
    assert len(e.outbox(run_id, "workflow:started")) == 1


# =================================================================================================
# 9. Idempotency keys are completed in the command's transaction.
# =================================================================================================
class CommitSpy(InMemoryWorkflowPersistence):
    """Looks at the key right after each commit, before the kernel gets control back."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watch: tuple[str, str] | None = None
        self.states_after_commit: list[str] = []
        self.crash_after_commit = False

    def with_transaction(self, fn: Any) -> Any:
        outermost = self._current() is None
        result = super().with_transaction(fn)
        if outermost and self.watch is not None:
            acquired = self.acquire_idempotency_key(
                *self.watch, now=self.clock.now(), stale_in_progress_after_ms=None
            )
            self.states_after_commit.append(acquired.status)
        if outermost and self.crash_after_commit:
            self.crash_after_commit = False
            raise ConnectionError("connection lost right after COMMIT")
        return result


def test_run_create_key_is_completed_by_the_commit_itself() -> None:
    persistence = CommitSpy()
    e = make_engine(single(), persistence=persistence)
    persistence.watch = ("order-1", "run.create")
    e.create(idempotency_key="order-1")
    assert persistence.states_after_commit == ["replay"]


def test_run_create_replays_the_same_run_after_a_crash_right_after_commit() -> None:
    persistence = CommitSpy()
    e = make_engine(single(), persistence=persistence)
    persistence.crash_after_commit = True
    with pytest.raises(ConnectionError):
        e.create(idempotency_key="order-7")
    [run] = e.persistence.get_all_runs()

    again = e.kernel.dispatch(
        RunCreate(idempotency_key="order-7", workflow_id="wc", input={"text": "a b c"})
    )
    assert again.workflow_run_id == run.id
    assert len(e.persistence.get_all_runs()) == 1


def test_job_execute_key_is_completed_with_the_result_so_a_redelivery_does_not_rerun() -> None:
    runs: list[int] = []
    e = make_engine(single(lambda ctx: runs.append(1) or Out(words=9)))
    run_id = e.create()
    e.claim()
    job = e.jobs.dequeue("w")
    assert job is not None
    command = JobExecute(
        workflow_run_id=run_id,
        workflow_id="wc",
        stage_id="count",
        idempotency_key=f"job:{job.id}:attempt:{job.attempt}",
        job_id=job.id,
        lease_token=job.lease_token,
    )
    first = e.kernel.dispatch(command)
    replay = e.kernel.dispatch(command)
    assert runs == [1]
    assert first.outcome == replay.outcome == "completed"
    assert replay.output == {"words": 9}
    assert len(e.outbox(run_id, "stage:started")) == 1


# =================================================================================================
# 10. Idempotency keys (and published events) expire after a retention period.
# =================================================================================================
def test_retention_expire_forgets_old_completed_keys_only() -> None:
    e = make_engine(single())
    first = e.create(idempotency_key="old")
    e.clock.advance(timedelta(hours=2))
    young = e.create(idempotency_key="young")
    e.persistence.acquire_idempotency_key(
        "stuck",
        "run.create",
        now=e.clock.now() - timedelta(days=9),
        stale_in_progress_after_ms=None,
    )

    result = e.kernel.dispatch(RetentionExpire(idempotency_key_retention_ms=60 * MINUTE))
    assert result.idempotency_keys_deleted == 1

    renewed = e.create(idempotency_key="old")
    assert renewed != first  # the key was forgotten: a new run
    replay = e.kernel.dispatch(
        RunCreate(idempotency_key="young", workflow_id="wc", input={"text": "x"})
    )
    assert replay.workflow_run_id == young
    assert len(e.persistence.get_all_runs()) == 3
    # an in-progress marker is not "completed": retention leaves it to the stale reclaim
    state = e.persistence.acquire_idempotency_key(
        "stuck", "run.create", now=e.clock.now(), stale_in_progress_after_ms=None
    )
    assert state.status == "in_progress"


def test_maintenance_tick_expires_keys_and_published_events() -> None:
    e = make_engine(
        single(),
        host_options={"idempotency_key_retention_ms": MINUTE, "outbox_retention_ms": MINUTE},
    )
    run_id = e.create(idempotency_key="k")
    e.host.run_maintenance_tick()  # claims and publishes created + started
    e.work()
    e.clock.advance(timedelta(minutes=2))
    tick = e.host.run_maintenance_tick()  # publishes the stage events, then expires
    # the run.create key, workflow:created and workflow:started (a job this host dequeued
    # itself holds no idempotency key: its fresh lease token already makes it unique)
    assert tick.retention_expired == 3
    state = e.persistence.acquire_idempotency_key(
        "k", "run.create", now=e.clock.now(), stale_in_progress_after_ms=None
    )
    assert state.status == "acquired"
    remaining = [ev.event_type for ev in e.persistence.get_outbox_events(run_id)]
    assert remaining == ["stage:started", "stage:completed", "workflow:completed"]


def test_retention_keeps_unpublished_events() -> None:
    e = make_engine(single())
    run_id = e.create()
    e.clock.advance(timedelta(days=30))
    result = e.kernel.dispatch(RetentionExpire(outbox_retention_ms=MINUTE))
    assert result.outbox_events_deleted == 0
    assert len(e.persistence.get_outbox_events(run_id)) == 1


# =================================================================================================
# 11-14. Outbox: claimed rows, per-plugin delivery, DLQ, per-run order.
# =================================================================================================
def test_concurrent_flushers_never_deliver_one_event_twice() -> None:
    entered = threading.Event()
    release = threading.Event()
    delivered: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    class GateSink:
        def emit(self, event: Any) -> None:
            if threading.current_thread().name == "flusher-a" and not entered.is_set():
                entered.set()
                assert release.wait(5)
            with lock:
                delivered.append(
                    (threading.current_thread().name, event["workflow_run_id"], event["type"])
                )

    e = make_engine(single(), sink=GateSink())
    runs = [e.create() for _ in range(3)]
    e.claim()  # 3 runs x (created, started) = 6 events
    results: dict[str, int] = {}
    a = threading.Thread(
        name="flusher-a",
        target=lambda: results.__setitem__(
            "a", e.kernel.dispatch(OutboxFlush(max_events=2)).published
        ),
    )
    a.start()
    assert entered.wait(5)
    results["b"] = e.kernel.dispatch(OutboxFlush(max_events=100)).published  # while A is stuck
    release.set()
    a.join(5)

    assert results == {"a": 2, "b": 4}
    keys = [(run, kind) for _, run, kind in delivered]
    assert len(keys) == len(set(keys)) == 6
    assert {run for run, _ in keys} == set(runs)
    assert e.kernel.dispatch(OutboxFlush()).published == 0


def _plugin_engine(
    fail_times: dict[str, int], max_retries: int = 3
) -> tuple[Engine, dict[str, list[str]]]:
    calls: dict[str, list[str]] = {"audit": [], "webhook": []}

    def handler(name: str) -> Callable[[Any], None]:
        def handle(event: Any) -> None:
            calls[name].append(f"{event['workflow_run_id']}:{event['type']}")
            if fail_times.get(name, 0) > 0:
                fail_times[name] -= 1
                raise RuntimeError(f"{name} is down")

        return handle

    runner = create_plugin_runner(
        plugins=[
            define_plugin(
                id="audit", name="Audit", on=["workflow:created"], handle=handler("audit")
            ),
            define_plugin(
                id="webhook", name="Hook", on=["workflow:created"], handle=handler("webhook")
            ),
        ],
        max_retries=max_retries,
    )
    return make_engine(single(), sink=runner), calls


def test_a_failing_plugin_does_not_rerun_plugins_that_already_succeeded() -> None:
    e, calls = _plugin_engine({"webhook": 2})
    run_id = e.create()
    flushed = [e.kernel.dispatch(OutboxFlush()).published for _ in range(3)]
    assert flushed == [0, 0, 1]
    assert calls["audit"] == [f"{run_id}:workflow:created"]  # once, across three flushes
    assert len(calls["webhook"]) == 3
    [event] = e.persistence.get_outbox_events(run_id)
    assert event.published_at is not None
    assert set(event.delivered_plugins) == {"audit", "webhook"}


def test_an_event_goes_to_the_dlq_after_max_retries_and_replays() -> None:
    fail = {"webhook": 10**6}
    e, calls = _plugin_engine(fail, max_retries=3)
    run_id = e.create()
    for _ in range(5):
        e.kernel.dispatch(OutboxFlush())
    assert len(calls["webhook"]) == 3  # the first attempt included
    [parked] = e.persistence.get_dlq_events()
    assert parked.workflow_run_id == run_id
    assert parked.retry_count == 3

    fail["webhook"] = 0
    assert e.kernel.dispatch(PluginReplayDLQ()).replayed == 1
    assert e.kernel.dispatch(OutboxFlush()).published == 1
    assert e.persistence.get_dlq_events() == []
    assert len(calls["audit"]) == 1
    assert len(calls["webhook"]) == 4


def test_later_events_of_a_run_wait_while_an_earlier_one_is_failing() -> None:
    failing_run: dict[str, str] = {}
    failures = {"left": 2}
    delivered: list[tuple[str, str]] = []

    def handle(event: Any) -> None:
        is_first = (event["workflow_run_id"], event["type"]) == (
            failing_run["id"],
            "workflow:created",
        )
        if is_first and failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("not yet")
        delivered.append((event["workflow_run_id"], event["type"]))

    runner = create_plugin_runner(
        plugins=[
            define_plugin(
                id="p", name="P", on=["workflow:created", "workflow:started"], handle=handle
            )
        ]
    )
    e = make_engine(single(), sink=runner)
    failing_run["id"] = x = e.create()
    y = e.create()
    e.claim()

    assert e.kernel.dispatch(OutboxFlush()).published == 2  # y's two events only
    assert all(run == y for run, _ in delivered)
    started_x = e.outbox(x, "workflow:started")
    assert started_x
    assert [ev.retry_count for ev in e.persistence.get_outbox_events(x)] == [1, 0]
    assert e.kernel.dispatch(OutboxFlush()).published == 0
    assert e.kernel.dispatch(OutboxFlush()).published == 2
    assert [kind for run, kind in delivered if run == x] == ["workflow:created", "workflow:started"]


# =================================================================================================
# 15-16. Small outputs inline, large ones in blobs, workflow_context loaded lazily.
# =================================================================================================
class CountingBlobStore(InMemoryBlobStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def get(self, key: str) -> Any:
        self.reads.append(key)
        return super().get(key)


class Small(BaseModel):
    n: int


def test_small_outputs_are_inline_and_large_ones_in_the_blob_store() -> None:
    wf = (
        WorkflowBuilder("io", "IO", input=In, output=Big)
        .pipe(
            define_stage(id="small", name="S", input=In, output=Small, execute=lambda c: Small(n=1))
        )
        .pipe(
            define_stage(
                id="large",
                name="L",
                input=Small,
                output=Big,
                execute=lambda c: Big(payload="x" * 5000),
            )
        )
        .build()
    )
    e = make_engine(wf, inline_output_max_bytes=1000)
    run_id = e.create("io")
    e.claim()
    e.work()

    small = e.stage(run_id, "small")
    assert (small.output, small.output_ref) == ({"n": 1}, None)
    large = e.stage(run_id, "large")
    assert large.output is None
    assert large.output_ref is not None and large.output_ref.endswith("large/output.json")
    assert e.blobs.get(large.output_ref) == {"payload": "x" * 5000}
    assert e.blobs.list("") == [large.output_ref]
    assert e.run(run_id).output == {"payload": "x" * 5000}


def test_workflow_context_reads_only_the_blobs_a_job_uses() -> None:
    seen: dict[str, Any] = {}

    def s3(ctx: Any) -> Small:
        seen["s3_context"] = sorted(ctx.workflow_context)
        return Small(n=ctx.input.n + 1)

    def s4(ctx: Any) -> Small:
        return Small(n=len(ctx.require("s1")["payload"]))

    wf = (
        WorkflowBuilder("lazy", "Lazy", input=In, output=Small)
        .pipe(
            define_stage(
                id="s1", name="1", input=In, output=Big, execute=lambda c: Big(payload="y" * 3000)
            )
        )
        .pipe(
            define_stage(
                id="s2",
                name="2",
                input=Big,
                output=Small,
                execute=lambda c: Small(n=len(c.input.payload)),
            )
        )
        .pipe(define_stage(id="s3", name="3", input=Small, output=Small, execute=s3))
        .pipe(define_stage(id="s4", name="4", input=Small, output=Small, execute=s4))
        .build()
    )
    blobs = CountingBlobStore()
    e = make_engine(wf, blobs=blobs, inline_output_max_bytes=1000)
    run_id = e.create("lazy")
    e.claim()
    s1_key = None
    reads_per_job = []
    for _ in range(4):
        before = len(blobs.reads)
        assert e.work(max_jobs=1) == 1
        reads_per_job.append(blobs.reads[before:])
        s1_key = s1_key or e.stage(run_id, "s1").output_ref

    assert reads_per_job == [[], [s1_key], [], [s1_key]]
    assert seen["s3_context"] == ["s1", "s2"]  # listing ids reads nothing
    assert e.run(run_id).output == {"n": 3000}


# =================================================================================================
# 17. Run totals are the sum of the stages' metrics; AI topics match on segment boundaries.
# =================================================================================================
def test_run_totals_sum_stage_metrics() -> None:
    def costly(cost: float, tokens: int) -> Callable[[Any], Any]:
        return lambda ctx: StageResult(
            output=Out(words=tokens), metrics={"total_cost": cost, "total_tokens": tokens}
        )

    wf = (
        WorkflowBuilder("cost", "Cost", input=In, output=Out)
        .pipe(count_stage("a", costly(0.25, 100)))
        .parallel(
            [
                define_stage(id="b", name="B", input=Out, output=Out, execute=costly(0.5, 20)),
                define_stage(
                    id="c",
                    name="C",
                    input=Out,
                    output=Out,
                    execute=lambda ctx: StageResult(
                        output=Out(words=1), metrics={"totalCost": 1.0, "totalTokens": 3}
                    ),
                ),
            ]
        )
        .build()
    )
    e = make_engine(wf)
    run_id = e.create("cost")
    e.claim()
    e.work()
    run = e.run(run_id)
    assert run.status == Status.COMPLETED
    assert run.total_cost == pytest.approx(1.75)
    assert run.total_tokens == 123
    [completed] = e.outbox(run_id, "workflow:completed")
    assert completed["total_cost"] == pytest.approx(1.75)
    assert completed["total_tokens"] == 123


def test_ai_cost_topics_match_whole_segments() -> None:
    logger = InMemoryAICallLogger()
    for topic, cost in [
        ("workflow.run1.stage.a", 1.0),
        ("workflow.run1", 0.5),
        ("workflow.run10.stage.a", 100.0),
    ]:
        logger.log_call(
            {"topic": topic, "model_key": "m", "input_tokens": 1, "output_tokens": 1, "cost": cost}
        )
    stats = logger.get_stats("workflow.run1")
    assert stats["total_calls"] == 2
    assert stats["total_cost"] == pytest.approx(1.5)


# =================================================================================================
# 18. A wake-up that names its run claims that run (and only it), so a new run starts at once
#     even when older runs wait; those are the tick's to claim.
# =================================================================================================
def test_claim_pending_with_a_run_id_claims_that_run_only() -> None:
    e = make_engine(single())
    waiting = e.create(priority=9)
    named = e.create()
    result = e.kernel.dispatch(RunClaimPending(worker_id="w", max_claims=10, workflow_run_id=named))
    assert [claimed.workflow_run_id for claimed in result.claimed] == [named]
    assert e.run(named).status == Status.RUNNING and e.run(waiting).status == Status.PENDING
    again = e.kernel.dispatch(RunClaimPending(worker_id="w", workflow_run_id=named))
    assert again.claimed == []
    assert e.claim() == [waiting]
