"""Priority scheduling (reference §2.8 and 11-priority-scheduling): strict priority, FIFO ties."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import Status, WorkflowBuilder, WorkflowRegistry, define_stage
from workflow_engine.hosts.serverless import create_serverless_host
from workflow_engine.kernel import create_kernel
from workflow_engine.kernel.commands import RunClaimPending, RunCreate
from workflow_engine.records import NewJob
from workflow_engine.testing import (
    CollectingEventSink,
    FakeClock,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
)


class In(BaseModel):
    label: str


class Out(BaseModel):
    label: str


def echo(ctx: Any) -> Out:
    return Out(label=ctx.input.label)


ONE = (
    WorkflowBuilder("one", "One", input=In, output=Out)
    .pipe(define_stage(id="s", name="S", input=In, output=Out, execute=echo))
    .build()
)
FAN = (
    WorkflowBuilder("fan", "Fan", input=In, output=Out)
    .parallel(
        [
            define_stage(id=f"p{i}", name=f"P{i}", input=In, output=Out, execute=echo)
            for i in range(3)
        ]
    )
    .build()
)


class Env:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.persistence = InMemoryWorkflowPersistence(clock=self.clock)
        self.jobs = InMemoryJobQueue("w", clock=self.clock)
        self.kernel = create_kernel(
            persistence=self.persistence,
            blob_store=InMemoryBlobStore(),
            job_transport=self.jobs,
            event_sink=CollectingEventSink(),
            registry=WorkflowRegistry([ONE, FAN]),
            clock=self.clock,
        )
        self.host = create_serverless_host(
            kernel=self.kernel, job_transport=self.jobs, worker_id="w"
        )
        self.labels: dict[str, str] = {}

    def create(self, label: str, priority: int | None = None, workflow_id: str = "one") -> str:
        self.clock.advance(timedelta(milliseconds=1))  # distinct creation times
        run_id = self.kernel.dispatch(
            RunCreate(
                idempotency_key=label,
                workflow_id=workflow_id,
                input={"label": label},
                priority=priority,
            )
        ).workflow_run_id
        self.labels[run_id] = label
        return run_id

    def claim_order(self, max_claims: int = 100) -> list[str]:
        claimed = self.kernel.dispatch(RunClaimPending(worker_id="w", max_claims=max_claims))
        return [self.labels[c.workflow_run_id] for c in claimed.claimed]

    def dequeue_order(self) -> list[str]:
        order = []
        while (job := self.jobs.dequeue("w")) is not None:
            order.append(self.labels[job.workflow_run_id])
        return order


# -- claiming runs --------------------------------------------------------------------------------
def test_higher_priority_runs_are_claimed_first() -> None:
    env = Env()
    env.create("low", 1)
    env.create("high", 9)
    env.create("mid", 5)
    assert env.claim_order() == ["high", "mid", "low"]


def test_runs_of_equal_priority_are_claimed_in_creation_order() -> None:
    env = Env()
    for label in ["first", "second", "third", "fourth"]:
        env.create(label, 7)
    assert env.claim_order() == ["first", "second", "third", "fourth"]


def test_default_priority_is_five_and_sits_between_four_and_six() -> None:
    env = Env()
    four = env.create("four", 4)
    default = env.create("default")
    env.create("six", 6)
    assert env.persistence.get_run(default).priority == 5
    assert env.persistence.get_run(four).priority == 4
    assert env.claim_order() == ["six", "default", "four"]


def test_priorities_zero_to_ten_are_claimed_in_order_with_fifo_interleaving() -> None:
    env = Env()
    for round_ in range(2):
        for priority in [3, 0, 10, 7, 5, 1, 9, 2, 8, 6, 4]:
            env.create(f"{priority}-{round_}", priority)
    expected = [f"{p}-{r}" for p in range(10, -1, -1) for r in range(2)]
    assert env.claim_order() == expected


@pytest.mark.parametrize("extremes", [(-1_000_000, 1_000_000), (-(2**31), 2**31 - 1)])
def test_extreme_priorities_are_stored_and_ordered(extremes: tuple[int, int]) -> None:
    lowest, highest = extremes
    env = Env()
    env.create("normal")
    low = env.create("lowest", lowest)
    high = env.create("highest", highest)
    env.create("negative", -1)
    assert env.persistence.get_run(low).priority == lowest
    assert env.persistence.get_run(high).priority == highest
    assert env.claim_order() == ["highest", "normal", "negative", "lowest"]


def test_max_claims_takes_the_highest_priorities_and_leaves_the_rest_pending() -> None:
    env = Env()
    low = env.create("low", 0)
    env.create("high", 10)
    env.create("mid", 5)
    assert env.claim_order(max_claims=2) == ["high", "mid"]
    assert env.persistence.get_run(low).status == Status.PENDING
    assert env.claim_order() == ["low"]


# -- dequeuing jobs -------------------------------------------------------------------------------
def test_run_priority_is_copied_to_its_jobs() -> None:
    env = Env()
    run_id = env.create("r", 8, workflow_id="fan")
    env.claim_order()
    jobs = env.jobs.get_jobs_by_workflow_run(run_id)
    assert len(jobs) == 3
    assert {job.priority for job in jobs} == {8}


def test_jobs_are_dequeued_by_priority_then_age() -> None:
    env = Env()
    env.create("a-low", 2)
    env.create("b-high", 9)
    env.create("c-low", 2)
    env.create("d-high", 9)
    env.claim_order()
    assert env.dequeue_order() == ["b-high", "d-high", "a-low", "c-low"]


def test_a_newer_high_priority_job_overtakes_older_low_priority_ones() -> None:
    env = Env()
    env.create("old-1", 1)
    env.create("old-2", 1)
    env.claim_order()
    first = env.jobs.dequeue("w")
    assert env.labels[first.workflow_run_id] == "old-1"
    env.create("urgent", 10)
    env.claim_order()
    assert env.dequeue_order() == ["urgent", "old-2"]


def test_a_future_job_is_not_prioritised_until_it_is_due() -> None:
    env = Env()
    env.create("later", 10)
    env.create("now", 1)
    env.claim_order()
    [later_job] = [j for j in env.jobs.get_all_jobs() if env.labels[j.workflow_run_id] == "later"]
    env.jobs.set_job_next_poll_at(later_job.id, env.clock.now() + timedelta(seconds=30))
    now_job = env.jobs.dequeue("w")
    assert env.labels[now_job.workflow_run_id] == "now"
    assert env.jobs.dequeue("w") is None
    env.clock.advance(30)
    assert env.labels[env.jobs.dequeue("w").workflow_run_id] == "later"


def test_a_job_scheduled_for_later_is_invisible_whatever_its_priority() -> None:
    env = Env()
    queue = env.jobs
    base = dict(workflow_id="one", stage_id="s", payload={})
    queue.enqueue(
        NewJob(
            workflow_run_id="r-future",
            priority=100,
            scheduled_for=env.clock.now() + timedelta(minutes=1),
            **base,
        )
    )
    queue.enqueue(NewJob(workflow_run_id="r-now", priority=0, **base))
    assert queue.dequeue("w").workflow_run_id == "r-now"
    assert queue.dequeue("w") is None
    env.clock.advance(timedelta(minutes=1))
    assert queue.dequeue("w").workflow_run_id == "r-future"


def test_a_retried_job_waiting_for_backoff_does_not_block_lower_priorities() -> None:
    env = Env()
    env.create("high", 9)
    env.create("low", 1)
    env.claim_order()
    high = env.jobs.dequeue("w")
    env.jobs.fail(high.id, "transient", should_retry=True, lease_token=high.lease_token)
    assert env.dequeue_order() == ["low"]
    env.clock.advance(2)
    assert env.dequeue_order() == ["high"]


def test_low_priority_work_runs_once_nothing_higher_is_ready() -> None:
    env = Env()
    low = env.create("low", 0)
    highs = [env.create(f"high-{i}", 10) for i in range(3)]
    env.host.run_maintenance_tick()
    order: list[str] = []
    while env.host.process_available_jobs(max_jobs=1).processed:
        newly = [
            label
            for run_id, label in env.labels.items()
            if label not in order and env.persistence.get_run(run_id).status == Status.COMPLETED
        ]
        assert len(newly) == 1
        order += newly
    assert order == ["high-0", "high-1", "high-2", "low"]
    assert env.persistence.get_run(low).status == Status.COMPLETED
    assert all(env.persistence.get_run(h).status == Status.COMPLETED for h in highs)
