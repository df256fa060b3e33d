"""The engine's Celery tasks. Messages carry ids only; the database carries the data."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from workflow_engine.celery.context import EngineContext, build_context
from workflow_engine.celery.publisher import (
    CLAIM_PENDING,
    DISPATCH_COMMAND,
    EXECUTE_JOB,
    MAINTENANCE_TICK,
    POLL_SUSPENDED,
)
from workflow_engine.celery.tick import run_tick
from workflow_engine.hosts.support import execute_job, poll_suspended
from workflow_engine.kernel.commands import RunClaimPending
from workflow_engine.persistence.sql.dialect import pinned_connection
from workflow_engine.records import JobRecord
from workflow_engine.settings import EngineSettings

logger = logging.getLogger("workflow_engine.celery")

_contexts: dict[int, EngineContext] = {}
_contexts_lock = threading.Lock()


def engine_context(app: Celery) -> EngineContext:
    """This process's :class:`EngineContext` for ``app``, built on first use."""
    key = id(app)
    context = _contexts.get(key)
    if context is None:
        with _contexts_lock:
            context = _contexts.get(key)
            if context is None:
                settings: EngineSettings = app.conf.workflow_engine_settings
                context = _contexts[key] = build_context(settings, app)
    return context


@worker_process_init.connect
def _forget_parent_connections(**_: Any) -> None:
    # A forked pool child must not share the parent's database connections.
    with _contexts_lock:
        for context in _contexts.values():
            context.engine.dispose(close=False)
        _contexts.clear()


def run_jobs(context: EngineContext, job: JobRecord | None, *, started: bool = False) -> str:
    """Run the leased job (``started``: a ``next_job``, its stage already started), then each
    next job its commit leased to this worker (the next stage of the same run, on the same
    queue); return the last outcome ("skipped": no job to run, a duplicate or stale wake-up)."""
    outcome = "skipped"
    while job is not None:
        result = execute_job(
            context.kernel,
            context.transport,
            job,
            context.lease_keeper,
            lease_next_to=context.worker_id,
            stage_started=started,
        )
        outcome, job, started = result.outcome, result.next_job, True
    return outcome


def register_tasks(app: Celery) -> None:
    """Register the engine's tasks on ``app``."""

    @app.task(name=EXECUTE_JOB, ignore_result=True)
    def execute_job_task(job_id: str) -> str:
        """Lease the job row and run its stage; a duplicate or stale wake-up does nothing."""
        if not isinstance(job_id, str) or not job_id:
            logger.error("execute_job needs a job id, got %r: message dropped", job_id)
            return "invalid"
        context = engine_context(app)
        with pinned_connection(context.engine):
            return run_jobs(context, context.transport.claim(job_id, context.worker_id))

    @app.task(name=CLAIM_PENDING, ignore_result=True)
    def claim_pending_task(workflow_run_id: str | None = None) -> int:
        """Claim the run a new run's wake-up names (or, unnamed, up to a tick's worth of
        pending runs) and run one first stage here; other first jobs are published once the
        claim commits. Runs whose wake-up was lost are claimed by the tick."""
        context = engine_context(app)
        limit = context.settings.max_claims_per_tick
        command = RunClaimPending(
            worker_id=context.worker_id,
            max_claims=limit,
            workflow_run_id=workflow_run_id,
            lease_first_job=True,
        )
        with pinned_connection(context.engine):
            result = context.kernel.dispatch(command)
            if workflow_run_id is None and len(result.claimed) == limit:
                context.publisher.claim_pending()  # there may be more
            run_jobs(context, result.next_job, started=True)
        return len(result.claimed)

    @app.task(name=POLL_SUSPENDED, ignore_result=True)
    def poll_suspended_task(workflow_run_id: str | None = None, stage_id: str | None = None) -> int:
        """Check due suspended stages (or one) and transition the runs that resumed."""
        context = engine_context(app)
        return poll_suspended(
            context.kernel,
            context.settings.max_suspended_checks_per_tick,
            workflow_run_id=workflow_run_id,
            stage_id=stage_id,
        )

    @app.task(name=MAINTENANCE_TICK, ignore_result=True)
    def maintenance_tick_task() -> dict[str, int] | None:
        """One maintenance tick, unless another process is running one."""
        result = run_tick(engine_context(app))
        if result is None:
            logger.info("maintenance tick skipped: another tick is running")
            return None
        return result.model_dump()

    @app.task(name=DISPATCH_COMMAND, ignore_result=True)
    def dispatch_command_task(command: dict[str, Any]) -> dict[str, Any]:
        """Dispatch any kernel command given as a dict (a malformed one raises and is logged)."""
        result = engine_context(app).kernel.dispatch(command)
        dumped: dict[str, Any] = result.model_dump(mode="json")
        return dumped
