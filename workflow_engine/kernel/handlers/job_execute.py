"""``job.execute``: run one stage in three phases (mark RUNNING, execute, record the result).

No transaction is open while the stage's code runs. The result is recorded only if the run is
still RUNNING and the stage still holds this execution's lease (``lease_token``), so a worker
whose lease was taken over, or whose run was cancelled, has its late result discarded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from pydantic import BaseModel, ValidationError

from workflow_engine.definitions.config import describe_validation_error
from workflow_engine.definitions.stage import Suspend, to_timedelta
from workflow_engine.definitions.workflow import StageNode, Workflow
from workflow_engine.errors import RunNotFoundError
from workflow_engine.kernel.commands import JobExecute, JobExecuteResult
from workflow_engine.kernel.execution import (
    Completed,
    StageInputError,
    call_user,
    error_message,
    is_retryable,
    json_mapping,
    normalise_result,
)
from workflow_engine.kernel.outputs import (
    WorkflowContext,
    group_output,
    load_output,
    store_artifacts,
    store_output,
)
from workflow_engine.kernel.progress import StartNext, advance_run, emit_stage_started
from workflow_engine.kernel.runtime import Idempotency, Runtime, Scope, new_causation_id
from workflow_engine.kernel.stage_context import build_context, parse_config, write_log
from workflow_engine.records import (
    JobRecord,
    LockedRun,
    LogLevel,
    NewStage,
    WorkflowRunRecord,
    WorkflowStageRecord,
)
from workflow_engine.status import Status


def handle_job_execute(
    command: JobExecute, runtime: Runtime, idempotency: Idempotency | None
) -> JobExecuteResult:
    workflow = runtime.workflow(command.workflow_id)
    node = workflow.require_stage(command.stage_id)
    started = runtime.now()
    causation_id = command.idempotency_key or new_causation_id()
    begun: _Begun | JobExecuteResult | None = None
    if command.stage_started and idempotency is None:
        begun = _read_started(runtime, command)
    if begun is None:
        begun = runtime.transaction(
            lambda scope: _mark_running(scope, node, command, started),
            causation_id=causation_id,
            idempotency=idempotency,
        )
    if isinstance(begun, JobExecuteResult):
        return begun
    execution = _Execution(
        runtime, command, workflow, node, begun, started, causation_id, idempotency
    )
    return execution.run()


def ghost(reason: str) -> JobExecuteResult:
    return JobExecuteResult(outcome="failed", ghost=True, error=reason, retryable=False)


def not_running(run: WorkflowRunRecord | None, run_id: str) -> str | None:
    """Why a result for ``run`` must be discarded, or ``None`` when it is RUNNING."""
    if run is not None and run.status == Status.RUNNING:
        return None
    status = run.status.value if run is not None else "deleted"
    return f"Run {run_id} is {status}, expected RUNNING — ghost job discarded"


@dataclass(frozen=True)
class _Begun:
    """What phase 1 read and wrote: the run, its stages, and the stage's RUNNING row."""

    run: WorkflowRunRecord
    stages: list[WorkflowStageRecord]
    row: WorkflowStageRecord


def _mark_running(
    scope: Scope, node: StageNode, command: JobExecute, started: datetime
) -> _Begun | JobExecuteResult:
    """Phase 1: check the run and the lease, mark the stage RUNNING under this lease."""
    tx, stage = scope.tx, node.stage
    locked = tx.lock_run(command.workflow_run_id)
    if locked is None:
        raise RunNotFoundError(command.workflow_run_id)
    run, stages = locked
    reason = not_running(run, run.id)
    if reason is not None:
        return scope.finish(ghost(reason))
    existing = next((row for row in stages if row.stage_id == stage.id), None)
    if existing is not None and existing.status == Status.COMPLETED:
        next_job = _settle(scope, command, stage.queue, run, stages) if command.settle else None
        output = load_output(scope.runtime, existing)
        return scope.finish(JobExecuteResult(outcome="completed", output=output, next_job=next_job))
    if _started_under_this_lease(existing, command):
        return _Begun(run, stages, existing)
    if _lease_lost(scope, command):
        return scope.finish(
            ghost(f"Job {command.job_id} was leased again — stale execution discarded")
        )
    lease_token = command.lease_token
    # (the run is locked, so the row read above is still the row: no upsert needed)
    if existing is not None:
        row = tx.update_stage(
            existing.id, status=Status.RUNNING, started_at=started, lease_token=lease_token
        )
    else:
        row = tx.create_stage(
            NewStage(
                workflow_run_id=run.id,
                stage_id=stage.id,
                stage_name=stage.name,
                stage_number=node.index + 1,
                execution_group=node.execution_group,
                status=Status.RUNNING,
                config=run.config.get(stage.id, {}),
                started_at=started,
                lease_token=lease_token,
            )
        )
    emit_stage_started(scope, row, stage.name)
    return _Begun(run, stages, row)


def _read_started(runtime: Runtime, command: JobExecute) -> _Begun | None:
    """Phase 1 of a stage started when its job was leased (``command.stage_started``): what
    the starting commit handed off (``runtime.started_stages``), else two reads, and no
    transaction; ``None`` when anything is not as expected (the locked path then decides)."""
    token = command.lease_token
    handed_off = runtime.started_stages.take(token, runtime.now()) if token else None
    if handed_off is not None:
        run, stages = handed_off
    else:
        persistence = runtime.persistence
        found = persistence.get_run(command.workflow_run_id)
        if found is None or found.status != Status.RUNNING:
            return None
        run, stages = found, persistence.get_stages_by_run(found.id)
    row = next((row for row in stages if row.stage_id == command.stage_id), None)
    return _Begun(run, stages, row) if _started_under_this_lease(row, command) else None


def _started_under_this_lease(
    row: WorkflowStageRecord | None, command: JobExecute
) -> TypeGuard[WorkflowStageRecord]:
    """True when the transaction that leased the job also started the stage (``next_job`` of
    ``lease_next_to``): the row is RUNNING under this very lease, and ``stage:started`` was
    emitted. A newer lease would have replaced the row's token (and the result of this one
    is discarded if it does so later)."""
    return (
        row is not None
        and command.lease_token is not None
        and row.status == Status.RUNNING
        and row.lease_token == command.lease_token
    )


def _lease_lost(scope: Scope, command: JobExecute) -> bool:
    """True when a newer lease took the job over (a worker paused past its lease)."""
    if command.job_id is None or command.lease_token is None:
        return False
    job = scope.runtime.job_transport.get_job(command.job_id)
    return job is None or job.lease_token != command.lease_token


def _settle(
    scope: Scope,
    command: JobExecute,
    queue: str | None,
    run: WorkflowRunRecord,
    stages: Sequence[WorkflowStageRecord],
) -> JobRecord | None:
    """Complete the job row and transition the run (``command.settle``), in this transaction;
    return the job started for ``command.lease_next_to``, if any."""
    if command.job_id is not None:
        scope.runtime.job_transport.complete(
            command.job_id, lease_token=command.lease_token, tx=scope.tx
        )
    if command.lease_next_to is None:
        advance_run(scope, run, stages)
        return None
    start_next = StartNext(command.lease_next_to, queue, earlier=stages)
    advance_run(scope, run, stages, start_next)
    return start_next.job


def resolve_input(
    workflow: Workflow[Any, Any],
    node: StageNode,
    run: WorkflowRunRecord,
    context: Mapping[str, Any],
) -> BaseModel:
    """Group 1 gets the run's input; a later group gets the previous group's output."""
    stage = node.stage
    if node.execution_group == 1:
        raw = run.input
    else:
        previous = [s.id for s in workflow.get_stages_in_execution_group(node.execution_group - 1)]
        raw = group_output(context, previous)
        if raw is None or (raw == {} and len(previous) > 1):
            raise StageInputError(
                f"Stage {stage.id} is missing the output of execution group "
                f"{node.execution_group - 1} ({', '.join(previous)})"
            )
    try:
        parsed: BaseModel = stage.input_model.model_validate(raw)
        return parsed
    except ValidationError as exc:
        raise StageInputError(
            f"Invalid input for stage {stage.id}: " + "; ".join(describe_validation_error(exc))
        ) from None


class _Execution:
    """Phases 2 and 3 of one ``job.execute``."""

    def __init__(
        self,
        runtime: Runtime,
        command: JobExecute,
        workflow: Workflow[Any, Any],
        node: StageNode,
        begun: _Begun,
        started: datetime,
        causation_id: str,
        idempotency: Idempotency | None,
    ) -> None:
        self.runtime = runtime
        self.command = command
        self.workflow = workflow
        self.stage = node.stage
        self.node = node
        self.run_record = begun.run
        self.stages = begun.stages
        self.row = begun.row
        self.started = started
        self.causation_id = causation_id
        self.idempotency = idempotency
        self.progress_events: list[dict[str, Any]] = []

    def run(self) -> JobExecuteResult:
        """Execute the stage and record its outcome (under the dispatch's idempotency key)."""
        try:
            outcome = self._execute()
            if isinstance(outcome, Suspend):
                return self._record_suspension(outcome)
            fields = store_output(self.runtime, self.run_record, self.stage.id, outcome.output)
            fields["artifact_keys"] = store_artifacts(
                self.runtime, self.run_record, self.stage.id, outcome.artifacts
            )
        except Exception as exc:
            return self._record_failure(exc)
        return self._record_completion(outcome, fields)

    def _execute(self) -> Completed | Suspend:
        runtime, stage = self.runtime, self.stage
        context = WorkflowContext(runtime, self.stages)
        stage_input = resolve_input(self.workflow, self.node, self.run_record, context)
        config_map = self.command.config or self.run_record.config
        config = parse_config(runtime, stage, config_map.get(stage.id, {}), self.row)
        ctx = build_context(
            runtime,
            run=self.run_record,
            stage=stage,
            stage_row=self.row,
            input=stage_input,
            config=config,
            workflow_context=context,
            progress_events=self.progress_events,
        )
        return normalise_result(stage, call_user(stage.execute, ctx))

    def _duration_ms(self) -> int:
        return int((self.runtime.now() - self.started).total_seconds() * 1000)

    def _guarded(
        self, write: Callable[[Scope], WorkflowStageRecord], result: JobExecuteResult
    ) -> JobExecuteResult:
        """Phase 3: run ``write(scope)`` in a transaction only if this execution still owns
        the stage; with ``settle``, also settle a completed stage in that transaction."""

        def body(scope: Scope) -> JobExecuteResult:
            locked = scope.tx.lock_run(self.run_record.id)
            reason = self._lost_ownership(locked)
            if reason is not None:
                scope.events.clear()
                return scope.finish(ghost(reason))
            assert locked is not None  # (a deleted run is a reason above)
            run, stages = locked
            scope.extend(self.progress_events)
            written = write(scope)
            if self.command.settle and result.outcome == "completed":
                settled = [written if row.id == written.id else row for row in stages]
                next_job = _settle(scope, self.command, self.stage.queue, run, settled)
                return scope.finish(result.model_copy(update={"next_job": next_job}))
            return scope.finish(result)

        return self.runtime.transaction(
            body, causation_id=self.causation_id, idempotency=self.idempotency
        )

    def _lost_ownership(self, locked: LockedRun | None) -> str | None:
        reason = not_running(locked.run if locked else None, self.run_record.id)
        if locked is None or reason is not None:
            return reason
        current = next((row for row in locked.stages if row.id == self.row.id), None)
        if current is None or current.status != Status.RUNNING:
            status = current.status.value if current else "deleted"
            return f"Stage {self.stage.id} is {status}, expected RUNNING — stale result discarded"
        token = self.command.lease_token
        if token is not None and current.lease_token != token:
            return (
                f"Stage {self.stage.id} was taken over by a newer attempt — stale result discarded"
            )
        return None

    def _record_failure(self, exc: Exception) -> JobExecuteResult:
        message = error_message(exc)
        stage = self.stage

        def write(scope: Scope) -> WorkflowStageRecord:
            row = scope.tx.update_stage(
                self.row.id,
                status=Status.FAILED,
                completed_at=self.runtime.now(),
                duration=self._duration_ms(),
                error_message=message,
            )
            scope.emit(
                "stage:failed",
                self.run_record.id,
                stage_id=stage.id,
                stage_name=stage.name,
                error=message,
            )
            return row

        result = self._guarded(
            write,
            JobExecuteResult(outcome="failed", error=message, retryable=is_retryable(exc)),
        )
        if not result.ghost:
            write_log(
                self.runtime, self.row, LogLevel.ERROR, f"Stage {stage.id} failed: {message}", {}
            )
        return result

    def _record_suspension(self, suspend: Suspend) -> JobExecuteResult:
        runtime, stage, run = self.runtime, self.stage, self.run_record
        now = runtime.now()
        poll_interval = to_timedelta(suspend.poll_interval)
        next_poll_at = suspend.next_poll_at or now + poll_interval
        state = json_mapping(stage, "a suspended state", suspend.state)
        metrics = json_mapping(stage, "metrics", suspend.metrics)
        runtime.check_payload(f"The suspended state of stage {stage.id}", state)

        def write(scope: Scope) -> WorkflowStageRecord:
            row = scope.tx.update_stage(
                self.row.id,
                status=Status.SUSPENDED,
                suspended_state=state,
                next_poll_at=next_poll_at,
                poll_interval=_ms(poll_interval),
                max_wait_until=now + to_timedelta(suspend.max_wait),
                metrics=metrics or None,
            )
            scope.emit(
                "stage:suspended",
                run.id,
                stage_id=stage.id,
                stage_name=stage.name,
                next_poll_at=next_poll_at,
            )
            scope.emit("workflow:suspended", run.id, stage_id=stage.id)
            runtime.schedule_after_commit(
                scope.tx,
                "stage.pollSuspended",
                {"workflow_run_id": run.id, "stage_id": stage.id},
                next_poll_at,
            )
            return row

        return self._guarded(
            write, JobExecuteResult(outcome="suspended", next_poll_at=next_poll_at)
        )

    def _record_completion(self, outcome: Completed, fields: dict[str, Any]) -> JobExecuteResult:
        stage = self.stage
        duration = self._duration_ms()

        def write(scope: Scope) -> WorkflowStageRecord:
            row = scope.tx.update_stage(
                self.row.id,
                status=Status.COMPLETED,
                completed_at=self.runtime.now(),
                duration=duration,
                metrics=dict(outcome.metrics) or None,
                error_message=None,
                **fields,
            )
            scope.emit(
                "stage:completed",
                self.run_record.id,
                stage_id=stage.id,
                stage_name=stage.name,
                duration=duration,
            )
            return row

        return self._guarded(write, JobExecuteResult(outcome="completed", output=outcome.output))


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
