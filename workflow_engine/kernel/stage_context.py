"""Building the :class:`StageContext` a stage's code receives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from workflow_engine.ai.helper import AIHelper, create_ai_helper
from workflow_engine.definitions.context import AIFactory, StageContext, StageStorage
from workflow_engine.definitions.stage import Stage
from workflow_engine.kernel.events import make_event
from workflow_engine.kernel.runtime import Runtime, logger
from workflow_engine.records import LogLevel, WorkflowRunRecord, WorkflowStageRecord


def parse_config(
    runtime: Runtime,
    stage: Stage[Any, Any, Any],
    raw: Mapping[str, Any],
    stage_row: WorkflowStageRecord,
) -> BaseModel:
    """The stage's config model; on a schema mismatch, a WARN log and the raw values."""
    try:
        config: BaseModel = stage.config_model.model_validate(dict(raw))
        return config
    except ValidationError as exc:
        write_log(
            runtime,
            stage_row,
            LogLevel.WARN,
            f"Config of stage {stage.id} failed schema validation; falling back to raw config",
            {"errors": str(exc)},
        )
        fallback: BaseModel = stage.config_model.model_construct(**dict(raw))
        return fallback


def write_log(
    runtime: Runtime,
    stage_row: WorkflowStageRecord,
    level: LogLevel,
    message: str,
    metadata: Mapping[str, Any],
) -> None:
    """Write a log line at once, outside any transaction; a failure to log is not fatal."""
    try:
        runtime.persistence.create_log(
            level=level,
            message=message,
            workflow_run_id=stage_row.workflow_run_id,
            workflow_stage_id=stage_row.id,
            metadata=dict(metadata) or None,
        )
    except Exception:
        logger.warning("could not write a stage log line", exc_info=True)


def build_context(
    runtime: Runtime,
    *,
    run: WorkflowRunRecord,
    stage: Stage[Any, Any, Any],
    stage_row: WorkflowStageRecord,
    input: Any,
    config: BaseModel,
    workflow_context: Mapping[str, Any],
    progress_events: list[dict[str, Any]],
) -> StageContext[Any, Any]:
    """A context whose logs are written at once and whose progress is buffered as events."""

    def log(level: LogLevel, message: str, metadata: dict[str, Any]) -> None:
        write_log(runtime, stage_row, level, message, metadata)

    def progress(percent: float, message: str, details: dict[str, Any]) -> None:
        progress_events.append(
            make_event(
                "stage:progress",
                run.id,
                runtime.now(),
                stage_id=stage.id,
                stage_name=stage.name,
                progress=percent,
                message=message,
                details=details or None,
            )
        )

    return StageContext(
        input=input,
        config=config,
        workflow_context=workflow_context,
        workflow_run_id=run.id,
        workflow_id=run.workflow_id,
        stage_id=stage.id,
        stage_name=stage.name,
        stage_number=stage_row.stage_number,
        stage_record_id=stage_row.id,
        attempt=stage_row.attempt,
        resume_state=stage_row.suspended_state,
        storage=StageStorage(
            runtime.blob_store,
            workflow_type=run.workflow_type,
            workflow_run_id=run.id,
            stage_id=stage.id,
        ),
        log_sink=log,
        progress_sink=progress,
        ai_factory=ai_factory(runtime, run, stage.id),
    )


def ai_topic(workflow_run_id: str, stage_id: str) -> str:
    """The topic a stage's AI calls are logged under."""
    return f"workflow.{workflow_run_id}.stage.{stage_id}"


def ai_factory(runtime: Runtime, run: WorkflowRunRecord, stage_id: str) -> AIFactory | None:
    """Makes the stage's ``ctx.ai`` on first use; ``None`` when the kernel has no AI logger."""
    logger = runtime.ai_call_logger
    if logger is None:
        return None

    def make() -> AIHelper:
        return create_ai_helper(
            ai_topic(run.id, stage_id),
            logger,
            models=runtime.ai_models,
            providers=runtime.ai_providers,
            log_context={"workflow_run_id": run.id, "stage_id": stage_id},
        )

    return make
