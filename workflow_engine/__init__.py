"""workflow_engine: durable, typed, multi-stage workflows on Celery, Redis and Postgres.

Importing this package loads none of celery, kombu, redis, sqlalchemy, psycopg, flask or django;
the adapters that need them live in their own subpackages.
"""

from workflow_engine.clock import Clock, SystemClock
from workflow_engine.definitions import (
    CompletionCheck,
    Stage,
    StageContext,
    StageResult,
    StageStorage,
    Suspend,
    Workflow,
    WorkflowBuilder,
    WorkflowRegistry,
    define_async_batch_stage,
    define_stage,
)
from workflow_engine.errors import (
    BlobNotFoundError,
    IdempotencyInProgressError,
    InvalidCommandError,
    InvalidConfigError,
    InvalidInputError,
    InvalidStateError,
    MissingStageOutputError,
    NonRetryableError,
    PayloadTooLargeError,
    RunNotFoundError,
    StageNotFoundError,
    StaleVersionError,
    WorkflowDefinitionError,
    WorkflowEngineError,
    WorkflowNotFoundError,
)
from workflow_engine.plugins import Plugin, PluginRunner, create_plugin_runner, define_plugin
from workflow_engine.records import LogLevel
from workflow_engine.status import Status

__version__ = "0.1.0"

_LAZY = {
    "WorkflowClient": "workflow_engine.client",
    "RunView": "workflow_engine.client",
    "StageView": "workflow_engine.client",
    "EngineSettings": "workflow_engine.settings",
}


def __getattr__(name: str) -> object:
    # The client needs Celery and SQLAlchemy; import them only when it is asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'workflow_engine' has no attribute {name!r}")


__all__ = [
    "BlobNotFoundError",
    "Clock",
    "CompletionCheck",
    "EngineSettings",
    "IdempotencyInProgressError",
    "InvalidCommandError",
    "InvalidConfigError",
    "InvalidInputError",
    "InvalidStateError",
    "LogLevel",
    "MissingStageOutputError",
    "NonRetryableError",
    "PayloadTooLargeError",
    "Plugin",
    "PluginRunner",
    "RunNotFoundError",
    "RunView",
    "Stage",
    "StageContext",
    "StageNotFoundError",
    "StageResult",
    "StageStorage",
    "StageView",
    "StaleVersionError",
    "Status",
    "Suspend",
    "SystemClock",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowClient",
    "WorkflowDefinitionError",
    "WorkflowEngineError",
    "WorkflowNotFoundError",
    "WorkflowRegistry",
    "create_plugin_runner",
    "define_async_batch_stage",
    "define_plugin",
    "define_stage",
]
