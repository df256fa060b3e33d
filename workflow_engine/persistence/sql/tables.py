"""The schema, as SQLAlchemy Core tables in one :data:`metadata`.

The Alembic migrations in ``migrations/versions`` create exactly this schema (a test compares
them); change both together. Every hot query has an index, partial where only a small slice of
the table is ever searched (pending runs and jobs, suspended stages, the unpublished outbox).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from workflow_engine.persistence.sql.types import JSON_TYPE, StatusType, UtcDateTime

__all__ = [
    "ai_calls",
    "blobs",
    "idempotency_keys",
    "job_queue",
    "metadata",
    "outbox_events",
    "outbox_sequences",
    "workflow_artifacts",
    "workflow_logs",
    "workflow_runs",
    "workflow_stages",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _where(condition: str) -> dict[str, Any]:
    """A partial-index predicate for both dialects (SQLite has partial indexes too)."""
    return {
        "postgresql_where": sa.text(condition),
        "sqlite_where": sa.text(condition),
    }


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(64), primary_key=True)


def _created_at() -> sa.Column[object]:
    return sa.Column("created_at", UtcDateTime(), nullable=False)


def _updated_at() -> sa.Column[object]:
    return sa.Column("updated_at", UtcDateTime(), nullable=False)


workflow_runs = sa.Table(
    "workflow_runs",
    metadata,
    _id(),
    _created_at(),
    _updated_at(),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("workflow_id", sa.String(255), nullable=False),
    sa.Column("workflow_name", sa.String(255), nullable=False),
    sa.Column("workflow_type", sa.String(255), nullable=False),
    sa.Column("status", StatusType(), nullable=False),
    sa.Column("started_at", UtcDateTime()),
    sa.Column("completed_at", UtcDateTime()),
    sa.Column("duration", sa.BigInteger()),
    sa.Column("input", JSON_TYPE),
    sa.Column("output", JSON_TYPE),
    sa.Column("error_message", sa.Text()),
    sa.Column("config", JSON_TYPE, nullable=False),
    sa.Column("total_cost", sa.Float(), nullable=False),
    sa.Column("total_tokens", sa.BigInteger(), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("metadata", JSON_TYPE),
    # claim_next_pending_run: the best PENDING run, without scanning finished ones.
    sa.Index(
        "ix_workflow_runs_pending",
        sa.text("priority DESC"),
        "created_at",
        **_where("status = 'PENDING'"),
    ),
    # get_stuck_runs: RUNNING runs by last update. (Partial, so that no index leads with
    # status: see queries.py.)
    sa.Index("ix_workflow_runs_running_updated_at", "updated_at", **_where("status = 'RUNNING'")),
    sa.Index("ix_workflow_runs_workflow_id", "workflow_id"),
    # list_runs: newest first.
    sa.Index("ix_workflow_runs_created_at", "created_at"),
)

workflow_stages = sa.Table(
    "workflow_stages",
    metadata,
    _id(),
    _created_at(),
    _updated_at(),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column(
        "workflow_run_id",
        sa.String(64),
        sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("stage_id", sa.String(255), nullable=False),
    sa.Column("stage_name", sa.String(255), nullable=False),
    sa.Column("stage_number", sa.Integer(), nullable=False),
    sa.Column("execution_group", sa.Integer(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("status", StatusType(), nullable=False),
    sa.Column("started_at", UtcDateTime()),
    sa.Column("completed_at", UtcDateTime()),
    sa.Column("duration", sa.BigInteger()),
    sa.Column("output", JSON_TYPE),
    sa.Column("output_ref", sa.Text()),
    sa.Column("artifact_keys", JSON_TYPE),
    sa.Column("config", JSON_TYPE),
    sa.Column("suspended_state", JSON_TYPE),
    sa.Column("next_poll_at", UtcDateTime()),
    sa.Column("poll_interval", sa.BigInteger()),
    sa.Column("max_wait_until", UtcDateTime()),
    sa.Column("metrics", JSON_TYPE),
    sa.Column("embedding_info", JSON_TYPE),
    sa.Column("error_message", sa.Text()),
    sa.Column("lease_token", sa.String(64)),
    # Also the index of "stages by run".
    sa.UniqueConstraint("workflow_run_id", "stage_id"),
    # get_suspended_stages: due SUSPENDED stages, earliest first.
    sa.Index(
        "ix_workflow_stages_suspended_next_poll_at",
        "next_poll_at",
        **_where("status = 'SUSPENDED'"),
    ),
    # get_stuck_runs: "no stage of the run updated after since".
    sa.Index("ix_workflow_stages_workflow_run_id_updated_at", "workflow_run_id", "updated_at"),
)

workflow_logs = sa.Table(
    "workflow_logs",
    metadata,
    _id(),
    _created_at(),
    sa.Column(
        "workflow_run_id",
        sa.String(64),
        sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"),
    ),
    sa.Column(
        "workflow_stage_id",
        sa.String(64),
        sa.ForeignKey("workflow_stages.id", ondelete="CASCADE"),
    ),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("metadata", JSON_TYPE),
    sa.Index("ix_workflow_logs_workflow_run_id_created_at", "workflow_run_id", "created_at"),
    sa.Index("ix_workflow_logs_workflow_stage_id", "workflow_stage_id"),
)

workflow_artifacts = sa.Table(
    "workflow_artifacts",
    metadata,
    _id(),
    _created_at(),
    _updated_at(),
    sa.Column(
        "workflow_run_id",
        sa.String(64),
        sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "workflow_stage_id",
        sa.String(64),
        sa.ForeignKey("workflow_stages.id", ondelete="SET NULL"),
    ),
    sa.Column("key", sa.Text(), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", JSON_TYPE),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("metadata", JSON_TYPE),
    sa.UniqueConstraint("workflow_run_id", "key"),
)

ai_calls = sa.Table(
    "ai_calls",
    metadata,
    _id(),
    _created_at(),
    sa.Column("topic", sa.Text(), nullable=False),
    sa.Column("call_type", sa.String(64), nullable=False),
    sa.Column("model_key", sa.String(255), nullable=False),
    sa.Column("model_id", sa.String(255), nullable=False),
    sa.Column("prompt", sa.Text(), nullable=False),
    sa.Column("response", sa.Text(), nullable=False),
    sa.Column("input_tokens", sa.BigInteger(), nullable=False),
    sa.Column("output_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cost", sa.Float(), nullable=False),
    sa.Column("metadata", JSON_TYPE),
    sa.Index("ix_ai_calls_topic", "topic"),
)

job_queue = sa.Table(
    "job_queue",
    metadata,
    _id(),
    _created_at(),
    _updated_at(),
    # No foreign key: the queue may live in another database than the runs.
    sa.Column("workflow_run_id", sa.String(64), nullable=False),
    sa.Column("workflow_id", sa.String(255), nullable=False),
    sa.Column("stage_id", sa.String(255), nullable=False),
    sa.Column("status", StatusType(), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("worker_id", sa.String(255)),
    sa.Column("locked_at", UtcDateTime()),
    sa.Column("lease_token", sa.String(64)),
    sa.Column("started_at", UtcDateTime()),
    sa.Column("completed_at", UtcDateTime()),
    sa.Column("next_poll_at", UtcDateTime()),
    sa.Column("payload", JSON_TYPE, nullable=False),
    sa.Column("last_error", sa.Text()),
    sa.Column("queue", sa.String(255)),
    # dequeue / get_due_pending_jobs: walk PENDING jobs in priority-then-age order; the due
    # time rides along so the "is it due" check needs no heap fetch.
    sa.Index(
        "ix_job_queue_pending",
        sa.text("priority DESC"),
        "created_at",
        "next_poll_at",
        **_where("status = 'PENDING'"),
    ),
    # reap_stale_jobs: RUNNING jobs with an old lease.
    sa.Index("ix_job_queue_running_locked_at", "locked_at", **_where("status = 'RUNNING'")),
    sa.Index("ix_job_queue_workflow_run_id", "workflow_run_id"),
)

outbox_events = sa.Table(
    "outbox_events",
    metadata,
    _id(),
    _created_at(),
    sa.Column("workflow_run_id", sa.String(64), nullable=False),
    sa.Column("sequence", sa.Integer(), nullable=False),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("payload", JSON_TYPE, nullable=False),
    sa.Column("causation_id", sa.String(255), nullable=False),
    sa.Column("occurred_at", UtcDateTime(), nullable=False),
    sa.Column("published_at", UtcDateTime()),
    sa.Column("retry_count", sa.Integer(), nullable=False),
    sa.Column("dlq_at", UtcDateTime()),
    sa.Column("claimed_until", UtcDateTime()),
    sa.Column("delivered_plugins", JSON_TYPE, nullable=False),
    # Also the index of "events of a run, by sequence".
    sa.UniqueConstraint("workflow_run_id", "sequence"),
    # Flushing: the unpublished, non-DLQ events in (run, sequence) order.
    sa.Index(
        "ix_outbox_events_unpublished",
        "workflow_run_id",
        "sequence",
        **_where("published_at IS NULL AND dlq_at IS NULL"),
    ),
    # Retention: published events by age.
    sa.Index(
        "ix_outbox_events_published_at",
        "published_at",
        **_where("published_at IS NOT NULL"),
    ),
    sa.Index("ix_outbox_events_dlq_at", "dlq_at", **_where("dlq_at IS NOT NULL")),
)

# The last sequence number given out per run, one row per run that ever had an event. Appenders
# to a run are serialised by the row lock on its counter row (taken by the upsert that reserves
# their numbers), and numbering never restarts after retention deletes the old events. No foreign
# key: events may be appended for a run id with no run row.
outbox_sequences = sa.Table(
    "outbox_sequences",
    metadata,
    sa.Column("workflow_run_id", sa.String(64), primary_key=True),
    sa.Column("last_sequence", sa.Integer(), nullable=False),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    _id(),
    _created_at(),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("command_type", sa.String(255), nullable=False),
    # False while the command runs (the in-progress marker), True once its result is stored.
    sa.Column("completed", sa.Boolean(), nullable=False),
    sa.Column("result", JSON_TYPE),
    sa.Column("completed_at", UtcDateTime()),
    sa.UniqueConstraint("key", "command_type"),
    # Retention: keys by age.
    sa.Index("ix_idempotency_keys_created_at", "created_at"),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("key", sa.String(1024), primary_key=True),
    sa.Column("data", JSON_TYPE),
    _created_at(),
    _updated_at(),
)

# One row per maintenance tick that ran (a skipped one writes nothing): when, where, and what it
# did. Operators read it for health ("when did the last tick run?"); tests prove ticks never
# overlap.
maintenance_ticks = sa.Table(
    "maintenance_ticks",
    metadata,
    _id(),
    sa.Column("worker_id", sa.String(255), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime(), nullable=False),
    sa.Column("result", JSON_TYPE),
    sa.Index("ix_maintenance_ticks_started_at", "started_at"),
)
