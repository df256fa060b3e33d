"""``run.reapStuck``: recover, or fail with a stored reason, runs that stopped making progress.

A run counts as stuck only when nothing owns its progress: no queued or leased job (a live lease
is renewed by the worker's heartbeat, however long the stage takes), no suspended stage (the
poller owns those until their ``max_wait``), and no stage or run update within the threshold.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

from workflow_engine.definitions.workflow import Workflow
from workflow_engine.errors import StaleVersionError
from workflow_engine.kernel.commands import RunReapStuck, RunReapStuckResult
from workflow_engine.kernel.progress import enqueue_stages, fail_run, transition_run
from workflow_engine.kernel.runtime import Idempotency, Runtime, Scope
from workflow_engine.status import Status


def handle_run_reap_stuck(
    command: RunReapStuck, runtime: Runtime, idempotency: Idempotency | None
) -> RunReapStuckResult:
    since = runtime.now() - timedelta(milliseconds=command.stuck_threshold_ms)
    transitioned = failed = 0
    for candidate in runtime.persistence.get_stuck_runs(since):
        outcome = runtime.transaction(
            partial(_reap, run_id=candidate.id, threshold_ms=command.stuck_threshold_ms)
        )
        if outcome in ("transitioned", "failed"):
            transitioned += 1
        if outcome == "failed":
            failed += 1
    return RunReapStuckResult(transitioned=transitioned, failed=failed)


def _reap(scope: Scope, run_id: str, threshold_ms: int) -> str:
    run = scope.tx.get_run(run_id)
    if run is None or run.status != Status.RUNNING:
        return "skipped"
    jobs = scope.runtime.job_transport.get_jobs_by_workflow_run(run.id)
    if any(job.status in (Status.PENDING, Status.RUNNING) for job in jobs):
        return "skipped"
    stages = scope.tx.get_stages_by_run(run.id)
    if any(stage.status == Status.SUSPENDED for stage in stages):
        return "skipped"
    workflow = scope.runtime.registry.get_workflow(run.workflow_id)
    # A PENDING stage whose job used up its attempts before the stage ran (pre-flight
    # failures) is not an orphan: enqueueing it again would loop; the run fails below.
    gave_up = {
        (job.stage_id, job.completed_at)
        for job in jobs
        if job.status == Status.FAILED and job.completed_at is not None
    }
    orphans = [
        stage
        for stage in stages
        if stage.status == Status.PENDING
        and not any(sid == stage.stage_id and at >= stage.created_at for sid, at in gave_up)
    ]
    if orphans and workflow is not None:
        _requeue(scope, workflow, run.id, [stage.stage_id for stage in orphans])
        return "recovered"
    if not any(stage.status == Status.RUNNING for stage in stages):
        result = transition_run(scope, run.id)
        if result.action != "noop":
            return "transitioned" if result.action != "failed" else "failed"
    statuses = [{"stage_id": stage.stage_id, "status": stage.status.value} for stage in stages]
    try:
        fail_run(
            scope,
            run,
            f"Stuck run reaped after {threshold_ms}ms inactivity",
            code="STUCK_RUN_REAPED",
            expected_version=run.version,
            stage_statuses=statuses,
        )
    except StaleVersionError:  # someone else moved the run meanwhile: it is not stuck
        return "skipped"
    return "failed"


def _requeue(scope: Scope, workflow: Workflow[Any, Any], run_id: str, ids: list[str]) -> None:
    run = scope.tx.get_run(run_id)
    assert run is not None
    stages = [stage for stage in (workflow.get_stage(i) for i in ids) if stage is not None]
    enqueue_stages(scope, run, stages)
