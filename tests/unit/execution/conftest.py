"""Fixtures for end-to-end execution tests: an in-memory engine with a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import Stage, Workflow, WorkflowBuilder
from workflow_engine.records import WorkflowStageRecord
from workflow_engine.testing import WorkflowTestHarness


class Harness(WorkflowTestHarness):
    """The test harness plus a few lookups the execution tests share."""

    def stages_by_id(self, run_id: str) -> dict[str, WorkflowStageRecord]:
        return {stage.stage_id: stage for stage in self.get_stages(run_id)}

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events.events if e["workflow_run_id"] == run_id]

    def event_types(self, run_id: str) -> list[str]:
        return [e["type"] for e in self.run_events(run_id)]

    def stage_events(self, run_id: str, stage_id: str) -> list[str]:
        return [e["type"] for e in self.run_events(run_id) if e.get("stage_id") == stage_id]

    def rerun_from(self, run_id: str, stage_id: str) -> Any:
        return self.kernel.dispatch(
            {"type": "run.rerunFrom", "workflow_run_id": run_id, "from_stage_id": stage_id}
        )


HarnessFactory = Callable[..., Harness]
WorkflowFactory = Callable[..., Workflow[Any, Any]]


@pytest.fixture
def make_harness() -> HarnessFactory:
    """``make_harness(workflow, ..., **kernel_options)``."""
    return lambda *workflows, **options: Harness(*workflows, **options)


@pytest.fixture
def build_workflow() -> WorkflowFactory:
    """``build_workflow(input_model, stage, [s1, s2], stage, id="wf")``: a list is a parallel
    group, anything else a piped stage."""

    def build(
        input_model: type[BaseModel],
        *groups: Stage[Any, Any, Any] | Sequence[Stage[Any, Any, Any]],
        id: str = "wf",
    ) -> Workflow[Any, Any]:
        builder = WorkflowBuilder(id, f"Workflow {id}", input=input_model)
        for group in groups:
            if isinstance(group, Stage):
                builder.pipe(group)
            else:
                builder.parallel(group)
        return builder.build()

    return build
