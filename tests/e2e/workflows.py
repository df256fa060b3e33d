"""Workflows for the end-to-end and chaos tests, exposed as ``registry``.

Workers load them with ``WORKFLOW_ENGINE_REGISTRY=tests.e2e.workflows:registry``.

Stages that need to talk to the test take a ``Probe`` config: ``dir`` is a folder shared with
the test. Every execution of such a stage appends one line to ``<dir>/executions.log``
(``<stage> <event> <pid> <unix time>``: the side-effect counter the tests read), and a blocking
stage waits until ``<dir>/release-<stage>`` exists, so a test can hold a stage in the middle of
its execution for as long as it likes without a fixed sleep.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from workflow_engine import StageContext, WorkflowBuilder, WorkflowRegistry, define_stage

EXECUTIONS = "executions.log"
BLOCK_LIMIT_SECONDS = 120.0


class Number(BaseModel):
    n: int = Field(ge=0)


class Pair(BaseModel):
    left: Number
    right: Number


class Probe(BaseModel):
    """Where the stage records its executions and looks for its release file."""

    dir: str = ""


def record(probe: Probe, stage_id: str, event: str, run_id: str = "-") -> None:
    """Append ``<stage> <event> <pid> <time> <run>`` to the probe folder's execution log."""
    if not probe.dir:
        return
    line = f"{stage_id} {event} {os.getpid()} {time.time():.6f} {run_id}\n"
    # One small O_APPEND write: lines from concurrent processes never interleave.
    fd = os.open(Path(probe.dir) / EXECUTIONS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Execution(NamedTuple):
    stage: str
    event: str
    pid: int
    at: float
    run_id: str


def executions(folder: Path | str) -> list[Execution]:
    """The execution log, oldest first."""
    path = Path(folder) / EXECUTIONS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        stage, event, pid, at, run_id = line.split()
        rows.append(Execution(stage, event, int(pid), float(at), run_id))
    return rows


def release(folder: Path | str, stage_id: str) -> None:
    """Let every execution of ``stage_id`` blocked on ``folder`` go on."""
    (Path(folder) / f"release-{stage_id}").touch()


def wait_for_release(probe: Probe, stage_id: str) -> None:
    marker = Path(probe.dir) / f"release-{stage_id}"
    deadline = time.monotonic() + BLOCK_LIMIT_SECONDS
    while not marker.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} never appeared")
        time.sleep(0.02)


# -- fan-out: one stage, a parallel group of two, a join --------------------------------------
@define_stage(id="start", name="Start", input=Number, output=Number, config=Probe)
def start(ctx: StageContext[Number, Probe]) -> Number:
    record(ctx.config, "start", "run", ctx.workflow_run_id)
    return Number(n=ctx.input.n + 1)


@define_stage(id="left", name="Left", input=Number, output=Number, config=Probe)
def left(ctx: StageContext[Number, Probe]) -> Number:
    record(ctx.config, "left", "run", ctx.workflow_run_id)
    return Number(n=ctx.input.n * 2)


@define_stage(id="right", name="Right", input=Number, output=Number, config=Probe)
def right(ctx: StageContext[Number, Probe]) -> Number:
    record(ctx.config, "right", "run", ctx.workflow_run_id)
    return Number(n=ctx.input.n * 3)


@define_stage(id="join", name="Join", input=Pair, output=Number, config=Probe)
def join(ctx: StageContext[Pair, Probe]) -> Number:
    record(ctx.config, "join", "run", ctx.workflow_run_id)
    return Number(n=ctx.input.left.n + ctx.input.right.n)


fanout = (
    WorkflowBuilder(
        "fanout",
        "Fan-out",
        "start, then left and right in parallel, then join",
        input=Number,
        output=Number,
    )
    .pipe(start)
    .parallel([left, right])
    .pipe(join)
    .build()
)
#: Stage ids of ``fanout`` and the output of a run with input ``n``.
FANOUT_STAGES = ("start", "left", "right", "join")


def fanout_output(n: int) -> dict[str, Any]:
    return {"n": (n + 1) * 2 + (n + 1) * 3}


# -- a stage held until the test releases it ---------------------------------------------------
@define_stage(id="hold", name="Hold", input=Number, output=Number, config=Probe)
def hold(ctx: StageContext[Number, Probe]) -> Number:
    record(ctx.config, "hold", "start", ctx.workflow_run_id)
    wait_for_release(ctx.config, "hold")
    record(ctx.config, "hold", "end", ctx.workflow_run_id)
    return Number(n=ctx.input.n + 100)


@define_stage(id="finish", name="Finish", input=Number, output=Number, config=Probe)
def finish(ctx: StageContext[Number, Probe]) -> Number:
    record(ctx.config, "finish", "start", ctx.workflow_run_id)
    wait_for_release(ctx.config, "finish")
    record(ctx.config, "finish", "end", ctx.workflow_run_id)
    return Number(n=ctx.input.n + 1)


held = (
    WorkflowBuilder(
        "held",
        "Held",
        "a stage that runs until released, then another",
        input=Number,
        output=Number,
    )
    .pipe(hold)
    .pipe(finish)
    .build()
)


# -- retries -----------------------------------------------------------------------------------
class FlakyError(RuntimeError):
    """The failure of the first execution of ``flaky``."""


@define_stage(id="flaky", name="Flaky", input=Number, output=Number, config=Probe)
def flaky(ctx: StageContext[Number, Probe]) -> Number:
    """Fails on its first execution, succeeds on every later one."""
    before = sum(
        1
        for row in executions(ctx.config.dir)
        if (row.stage, row.event, row.run_id) == ("flaky", "start", ctx.workflow_run_id)
    )
    record(ctx.config, "flaky", "start", ctx.workflow_run_id)
    if before == 0:
        record(ctx.config, "flaky", "fail", ctx.workflow_run_id)
        raise FlakyError("first execution fails on purpose")
    return Number(n=ctx.input.n + 1)


retry_once = (
    WorkflowBuilder("retry-once", "Retry once", "fails once, then succeeds", input=Number)
    .pipe(flaky)
    .build()
)


@define_stage(id="doomed", name="Doomed", input=Number, output=Number, config=Probe)
def doomed(ctx: StageContext[Number, Probe]) -> Number:
    record(ctx.config, "doomed", "start", ctx.workflow_run_id)
    raise RuntimeError("this stage always fails")


always_fails = (
    WorkflowBuilder("always-fails", "Always fails", "a stage that never succeeds", input=Number)
    .pipe(doomed)
    .build()
)


# -- typed input, for bad-input tests ----------------------------------------------------------
class Order(BaseModel):
    order_id: str = Field(min_length=1)
    quantity: int = Field(ge=1)


class Receipt(BaseModel):
    order_id: str
    total: int


@define_stage(id="price", name="Price", input=Order, output=Receipt)
def price(ctx: StageContext[Order, Any]) -> Receipt:
    return Receipt(order_id=ctx.input.order_id, total=ctx.input.quantity * 7)


typed = (
    WorkflowBuilder("typed", "Typed", "typed input and output", input=Order, output=Receipt)
    .pipe(price)
    .build()
)


registry = WorkflowRegistry([fanout, held, retry_once, always_fails, typed])
