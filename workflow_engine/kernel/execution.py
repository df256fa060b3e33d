"""Calling user code (``execute``, ``check_completion``) and making sense of what it returns."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from workflow_engine.definitions.config import describe_validation_error
from workflow_engine.definitions.stage import Stage, StageResult, Suspend
from workflow_engine.errors import NonRetryableError, PayloadTooLargeError, WorkflowEngineError

_JSON = TypeAdapter(Any)


class StageOutputError(NonRetryableError):
    """A stage returned something that is not a valid output for its output model."""


class StageInputError(NonRetryableError):
    """A stage's input is missing or does not match its input model."""


def call_user(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or ``async def`` function from synchronous code."""
    result = fn(*args)
    if not inspect.isawaitable(result):
        return result
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(result))
    if inspect.iscoroutine(result):
        result.close()
    raise WorkflowEngineError(
        "An async stage cannot run inside a running event loop: dispatch from a thread "
        "(for example `await asyncio.to_thread(kernel.dispatch, command)`)"
    )


async def _await(awaitable: Any) -> Any:
    return await awaitable


def error_message(exc: BaseException) -> str:
    """``"ValueError: bad"``; engine errors and bare ``Exception`` keep just their message."""
    if type(exc) is Exception or isinstance(exc, WorkflowEngineError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def is_retryable(exc: BaseException) -> bool | None:
    """``False`` for errors a retry cannot fix (validation, non-retryable); else ``None``."""
    if isinstance(exc, NonRetryableError | ValidationError | PayloadTooLargeError):
        return False
    return None


_STRICT_JSON = json.JSONEncoder(allow_nan=False)  # json.dumps(allow_nan=False), made once


def validate_output(stage: Stage[Any, Any, Any], value: Any) -> Any:
    """The output as a JSON-mode value, validated against the stage's output model."""
    model = stage.output_model
    try:
        if isinstance(value, BaseModel) and not isinstance(value, model):
            value = value.model_dump(mode="json", by_alias=True)
        instance = value if isinstance(value, model) else model.model_validate(value)
        dumped = instance.model_dump(mode="json", by_alias=True)
        _STRICT_JSON.encode(dumped)  # NaN and Infinity have no JSON form either
        return dumped
    except ValidationError as exc:
        raise StageOutputError(
            f"Stage {stage.id} returned an invalid output: "
            + "; ".join(describe_validation_error(exc))
        ) from None
    except (TypeError, ValueError) as exc:
        raise StageOutputError(
            f"Stage {stage.id} returned an output that is not JSON-serialisable: {exc}"
        ) from None


@dataclass(frozen=True)
class Completed:
    output: Any
    metrics: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, Any] = field(default_factory=dict)


def normalise_result(stage: Stage[Any, Any, Any], result: Any) -> Completed | Suspend:
    """Turn what ``execute`` returned into a validated completion or a suspension."""
    if isinstance(result, Suspend):
        if stage.mode != "async-batch":
            raise StageOutputError(
                f"Stage {stage.id} returned Suspend but is not an async-batch stage "
                "(define it with define_async_batch_stage)"
            )
        return result
    if isinstance(result, StageResult):
        return Completed(
            output=validate_output(stage, result.output),
            metrics=json_mapping(stage, "metrics", result.metrics),
            artifacts=json_mapping(stage, "artifacts", result.artifacts),
        )
    return Completed(output=validate_output(stage, result))


def json_mapping(stage: Stage[Any, Any, Any], what: str, value: Mapping[str, Any]) -> Any:
    """``metrics`` or ``artifacts`` as JSON-mode values; a stage error if they are not JSON."""
    try:
        return _JSON.dump_python(dict(value), mode="json")
    except (TypeError, ValueError) as exc:
        raise StageOutputError(
            f"Stage {stage.id} returned {what} that are not JSON-serialisable: {exc}"
        ) from None
