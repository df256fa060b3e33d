"""Async-batch stages: poll timing, CompletionCheck outcomes, max_wait, and mixed groups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import (
    CompletionCheck,
    LogLevel,
    StageResult,
    Status,
    Suspend,
    define_async_batch_stage,
    define_stage,
)
from workflow_engine.definitions import NoInput
from workflow_engine.testing import FakeClock


class Doc(BaseModel):
    text: str


class Summary(BaseModel):
    summary: str


class BatchConfig(BaseModel):
    model: str = "small"
    poll_seconds: float = 30


def batch_stage(stage_id, execute, check, *, input=Doc, output=Summary, config=None):
    return define_async_batch_stage(
        id=stage_id,
        name=stage_id.title(),
        input=input,
        output=output,
        config=config,
        execute=execute,
        check_completion=check,
    )


def suspend_with(**options):
    return lambda ctx: Suspend(state={"batch_id": "b1"}, **options)


def ready_after(checks: int, output: Any = None, **extra):
    """A check_completion that is ready on call number ``checks``; records every call."""
    calls: list[datetime] = []

    def check(state, ctx):
        calls.append(ctx.storage)  # placeholder replaced below
        calls[-1] = clock_of(ctx)
        if len(calls) < checks:
            return CompletionCheck(ready=False, **extra)
        return CompletionCheck(ready=True, output=output or {"summary": state["batch_id"]})

    check.calls = calls
    return check


_CLOCKS: dict[str, FakeClock] = {}


def clock_of(ctx) -> datetime:
    return _CLOCKS[ctx.workflow_run_id].now()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(make_harness, build_workflow, clock):
    """``engine(*groups)``: a harness over a workflow of ``groups``, whose runs know the clock."""

    def build(*groups, **options):
        h = make_harness(build_workflow(Doc, *groups), clock=clock, **options)
        original = h.create_run

        def create_run(*args, **kwargs):
            run_id = original(*args, **kwargs)
            _CLOCKS[run_id] = clock
            return run_id

        h.create_run = create_run
        return h

    return build
