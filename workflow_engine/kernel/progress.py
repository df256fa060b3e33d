"""Moving a run between execution groups: shared by transition, claim, rerun and the reapers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workflow_engine.definitions.stage import Stage
from workflow_engine.definitions.workflow import Workflow
from workflow_engine.errors import StaleVersionError
from workflow_engine.kernel.commands import RunTransitionResult
from workflow_engine.kernel.outputs import WorkflowContext, group_output
from workflow_engine.kernel.runtime import Scope, logger, new_causation_id
from workflow_engine.records import (
    JobRecord,
    LockedRun,
    LogLevel,
    NewJob,
    NewStage,
    WorkflowRunRecord,
    WorkflowStageRecord,
    enqueued_job,
)
from workflow_engine.status import ACTIVE_STAGE_STATUSES, Status

NOOP = RunTransitionResult(action="noop")


@dataclass
class StartNext:
    """A worker asking to run the next stage itself (``JobExecute.lease_next_to``).

    The transaction that prepares the run's next group then starts the first of its new
    stages on ``queue``: the stage row is created RUNNING under a fresh lease token, its job
    is enqueued already leased to ``worker_id`` under that token, ``stage:started`` is
    emitted, and ``job`` is set to the leased job. Once it commits, the run and its stages
    (``earlier`` ones, read in the transaction, and the group's new rows) are handed off to
    the worker (:class:`~workflow_engine.kernel.runtime.StartedStages`).
    """

    worker_id: str
    queue: str | None
    earlier: Sequence[WorkflowStageRecord] = ()
    job: JobRecord | None = None


def enqueue_stages(
    scope: Scope,
    run: WorkflowRunRecord,
    stages: Sequence[Stage[Any, Any, Any]],
    started: tuple[WorkflowStageRecord, StartNext] | None = None,
) -> list[str]:
    """Enqueue one job per stage, joined to the scope's transaction; the ``started`` stage's
    job is enqueued leased to the worker that asked for it."""
    if not stages:
        return []
    options = scope.runtime.options
    jobs = [
        NewJob(
            workflow_run_id=run.id,
            workflow_id=run.workflow_id,
            stage_id=stage.id,
            priority=run.priority,
            payload={"config": run.config},
            max_attempts=stage.max_attempts or options.default_max_attempts,
            queue=stage.queue,
        )
        for stage in stages
    ]
    if started is not None:
        row, start_next = started
        index = next(i for i, job in enumerate(jobs) if job.stage_id == row.stage_id)
        job_id = new_causation_id()
        jobs[index] = leased = jobs[index].model_copy(
            update={
                "id": job_id,
                "worker_id": start_next.worker_id,
                "lease_token": row.lease_token,
            }
        )
        now, attempts = scope.runtime.now(), options.default_max_attempts
        start_next.job = enqueued_job(leased, job_id, now, attempts, leased.payload)
    return scope.runtime.job_transport.enqueue_parallel(jobs, tx=scope.tx)


def prepare_group(
    scope: Scope,
    run: WorkflowRunRecord,
    workflow: Workflow[Any, Any],
    group: int,
    attempt: int,
    start_next: StartNext | None = None,
) -> list[str]:
    """Upsert PENDING rows for a group's stages and enqueue those that are PENDING; with
    ``start_next``, start one of them for its worker (see :class:`StartNext`)."""
    to_enqueue = []
    rows: list[WorkflowStageRecord] = []
    started: tuple[WorkflowStageRecord, StartNext] | None = None
    for stage in workflow.get_stages_in_execution_group(group):
        node = workflow.require_stage(stage.id)
        starts = started is None and start_next is not None and stage.queue == start_next.queue
        running = _running(scope.runtime.now()) if starts else {}
        row = scope.tx.upsert_stage(
            run.id,
            stage.id,
            create=NewStage(
                workflow_run_id=run.id,
                stage_id=stage.id,
                stage_name=stage.name,
                stage_number=node.index + 1,
                execution_group=group,
                attempt=attempt,
                config=run.config.get(stage.id, {}),
                **running,
            ),
            update={},
        )
        rows.append(row)
        # (a row left by an earlier attempt is kept as it is, so it is not started here)
        if start_next is not None and running and row.lease_token == running["lease_token"]:
            started = (row, start_next)
            emit_stage_started(scope, row, stage.name)
            to_enqueue.append(stage)
        elif row.status == Status.PENDING:
            to_enqueue.append(stage)
    job_ids = enqueue_stages(scope, run, to_enqueue, started)
    if started is not None:
        _hand_off(scope, run, rows, started[1])
    return job_ids


def _hand_off(
    scope: Scope, run: WorkflowRunRecord, rows: list[WorkflowStageRecord], start_next: StartNext
) -> None:
    """Once the transaction commits, leave the run and its stages as it wrote them to the
    worker it started a stage for."""
    assert start_next.job is not None and start_next.job.lease_token is not None
    by_id = {row.id: row for row in start_next.earlier}
    by_id.update((row.id, row) for row in rows)
    stages = sorted(by_id.values(), key=lambda row: (row.execution_group, row.stage_number))
    snapshot = LockedRun(run, stages)
    token, runtime = start_next.job.lease_token, scope.runtime
    at = runtime.now()
    scope.tx.after_commit(lambda: runtime.started_stages.put(token, at, snapshot))


def emit_stage_started(scope: Scope, row: WorkflowStageRecord, stage_name: str) -> None:
    """``stage:started`` for a stage row just marked RUNNING."""
    scope.emit(
        "stage:started",
        row.workflow_run_id,
        stage_id=row.stage_id,
        stage_name=stage_name,
        stage_number=row.stage_number,
    )


def _running(now: datetime) -> dict[str, Any]:
    return {"status": Status.RUNNING, "started_at": now, "lease_token": new_causation_id()}


def claim_run_version(scope: Scope, run: WorkflowRunRecord) -> WorkflowRunRecord | None:
    """Version-guarded touch of the run: the loser of two concurrent deciders gets ``None``."""
    try:
        return scope.tx.update_run(run.id, expected_version=run.version)
    except StaleVersionError:
        return None


def fail_run(
    scope: Scope,
    run: WorkflowRunRecord,
    message: str,
    *,
    code: str | None = None,
    expected_version: int | None = None,
    **details: Any,
) -> WorkflowRunRecord:
    """Mark the run FAILED with a stored reason, an ERROR log line and ``workflow:failed``."""
    output = {"error": {"code": code, "message": message, **details}} if code else run.output
    failed = scope.tx.update_run(
        run.id,
        expected_version=expected_version,
        status=Status.FAILED,
        completed_at=scope.runtime.now(),
        error_message=message,
        output=output,
    )
    scope.tx.create_log(
        level=LogLevel.ERROR, message=f"Workflow failed: {message}", workflow_run_id=run.id
    )
    scope.emit("workflow:failed", run.id, error=message)
    return failed


def transition_run(scope: Scope, run_id: str) -> RunTransitionResult:
    """Decide what a run does next, once no stage of its current group is active."""
    run = scope.tx.get_run(run_id)
    if run is None or run.status != Status.RUNNING:
        return NOOP
    return advance_run(scope, run, scope.tx.get_stages_by_run(run.id))


def advance_run(
    scope: Scope,
    run: WorkflowRunRecord,
    stages: Sequence[WorkflowStageRecord],
    start_next: StartNext | None = None,
) -> RunTransitionResult:
    """:func:`transition_run` for a RUNNING run and its stages, read in this transaction;
    ``start_next``: see :class:`StartNext`."""
    tx = scope.tx
    workflow = scope.runtime.registry.get_workflow(run.workflow_id)
    if workflow is None:
        return NOOP
    if not stages:
        claimed = claim_run_version(scope, run)
        if claimed is None:
            return NOOP
        scope.emit("workflow:started", run.id)
        prepare_group(scope, claimed, workflow, 1, 0, start_next)
        return RunTransitionResult(action="advanced", next_group=1)
    if any(stage.status in ACTIVE_STAGE_STATUSES for stage in stages):
        return NOOP

    failed = [stage for stage in stages if stage.status in (Status.FAILED, Status.CANCELLED)]
    if failed:
        jobs = scope.runtime.job_transport.get_jobs_by_workflow_run(run.id)
        retrying = {
            job.stage_id
            for job in jobs
            if job.status == Status.RUNNING or (job.status == Status.PENDING and job.attempt > 0)
        }
        final = [stage for stage in failed if stage.stage_id not in retrying]
        if not final:
            return NOOP
        if claim_run_version(scope, run) is None:
            return NOOP
        run = tx.get_run(run.id) or run
        fail_run(scope, run, final[0].error_message or "Stage failed")
        return RunTransitionResult(action="failed")

    max_group = max(stage.execution_group for stage in stages)
    attempt = max(stage.attempt for stage in stages)
    if max_group < workflow.group_count:
        claimed = claim_run_version(scope, run)
        if claimed is None:
            return NOOP
        prepare_group(scope, claimed, workflow, max_group + 1, attempt, start_next)
        return RunTransitionResult(action="advanced", next_group=max_group + 1)
    return complete_run(scope, run, workflow, stages, max_group)


def complete_run(
    scope: Scope,
    run: WorkflowRunRecord,
    workflow: Workflow[Any, Any],
    stages: Sequence[Any],
    last_group: int,
) -> RunTransitionResult:
    """Store the final output and totals and mark the run COMPLETED."""
    context = WorkflowContext(scope.runtime, stages)
    last_ids = [stage.id for stage in workflow.get_stages_in_execution_group(last_group)]
    output = group_output(context, last_ids)
    ai_cost, ai_tokens = ai_totals(scope, run)
    total_cost = ai_cost + sum(
        _metric(stage.metrics, "total_cost", "totalCost") for stage in stages
    )
    total_tokens = ai_tokens + int(
        sum(_metric(stage.metrics, "total_tokens", "totalTokens") for stage in stages)
    )
    now = scope.runtime.now()
    duration = int((now - run.created_at).total_seconds() * 1000)
    try:
        scope.tx.update_run(
            run.id,
            expected_version=run.version,
            status=Status.COMPLETED,
            completed_at=now,
            duration=duration,
            output=output,
            total_cost=total_cost,
            total_tokens=total_tokens,
        )
    except StaleVersionError:
        return NOOP
    scope.emit(
        "workflow:completed",
        run.id,
        duration=duration,
        output=output,
        total_cost=total_cost,
        total_tokens=total_tokens,
    )
    return RunTransitionResult(action="completed")


def ai_totals(scope: Scope, run: WorkflowRunRecord) -> tuple[float, int]:
    """Cost and tokens of every AI call logged under ``workflow.{run_id}`` (one query).

    A logger that fails is not fatal: the run completes with its stage metrics only, and a
    WARN log line says the AI totals are missing.
    """
    ai_logger = scope.runtime.ai_call_logger
    if ai_logger is None:
        return 0.0, 0
    try:
        stats = ai_logger.get_stats(f"workflow.{run.id}")
    except Exception as exc:
        logger.warning("could not read AI call totals of run %s", run.id, exc_info=True)
        scope.tx.create_log(
            level=LogLevel.WARN,
            message=f"AI call totals unavailable, run totals exclude them: {exc}",
            workflow_run_id=run.id,
        )
        return 0.0, 0
    return stats["total_cost"], stats["total_input_tokens"] + stats["total_output_tokens"]


def _metric(metrics: dict[str, Any] | None, *names: str) -> float:
    if not metrics:
        return 0.0
    for name in names:
        value = metrics.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0
