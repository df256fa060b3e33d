"""Three sequential no-op stages: the workflow the benchmarks compare with a Celery chain."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from workflow_engine import StageContext, Workflow, WorkflowBuilder, define_stage


class Payload(BaseModel):
    n: int = 0


def _step(stage_id: str) -> Any:
    def execute(ctx: StageContext[Payload, Any]) -> Payload:
        return Payload(n=ctx.input.n + 1)

    return define_stage(id=stage_id, name=stage_id, input=Payload, output=Payload, execute=execute)


noop_chain: Workflow[Payload, Any] = (
    WorkflowBuilder("noop-chain", "No-op chain", "Three no-op stages in a row.", input=Payload)
    .pipe(_step("one"))
    .pipe(_step("two"))
    .pipe(_step("three"))
    .build()
)
