"""Typed errors. Every error the engine raises on purpose is a :class:`WorkflowEngineError`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class WorkflowEngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class WorkflowDefinitionError(WorkflowEngineError):
    """A workflow or stage definition is malformed (duplicate id, missing dependency, ...)."""


class WorkflowNotFoundError(WorkflowEngineError):
    """The registry has no workflow with this id."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"Workflow {workflow_id} not found in registry")


class StageNotFoundError(WorkflowEngineError):
    """The workflow has no stage with this id."""

    def __init__(self, stage_id: str, workflow_id: str) -> None:
        self.stage_id = stage_id
        self.workflow_id = workflow_id
        super().__init__(f"Stage {stage_id} not found in workflow {workflow_id}")


class RunNotFoundError(WorkflowEngineError):
    """No workflow run has this id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"WorkflowRun {run_id} not found")


class InvalidInputError(WorkflowEngineError):
    """A workflow's input does not match its input model."""


class InvalidConfigError(WorkflowEngineError):
    """A run's config is invalid; ``errors`` maps each stage at fault to its messages."""

    def __init__(self, errors: Mapping[str, Sequence[str]]) -> None:
        self.errors = {stage: list(messages) for stage, messages in errors.items()}
        detail = ", ".join(f"{stage}: {'; '.join(msgs)}" for stage, msgs in self.errors.items())
        super().__init__(f"Invalid workflow config: {detail}")


class InvalidStateError(WorkflowEngineError):
    """The command is not allowed in the run's current state."""


class InvalidCommandError(WorkflowEngineError):
    """A command is malformed: unknown type, or a missing, ill-typed or unknown field."""


class PayloadTooLargeError(WorkflowEngineError):
    """A JSON payload (input, config or output) exceeds the kernel's ``max_payload_bytes``."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what} is {size} bytes of JSON, more than the limit of {limit} bytes")


class IdempotencyInProgressError(WorkflowEngineError):
    """Another dispatch of the same command with the same idempotency key is still running."""

    def __init__(self, key: str, command_type: str) -> None:
        self.key = key
        self.command_type = command_type
        super().__init__(
            f'Command "{command_type}" with idempotency key "{key}" is already in progress'
        )


class StaleVersionError(WorkflowEngineError):
    """An optimistic-concurrency check failed: the row changed since it was read."""

    def __init__(self, entity: str, entity_id: str, expected: int, actual: int | None) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{entity} {entity_id} is at version {actual}, expected {expected}: "
            "it was changed by someone else"
        )


class RecordNotFoundError(WorkflowEngineError):
    """A persistence or job-queue operation named a row that does not exist."""


class BlobNotFoundError(WorkflowEngineError, KeyError):
    """The blob store has nothing under this key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"Blob not found: {key}")

    def __str__(self) -> str:
        return f"Blob not found: {self.key}"


class MissingStageOutputError(WorkflowEngineError):
    """``ctx.require(stage_id)`` named a stage with no stored output in this run."""

    def __init__(self, stage_id: str, available: list[str]) -> None:
        self.stage_id = stage_id
        self.available = available
        listed = ", ".join(available) if available else "(none)"
        super().__init__(f'Missing required stage output: "{stage_id}". Available stages: {listed}')


class NonRetryableError(WorkflowEngineError):
    """Raise from a stage to fail it at once, without using its remaining attempts."""
