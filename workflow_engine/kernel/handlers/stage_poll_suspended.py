"""``stage.pollSuspended``: ask due suspended stages whether their external work is done.

Each stage is checked outside any transaction and its outcome recorded in a short transaction
of its own. Every path closes the stage's SUSPENDED job rows, and a stage that cannot be polled
(its workflow, stage or ``check_completion`` is gone) fails its run instead of leaving it stuck.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from workflow_engine.definitions.stage import CompletionCheck, Stage, to_timedelta
from workflow_engine.kernel.commands import StagePollSuspended, StagePollSuspendedResult
from workflow_engine.kernel.execution import call_user, error_message, validate_output
from workflow_engine.kernel.outputs import WorkflowContext, store_output
from workflow_engine.kernel.progress import fail_run
from workflow_engine.kernel.runtime import Idempotency, Runtime, Scope
from workflow_engine.kernel.stage_context import build_context, parse_config
from workflow_engine.records import WorkflowRunRecord, WorkflowStageRecord
from workflow_engine.status import Status

DEFAULT_POLL_FALLBACK = timedelta(seconds=60)


def handle_stage_poll_suspended(
    command: StagePollSuspended, runtime: Runtime, idempotency: Idempotency | None
) -> StagePollSuspendedResult:
    due = runtime.persistence.get_suspended_stages(runtime.now())
    if command.workflow_run_id is not None:
        due = [s for s in due if s.workflow_run_id == command.workflow_run_id]
    if command.stage_id is not None:
        due = [s for s in due if s.stage_id == command.stage_id]
    checked = resumed = failed = 0
    resumed_runs: list[str] = []
    for stage_row in due[: command.max_checks]:
        checked += 1
        outcome = _poll_one(runtime, stage_row)
        if outcome == "resumed":
            resumed += 1
            if stage_row.workflow_run_id not in resumed_runs:
                resumed_runs.append(stage_row.workflow_run_id)
        elif outcome == "failed":
            failed += 1
    return StagePollSuspendedResult(
        checked=checked, resumed=resumed, failed=failed, resumed_workflow_run_ids=resumed_runs
    )


def _poll_one(runtime: Runtime, row: WorkflowStageRecord) -> str:
    run = runtime.persistence.get_run(row.workflow_run_id)
    if run is None:
        return "skipped"
    if run.status != Status.RUNNING:
        _close(runtime, row, Status.CANCELLED)
        return "skipped"
    workflow = runtime.registry.get_workflow(run.workflow_id)
    stage = workflow.get_stage(row.stage_id) if workflow else None
    if stage is None or stage.check_completion is None:
        reason = (
            f"Workflow {run.workflow_id} not found in registry"
            if workflow is None
            else f"Stage {row.stage_id} not found in workflow {run.workflow_id}"
            if stage is None
            else f"Stage {row.stage_id} has no check_completion and cannot be resumed"
        )
        return _fail(runtime, run, row, reason)

    try:
        check = _check(runtime, run, stage, row)
        if check.error is not None:
            return _fail(runtime, run, row, check.error)
        if check.ready:
            return _resume(runtime, run, stage, row, check)
    except Exception as exc:
        return _fail(runtime, run, row, error_message(exc))
    now = runtime.now()
    if row.max_wait_until is not None and row.max_wait_until <= now:
        message = (
            f"Stage {row.stage_id} exceeded maxWaitUntil ({row.max_wait_until.isoformat()}) "
            "while suspended"
        )
        return _fail(runtime, run, row, message)
    return _reschedule(runtime, row, check)


def _check(
    runtime: Runtime, run: WorkflowRunRecord, stage: Stage[Any, Any, Any], row: WorkflowStageRecord
) -> CompletionCheck[Any]:
    assert stage.check_completion is not None
    config = parse_config(runtime, stage, row.config or run.config.get(stage.id, {}), row)
    # No input, and progress goes nowhere: a completion check only reports readiness.
    ctx = build_context(
        runtime,
        run=run,
        stage=stage,
        stage_row=row,
        input=None,
        config=config,
        workflow_context=WorkflowContext(runtime, runtime.persistence.get_stages_by_run(run.id)),
        progress_events=[],
    )
    result = call_user(stage.check_completion, dict(row.suspended_state or {}), ctx)
    if not isinstance(result, CompletionCheck):
        raise TypeError(
            f"check_completion of stage {stage.id} must return CompletionCheck, "
            f"not {type(result).__name__}"
        )
    return result


def _still_suspended(scope: Scope, row: WorkflowStageRecord) -> WorkflowStageRecord | None:
    """The stage, if it is still SUSPENDED in a RUNNING run (re-read inside the transaction)."""
    run = scope.tx.get_run(row.workflow_run_id)
    current = scope.tx.get_stage_by_id(row.id)
    if run is None or run.status != Status.RUNNING:
        if current is not None and current.status == Status.SUSPENDED:
            scope.tx.update_stage(
                row.id,
                status=Status.CANCELLED,
                completed_at=scope.runtime.now(),
                next_poll_at=None,
            )
            _close_after_commit(scope.runtime, scope, row, Status.CANCELLED)
        return None
    if current is None or current.status != Status.SUSPENDED:
        return None
    return current


def _resume(
    runtime: Runtime,
    run: WorkflowRunRecord,
    stage: Stage[Any, Any, Any],
    row: WorkflowStageRecord,
    check: CompletionCheck[Any],
) -> str:
    fields: dict[str, Any] = {"output": None, "output_ref": None}
    if check.output is not None:
        try:
            output = validate_output(stage, check.output)
        except (ValidationError, ValueError) as exc:
            return _fail(runtime, run, row, error_message(exc))
        fields = store_output(runtime, run, stage.id, output)

    def write(scope: Scope) -> str:
        current = _still_suspended(scope, row)
        if current is None:
            return "skipped"
        now = runtime.now()
        started = current.started_at or current.created_at
        duration = int((now - started).total_seconds() * 1000)
        metrics = {**(current.metrics or {}), **dict(check.metrics)} or None
        scope.tx.update_stage(
            row.id,
            status=Status.COMPLETED,
            completed_at=now,
            duration=duration,
            next_poll_at=None,
            metrics=metrics,
            **fields,
        )
        scope.emit(
            "stage:completed", run.id, stage_id=stage.id, stage_name=stage.name, duration=duration
        )
        _close_after_commit(runtime, scope, row, Status.COMPLETED)
        return "resumed"

    return runtime.transaction(write)


def _reschedule(runtime: Runtime, row: WorkflowStageRecord, check: CompletionCheck[Any]) -> str:
    if check.next_check_in is not None:
        delay = to_timedelta(check.next_check_in)
    elif row.poll_interval:
        delay = timedelta(milliseconds=row.poll_interval)
    else:
        delay = DEFAULT_POLL_FALLBACK
    next_poll_at = runtime.now() + delay

    def write(scope: Scope) -> str:
        if _still_suspended(scope, row) is None:
            return "skipped"
        scope.tx.update_stage(row.id, next_poll_at=next_poll_at)
        runtime.schedule_after_commit(
            scope.tx,
            "stage.pollSuspended",
            {"workflow_run_id": row.workflow_run_id, "stage_id": row.stage_id},
            next_poll_at,
        )
        return "waiting"

    return runtime.transaction(write)


def _fail(runtime: Runtime, run: WorkflowRunRecord, row: WorkflowStageRecord, message: str) -> str:
    def write(scope: Scope) -> str:
        current = _still_suspended(scope, row)
        if current is None:
            return "skipped"
        scope.tx.update_stage(
            row.id,
            status=Status.FAILED,
            completed_at=runtime.now(),
            next_poll_at=None,
            error_message=message,
        )
        scope.emit(
            "stage:failed", run.id, stage_id=row.stage_id, stage_name=row.stage_name, error=message
        )
        latest = scope.tx.get_run(run.id) or run
        fail_run(scope, latest, message)
        _close_after_commit(runtime, scope, row, Status.FAILED)
        return "failed"

    return runtime.transaction(write)


def _close(runtime: Runtime, row: WorkflowStageRecord, status: Status) -> None:
    def write(scope: Scope) -> None:
        _still_suspended(scope, row)
        _close_after_commit(runtime, scope, row, status)

    runtime.transaction(write)


def _close_after_commit(
    runtime: Runtime, scope: Scope, row: WorkflowStageRecord, status: Status
) -> None:
    scope.tx.after_commit(
        lambda: runtime.job_transport.close_suspended(row.workflow_run_id, row.stage_id, status)
    )
