"""Workflows: :class:`WorkflowBuilder` assembles stages into execution groups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from workflow_engine.definitions.config import default_config, describe_validation_error
from workflow_engine.definitions.stage import Stage
from workflow_engine.errors import (
    InvalidConfigError,
    StageNotFoundError,
    WorkflowDefinitionError,
)

InT = TypeVar("InT", bound=BaseModel)
OutT = TypeVar("OutT", bound=BaseModel)


@dataclass(frozen=True)
class StageNode:
    """A stage placed in a workflow: its execution group (1-based) and index (0-based)."""

    stage: Stage[Any, Any, Any]
    execution_group: int
    index: int


class Workflow(Generic[InT, OutT]):
    """A built workflow: stages in execution groups. Build one with :class:`WorkflowBuilder`.

    Groups run in order; the stages of one group run in parallel. A stage in group ``g > 1``
    gets the output of group ``g - 1`` as input (an object keyed by stage id when that group
    has several stages).
    """

    def __init__(
        self,
        *,
        id: str,
        name: str,
        description: str,
        input_model: type[InT],
        output_model: type[OutT] | None,
        nodes: Sequence[StageNode],
    ) -> None:
        self.id = id
        self.name = name
        self.description = description
        self.input_model = input_model
        self.output_model = output_model
        self._nodes = tuple(nodes)
        self._by_id = {node.stage.id: node for node in self._nodes}
        self._groups: dict[int, list[Stage[Any, Any, Any]]] = {}
        for node in self._nodes:
            self._groups.setdefault(node.execution_group, []).append(node.stage)

    def __repr__(self) -> str:
        return f"<Workflow {self.id!r}: {len(self._nodes)} stages in {len(self._groups)} groups>"

    # -- structure -----------------------------------------------------------------------------
    def get_stage_ids(self) -> list[str]:
        """Stage ids in definition order."""
        return [node.stage.id for node in self._nodes]

    def get_all_stages(self) -> list[StageNode]:
        """Every stage with its execution group and index, in definition order."""
        return list(self._nodes)

    def get_execution_plan(self) -> list[list[Stage[Any, Any, Any]]]:
        """The execution groups in order, each a list of its stages."""
        return [list(self._groups[group]) for group in sorted(self._groups)]

    def get_stage(self, stage_id: str) -> Stage[Any, Any, Any] | None:
        node = self._by_id.get(stage_id)
        return node.stage if node else None

    def has_stage(self, stage_id: str) -> bool:
        return stage_id in self._by_id

    def require_stage(self, stage_id: str) -> StageNode:
        """The stage's node; raise ``StageNotFoundError`` if the workflow has no such stage."""
        node = self._by_id.get(stage_id)
        if node is None:
            raise StageNotFoundError(stage_id, self.id)
        return node

    def get_stage_index(self, stage_id: str) -> int:
        """0-based position of the stage in definition order."""
        return self.require_stage(stage_id).index

    def get_execution_group_index(self, stage_id: str) -> int:
        """The stage's execution group (1-based)."""
        return self.require_stage(stage_id).execution_group

    def get_stages_in_execution_group(self, group: int) -> list[Stage[Any, Any, Any]]:
        return list(self._groups.get(group, []))

    def get_previous_stage_id(self, stage_id: str) -> str | None:
        """The stage defined just before this one, or ``None`` for the first."""
        index = self.get_stage_index(stage_id)
        return self._nodes[index - 1].stage.id if index > 0 else None

    @property
    def group_count(self) -> int:
        return len(self._groups)

    # -- config --------------------------------------------------------------------------------
    def get_stage_configs(self) -> dict[str, type[BaseModel]]:
        """Each stage's config model."""
        return {node.stage.id: node.stage.config_model for node in self._nodes}

    def get_default_config(self) -> dict[str, dict[str, Any]]:
        """For every stage, the JSON-mode values of its config fields that have a default."""
        return {node.stage.id: default_config(node.stage.config_model) for node in self._nodes}

    def validate_config(self, config: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Merge ``config`` over the defaults and validate every stage's slice.

        Returns the merged config (JSON mode, keyed by stage id). Raises ``InvalidConfigError``
        listing every stage at fault, including ids that are not stages of this workflow.
        """
        config = dict(config or {})
        errors: dict[str, list[str]] = {}
        for stage_id in config:
            if stage_id not in self._by_id:
                errors[stage_id] = [f"not a stage of workflow {self.id}"]
        merged: dict[str, dict[str, Any]] = {}
        for node in self._nodes:
            stage = node.stage
            supplied = config.get(stage.id, {})
            if not isinstance(supplied, Mapping):
                errors[stage.id] = [f"config must be an object, got {type(supplied).__name__}"]
                continue
            try:
                parsed = stage.config_model.model_validate(dict(supplied))
            except ValidationError as exc:
                errors[stage.id] = describe_validation_error(exc)
                continue
            merged[stage.id] = parsed.model_dump(mode="json", by_alias=True)
        if errors:
            raise InvalidConfigError(errors)
        return merged


class WorkflowBuilder(Generic[InT, OutT]):
    """Assemble a workflow: ``pipe`` adds a group of one stage, ``parallel`` a group of several.

    Each stage's ``dependencies`` must name stages added in an earlier group, and stage ids must
    be unique; both are checked as stages are added.
    """

    def __init__(
        self,
        id: str,
        name: str,
        description: str = "",
        *,
        input: type[InT],
        output: type[OutT] | None = None,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise WorkflowDefinitionError("A workflow id must be a non-empty string")
        if not (isinstance(input, type) and issubclass(input, BaseModel)):
            raise WorkflowDefinitionError(
                f"Workflow {id!r}: input must be a pydantic BaseModel class, got {input!r}"
            )
        self._id = id
        self._name = name
        self._description = description
        self._input = input
        self._output = output
        self._nodes: list[StageNode] = []
        self._group = 0

    def pipe(self, stage: Stage[Any, Any, Any]) -> WorkflowBuilder[InT, OutT]:
        """Add ``stage`` as a group of its own."""
        return self._add_group([stage])

    def parallel(self, stages: Iterable[Stage[Any, Any, Any]]) -> WorkflowBuilder[InT, OutT]:
        """Add ``stages`` as one group; they run at the same time."""
        stages = list(stages)
        if not stages:
            raise WorkflowDefinitionError(f"Workflow {self._id!r}: parallel() needs stages")
        return self._add_group(stages)

    def _add_group(self, stages: list[Stage[Any, Any, Any]]) -> WorkflowBuilder[InT, OutT]:
        known = [node.stage.id for node in self._nodes]
        seen: set[str] = set()
        for stage in stages:
            if not isinstance(stage, Stage):
                raise WorkflowDefinitionError(
                    f"Workflow {self._id!r}: expected a stage from define_stage, got {stage!r}"
                )
            if stage.id in known or stage.id in seen:
                raise WorkflowDefinitionError(
                    f"Workflow {self._id!r}: duplicate stage id {stage.id!r}"
                )
            seen.add(stage.id)
            missing = [dep for dep in stage.dependencies if dep not in known]
            if missing:
                raise WorkflowDefinitionError(
                    f"Stage {stage.id!r} has missing dependencies: {', '.join(missing)}. "
                    f"Dependencies must be added in an earlier group. "
                    f"Current stages: {', '.join(known) or '(none)'}"
                )
        self._group += 1
        for stage in stages:
            self._nodes.append(StageNode(stage, self._group, len(self._nodes)))
        return self

    def build(self) -> Workflow[InT, OutT]:
        """The finished workflow."""
        if not self._nodes:
            raise WorkflowDefinitionError(f"Workflow {self._id!r} has no stages")
        return Workflow(
            id=self._id,
            name=self._name,
            description=self._description,
            input_model=self._input,
            output_model=self._output,
            nodes=self._nodes,
        )
