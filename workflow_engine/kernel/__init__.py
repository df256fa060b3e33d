"""The pure command kernel.

``create_kernel(...)`` wires the ports; ``Kernel.dispatch(command)`` runs one command. The
kernel imports no adapter, no Celery, no SQLAlchemy and no web framework.
"""

from workflow_engine.errors import (
    IdempotencyInProgressError,
    InvalidCommandError,
    InvalidConfigError,
    InvalidInputError,
    InvalidStateError,
    PayloadTooLargeError,
    RunNotFoundError,
    StageNotFoundError,
    WorkflowEngineError,
    WorkflowNotFoundError,
)
from workflow_engine.kernel import commands
from workflow_engine.kernel.kernel import Kernel, create_kernel, parse_command
from workflow_engine.kernel.runtime import KernelOptions

__all__ = [
    "IdempotencyInProgressError",
    "InvalidCommandError",
    "InvalidConfigError",
    "InvalidInputError",
    "InvalidStateError",
    "Kernel",
    "KernelOptions",
    "PayloadTooLargeError",
    "RunNotFoundError",
    "StageNotFoundError",
    "WorkflowEngineError",
    "WorkflowNotFoundError",
    "commands",
    "create_kernel",
    "parse_command",
]
