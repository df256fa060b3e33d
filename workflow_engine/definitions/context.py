"""What a stage's ``execute`` (and ``check_completion``) receives: :class:`StageContext`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pydantic import BaseModel

from workflow_engine.errors import MissingStageOutputError, WorkflowEngineError
from workflow_engine.ports import BlobStore
from workflow_engine.records import LogLevel

if TYPE_CHECKING:
    from workflow_engine.ai.helper import AIHelper

InT = TypeVar("InT")
CfgT = TypeVar("CfgT")
M = TypeVar("M", bound=BaseModel)

LogSink = Callable[[LogLevel, str, dict[str, Any]], None]
ProgressSink = Callable[[float, str, dict[str, Any]], None]
AIFactory = Callable[[], "AIHelper"]

_LEVEL_ALIASES = {"WARNING": "WARN", "CRITICAL": "ERROR", "FATAL": "ERROR"}


def parse_log_level(level: LogLevel | str) -> LogLevel:
    """Accept ``LogLevel`` or a level name in any case (``"warning"`` means WARN)."""
    if isinstance(level, LogLevel):
        return level
    name = str(level).upper()
    try:
        return LogLevel(_LEVEL_ALIASES.get(name, name))
    except ValueError:
        raise ValueError(
            f"unknown log level {level!r}; use one of DEBUG, INFO, WARN, ERROR"
        ) from None


def stage_key_prefix(workflow_type: str, workflow_run_id: str, stage_id: str) -> str:
    """The blob-key folder of one stage of one run (``workflow-v2/{type}/{run}/{stage}/``)."""
    return f"workflow-v2/{workflow_type}/{workflow_run_id}/{stage_id}/"


class StageStorage:
    """Blob access scoped to one run: keys live under the stage's own folder by default.

    Pass ``stage_id=`` to read what another stage of the same run saved.
    """

    def __init__(
        self, blob_store: BlobStore, *, workflow_type: str, workflow_run_id: str, stage_id: str
    ) -> None:
        self._blobs = blob_store
        self._workflow_type = workflow_type
        self._run_id = workflow_run_id
        self._stage_id = stage_id

    def get_stage_key(self, stage_id: str | None = None, suffix: str = "output.json") -> str:
        """Full blob key of ``suffix`` in a stage's folder (this stage's by default)."""
        stage = stage_id or self._stage_id
        return stage_key_prefix(self._workflow_type, self._run_id, stage) + suffix

    def save(self, key: str, data: Any, *, stage_id: str | None = None) -> None:
        """Store a JSON value under ``key``."""
        self._blobs.put(self.get_stage_key(stage_id, key), data)

    def load(self, key: str, *, stage_id: str | None = None) -> Any:
        """Load the value under ``key``; raise ``BlobNotFoundError`` if absent."""
        return self._blobs.get(self.get_stage_key(stage_id, key))

    def exists(self, key: str, *, stage_id: str | None = None) -> bool:
        return self._blobs.has(self.get_stage_key(stage_id, key))

    def delete(self, key: str, *, stage_id: str | None = None) -> None:
        """Delete ``key``; no error if it is absent."""
        self._blobs.delete(self.get_stage_key(stage_id, key))


class StageContext(Generic[InT, CfgT]):
    """Everything a stage sees while it runs.

    ``input`` and ``config`` are model instances; ``workflow_context`` maps the ids of the run's
    completed stages to their stored (JSON-mode) outputs and reads each one only when asked.
    ``attempt`` is the rerun generation; ``idempotency_key`` depends only on (run, stage,
    attempt), so it is the same on every retry and redelivery: use it for side effects in other
    systems. In ``check_completion`` the context has no ``input`` (it is ``None``).
    """

    def __init__(
        self,
        *,
        input: InT,
        config: CfgT,
        workflow_context: Mapping[str, Any],
        workflow_run_id: str,
        workflow_id: str,
        stage_id: str,
        stage_name: str,
        stage_number: int,
        stage_record_id: str | None,
        attempt: int,
        resume_state: Mapping[str, Any] | None,
        storage: StageStorage,
        log_sink: LogSink,
        progress_sink: ProgressSink,
        ai_factory: AIFactory | None = None,
    ) -> None:
        self.input = input
        self.config = config
        self.workflow_context = workflow_context
        self.workflow_run_id = workflow_run_id
        self.workflow_id = workflow_id
        self.stage_id = stage_id
        self.stage_name = stage_name
        self.stage_number = stage_number
        self.stage_record_id = stage_record_id
        self.attempt = attempt
        self.resume_state = resume_state
        self.storage = storage
        self.idempotency_key = f"{workflow_run_id}:{stage_id}:{attempt}"
        self._log_sink = log_sink
        self._progress_sink = progress_sink
        self._ai_factory = ai_factory
        self._ai: AIHelper | None = None

    @overload
    def require(self, stage_id: str) -> Any: ...

    @overload
    def require(self, stage_id: str, model: type[M]) -> M: ...

    def require(self, stage_id: str, model: type[M] | None = None) -> Any:
        """Output of an earlier stage; raise ``MissingStageOutputError`` if it has none.

        With ``model``, the stored output is validated into that model.
        """
        if stage_id not in self.workflow_context:
            raise MissingStageOutputError(stage_id, list(self.workflow_context))
        value = self.workflow_context[stage_id]
        return model.model_validate(value) if model is not None else value

    def optional(self, stage_id: str, default: Any = None) -> Any:
        """Output of an earlier stage, or ``default`` if it has none."""
        return self.workflow_context.get(stage_id, default)

    def log(self, level: LogLevel | str, message: str, **metadata: Any) -> None:
        """Write a log line for this stage (DEBUG, INFO, WARN or ERROR)."""
        self._log_sink(parse_log_level(level), message, metadata)

    def progress(self, percent: float, message: str = "", **details: Any) -> None:
        """Report progress (0-100); sent as a ``stage:progress`` event with the stage's result."""
        if not 0 <= percent <= 100:
            raise ValueError(f"progress must be between 0 and 100, got {percent}")
        self._progress_sink(float(percent), message, details)

    @property
    def ai(self) -> AIHelper:
        """The AI helper of this stage: calls logged under ``workflow.{run}.stage.{stage}``.

        Made on first use. Raises ``WorkflowEngineError`` when the kernel has no AI call
        logger (``create_kernel(..., ai_call_logger=...)``).
        """
        if self._ai is None:
            if self._ai_factory is None:
                raise WorkflowEngineError(
                    "ctx.ai needs an AI call logger: pass ai_call_logger= to create_kernel "
                    "(WorkflowTestHarness and the SQL wiring set one up)"
                )
            self._ai = self._ai_factory()
        return self._ai
