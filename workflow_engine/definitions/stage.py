"""Stage definitions: ``define_stage``, ``define_async_batch_stage``, what ``execute`` returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict

from workflow_engine.errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from workflow_engine.definitions.context import StageContext

InT = TypeVar("InT", bound=BaseModel)
OutT = TypeVar("OutT", bound=BaseModel)
CfgT = TypeVar("CfgT", bound=BaseModel)

Duration = timedelta | float | int
"""A duration a user passes: a ``timedelta`` or seconds."""

DEFAULT_POLL_INTERVAL = timedelta(seconds=30)
DEFAULT_MAX_WAIT = timedelta(hours=24)


class NoInput(BaseModel):
    """The input model of a stage declared with ``input=None``: no fields, extras ignored."""

    model_config = ConfigDict(extra="ignore")


class EmptyConfig(BaseModel):
    """The config model of a stage declared with ``config=None``."""

    model_config = ConfigDict(extra="ignore")


def to_timedelta(value: Duration) -> timedelta:
    """Turn a user duration (``timedelta`` or seconds) into a ``timedelta``."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a duration must be a timedelta or seconds, not {value!r}")
    return timedelta(seconds=value)


@dataclass(frozen=True)
class StageResult(Generic[OutT]):
    """What ``execute`` may return instead of a bare output: the output plus metrics/artifacts.

    ``metrics`` may carry ``total_cost`` and ``total_tokens``, which the run's totals add up.
    ``artifacts`` (name -> JSON value) are written to the blob store beside the output.
    """

    output: OutT | Mapping[str, Any]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suspend:
    """Returned by an async-batch stage's ``execute`` to wait for external work.

    ``state`` is kept with the stage and handed to ``check_completion``. The first check happens
    at ``next_poll_at`` if given, else after ``poll_interval``; the stage fails if it is still
    not ready after ``max_wait``.
    """

    state: Mapping[str, Any]
    poll_interval: Duration = DEFAULT_POLL_INTERVAL
    max_wait: Duration = DEFAULT_MAX_WAIT
    next_poll_at: datetime | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if to_timedelta(self.poll_interval) <= timedelta(0):
            raise ValueError("Suspend.poll_interval must be positive")
        if to_timedelta(self.max_wait) <= timedelta(0):
            raise ValueError("Suspend.max_wait must be positive")
        if self.next_poll_at is not None and self.next_poll_at.tzinfo is None:
            raise ValueError("Suspend.next_poll_at must be timezone-aware (UTC)")


@dataclass(frozen=True)
class CompletionCheck(Generic[OutT]):
    """What ``check_completion`` returns.

    ``ready=True`` with ``output`` completes the stage; ``ready=False`` checks again after
    ``next_check_in`` (default: the stage's poll interval); ``error`` fails the stage and its run.
    """

    ready: bool
    output: OutT | Mapping[str, Any] | None = None
    error: str | None = None
    next_check_in: Duration | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)


StageMode = Literal["sync", "async-batch"]
ExecuteResult = Any
ExecuteFn = Callable[["StageContext[Any, Any]"], ExecuteResult | Awaitable[ExecuteResult]]
CheckCompletionFn = Callable[
    [dict[str, Any], "StageContext[Any, Any]"],
    CompletionCheck[Any] | Awaitable[CompletionCheck[Any]],
]


@dataclass(frozen=True, eq=False)
class Stage(Generic[InT, OutT, CfgT]):
    """A defined stage. Build one with :func:`define_stage` or :func:`define_async_batch_stage`."""

    id: str
    name: str
    input_model: type[InT]
    output_model: type[OutT]
    config_model: type[CfgT]
    execute: ExecuteFn
    description: str | None = None
    dependencies: tuple[str, ...] = ()
    mode: StageMode = "sync"
    check_completion: CheckCompletionFn | None = None
    queue: str | None = None
    max_attempts: int | None = None

    def __repr__(self) -> str:
        return f"<Stage {self.id!r} ({self.mode})>"


def _check_model(what: str, stage_id: str, model: object) -> None:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise WorkflowDefinitionError(
            f"Stage {stage_id!r}: {what} must be a pydantic BaseModel class, got {model!r}"
        )


def _build_stage(
    *,
    id: str,
    name: str,
    input: type[BaseModel] | None,
    output: type[BaseModel],
    config: type[BaseModel] | None,
    description: str | None,
    dependencies: Sequence[str],
    execute: ExecuteFn,
    mode: StageMode,
    check_completion: CheckCompletionFn | None,
    queue: str | None,
    max_attempts: int | None,
) -> Stage[Any, Any, Any]:
    if not isinstance(id, str) or not id:
        raise WorkflowDefinitionError("A stage id must be a non-empty string")
    input_model = NoInput if input is None else input
    config_model = EmptyConfig if config is None else config
    _check_model("input", id, input_model)
    _check_model("output", id, output)
    _check_model("config", id, config_model)
    if not callable(execute):
        raise WorkflowDefinitionError(f"Stage {id!r}: execute must be callable")
    if max_attempts is not None and max_attempts < 1:
        raise WorkflowDefinitionError(f"Stage {id!r}: max_attempts must be at least 1")
    if isinstance(dependencies, str):
        raise WorkflowDefinitionError(
            f"Stage {id!r}: dependencies must be a list of stage ids, not the string "
            f"{dependencies!r}"
        )
    return Stage(
        id=id,
        name=name,
        input_model=input_model,
        output_model=output,
        config_model=config_model,
        execute=execute,
        description=description,
        dependencies=tuple(dependencies),
        mode=mode,
        check_completion=check_completion,
        queue=queue,
        max_attempts=max_attempts,
    )


@overload
def define_stage(
    *,
    id: str,
    name: str,
    input: type[BaseModel] | None,
    output: type[BaseModel],
    config: type[BaseModel] | None = None,
    description: str | None = None,
    dependencies: Sequence[str] = (),
    execute: None = None,
    queue: str | None = None,
    max_attempts: int | None = None,
) -> Callable[[ExecuteFn], Stage[Any, Any, Any]]: ...


@overload
def define_stage(
    *,
    id: str,
    name: str,
    input: type[BaseModel] | None,
    output: type[BaseModel],
    config: type[BaseModel] | None = None,
    description: str | None = None,
    dependencies: Sequence[str] = (),
    execute: ExecuteFn,
    queue: str | None = None,
    max_attempts: int | None = None,
) -> Stage[Any, Any, Any]: ...


def define_stage(
    *,
    id: str,
    name: str,
    input: type[BaseModel] | None,
    output: type[BaseModel],
    config: type[BaseModel] | None = None,
    description: str | None = None,
    dependencies: Sequence[str] = (),
    execute: ExecuteFn | None = None,
    queue: str | None = None,
    max_attempts: int | None = None,
) -> Stage[Any, Any, Any] | Callable[[ExecuteFn], Stage[Any, Any, Any]]:
    """Define a stage: a decorator over ``execute(ctx)``, or a call with ``execute=``.

    ``input=None`` declares a stage that takes no input (it reads earlier outputs through
    ``ctx.require``); ``config=None`` an empty config. ``execute`` may be ``async def``. ``queue``
    routes the stage's jobs to a Celery queue; ``max_attempts`` overrides the job attempt limit.
    """

    def build(fn: ExecuteFn) -> Stage[Any, Any, Any]:
        return _build_stage(
            id=id,
            name=name,
            input=input,
            output=output,
            config=config,
            description=description,
            dependencies=dependencies,
            execute=fn,
            mode="sync",
            check_completion=None,
            queue=queue,
            max_attempts=max_attempts,
        )

    return build if execute is None else build(execute)


def define_async_batch_stage(
    *,
    id: str,
    name: str,
    input: type[BaseModel] | None,
    output: type[BaseModel],
    execute: ExecuteFn,
    check_completion: CheckCompletionFn,
    config: type[BaseModel] | None = None,
    description: str | None = None,
    dependencies: Sequence[str] = (),
    queue: str | None = None,
    max_attempts: int | None = None,
) -> Stage[Any, Any, Any]:
    """Define a stage that may suspend while external work (a provider batch) completes.

    ``execute(ctx)`` returns :class:`Suspend` (or an output, to finish at once);
    ``check_completion(state, ctx)`` returns a :class:`CompletionCheck`. Both may be async.
    """
    if not callable(check_completion):
        raise WorkflowDefinitionError(f"Stage {id!r}: check_completion must be callable")
    return _build_stage(
        id=id,
        name=name,
        input=input,
        output=output,
        config=config,
        description=description,
        dependencies=dependencies,
        execute=execute,
        mode="async-batch",
        check_completion=check_completion,
        queue=queue,
        max_attempts=max_attempts,
    )
