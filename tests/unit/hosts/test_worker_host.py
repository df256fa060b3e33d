"""The long-running worker host: runs jobs and ticks in threads, stops gracefully."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import Status, WorkflowBuilder, WorkflowRegistry, define_stage
from workflow_engine.hosts.worker import WorkerHost, create_worker_host
from workflow_engine.kernel import Kernel, create_kernel
from workflow_engine.kernel.commands import RunCreate
from workflow_engine.testing import (
    CollectingEventSink,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
)

DEADLINE_S = 10.0


class Text(BaseModel):
    text: str


class Words(BaseModel):
    words: int


@dataclass
class Env:
    kernel: Kernel
    persistence: InMemoryWorkflowPersistence
    jobs: InMemoryJobQueue
    calls: Counter[str]
    gate: threading.Event  # the first stage waits on it
    entered: threading.Event  # set when the first stage starts waiting

    def create(self, n: int) -> list[str]:
        return [
            self.kernel.dispatch(
                RunCreate(idempotency_key=f"r{i}", workflow_id="two", input={"text": "a b"})
            ).workflow_run_id
            for i in range(n)
        ]

    def host(self) -> WorkerHost:
        return create_worker_host(
            kernel=self.kernel,
            job_transport=self.jobs,
            worker_id="w1",
            orchestration_interval_ms=50,
            job_poll_interval_ms=10,
        )


@pytest.fixture
def env() -> Env:
    calls: Counter[str] = Counter()
    gate, entered = threading.Event(), threading.Event()
    gate.set()

    def count(ctx: Any) -> Words:
        calls["count"] += 1
        entered.set()
        assert gate.wait(DEADLINE_S)
        return Words(words=len(ctx.input.text.split()))

    def double(ctx: Any) -> Words:
        calls["double"] += 1
        return Words(words=2 * ctx.input.words)

    workflow = (
        WorkflowBuilder("two", "Two", input=Text)
        .pipe(define_stage(id="count", name="Count", input=Text, output=Words, execute=count))
        .pipe(define_stage(id="double", name="Double", input=Words, output=Words, execute=double))
        .build()
    )
    persistence, jobs = InMemoryWorkflowPersistence(), InMemoryJobQueue()
    kernel = create_kernel(
        persistence=persistence,
        blob_store=InMemoryBlobStore(),
        job_transport=jobs,
        event_sink=CollectingEventSink(),
        registry=WorkflowRegistry([workflow]),
    )
    return Env(kernel, persistence, jobs, calls, gate, entered)


@pytest.fixture
def running(env: Env) -> Iterator[WorkerHost]:
    host = env.host()
    host.start()
    yield host
    env.gate.set()
    host.stop(timeout=DEADLINE_S)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_started_host_runs_every_run_once_each_stage(env: Env, running: WorkerHost) -> None:
    run_ids = env.create(5)

    wait_for(
        lambda: all(env.persistence.get_run_status(r) == Status.COMPLETED for r in run_ids),
        "five runs to complete",
    )

    assert env.calls == {"count": 5, "double": 5}
    for run_id in run_ids:
        jobs = env.jobs.get_jobs_by_workflow_run(run_id)
        assert [(job.status, job.attempt) for job in jobs] == [(Status.COMPLETED, 1)] * 2
        events = [e.event_type for e in env.persistence.get_outbox_events(run_id)]
        assert events.count("stage:started") == 2
    stats = running.get_stats()
    assert (stats.worker_id, stats.jobs_processed, stats.is_running) == ("w1", 10, True)


def test_the_next_stage_is_started_for_the_host_itself(env: Env, running: WorkerHost) -> None:
    [run_id] = env.create(1)

    wait_for(lambda: env.persistence.get_run_status(run_id) == Status.COMPLETED, "the run")

    double = next(j for j in env.jobs.get_jobs_by_workflow_run(run_id) if j.stage_id == "double")
    # enqueued leased to the host by the commit that settled the first stage
    assert (double.worker_id, double.attempt, double.started_at) == ("w1", 1, double.created_at)


def test_an_idle_hosts_claim_starts_the_first_stage_for_itself(env: Env) -> None:
    [run_id] = env.create(1)
    host = env.host()  # not started: its job loop's claim step alone

    assert host._claim_pending()

    # the claim leased the first stage's job to the host, which ran the run through
    assert env.persistence.get_run_status(run_id) == Status.COMPLETED
    jobs = env.jobs.get_jobs_by_workflow_run(run_id)
    assert [(j.worker_id, j.attempt, j.started_at) for j in jobs] == [
        ("w1", 1, j.created_at) for j in jobs
    ]
    assert not host._claim_pending()


def test_stop_lets_the_job_in_hand_finish_and_takes_no_other(env: Env) -> None:
    host = env.host()
    env.gate.clear()
    first, second = env.create(2)
    host.start()
    assert env.entered.wait(DEADLINE_S)

    stopper = threading.Thread(target=host.stop, kwargs={"timeout": DEADLINE_S})
    stopper.start()
    wait_for(lambda: not host.is_running, "the host to stop taking work")
    env.gate.set()
    stopper.join(DEADLINE_S)

    assert not stopper.is_alive()
    # the stage in flight, and the next stage its commit leased to this host, both finished
    assert env.persistence.get_run_status(first) == Status.COMPLETED
    assert env.calls == {"count": 1, "double": 1}
    # the other run's job was left for another worker
    [queued] = env.jobs.get_jobs_by_workflow_run(second)
    assert (queued.status, queued.attempt) == (Status.PENDING, 0)


def test_sigterm_stops_the_host_after_the_job_in_flight(env: Env) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    host = env.host()
    host.start()
    try:
        assert signal.getsignal(signal.SIGTERM) == host._on_signal  # (or SIGTERM ends pytest)
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: not host.is_running, "SIGTERM to stop the host")
    finally:
        host.stop(timeout=DEADLINE_S)
    # the old handler is back: a second SIGTERM is not swallowed by a stopped host
    assert signal.getsignal(signal.SIGTERM) is previous


def test_ticks_run_on_their_own_thread(env: Env, running: WorkerHost) -> None:
    wait_for(lambda: running.get_stats().orchestration_ticks >= 2, "two ticks")


def test_intervals_must_be_positive(env: Env) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        create_worker_host(
            kernel=env.kernel, job_transport=env.jobs, worker_id="w", job_poll_interval_ms=0
        )
