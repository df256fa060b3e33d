"""The rows the ports store, as immutable pydantic models.

Field names are the original engine's in snake_case. Timestamps are timezone-aware UTC;
JSON columns hold JSON-mode values (dicts, lists, strings, numbers, booleans, ``None``).
Durations stored on rows (``duration``, ``poll_interval``) are integer milliseconds.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from workflow_engine.status import Status

JsonDict = dict[str, Any]


class Record(BaseModel):
    """Base of stored rows: immutable; change one with ``model_copy(update=...)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkflowRunRecord(Record):
    """One run of a workflow."""

    id: str
    created_at: datetime
    updated_at: datetime
    version: int = 1
    workflow_id: str
    workflow_name: str
    workflow_type: str
    status: Status = Status.PENDING
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration: int | None = None
    input: Any = None
    output: Any = None
    error_message: str | None = None
    config: JsonDict = Field(default_factory=dict)
    total_cost: float = 0.0
    total_tokens: int = 0
    priority: int = 5
    metadata: JsonDict | None = None


class WorkflowStageRecord(Record):
    """One stage of one run (unique per ``(workflow_run_id, stage_id)``).

    A small output is stored inline in ``output``; a large one goes to the blob store and
    ``output_ref`` holds its key (``output`` is then ``None``).
    """

    id: str
    created_at: datetime
    updated_at: datetime
    version: int = 1
    workflow_run_id: str
    stage_id: str
    stage_name: str
    stage_number: int
    execution_group: int
    attempt: int = 0
    status: Status = Status.PENDING
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration: int | None = None
    output: Any = None
    output_ref: str | None = None
    artifact_keys: dict[str, str] | None = None
    config: JsonDict | None = None
    suspended_state: JsonDict | None = None
    next_poll_at: datetime | None = None
    poll_interval: int | None = None
    max_wait_until: datetime | None = None
    metrics: JsonDict | None = None
    embedding_info: JsonDict | None = None
    error_message: str | None = None
    lease_token: str | None = None

    @property
    def has_output(self) -> bool:
        """True when the stage stored an output (inline or in the blob store)."""
        return self.output_ref is not None or self.output is not None


class LockedRun(NamedTuple):
    """A run locked in the current transaction, with its stages (see ``Persistence.lock_run``)."""

    run: WorkflowRunRecord
    stages: list[WorkflowStageRecord]


class LogLevel(StrEnum):
    """Level of a :class:`WorkflowLogRecord`."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


class WorkflowLogRecord(Record):
    """A log line written by a stage (``ctx.log``) or by the kernel."""

    id: str
    created_at: datetime
    workflow_run_id: str | None = None
    workflow_stage_id: str | None = None
    level: LogLevel
    message: str
    metadata: JsonDict | None = None


class JobRecord(Record):
    """A unit of work in the job queue: execute one stage of one run.

    ``attempt`` counts dequeues (the first delivery sees 1). ``lease_token`` is the fencing
    token of the current lease: it changes at every dequeue and is cleared when the lease ends,
    so a worker whose lease was taken over cannot complete, suspend or fail the job.
    """

    id: str
    created_at: datetime
    updated_at: datetime
    workflow_run_id: str
    workflow_id: str
    stage_id: str
    status: Status = Status.PENDING
    priority: int = 5
    attempt: int = 0
    max_attempts: int = 3
    worker_id: str | None = None
    locked_at: datetime | None = None
    lease_token: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    next_poll_at: datetime | None = None
    payload: JsonDict = Field(default_factory=dict)
    last_error: str | None = None
    queue: str | None = None


class OutboxEventRecord(Record):
    """An event written in the same transaction as the state change that caused it."""

    id: str
    created_at: datetime
    workflow_run_id: str
    sequence: int
    event_type: str
    payload: JsonDict
    causation_id: str
    occurred_at: datetime
    published_at: datetime | None = None
    retry_count: int = 0
    dlq_at: datetime | None = None
    claimed_until: datetime | None = None
    delivered_plugins: list[str] = Field(default_factory=list)


class NewRun(Record):
    """What :meth:`Persistence.create_run` needs."""

    id: str | None = None
    workflow_id: str
    workflow_name: str
    workflow_type: str
    input: Any = None
    config: JsonDict = Field(default_factory=dict)
    priority: int = 5
    metadata: JsonDict | None = None
    status: Status = Status.PENDING


class NewStage(Record):
    """What :meth:`Persistence.create_stage` and the create branch of ``upsert_stage`` need."""

    workflow_run_id: str
    stage_id: str
    stage_name: str
    stage_number: int
    execution_group: int
    attempt: int = 0
    status: Status = Status.PENDING
    config: JsonDict | None = None
    started_at: datetime | None = None
    lease_token: str | None = None


class NewJob(Record):
    """What :meth:`JobTransport.enqueue_parallel` needs for one job.

    With ``lease_token`` (and ``worker_id``) the job is enqueued already leased to that
    worker (RUNNING, attempt 1, see :func:`leased_job_fields`): the worker whose transaction
    enqueues it runs it next, with no lease round trip and no wake-up message.
    """

    id: str | None = None
    workflow_run_id: str
    workflow_id: str
    stage_id: str
    priority: int = 5
    payload: JsonDict = Field(default_factory=dict)
    scheduled_for: datetime | None = None
    max_attempts: int | None = None
    queue: str | None = None
    worker_id: str | None = None
    lease_token: str | None = None


def enqueued_job(
    job: NewJob, job_id: str, now: datetime, default_max_attempts: int, payload: JsonDict
) -> JobRecord:
    """The row ``job`` becomes when enqueued at ``now`` (leased, if it comes with a lease)."""
    return JobRecord(
        id=job_id,
        created_at=now,
        updated_at=now,
        workflow_run_id=job.workflow_run_id,
        workflow_id=job.workflow_id,
        stage_id=job.stage_id,
        priority=job.priority,
        max_attempts=job.max_attempts or default_max_attempts,
        next_poll_at=job.scheduled_for,
        payload=payload,
        queue=job.queue,
        **leased_job_fields(job, now),
    )


def leased_job_fields(job: NewJob, now: datetime) -> dict[str, Any]:
    """The fields a job enqueued at ``now`` gets from its lease, if it comes leased."""
    if job.lease_token is None:
        return {}
    return {
        "status": Status.RUNNING,
        "attempt": 1,
        "worker_id": job.worker_id,
        "locked_at": now,
        "started_at": now,
        "lease_token": job.lease_token,
    }


class NewOutboxEvent(Record):
    """An event to append to the outbox (its sequence is assigned at append time)."""

    workflow_run_id: str
    event_type: str
    payload: JsonDict
    causation_id: str
    occurred_at: datetime


class IdempotencyAcquire(Record):
    """Outcome of :meth:`Persistence.acquire_idempotency_key`."""

    status: Literal["acquired", "replay", "in_progress"]
    result: Any = None
