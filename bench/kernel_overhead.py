"""Kernel cost per stage and per command, on the in-memory adapters.

Drives N three-stage no-op workflows (one parallel group) through the serverless host and
prints microseconds per stage and per dispatched command. Run: ``python bench/kernel_overhead.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel

from workflow_engine import WorkflowBuilder, WorkflowRegistry, define_stage
from workflow_engine.hosts.serverless import create_serverless_host
from workflow_engine.kernel import Kernel, create_kernel
from workflow_engine.testing import (
    CollectingEventSink,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
)


class Doc(BaseModel):
    text: str


class Count(BaseModel):
    n: int


@define_stage(id="split", name="Split", input=Doc, output=Doc)
def split(ctx: Any) -> Doc:
    return ctx.input


@define_stage(id="count_a", name="Count A", input=Doc, output=Count)
def count_a(ctx: Any) -> Count:
    return Count(n=len(ctx.input.text))


@define_stage(id="count_b", name="Count B", input=Doc, output=Count)
def count_b(ctx: Any) -> Count:
    return Count(n=len(ctx.input.text.split()))


WORKFLOW = (
    WorkflowBuilder("bench", "Bench", "three no-op stages", input=Doc)
    .pipe(split)
    .parallel([count_a, count_b])
    .build()
)


class CountingKernel(Kernel):
    """A kernel that counts the commands it dispatches."""

    counts: Counter[str]

    def dispatch(self, command: Any) -> Any:  # type: ignore[override]
        kind = command["type"] if isinstance(command, dict) else command.type
        self.counts[kind] += 1
        return super().dispatch(command)


def run(n_runs: int) -> tuple[float, Counter[str]]:
    persistence = InMemoryWorkflowPersistence()
    jobs = InMemoryJobQueue()
    base = create_kernel(
        persistence=persistence,
        blob_store=InMemoryBlobStore(),
        job_transport=jobs,
        event_sink=CollectingEventSink(),
        registry=WorkflowRegistry([WORKFLOW]),
    )
    kernel = CountingKernel(base.runtime)
    kernel.counts = Counter()
    host = create_serverless_host(kernel=kernel, job_transport=jobs, worker_id="bench")
    started = time.perf_counter()
    for i in range(n_runs):
        kernel.dispatch(
            {
                "type": "run.create",
                "idempotency_key": f"r{i}",
                "workflow_id": "bench",
                "input": {"text": "a b c"},
            }
        )
    host.run_maintenance_tick()
    while host.process_available_jobs(max_jobs=1000).processed:
        host.run_maintenance_tick()
    elapsed = time.perf_counter() - started
    done = sum(1 for r in persistence.get_all_runs() if r.status == "COMPLETED")
    assert done == n_runs, f"only {done} of {n_runs} runs completed"
    return elapsed, kernel.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    run(50)  # warm-up
    elapsed, counts = run(args.runs)
    stages = args.runs * 3
    commands = sum(counts.values())
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"{args.runs} runs, {stages} stages, {commands} commands in {elapsed:.2f} s")
    print(f"kernel cost per stage:   {elapsed / stages * 1e6:8.1f} µs   (target < 200 µs)")
    print(f"kernel cost per command: {elapsed / commands * 1e6:8.1f} µs")
    for kind, count in sorted(counts.items()):
        print(f"  {kind:22s} {count:7d}")


if __name__ == "__main__":
    main()
