"""``lease.reapStale``: put jobs whose worker vanished back in the queue, or fail them.

A job whose lease expired on its last attempt is failed for good, and so is its stage, and the
run is transitioned at once: a job that keeps killing its worker cannot cycle forever.
"""

from __future__ import annotations

from functools import partial

from workflow_engine.kernel.commands import LeaseReapStale, LeaseReapStaleResult
from workflow_engine.kernel.progress import transition_run
from workflow_engine.kernel.runtime import Idempotency, Runtime, Scope
from workflow_engine.records import JobRecord
from workflow_engine.status import Status


def handle_lease_reap_stale(
    command: LeaseReapStale, runtime: Runtime, idempotency: Idempotency | None
) -> LeaseReapStaleResult:
    stale = runtime.job_transport.reap_stale_jobs(command.stale_threshold_ms)
    for job in stale.exhausted:
        runtime.transaction(partial(_fail_stage_of, job=job))
    return LeaseReapStaleResult(released=len(stale.released) + len(stale.exhausted))


def _fail_stage_of(scope: Scope, job: JobRecord) -> None:
    stage = scope.tx.get_stage(job.workflow_run_id, job.stage_id)
    # PENDING too: the worker may have died before it marked the stage RUNNING.
    if stage is None or stage.status not in (Status.PENDING, Status.RUNNING):
        return
    live = (Status.PENDING, Status.RUNNING)
    jobs = scope.runtime.job_transport.get_jobs_by_workflow_run(job.workflow_run_id)
    if any(j.stage_id == job.stage_id and j.id != job.id and j.status in live for j in jobs):
        return  # another job (e.g. of a rerun) owns the stage now
    message = job.last_error or f"Lease expired after {job.attempt} attempts: the worker was lost"
    scope.tx.update_stage(
        stage.id,
        status=Status.FAILED,
        completed_at=scope.runtime.now(),
        error_message=message,
        lease_token=None,
    )
    scope.emit(
        "stage:failed",
        job.workflow_run_id,
        stage_id=stage.stage_id,
        stage_name=stage.stage_name,
        error=message,
    )
    transition_run(scope, job.workflow_run_id)
