"""Stage outputs: small ones inline on the stage row, large ones in the blob store, read lazily."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from workflow_engine.definitions.context import stage_key_prefix
from workflow_engine.kernel.runtime import Runtime
from workflow_engine.records import WorkflowRunRecord, WorkflowStageRecord
from workflow_engine.status import Status


def output_key(run: WorkflowRunRecord, stage_id: str) -> str:
    return stage_key_prefix(run.workflow_type, run.id, stage_id) + "output.json"


def artifact_key(run: WorkflowRunRecord, stage_id: str, name: str) -> str:
    return (
        stage_key_prefix(run.workflow_type, run.id, stage_id)
        + f"artifacts/{quote(name, safe='')}.json"
    )


def store_output(
    runtime: Runtime, run: WorkflowRunRecord, stage_id: str, output: Any
) -> dict[str, Any]:
    """Stage-row fields for ``output``: inline when small, else written to the blob store."""
    size = runtime.check_payload(f"The output of stage {stage_id}", output)
    if size <= runtime.options.inline_output_max_bytes:
        return {"output": output, "output_ref": None}
    key = output_key(run, stage_id)
    runtime.blob_store.put(key, output)
    return {"output": None, "output_ref": key}


def store_artifacts(
    runtime: Runtime, run: WorkflowRunRecord, stage_id: str, artifacts: Mapping[str, Any]
) -> dict[str, str] | None:
    """Write each artifact to its own blob; return name -> key."""
    if not artifacts:
        return None
    keys = {}
    for name, value in artifacts.items():
        runtime.check_payload(f"Artifact {name!r} of stage {stage_id}", value)
        keys[name] = artifact_key(run, stage_id, name)
        runtime.blob_store.put(keys[name], value)
    return keys


def load_output(runtime: Runtime, stage: WorkflowStageRecord) -> Any:
    """The stored output of a stage, as a fresh JSON-mode value."""
    if stage.output_ref is not None:
        return runtime.blob_store.get(stage.output_ref)
    return json.loads(json.dumps(stage.output)) if stage.output is not None else None


class WorkflowContext(Mapping[str, Any]):
    """Read-only map of completed stage id -> output; each output is read on first access."""

    def __init__(self, runtime: Runtime, stages: Sequence[WorkflowStageRecord]) -> None:
        self._runtime = runtime
        self._stages = {
            stage.stage_id: stage
            for stage in stages
            if stage.status == Status.COMPLETED and stage.has_output
        }
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, stage_id: str) -> Any:
        if stage_id not in self._loaded:
            self._loaded[stage_id] = load_output(self._runtime, self._stages[stage_id])
        return self._loaded[stage_id]

    def __contains__(self, stage_id: object) -> bool:
        return stage_id in self._stages

    def __iter__(self) -> Iterator[str]:
        return iter(self._stages)

    def __len__(self) -> int:
        return len(self._stages)

    def __repr__(self) -> str:
        return f"WorkflowContext({list(self._stages)})"


def group_output(context: Mapping[str, Any], stage_ids: Sequence[str]) -> Any:
    """The output of one execution group: the stage's output, or ``{id: output}`` when parallel."""
    if len(stage_ids) == 1:
        return context.get(stage_ids[0])
    return {stage_id: context[stage_id] for stage_id in stage_ids if stage_id in context}
