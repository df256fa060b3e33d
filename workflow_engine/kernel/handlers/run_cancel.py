"""``run.cancel``: cancel the run, its open stages and its queued jobs."""

from __future__ import annotations

from workflow_engine.kernel.commands import RunCancel, RunCancelResult
from workflow_engine.kernel.runtime import Idempotency, Runtime, Scope
from workflow_engine.status import TERMINAL_RUN_STATUSES, Status

_CLOSED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


def handle_run_cancel(
    command: RunCancel, runtime: Runtime, idempotency: Idempotency | None
) -> RunCancelResult:
    def cancel(scope: Scope) -> RunCancelResult:
        tx = scope.tx
        run = tx.get_run(command.workflow_run_id)
        if run is None or run.status in TERMINAL_RUN_STATUSES:
            return RunCancelResult(cancelled=False)
        now = runtime.now()
        tx.update_run(run.id, status=Status.CANCELLED, completed_at=now)
        for stage in tx.get_stages_by_run(run.id):
            if stage.status not in _CLOSED:
                tx.update_stage(
                    stage.id, status=Status.CANCELLED, completed_at=now, next_poll_at=None
                )
        # Running jobs are left alone: their result is discarded when it comes back.
        tx.after_commit(lambda: runtime.job_transport.cancel_by_run(run.id))
        scope.emit("workflow:cancelled", run.id, reason=command.reason)
        return RunCancelResult(cancelled=True)

    return runtime.transaction(cancel)
