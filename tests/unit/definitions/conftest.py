"""Fixtures for the definition tests: throw-away stages, contexts and storages."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from pydantic import BaseModel

from workflow_engine import LogLevel, Stage, StageContext, StageStorage, define_stage
from workflow_engine.testing import InMemoryBlobStore


class Payload(BaseModel):
    """A generic input/output model for stages whose data does not matter."""

    value: int = 0


StageFactory = Callable[..., Stage[Any, Any, Any]]


@pytest.fixture
def make_stage() -> StageFactory:
    """``make_stage("id", dependencies=[...], config=Model)``: a stage that echoes its input."""

    def factory(
        stage_id: str,
        *,
        dependencies: Sequence[str] = (),
        config: type[BaseModel] | None = None,
    ) -> Stage[Any, Any, Any]:
        return define_stage(
            id=stage_id,
            name=f"Stage {stage_id}",
            input=Payload,
            output=Payload,
            config=config,
            dependencies=dependencies,
            execute=lambda ctx: ctx.input,
        )

    return factory


class ContextSpy:
    """Builds a :class:`StageContext` by hand and records what it logs and reports."""

    def __init__(self) -> None:
        self.logs: list[tuple[LogLevel, str, dict[str, Any]]] = []
        self.progress: list[tuple[float, str, dict[str, Any]]] = []
        self.blobs = InMemoryBlobStore()

    def build(
        self,
        *,
        workflow_context: Mapping[str, Any] | None = None,
        run_id: str = "run-1",
        stage_id: str = "stage-a",
        attempt: int = 0,
        input: Any = None,
        config: Any = None,
        resume_state: Mapping[str, Any] | None = None,
    ) -> StageContext[Any, Any]:
        return StageContext(
            input=input,
            config=config,
            workflow_context=dict(workflow_context or {}),
            workflow_run_id=run_id,
            workflow_id="wf",
            stage_id=stage_id,
            stage_name=f"Stage {stage_id}",
            stage_number=2,
            stage_record_id="row-1",
            attempt=attempt,
            resume_state=resume_state,
            storage=StageStorage(
                self.blobs, workflow_type="wf", workflow_run_id=run_id, stage_id=stage_id
            ),
            log_sink=lambda level, message, meta: self.logs.append((level, message, meta)),
            progress_sink=lambda pct, message, details: self.progress.append(
                (pct, message, details)
            ),
        )


@pytest.fixture
def spy() -> ContextSpy:
    return ContextSpy()
