"""A ready registry: workflows by id in a dict."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from workflow_engine.definitions.workflow import Workflow
from workflow_engine.errors import WorkflowDefinitionError


class WorkflowRegistry:
    """Workflows by id; ``get_workflow(id)`` returns ``None`` for an unknown id."""

    def __init__(self, workflows: Iterable[Workflow[Any, Any]] = ()) -> None:
        self._workflows: dict[str, Workflow[Any, Any]] = {}
        for workflow in workflows:
            self.register(workflow)

    def register(self, workflow: Workflow[Any, Any]) -> Workflow[Any, Any]:
        """Add a workflow; raise if another workflow already has its id."""
        existing = self._workflows.get(workflow.id)
        if existing is not None and existing is not workflow:
            raise WorkflowDefinitionError(f"A workflow with id {workflow.id!r} is registered")
        self._workflows[workflow.id] = workflow
        return workflow

    def get_workflow(self, workflow_id: str) -> Workflow[Any, Any] | None:
        return self._workflows.get(workflow_id)

    def workflow_ids(self) -> list[str]:
        return sorted(self._workflows)

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._workflows

    def __len__(self) -> int:
        return len(self._workflows)
