"""Commands the kernel dispatches, and their results.

Each command is a small pydantic model whose ``type`` is the original engine's command type.
Unknown fields are rejected, so a typo is an :class:`~workflow_engine.errors.InvalidCommandError`
rather than a silently ignored option. Durations keep the original's ``*_ms`` integers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from workflow_engine.records import JobRecord
from workflow_engine.status import Status


class Command(BaseModel):
    """Base of every command: strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Result(BaseModel):
    """Base of every command result."""

    model_config = ConfigDict(frozen=True)


# -- run.create -----------------------------------------------------------------------------------
class RunCreate(Command):
    """Insert a PENDING run (validated input and merged config). Idempotent by key."""

    type: Literal["run.create"] = "run.create"
    idempotency_key: str = Field(min_length=1)
    workflow_id: str
    input: Any = Field(default_factory=dict)
    config: dict[str, Any] | None = None
    priority: int | None = None
    metadata: dict[str, Any] | None = None


class RunCreateResult(Result):
    workflow_run_id: str
    status: Status


# -- run.claimPending -----------------------------------------------------------------------------
class RunClaimPending(Command):
    """Claim up to ``max_claims`` PENDING runs, each in its own transaction, and enqueue group 1.

    With ``workflow_run_id``, claim that run if it is still PENDING (a wake-up that names its
    run), and no other. With ``lease_first_job``, the first claimed run's first stage on the
    default queue is started for ``worker_id`` as ``JobExecute.lease_next_to`` describes, and
    its job comes back as ``next_job``.
    """

    type: Literal["run.claimPending"] = "run.claimPending"
    worker_id: str
    max_claims: int = Field(default=10, ge=0)
    workflow_run_id: str | None = None
    lease_first_job: bool = False


class ClaimedRun(Result):
    workflow_run_id: str
    workflow_id: str
    job_ids: list[str]


class RunClaimPendingResult(Result):
    claimed: list[ClaimedRun]
    # A hand-off to the calling worker, not part of the result's JSON (nor of a replay).
    next_job: JobRecord | None = Field(default=None, exclude=True)


# -- run.transition -------------------------------------------------------------------------------
class RunTransition(Command):
    """Advance a run to its next group, complete it, or fail it, once its current group settled."""

    type: Literal["run.transition"] = "run.transition"
    workflow_run_id: str


class RunTransitionResult(Result):
    action: Literal["advanced", "completed", "failed", "noop"]
    next_group: int | None = None


# -- run.cancel -----------------------------------------------------------------------------------
class RunCancel(Command):
    """Cancel a PENDING or RUNNING run, its open stages and its queued jobs."""

    type: Literal["run.cancel"] = "run.cancel"
    workflow_run_id: str
    reason: str | None = None


class RunCancelResult(Result):
    cancelled: bool


# -- run.rerunFrom --------------------------------------------------------------------------------
class RunRerunFrom(Command):
    """Re-run a COMPLETED or FAILED run from a stage's execution group onwards."""

    type: Literal["run.rerunFrom"] = "run.rerunFrom"
    workflow_run_id: str
    from_stage_id: str
    idempotency_key: str | None = None


class RunRerunFromResult(Result):
    workflow_run_id: str
    from_stage_id: str
    deleted_stages: list[str]


# -- job.execute ----------------------------------------------------------------------------------
class JobExecute(Command):
    """Execute one stage of a run. Hosts pass ``job_id`` and ``lease_token`` to fence the result.

    With ``settle`` (hosts set it), a completed stage also completes its job row and
    transitions the run in the transaction that records its result: one commit, so no crash
    leaves a completed stage with a leased job or a run waiting for its next group.

    With ``settle`` and ``lease_next_to`` (a worker id), that transaction also starts the
    next stage for the worker: the first stage of the run's next group on this stage's queue
    is created RUNNING and its job enqueued already leased to the worker, and comes back as
    ``next_job``. Executing it then needs neither a lease nor a transaction to mark the stage
    running; should the worker die first, the lease expires and is reaped as any other.
    ``stage_started`` says a job is such a ``next_job``: its first phase then reads nothing
    when this kernel made the commit that started it less than a second ago (it runs from
    the run and stages that commit wrote), else is a plain read (without an idempotency key;
    a stage that turns out not to be RUNNING under ``lease_token`` takes the usual path).
    """

    type: Literal["job.execute"] = "job.execute"
    workflow_run_id: str
    workflow_id: str
    stage_id: str
    config: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    job_id: str | None = None
    lease_token: str | None = None
    settle: bool = False
    lease_next_to: str | None = None
    stage_started: bool = False


class JobExecuteResult(Result):
    outcome: Literal["completed", "suspended", "failed"]
    output: Any = None
    error: str | None = None
    next_poll_at: datetime | None = None
    ghost: bool = False
    retryable: bool | None = None
    # A hand-off to the calling worker, not part of the result's JSON (nor of a replay).
    next_job: JobRecord | None = Field(default=None, exclude=True)


# -- stage.pollSuspended --------------------------------------------------------------------------
class StagePollSuspended(Command):
    """Check due suspended stages; optionally only one run's (or one stage's)."""

    type: Literal["stage.pollSuspended"] = "stage.pollSuspended"
    max_checks: int = Field(default=50, ge=0)
    workflow_run_id: str | None = None
    stage_id: str | None = None


class StagePollSuspendedResult(Result):
    checked: int
    resumed: int
    failed: int
    resumed_workflow_run_ids: list[str]


# -- lease.reapStale ------------------------------------------------------------------------------
class LeaseReapStale(Command):
    """Release jobs whose lease expired; fail those whose attempts are used up."""

    type: Literal["lease.reapStale"] = "lease.reapStale"
    stale_threshold_ms: int = Field(default=300_000, ge=0)


class LeaseReapStaleResult(Result):
    released: int


# -- run.reapStuck --------------------------------------------------------------------------------
class RunReapStuck(Command):
    """Recover or fail RUNNING runs with no activity (no live job, no suspended stage)."""

    type: Literal["run.reapStuck"] = "run.reapStuck"
    stuck_threshold_ms: int = Field(default=900_000, ge=0)


class RunReapStuckResult(Result):
    transitioned: int
    failed: int


# -- outbox.flush ---------------------------------------------------------------------------------
class OutboxFlush(Command):
    """Deliver up to ``max_events`` outbox events to the event sink, in order per run."""

    type: Literal["outbox.flush"] = "outbox.flush"
    max_events: int = Field(default=100, ge=0)


class OutboxFlushResult(Result):
    published: int


# -- plugin.replayDLQ -----------------------------------------------------------------------------
class PluginReplayDLQ(Command):
    """Move up to ``max_events`` dead-lettered events back to the outbox."""

    type: Literal["plugin.replayDLQ"] = "plugin.replayDLQ"
    max_events: int = Field(default=100, ge=0)


class PluginReplayDLQResult(Result):
    replayed: int


# -- retention.expire (ours) ----------------------------------------------------------------------
class RetentionExpire(Command):
    """Delete completed idempotency keys and published outbox events older than a retention."""

    type: Literal["retention.expire"] = "retention.expire"
    idempotency_key_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=0)
    outbox_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=0)


class RetentionExpireResult(Result):
    idempotency_keys_deleted: int
    outbox_events_deleted: int


AnyCommand = Annotated[
    RunCreate
    | RunClaimPending
    | RunTransition
    | RunCancel
    | RunRerunFrom
    | JobExecute
    | StagePollSuspended
    | LeaseReapStale
    | RunReapStuck
    | OutboxFlush
    | PluginReplayDLQ
    | RetentionExpire,
    Field(discriminator="type"),
]

COMMAND_ADAPTER: TypeAdapter[AnyCommand] = TypeAdapter(AnyCommand)

COMMAND_TYPES: tuple[str, ...] = (
    "run.create",
    "run.claimPending",
    "run.transition",
    "run.cancel",
    "run.rerunFrom",
    "job.execute",
    "stage.pollSuspended",
    "lease.reapStale",
    "run.reapStuck",
    "outbox.flush",
    "plugin.replayDLQ",
    "retention.expire",
)
