"""What every host shares: tunables, executing one job with a heartbeat, the maintenance tick."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflow_engine.errors import (
    IdempotencyInProgressError,
    RunNotFoundError,
    StageNotFoundError,
    WorkflowNotFoundError,
)
from workflow_engine.kernel import Kernel
from workflow_engine.kernel.commands import (
    JobExecute,
    LeaseReapStale,
    OutboxFlush,
    RetentionExpire,
    RunClaimPending,
    RunReapStuck,
    RunTransition,
    StagePollSuspended,
)
from workflow_engine.kernel.execution import error_message
from workflow_engine.ports import JobTransport
from workflow_engine.records import JobRecord

logger = logging.getLogger("workflow_engine.hosts")

# A job that names something that does not exist will not succeed on a retry.
PERMANENT_ERRORS = (WorkflowNotFoundError, StageNotFoundError, RunNotFoundError)


class HostConfig(BaseModel):
    """Tunables shared by every host (the original's ``HOST_DEFAULTS``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stale_lease_threshold_ms: int = Field(default=300_000, gt=0)
    max_claims_per_tick: int = Field(default=10, ge=0)
    max_suspended_checks_per_tick: int = Field(default=10, ge=0)
    max_outbox_flush_per_tick: int = Field(default=100, ge=0)
    job_heartbeat_interval_ms: int = Field(default=60_000, gt=0)
    stuck_threshold_ms: int | None = Field(default=None, gt=0)
    idempotency_key_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=0)
    outbox_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=0)

    @property
    def effective_stuck_threshold_ms(self) -> int:
        """``stuck_threshold_ms``, or ``max(3 × stale lease, 5 min)`` when unset."""
        if self.stuck_threshold_ms is not None:
            return self.stuck_threshold_ms
        return max(3 * self.stale_lease_threshold_ms, 300_000)


class JobOutcome(BaseModel):
    """What happened to one job; ``next_job``: the run's next job, leased to this worker
    (see ``execute_job``'s ``lease_next_to``)."""

    model_config = ConfigDict(frozen=True)

    outcome: Literal["completed", "suspended", "failed"]
    error: str | None = None
    next_job: JobRecord | None = None


# frozen, so one instance of each serves every job
_COMPLETED = JobOutcome(outcome="completed")
_SUSPENDED = JobOutcome(outcome="suspended")


class TickResult(BaseModel):
    """Counts of one maintenance tick (a failed step counts 0 and is logged)."""

    model_config = ConfigDict(frozen=True)

    claimed: int = 0
    suspended_checked: int = 0
    stale_released: int = 0
    events_flushed: int = 0
    stuck_reaped: int = 0
    retention_expired: int = 0


class LeaseKeeper:
    """Renews the leases of the jobs a host is running, from one daemon thread per host.

    A job's lease is touched every ``interval_ms`` while it runs, so a long stage is never
    mistaken for a dead worker. One thread for all jobs keeps starting a job cheap.
    """

    def __init__(self, job_transport: JobTransport, interval_ms: int) -> None:
        self._transport = job_transport
        self._interval = interval_ms / 1000
        self._jobs: dict[str, tuple[JobRecord, int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def keep(self, job: JobRecord) -> _Kept:
        """Keep ``job``'s lease alive for the duration of the ``with`` block."""
        return _Kept(self, job)

    def _hold(self, job: JobRecord) -> None:
        with self._lock:
            _, holders = self._jobs.get(job.id, (job, 0))
            self._jobs[job.id] = (job, holders + 1)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._beat, name="workflow-engine-lease-keeper", daemon=True
                )
                self._thread.start()

    def _release(self, job: JobRecord) -> None:
        with self._lock:
            current, holders = self._jobs[job.id]
            if holders > 1:
                self._jobs[job.id] = (current, holders - 1)
            else:
                del self._jobs[job.id]

    def _beat(self) -> None:
        while not self._wake.wait(self._interval):
            with self._lock:
                jobs = [job for job, _ in self._jobs.values()]
            for job in jobs:
                try:
                    self._transport.touch_job(job.id, lease_token=job.lease_token)
                except Exception:  # a missed beat only shortens the lease
                    logger.warning("heartbeat for job %s failed", job.id, exc_info=True)


class _Kept:
    """The ``with`` block of :meth:`LeaseKeeper.keep` (a class: cheaper than a generator)."""

    __slots__ = ("_job", "_keeper")

    def __init__(self, keeper: LeaseKeeper, job: JobRecord) -> None:
        self._keeper = keeper
        self._job = job

    def __enter__(self) -> None:
        self._keeper._hold(self._job)

    def __exit__(self, *exc_info: object) -> None:
        self._keeper._release(self._job)


def execute_job(
    kernel: Kernel,
    job_transport: JobTransport,
    job: JobRecord,
    lease_keeper: LeaseKeeper,
    *,
    deduplicate: bool = False,
    lease_next_to: str | None = None,
    stage_started: bool = False,
) -> JobOutcome:
    """Execute one leased job, settle its row, and transition the run when the stage settled.

    ``deduplicate``: the same lease may arrive twice (a queue message delivered again), so
    hold an idempotency key per attempt and let only one delivery run. A job this process
    leased itself needs none: its lease token is new.

    ``lease_next_to``: a worker id; the run's next stage on the same queue is started and
    its job leased to that worker in the commit that settles this one, and comes back as
    ``next_job``, for the worker to run at once (``JobExecute.lease_next_to``); pass
    ``stage_started`` when ``job`` is such a ``next_job``.
    """
    command = JobExecute(
        workflow_run_id=job.workflow_run_id,
        workflow_id=job.workflow_id,
        stage_id=job.stage_id,
        config=job.payload.get("config") or {},
        idempotency_key=f"job:{job.id}:attempt:{job.attempt}" if deduplicate else None,
        job_id=job.id,
        lease_token=job.lease_token,
        settle=True,
        lease_next_to=lease_next_to,
        stage_started=stage_started,
    )
    try:
        with lease_keeper.keep(job):
            result = kernel.dispatch(command)
    except IdempotencyInProgressError as exc:
        # Another delivery of this very attempt is running: its lease is not ours to end (if
        # that worker died, the lease expires and is reaped).
        logger.warning("job %s is already running elsewhere: %s", job.id, exc)
        return JobOutcome(outcome="failed", error=str(exc))
    except Exception as exc:
        # A failure before the stage ran still uses up an attempt, so it cannot loop forever.
        message = error_message(exc)
        retry = job.attempt < job.max_attempts and not isinstance(exc, PERMANENT_ERRORS)
        logger.warning("job %s failed before its stage ran: %s", job.id, message)
        job_transport.fail(job.id, message, should_retry=retry, lease_token=job.lease_token)
        return JobOutcome(outcome="failed", error=message)

    if result.outcome == "completed":
        # (the job row and the transition committed with the result: settle)
        if result.next_job is not None:
            return JobOutcome(outcome="completed", next_job=result.next_job)
        return _COMPLETED
    if result.outcome == "suspended":
        next_poll_at = result.next_poll_at or kernel.runtime.now() + timedelta(seconds=60)
        job_transport.suspend(job.id, next_poll_at, lease_token=job.lease_token)
        return _SUSPENDED
    retry = not result.ghost and result.retryable is not False and job.attempt < job.max_attempts
    error = result.error or "Unknown error"
    if result.ghost:
        logger.warning("job %s: result discarded: %s", job.id, error)
    job_transport.fail(job.id, error, should_retry=retry, lease_token=job.lease_token)
    if not retry and not result.ghost:
        transition(kernel, job.workflow_run_id)
    return JobOutcome(outcome="failed", error=error)


def transition(kernel: Kernel, workflow_run_id: str) -> None:
    """Dispatch ``run.transition``; a failure is logged (the stuck-run reaper retries it)."""
    try:
        kernel.dispatch(RunTransition(workflow_run_id=workflow_run_id))
    except Exception:
        logger.exception("run.transition for %s failed", workflow_run_id)


def job_from_message(
    message: JobRecord | Mapping[str, Any], now: datetime | None = None
) -> JobRecord:
    """Accept a job row, or a queue message with the original's fields, as a job.

    A message carries no row timestamps; they default to ``now``.
    """
    if isinstance(message, JobRecord):
        return message
    data = dict(message)
    if "job_id" in data:
        data["id"] = data.pop("job_id")
    stamp = data.get("created_at") or data.get("updated_at") or now
    data["created_at"] = data.get("created_at") or stamp
    data["updated_at"] = data.get("updated_at") or stamp
    return JobRecord.model_validate(data)


def run_maintenance_tick(kernel: Kernel, worker_id: str, config: HostConfig) -> TickResult:
    """Claim pending runs, poll due suspended stages, reap stale leases, flush the outbox, reap
    stuck runs and expire old keys; each step on its own, so one failing does not stop the rest.
    """
    counts: dict[str, int] = {}

    def step(name: str, fn: Any) -> None:
        try:
            counts[name] = fn()
        except Exception:
            logger.exception("maintenance step %s failed", name)

    step(
        "claimed",
        lambda: len(
            kernel.dispatch(
                RunClaimPending(worker_id=worker_id, max_claims=config.max_claims_per_tick)
            ).claimed
        ),
    )
    step("suspended_checked", lambda: poll_suspended(kernel, config.max_suspended_checks_per_tick))
    step(
        "stale_released",
        lambda: (
            kernel.dispatch(
                LeaseReapStale(stale_threshold_ms=config.stale_lease_threshold_ms)
            ).released
        ),
    )
    step(
        "events_flushed",
        lambda: kernel.dispatch(OutboxFlush(max_events=config.max_outbox_flush_per_tick)).published,
    )
    step(
        "stuck_reaped",
        lambda: (
            kernel.dispatch(
                RunReapStuck(stuck_threshold_ms=config.effective_stuck_threshold_ms)
            ).failed
        ),
    )
    step("retention_expired", lambda: _expire(kernel, config))
    return TickResult(**counts)


def poll_suspended(
    kernel: Kernel,
    max_checks: int,
    *,
    workflow_run_id: str | None = None,
    stage_id: str | None = None,
) -> int:
    """Poll due suspended stages and transition every run that resumed; return stages checked."""
    result = kernel.dispatch(
        StagePollSuspended(
            max_checks=max_checks, workflow_run_id=workflow_run_id, stage_id=stage_id
        )
    )
    for run_id in result.resumed_workflow_run_ids:
        transition(kernel, run_id)
    return result.checked


def _expire(kernel: Kernel, config: HostConfig) -> int:
    result = kernel.dispatch(
        RetentionExpire(
            idempotency_key_retention_ms=config.idempotency_key_retention_ms,
            outbox_retention_ms=config.outbox_retention_ms,
        )
    )
    return result.idempotency_keys_deleted + result.outbox_events_deleted
