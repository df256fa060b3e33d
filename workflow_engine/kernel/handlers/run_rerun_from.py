"""``run.rerunFrom``: delete a finished run's stages from a group on and run them again."""

from __future__ import annotations

from workflow_engine.definitions.context import stage_key_prefix
from workflow_engine.errors import InvalidStateError, RunNotFoundError, WorkflowEngineError
from workflow_engine.kernel.commands import RunRerunFrom, RunRerunFromResult
from workflow_engine.kernel.progress import prepare_group
from workflow_engine.kernel.runtime import Idempotency, Runtime, Scope, logger
from workflow_engine.status import Status


def handle_run_rerun_from(
    command: RunRerunFrom, runtime: Runtime, idempotency: Idempotency | None
) -> RunRerunFromResult:
    def rerun(scope: Scope) -> RunRerunFromResult:
        tx = scope.tx
        run = tx.get_run(command.workflow_run_id)
        if run is None:
            raise RunNotFoundError(command.workflow_run_id)
        if run.status not in (Status.COMPLETED, Status.FAILED):
            raise InvalidStateError(
                f"Cannot rerun workflow in {run.status.value} state. Must be COMPLETED or FAILED."
            )
        workflow = runtime.workflow(run.workflow_id)
        group = workflow.require_stage(command.from_stage_id).execution_group
        stages = tx.get_stages_by_run(run.id)
        if group > 1 and not any(stage.execution_group < group for stage in stages):
            raise WorkflowEngineError(
                f"Cannot rerun {run.id} from stage {command.from_stage_id}: "
                "previous stages have not been executed"
            )
        deleted = [stage for stage in stages if stage.execution_group >= group]
        for stage in deleted:
            tx.delete_stage(stage.id)
        tx.update_run(
            run.id,
            status=Status.RUNNING,
            started_at=runtime.now(),
            completed_at=None,
            duration=None,
            output=None,
            error_message=None,
            total_cost=0.0,
            total_tokens=0,
        )
        attempt = max((stage.attempt for stage in deleted), default=-1) + 1
        prefixes = [
            stage_key_prefix(run.workflow_type, run.id, stage.stage_id) for stage in deleted
        ]
        tx.after_commit(lambda: _delete_blobs(runtime, prefixes))
        prepare_group(scope, run, workflow, group, attempt)
        scope.emit("workflow:started", run.id)
        return scope.finish(
            RunRerunFromResult(
                workflow_run_id=run.id,
                from_stage_id=command.from_stage_id,
                deleted_stages=[stage.stage_id for stage in deleted],
            )
        )

    return runtime.transaction(rerun, idempotency=idempotency)


def _delete_blobs(runtime: Runtime, prefixes: list[str]) -> None:
    for prefix in prefixes:
        try:
            for key in runtime.blob_store.list(prefix):
                runtime.blob_store.delete(key)
        except Exception:  # stale blobs are harmless; the rerun has committed
            logger.warning("could not delete blobs under %s", prefix, exc_info=True)
