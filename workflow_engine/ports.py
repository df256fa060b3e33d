"""The ports the kernel talks to. Adapters implement these protocols; the kernel knows no adapter.

Transactions: ``Persistence.with_transaction(fn)`` runs ``fn`` with a persistence bound to one
transaction; everything ``fn`` writes through it commits or rolls back together, and callbacks
registered with ``after_commit`` run only once it has committed. A :class:`JobTransport` joins
that transaction when it is handed the bound persistence as ``tx=``: a SQL queue on the same
database writes its job rows in it, any other transport enqueues from an ``after_commit``
callback. Either way a job never exists for a state change that rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from workflow_engine.clock import Clock
from workflow_engine.records import (
    IdempotencyAcquire,
    JobRecord,
    LockedRun,
    LogLevel,
    NewJob,
    NewOutboxEvent,
    NewRun,
    NewStage,
    OutboxEventRecord,
    WorkflowLogRecord,
    WorkflowRunRecord,
    WorkflowStageRecord,
)
from workflow_engine.status import Status

if TYPE_CHECKING:
    from workflow_engine.definitions.workflow import Workflow

T = TypeVar("T")

__all__ = [
    "BlobStore",
    "Clock",
    "EventSink",
    "JobTransport",
    "Persistence",
    "Registry",
    "Scheduler",
    "StaleJobs",
]


@runtime_checkable
class Persistence(Protocol):
    """Runs, stages, logs, the outbox and idempotency keys."""

    # -- transactions -------------------------------------------------------------------------
    def with_transaction(self, fn: Callable[[Persistence], T]) -> T:
        """Run ``fn`` in one transaction (joining the current one if already inside)."""
        ...

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the current transaction commits (at once outside one)."""
        ...

    # -- runs -----------------------------------------------------------------------------------
    def create_run(self, data: NewRun) -> WorkflowRunRecord: ...

    def update_run(
        self,
        run_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
        **fields: Any,
    ) -> WorkflowRunRecord:
        """Change the given fields, bump ``version``; raise ``StaleVersionError`` on mismatch."""
        ...

    def get_run(self, run_id: str) -> WorkflowRunRecord | None: ...

    def lock_run(self, run_id: str) -> LockedRun | None:
        """The run, locked against other writers until the current transaction ends, and its
        stages (ordered as :meth:`get_stages_by_run`); ``None`` if there is no such run.

        Every transaction that starts or settles a stage takes this lock first, so two parallel
        stages finishing at once never both miss each other's result when deciding what comes
        next.
        """
        ...

    def get_run_status(self, run_id: str) -> Status | None: ...

    def list_runs(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[WorkflowRunRecord]:
        """Runs, newest first."""
        ...

    def get_stuck_runs(self, since: datetime) -> list[WorkflowRunRecord]:
        """RUNNING runs not updated after ``since`` none of whose stages was either."""
        ...

    def claim_next_pending_run(self, run_id: str | None = None) -> WorkflowRunRecord | None:
        """Atomically move the highest-priority, oldest PENDING run (with ``run_id``: that run,
        if it is still PENDING) to RUNNING and return it."""
        ...

    # -- stages ---------------------------------------------------------------------------------
    def create_stage(self, data: NewStage) -> WorkflowStageRecord: ...

    def upsert_stage(
        self,
        workflow_run_id: str,
        stage_id: str,
        *,
        create: NewStage,
        update: Mapping[str, Any],
    ) -> WorkflowStageRecord: ...

    def update_stage(
        self,
        stage_record_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
        **fields: Any,
    ) -> WorkflowStageRecord: ...

    def get_stage(self, workflow_run_id: str, stage_id: str) -> WorkflowStageRecord | None: ...

    def get_stage_by_id(self, stage_record_id: str) -> WorkflowStageRecord | None: ...

    def get_stages_by_run(
        self,
        workflow_run_id: str,
        *,
        status: Status | None = None,
        descending: bool = False,
    ) -> list[WorkflowStageRecord]:
        """Stages of a run ordered by execution group, then stage number."""
        ...

    def get_suspended_stages(
        self, before: datetime, limit: int | None = None
    ) -> list[WorkflowStageRecord]:
        """SUSPENDED stages whose ``next_poll_at`` is at or before ``before``, earliest first."""
        ...

    def delete_stage(self, stage_record_id: str) -> None: ...

    # -- logs -----------------------------------------------------------------------------------
    def create_log(
        self,
        *,
        level: LogLevel,
        message: str,
        workflow_run_id: str | None = None,
        workflow_stage_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> WorkflowLogRecord: ...

    def get_logs_by_run(self, workflow_run_id: str) -> list[WorkflowLogRecord]: ...

    # -- outbox ---------------------------------------------------------------------------------
    def append_outbox_events(self, events: Sequence[NewOutboxEvent]) -> list[OutboxEventRecord]:
        """Append events, numbering them 1, 2, 3... per run in the given order."""
        ...

    def get_unpublished_outbox_events(self, limit: int = 100) -> list[OutboxEventRecord]:
        """Events neither published nor in the DLQ, ordered by run then sequence."""
        ...

    def claim_outbox_events(
        self, limit: int, *, now: datetime, lease_ms: int
    ) -> list[OutboxEventRecord]:
        """Claim up to ``limit`` deliverable events until ``now + lease_ms``.

        An event is claimable when it is unpublished, not in the DLQ, not claimed by a live
        claim, and every earlier unpublished event of its run is claimed in this same call; so
        two flushers never hold the same event, and each run's events go out in order.
        """
        ...

    def mark_outbox_events_published(self, event_ids: Sequence[str]) -> None: ...

    def release_outbox_claims(self, event_ids: Sequence[str]) -> None:
        """Clear ``claimed_until`` on these events so the next flush may take them at once."""
        ...

    def mark_outbox_plugin_delivered(self, event_id: str, plugin_id: str) -> None:
        """Remember that ``plugin_id`` has handled this event (so a retry skips it)."""
        ...

    def increment_outbox_retry_count(self, event_id: str) -> int:
        """Count one failed delivery, release the claim, and return the new count."""
        ...

    def move_outbox_event_to_dlq(self, event_id: str) -> None: ...

    def replay_dlq_events(self, max_events: int = 100) -> int:
        """Move up to ``max_events`` DLQ events back to the outbox with a zero retry count."""
        ...

    def get_outbox_events(self, workflow_run_id: str) -> list[OutboxEventRecord]:
        """All outbox events of a run, by sequence (published, pending and DLQ)."""
        ...

    def get_dlq_events(self, limit: int = 100) -> list[OutboxEventRecord]: ...

    def delete_published_outbox_events(self, before: datetime) -> int:
        """Delete events published before ``before``; return how many."""
        ...

    # -- idempotency ----------------------------------------------------------------------------
    def acquire_idempotency_key(
        self,
        key: str,
        command_type: str,
        *,
        now: datetime,
        stale_in_progress_after_ms: float | None,
    ) -> IdempotencyAcquire:
        """Insert an in-progress marker, or report the stored result or that it is in progress.

        A marker older than ``stale_in_progress_after_ms`` is reclaimed (``None``: never).
        """
        ...

    def complete_idempotency_key(self, key: str, command_type: str, result: Any) -> None:
        """Store the command's JSON result under the key (call inside the command's transaction)."""
        ...

    def release_idempotency_key(self, key: str, command_type: str) -> None: ...

    def delete_idempotency_keys(self, before: datetime) -> int:
        """Delete completed keys created before ``before``; return how many."""
        ...


class StaleJobs(BaseModel):
    """Jobs whose lease expired: put back in the queue, or failed for good (attempts used up)."""

    released: list[JobRecord]
    exhausted: list[JobRecord]


@runtime_checkable
class JobTransport(Protocol):
    """The job queue: one job per stage execution, leased to one worker at a time."""

    def enqueue(self, job: NewJob, *, tx: Persistence | None = None) -> str: ...

    def enqueue_parallel(
        self, jobs: Sequence[NewJob], *, tx: Persistence | None = None
    ) -> list[str]:
        """Enqueue jobs; with ``tx``, they exist if and only if that transaction commits."""
        ...

    def dequeue(self, worker_id: str | None = None) -> JobRecord | None:
        """Lease the highest-priority, oldest due PENDING job (attempt + 1, new lease token)."""
        ...

    def claim(self, job_id: str, worker_id: str | None = None) -> JobRecord | None:
        """Lease this job if PENDING and due; ``None`` otherwise (a duplicate or stale wake-up)."""
        ...

    def complete(
        self, job_id: str, *, lease_token: str | None = None, tx: Persistence | None = None
    ) -> bool:
        """Mark the job COMPLETED while ``lease_token``'s lease holds (a SUSPENDED one too
        when no token is given); with ``tx``, as part of that transaction."""
        ...

    def suspend(
        self, job_id: str, next_poll_at: datetime, *, lease_token: str | None = None
    ) -> bool: ...

    def fail(
        self,
        job_id: str,
        error: str,
        should_retry: bool = False,
        *,
        lease_token: str | None = None,
    ) -> bool:
        """Retry (PENDING after a 2**attempt s back-off) while attempts remain, else FAILED.

        With ``lease_token``, ``complete``, ``suspend``, ``fail`` and ``touch_job`` act only while
        that lease is current and return whether they did.
        """
        ...

    def touch_job(self, job_id: str, *, lease_token: str | None = None) -> bool:
        """Heartbeat: renew the lease of a RUNNING job."""
        ...

    def release_stale_jobs(self, threshold_ms: int = 300_000) -> int:
        """Handle RUNNING jobs whose lease is older than the threshold; return how many."""
        ...

    def reap_stale_jobs(self, threshold_ms: int = 300_000) -> StaleJobs:
        """Like ``release_stale_jobs``: back to PENDING, or FAILED once attempts are used up."""
        ...

    def cancel_by_run(self, workflow_run_id: str) -> int:
        """Cancel the run's PENDING and SUSPENDED jobs; return how many."""
        ...

    def close_suspended(self, workflow_run_id: str, stage_id: str, status: Status) -> int:
        """End the SUSPENDED job rows of one stage with ``status``; return how many."""
        ...

    def get_due_pending_jobs(self, limit: int = 100) -> list[JobRecord]:
        """PENDING jobs whose ``next_poll_at`` is unset or past, by priority desc, then age.

        Used to re-publish wake-ups a message broker lost.
        """
        ...

    def get_jobs_by_workflow_run(self, workflow_run_id: str) -> list[JobRecord]: ...

    def get_job(self, job_id: str) -> JobRecord | None: ...


@runtime_checkable
class BlobStore(Protocol):
    """Key-value storage for JSON values (large outputs, artifacts, stage storage)."""

    def put(self, key: str, data: Any) -> None: ...

    def get(self, key: str) -> Any:
        """Return the value; raise ``BlobNotFoundError`` if the key is absent."""
        ...

    def has(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Delete the key; no error if it is absent."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        ...


@runtime_checkable
class EventSink(Protocol):
    """Where flushed outbox events go. Raising from ``emit`` means "not delivered"."""

    def emit(self, event: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Scheduler(Protocol):
    """Deferred commands: dispatch ``command_type`` with ``payload`` at ``run_at``."""

    def schedule(
        self,
        command_type: str,
        payload: Mapping[str, Any],
        run_at: datetime,
        correlation_id: str,
    ) -> None: ...

    def cancel(self, command_type: str, correlation_id: str) -> None: ...


@runtime_checkable
class Registry(Protocol):
    """Looks workflows up by id."""

    def get_workflow(self, workflow_id: str) -> Workflow[Any, Any] | None: ...
