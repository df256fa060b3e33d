"""Defining work: stages, workflows and the registry."""

from workflow_engine.definitions.context import StageContext, StageStorage
from workflow_engine.definitions.registry import WorkflowRegistry
from workflow_engine.definitions.stage import (
    CompletionCheck,
    EmptyConfig,
    NoInput,
    Stage,
    StageResult,
    Suspend,
    define_async_batch_stage,
    define_stage,
)
from workflow_engine.definitions.workflow import StageNode, Workflow, WorkflowBuilder

__all__ = [
    "CompletionCheck",
    "EmptyConfig",
    "NoInput",
    "Stage",
    "StageContext",
    "StageNode",
    "StageResult",
    "StageStorage",
    "Suspend",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowRegistry",
    "define_async_batch_stage",
    "define_stage",
]
