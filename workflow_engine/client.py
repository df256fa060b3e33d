"""``WorkflowClient``: start, inspect, wait for, cancel and rerun runs from any process."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from celery import Celery
from pydantic import BaseModel, ConfigDict

from workflow_engine.celery.app import create_celery_app
from workflow_engine.celery.context import EngineContext, build_context
from workflow_engine.errors import RunNotFoundError
from workflow_engine.kernel.commands import RunCancel, RunCreate, RunRerunFrom
from workflow_engine.records import WorkflowRunRecord, WorkflowStageRecord
from workflow_engine.settings import EngineSettings
from workflow_engine.status import TERMINAL_RUN_STATUSES, Status


class StageView(BaseModel):
    """One stage of a run, as a user sees it."""

    model_config = ConfigDict(frozen=True)

    stage_id: str
    stage_name: str
    execution_group: int
    status: Status
    attempt: int
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    error: str | None

    @classmethod
    def of(cls, stage: WorkflowStageRecord) -> StageView:
        return cls(
            stage_id=stage.stage_id,
            stage_name=stage.stage_name,
            execution_group=stage.execution_group,
            status=stage.status,
            attempt=stage.attempt,
            started_at=stage.started_at,
            completed_at=stage.completed_at,
            duration_ms=stage.duration,
            error=stage.error_message,
        )


class RunView(BaseModel):
    """A run with its stages: status, timings, output and error."""

    model_config = ConfigDict(frozen=True)

    id: str
    workflow_id: str
    status: Status
    input: Any
    output: Any
    error: str | None
    priority: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    total_cost: float
    total_tokens: int
    stages: list[StageView]

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES

    @classmethod
    def of(cls, run: WorkflowRunRecord, stages: list[WorkflowStageRecord]) -> RunView:
        return cls(
            id=run.id,
            workflow_id=run.workflow_id,
            status=run.status,
            input=run.input,
            output=run.output if run.status == Status.COMPLETED else None,
            error=run.error_message,
            priority=run.priority,
            created_at=run.created_at,
            started_at=run.started_at,
            completed_at=run.completed_at,
            duration_ms=run.duration,
            total_cost=run.total_cost,
            total_tokens=run.total_tokens,
            stages=[StageView.of(stage) for stage in stages],
        )


class WorkflowClient:
    """Talks to the engine's database and wakes its workers.

    ``WorkflowClient.from_env()`` reads ``WORKFLOW_ENGINE_*`` settings; pass ``settings`` or
    ``database_url``/``broker_url`` to be explicit, and ``app`` to reuse your Celery app.
    """

    def __init__(
        self,
        settings: EngineSettings | None = None,
        *,
        database_url: str | None = None,
        broker_url: str | None = None,
        app: Celery | None = None,
    ) -> None:
        overrides = {
            key: value
            for key, value in {"database_url": database_url, "broker_url": broker_url}.items()
            if value is not None
        }
        base = settings or EngineSettings.from_env()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self.app = app or create_celery_app(self.settings)
        self._context: EngineContext = build_context(self.settings, self.app)

    @classmethod
    def from_env(cls) -> WorkflowClient:
        """A client configured from ``WORKFLOW_ENGINE_*`` environment variables."""
        return cls()

    @property
    def context(self) -> EngineContext:
        """The kernel and adapters this client uses."""
        return self._context

    def create_run(
        self,
        workflow_id: str,
        input: Any,
        *,
        config: dict[str, Any] | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Create a run and wake a worker to start it; return the run id.

        The same ``idempotency_key`` always returns the same run. Raises
        ``WorkflowNotFoundError``, ``InvalidInputError`` or ``InvalidConfigError`` (nothing is
        stored then).
        """
        result = self._context.kernel.dispatch(
            RunCreate(
                idempotency_key=idempotency_key or uuid.uuid4().hex,
                workflow_id=workflow_id,
                input=input,
                config=config,
                priority=priority,
            )
        )
        self._context.publisher.claim_pending()
        return result.workflow_run_id

    def get_run(self, run_id: str) -> RunView:
        """The run and its stages; raise ``RunNotFoundError`` for an unknown id."""
        persistence = self._context.persistence
        run = persistence.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        return RunView.of(run, persistence.get_stages_by_run(run_id))

    def list_runs(
        self,
        *,
        status: Status | str | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunView]:
        """Runs, newest first (stages included)."""
        persistence = self._context.persistence
        runs = persistence.list_runs(
            status=Status(status) if status is not None else None,
            workflow_id=workflow_id,
            limit=limit,
            offset=offset,
        )
        return [RunView.of(run, persistence.get_stages_by_run(run.id)) for run in runs]

    def cancel(self, run_id: str, reason: str | None = None) -> bool:
        """Cancel a pending or running run; ``False`` if it had already finished."""
        self.get_run(run_id)
        result = self._context.kernel.dispatch(RunCancel(workflow_run_id=run_id, reason=reason))
        return result.cancelled

    def rerun_from(self, run_id: str, stage_id: str) -> list[str]:
        """Run a finished run again from ``stage_id``'s group; return the stage ids reset."""
        result = self._context.kernel.dispatch(
            RunRerunFrom(workflow_run_id=run_id, from_stage_id=stage_id)
        )
        return result.deleted_stages

    def wait(self, run_id: str, timeout: float = 60.0) -> RunView:
        """Block until the run is COMPLETED, FAILED or CANCELLED; raise ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            status = self._context.persistence.get_run_status(run_id)
            if status is None:
                raise RunNotFoundError(run_id)
            if status in TERMINAL_RUN_STATUSES:
                return self.get_run(run_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"run {run_id} is still {status.value} after {timeout} s")
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.05)

    def close(self) -> None:
        """Release database connections."""
        self._context.dispose()
