"""Kernel-level concurrency with real threads over the in-memory adapters.

Threads meet at barriers and events with deadlines; nothing relies on a fixed sleep.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import (
    NonRetryableError,
    Status,
    Workflow,
    WorkflowBuilder,
    WorkflowRegistry,
    define_stage,
)
from workflow_engine.hosts.serverless import create_serverless_host
from workflow_engine.kernel import create_kernel
from workflow_engine.kernel.commands import (
    JobExecute,
    OutboxFlush,
    RunClaimPending,
    RunCreate,
    RunTransition,
)
from workflow_engine.testing import (
    CollectingEventSink,
    FakeClock,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
)

DEADLINE = 10.0


class In(BaseModel):
    text: str


class Out(BaseModel):
    words: int


def count(ctx: Any) -> Out:
    if ctx.input.text == "fail":
        raise NonRetryableError(f"run {ctx.workflow_run_id} was told to fail")
    return Out(words=len(ctx.input.text.split()))


PIPE = (
    WorkflowBuilder("pipe", "Pipe", input=In, output=Out)
    .pipe(define_stage(id="a", name="A", input=In, output=Out, execute=count))
    .pipe(define_stage(id="b", name="B", input=Out, output=Out, execute=lambda c: c.input))
    .build()
)


class Env:
    def __init__(self, *workflows: Workflow[Any, Any]) -> None:
        self.clock = FakeClock()
        self.persistence = InMemoryWorkflowPersistence(clock=self.clock)
        self.jobs = InMemoryJobQueue("w", clock=self.clock)
        self.sink = CollectingEventSink()
        self.kernel = create_kernel(
            persistence=self.persistence,
            blob_store=InMemoryBlobStore(),
            job_transport=self.jobs,
            event_sink=self.sink,
            registry=WorkflowRegistry(workflows or (PIPE,)),
            clock=self.clock,
        )

    def create(self, n: int, workflow_id: str = "pipe", text: Callable[[int], str] | None = None):
        return [
            self.kernel.dispatch(
                RunCreate(
                    idempotency_key=f"k{i}",
                    workflow_id=workflow_id,
                    input={"text": text(i) if text else "a b"},
                )
            ).workflow_run_id
            for i in range(n)
        ]

    def host(self, name: str) -> Any:
        return create_serverless_host(kernel=self.kernel, job_transport=self.jobs, worker_id=name)

    def outbox_types(self, run_id: str) -> Counter[str]:
        return Counter(e.event_type for e in self.persistence.get_outbox_events(run_id))


def run_threads(targets: list[Callable[[], Any]]) -> list[Any]:
    """Run each target in its own thread; return results, re-raising the first error."""
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = [pool.submit(target) for target in targets]
        return [future.result(timeout=DEADLINE) for future in futures]


def test_many_runs_are_claimed_exactly_once_by_four_threads() -> None:
    env = Env()
    runs = env.create(60)
    barrier = threading.Barrier(4, timeout=DEADLINE)

    def claimer(name: str) -> Callable[[], list[str]]:
        def claim() -> list[str]:
            barrier.wait()
            mine: list[str] = []
            while True:
                result = env.kernel.dispatch(RunClaimPending(worker_id=name, max_claims=3))
                if not result.claimed:
                    return mine
                mine += [c.workflow_run_id for c in result.claimed]

        return claim

    claimed = run_threads([claimer(f"w{i}") for i in range(4)])
    everything = [run for mine in claimed for run in mine]
    assert sorted(everything) == sorted(runs)  # each exactly once
    assert len(env.jobs.get_all_jobs()) == 60
    assert Counter(j.workflow_run_id for j in env.jobs.get_all_jobs()) == Counter(runs)
    for run_id in runs:
        assert env.outbox_types(run_id)["workflow:started"] == 1
        assert env.persistence.get_run(run_id).status == Status.RUNNING


def test_four_workers_run_every_run_to_completion_once() -> None:
    env = Env()
    runs = env.create(40)
    barrier = threading.Barrier(4, timeout=DEADLINE)

    def worker(name: str) -> Callable[[], int]:
        def work() -> int:
            barrier.wait()
            host = env.host(name)
            processed = 0
            while True:
                env.kernel.dispatch(RunClaimPending(worker_id=name, max_claims=2))
                done = host.process_available_jobs(max_jobs=3).processed
                processed += done
                statuses = [env.persistence.get_run_status(r) for r in runs]
                if done == 0 and all(s == Status.COMPLETED for s in statuses):
                    return processed

        return work

    processed = run_threads([worker(f"w{i}") for i in range(4)])
    assert sum(processed) == 80  # two stages per run, each executed once
    for run_id in runs:
        types = env.outbox_types(run_id)
        assert types["stage:completed"] == 2
        assert types["stage:started"] == 2
        assert types["workflow:completed"] == 1


def test_parallel_siblings_finishing_together_transition_the_run_once() -> None:
    barrier = threading.Barrier(3, timeout=DEADLINE)

    def sibling(ctx: Any) -> Out:
        barrier.wait()  # all three finish at the same moment
        return Out(words=ctx.stage_number)

    stages = [
        define_stage(id=f"s{i}", name=f"S{i}", input=In, output=Out, execute=sibling)
        for i in range(3)
    ]
    wf = WorkflowBuilder("fan", "Fan", input=In, output=Out).parallel(stages).build()
    env = Env(wf)
    [run_id] = env.create(1, "fan")
    env.kernel.dispatch(RunClaimPending(worker_id="w"))
    jobs = [env.jobs.dequeue(f"w{i}") for i in range(3)]
    hosts = [env.host(f"w{i}") for i in range(3)]

    outcomes = run_threads(
        [lambda h=h, j=j: h.handle_job(j) for h, j in zip(hosts, jobs, strict=True)]
    )
    assert [o.outcome for o in outcomes] == ["completed"] * 3
    run = env.persistence.get_run(run_id)
    assert run.status == Status.COMPLETED
    assert run.output == {"s0": {"words": 1}, "s1": {"words": 2}, "s2": {"words": 3}}
    assert env.outbox_types(run_id)["workflow:completed"] == 1


def test_concurrent_transitions_of_one_finished_group_advance_it_once() -> None:
    env = Env()
    [run_id] = env.create(1)
    env.kernel.dispatch(RunClaimPending(worker_id="w"))
    job = env.jobs.dequeue("w")
    env.kernel.dispatch(
        JobExecute(workflow_run_id=run_id, workflow_id="pipe", stage_id="a", job_id=job.id)
    )
    env.jobs.complete(job.id)
    barrier = threading.Barrier(8, timeout=DEADLINE)

    def transition() -> str:
        barrier.wait()
        return env.kernel.dispatch(RunTransition(workflow_run_id=run_id)).action

    actions = run_threads([transition] * 8)
    assert sorted(actions) == ["advanced"] + ["noop"] * 7
    assert [j.stage_id for j in env.jobs.get_jobs_by_workflow_run(run_id)] == ["a", "b"]


def test_two_workers_executing_the_same_job_record_one_completion() -> None:
    executions: list[str] = []
    barrier = threading.Barrier(2, timeout=DEADLINE)

    def stage(ctx: Any) -> Out:
        executions.append(threading.current_thread().name)
        barrier.wait()  # both are inside the stage at once
        return Out(words=len(executions))

    wf = (
        WorkflowBuilder("dup", "Dup", input=In, output=Out)
        .pipe(define_stage(id="s", name="S", input=In, output=Out, execute=stage))
        .build()
    )
    env = Env(wf)
    [run_id] = env.create(1, "dup")
    env.kernel.dispatch(RunClaimPending(worker_id="w"))
    job = env.jobs.dequeue("w")
    command = JobExecute(workflow_run_id=run_id, workflow_id="dup", stage_id="s", job_id=job.id)

    results = run_threads([lambda: env.kernel.dispatch(command)] * 2)
    assert len(executions) == 2
    outcomes = sorted((r.outcome, r.ghost) for r in results)
    assert outcomes == [("completed", False), ("failed", True)]
    for _ in range(2):  # both workers transition afterwards
        env.kernel.dispatch(RunTransition(workflow_run_id=run_id))
    types = env.outbox_types(run_id)
    assert types["stage:completed"] == 1
    assert types["workflow:completed"] == 1


def test_a_duplicate_delivery_of_a_leased_job_does_not_steal_the_lease() -> None:
    inside = threading.Event()
    release = threading.Event()

    def stage(ctx: Any) -> Out:
        inside.set()
        assert release.wait(DEADLINE)
        return Out(words=1)

    wf = (
        WorkflowBuilder("dup", "Dup", input=In, output=Out)
        .pipe(define_stage(id="s", name="S", input=In, output=Out, execute=stage))
        .build()
    )
    env = Env(wf)
    [run_id] = env.create(1, "dup")
    env.kernel.dispatch(RunClaimPending(worker_id="w"))
    job = env.jobs.dequeue("w")
    first, second = env.host("w1"), env.host("w2")

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(first.handle_job, job)
        try:
            assert inside.wait(DEADLINE)
            duplicate = second.handle_job(job)  # the same message delivered twice
            still = env.jobs.get_job(job.id)
        finally:
            release.set()
        assert running.result(timeout=DEADLINE).outcome == "completed"
    assert duplicate.outcome == "failed"
    assert "already in progress" in (duplicate.error or "")
    assert (still.status, still.lease_token) == (Status.RUNNING, job.lease_token)

    assert env.jobs.get_job(job.id).status == Status.COMPLETED
    assert env.persistence.get_run(run_id).status == Status.COMPLETED
    assert env.outbox_types(run_id)["stage:started"] == 1


def test_runs_are_isolated_from_each_others_failures() -> None:
    env = Env()
    runs = env.create(20, text=lambda i: "fail" if i % 2 else "a b c")
    barrier = threading.Barrier(4, timeout=DEADLINE)

    def worker(name: str) -> Callable[[], None]:
        def work() -> None:
            barrier.wait()
            host = env.host(name)
            while True:
                env.kernel.dispatch(RunClaimPending(worker_id=name, max_claims=1))
                done = host.process_available_jobs(max_jobs=2).processed
                statuses = [env.persistence.get_run_status(r) for r in runs]
                if done == 0 and all(s.is_terminal_for_run for s in statuses):
                    return

        return work

    run_threads([worker(f"w{i}") for i in range(4)])
    for i, run_id in enumerate(runs):
        run = env.persistence.get_run(run_id)
        if i % 2:
            assert run.status == Status.FAILED
            assert run.error_message == f"run {run_id} was told to fail"
            assert [s.stage_id for s in env.persistence.get_stages_by_run(run_id)] == ["a"]
        else:
            assert run.status == Status.COMPLETED
            assert run.output == {"words": 3}


@pytest.mark.parametrize("flushers", [2, 4])
def test_concurrent_outbox_flushers_deliver_every_event_exactly_once(flushers: int) -> None:
    env = Env()
    runs = env.create(30)
    env.kernel.dispatch(RunClaimPending(worker_id="w", max_claims=30))
    barrier = threading.Barrier(flushers, timeout=DEADLINE)

    def flusher() -> int:
        barrier.wait()
        total = 0
        while True:
            published = env.kernel.dispatch(OutboxFlush(max_events=4)).published
            total += published
            if published == 0 and not env.persistence.get_unpublished_outbox_events(1):
                return total

    totals = run_threads([flusher] * flushers)
    assert sum(totals) == 60
    delivered = Counter((e["workflow_run_id"], e["type"]) for e in env.sink.events)
    assert len(env.sink.events) == 60
    assert set(delivered.values()) == {1}
    for run_id in runs:  # per run, in order
        mine = [e["type"] for e in env.sink.events if e["workflow_run_id"] == run_id]
        assert mine == ["workflow:created", "workflow:started"]
