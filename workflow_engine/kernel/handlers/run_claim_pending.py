"""``run.claimPending``: claim PENDING runs, each in its own transaction, and enqueue group 1."""

from __future__ import annotations

from functools import partial
from typing import Literal

from workflow_engine.kernel.commands import ClaimedRun, RunClaimPending, RunClaimPendingResult
from workflow_engine.kernel.progress import StartNext, fail_run, prepare_group
from workflow_engine.kernel.runtime import Idempotency, Runtime, Scope, logger
from workflow_engine.records import JobRecord

NOTHING_PENDING: Literal["nothing-pending"] = "nothing-pending"


def handle_run_claim_pending(
    command: RunClaimPending, runtime: Runtime, idempotency: Idempotency | None
) -> RunClaimPendingResult:
    claimed: list[ClaimedRun] = []
    next_job: JobRecord | None = None
    limit = command.max_claims if command.workflow_run_id is None else min(command.max_claims, 1)
    for _ in range(limit):
        attempted: list[str] = []
        start_next = None
        if command.lease_first_job and next_job is None:
            start_next = StartNext(command.worker_id, None)
        claim = partial(_claim_one, command=command, attempted=attempted, start_next=start_next)
        try:
            outcome = runtime.transaction(claim)
        except Exception as exc:
            if not attempted:
                raise
            # The claim rolled back, so the run is PENDING again: fail it on its own.
            logger.exception("claiming run %s failed", attempted[0])
            _fail_claim(runtime, attempted[0], command.worker_id, exc)
            continue
        if outcome == NOTHING_PENDING:
            break
        if isinstance(outcome, ClaimedRun):
            claimed.append(outcome)
            if start_next is not None:
                next_job = start_next.job
    return RunClaimPendingResult(claimed=claimed, next_job=next_job)


def _claim_one(
    scope: Scope, command: RunClaimPending, attempted: list[str], start_next: StartNext | None
) -> ClaimedRun | Literal["nothing-pending"] | None:
    """Claim one run: the claimed run, ``None`` if it failed at once, or nothing pending."""
    run = scope.tx.claim_next_pending_run(command.workflow_run_id)
    if run is None:
        return NOTHING_PENDING
    attempted.append(run.id)
    workflow = scope.runtime.registry.get_workflow(run.workflow_id)
    if workflow is None:
        fail_run(
            scope,
            run,
            f"Workflow {run.workflow_id} not found in registry",
            code="WORKFLOW_NOT_FOUND",
            worker_id=command.worker_id,
        )
        return None
    scope.emit("workflow:started", run.id)
    job_ids = prepare_group(scope, run, workflow, 1, 0, start_next)
    return ClaimedRun(workflow_run_id=run.id, workflow_id=run.workflow_id, job_ids=job_ids)


def _fail_claim(runtime: Runtime, run_id: str, worker_id: str, exc: Exception) -> None:
    def fail(scope: Scope) -> None:
        run = scope.tx.get_run(run_id)
        if run is not None:
            message = f"Claiming the run failed: {type(exc).__name__}: {exc}"
            fail_run(scope, run, message, code="CLAIM_FAILED", worker_id=worker_id)

    runtime.transaction(fail)
