"""The initial schema: runs, stages, logs, artifacts, AI calls, jobs, outbox, keys, blobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    """JSONB on Postgres, JSON text on SQLite."""
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _where(condition: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.String(64), nullable=False)


def _stamps(*, updated: bool = True) -> list[sa.Column[Any]]:
    columns = [sa.Column("created_at", _ts(), nullable=False)]
    if updated:
        columns.append(sa.Column("updated_at", _ts(), nullable=False))
    return columns


def _create_runs() -> None:
    op.create_table(
        "workflow_runs",
        _id(),
        *_stamps(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("workflow_name", sa.String(255), nullable=False),
        sa.Column("workflow_type", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("duration", sa.BigInteger(), nullable=True),
        sa.Column("input", _json(), nullable=True),
        sa.Column("output", _json(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("config", _json(), nullable=False),
        sa.Column("total_cost", sa.Float(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("metadata", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_runs"),
    )
    op.create_index(
        "ix_workflow_runs_pending",
        "workflow_runs",
        [sa.literal_column("priority DESC"), "created_at"],
        **_where("status = 'PENDING'"),
    )
    op.create_index(
        "ix_workflow_runs_running_updated_at",
        "workflow_runs",
        ["updated_at"],
        **_where("status = 'RUNNING'"),
    )
    op.create_index("ix_workflow_runs_workflow_id", "workflow_runs", ["workflow_id"])
    op.create_index("ix_workflow_runs_created_at", "workflow_runs", ["created_at"])


def _create_stages() -> None:
    op.create_table(
        "workflow_stages",
        _id(),
        *_stamps(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("workflow_run_id", sa.String(64), nullable=False),
        sa.Column("stage_id", sa.String(255), nullable=False),
        sa.Column("stage_name", sa.String(255), nullable=False),
        sa.Column("stage_number", sa.Integer(), nullable=False),
        sa.Column("execution_group", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("duration", sa.BigInteger(), nullable=True),
        sa.Column("output", _json(), nullable=True),
        sa.Column("output_ref", sa.Text(), nullable=True),
        sa.Column("artifact_keys", _json(), nullable=True),
        sa.Column("config", _json(), nullable=True),
        sa.Column("suspended_state", _json(), nullable=True),
        sa.Column("next_poll_at", _ts(), nullable=True),
        sa.Column("poll_interval", sa.BigInteger(), nullable=True),
        sa.Column("max_wait_until", _ts(), nullable=True),
        sa.Column("metrics", _json(), nullable=True),
        sa.Column("embedding_info", _json(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_run_id"],
            ["workflow_runs.id"],
            name="fk_workflow_stages_workflow_run_id_workflow_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_stages"),
        sa.UniqueConstraint(
            "workflow_run_id", "stage_id", name="uq_workflow_stages_workflow_run_id_stage_id"
        ),
    )
    op.create_index(
        "ix_workflow_stages_suspended_next_poll_at",
        "workflow_stages",
        ["next_poll_at"],
        **_where("status = 'SUSPENDED'"),
    )
    op.create_index(
        "ix_workflow_stages_workflow_run_id_updated_at",
        "workflow_stages",
        ["workflow_run_id", "updated_at"],
    )


def _create_logs_and_artifacts() -> None:
    op.create_table(
        "workflow_logs",
        _id(),
        *_stamps(updated=False),
        sa.Column("workflow_run_id", sa.String(64), nullable=True),
        sa.Column("workflow_stage_id", sa.String(64), nullable=True),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("metadata", _json(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_run_id"],
            ["workflow_runs.id"],
            name="fk_workflow_logs_workflow_run_id_workflow_runs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_stage_id"],
            ["workflow_stages.id"],
            name="fk_workflow_logs_workflow_stage_id_workflow_stages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_logs"),
    )
    op.create_index(
        "ix_workflow_logs_workflow_run_id_created_at",
        "workflow_logs",
        ["workflow_run_id", "created_at"],
    )
    op.create_index("ix_workflow_logs_workflow_stage_id", "workflow_logs", ["workflow_stage_id"])
    op.create_table(
        "workflow_artifacts",
        _id(),
        *_stamps(),
        sa.Column("workflow_run_id", sa.String(64), nullable=False),
        sa.Column("workflow_stage_id", sa.String(64), nullable=True),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", _json(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("metadata", _json(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_run_id"],
            ["workflow_runs.id"],
            name="fk_workflow_artifacts_workflow_run_id_workflow_runs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_stage_id"],
            ["workflow_stages.id"],
            name="fk_workflow_artifacts_workflow_stage_id_workflow_stages",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_artifacts"),
        sa.UniqueConstraint(
            "workflow_run_id", "key", name="uq_workflow_artifacts_workflow_run_id_key"
        ),
    )


def _create_ai_calls() -> None:
    op.create_table(
        "ai_calls",
        _id(),
        *_stamps(updated=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("call_type", sa.String(64), nullable=False),
        sa.Column("model_key", sa.String(255), nullable=False),
        sa.Column("model_id", sa.String(255), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("metadata", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ai_calls"),
    )
    op.create_index("ix_ai_calls_topic", "ai_calls", ["topic"])


def _create_job_queue() -> None:
    op.create_table(
        "job_queue",
        _id(),
        *_stamps(),
        sa.Column("workflow_run_id", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("stage_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(255), nullable=True),
        sa.Column("locked_at", _ts(), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("next_poll_at", _ts(), nullable=True),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("queue", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_job_queue"),
    )
    op.create_index(
        "ix_job_queue_pending",
        "job_queue",
        [sa.literal_column("priority DESC"), "created_at", "next_poll_at"],
        **_where("status = 'PENDING'"),
    )
    op.create_index(
        "ix_job_queue_running_locked_at", "job_queue", ["locked_at"], **_where("status = 'RUNNING'")
    )
    op.create_index("ix_job_queue_workflow_run_id", "job_queue", ["workflow_run_id"])


def _create_outbox() -> None:
    op.create_table(
        "outbox_events",
        _id(),
        *_stamps(updated=False),
        sa.Column("workflow_run_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("causation_id", sa.String(255), nullable=False),
        sa.Column("occurred_at", _ts(), nullable=False),
        sa.Column("published_at", _ts(), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("dlq_at", _ts(), nullable=True),
        sa.Column("claimed_until", _ts(), nullable=True),
        sa.Column("delivered_plugins", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_events"),
        sa.UniqueConstraint(
            "workflow_run_id", "sequence", name="uq_outbox_events_workflow_run_id_sequence"
        ),
    )
    op.create_index(
        "ix_outbox_events_unpublished",
        "outbox_events",
        ["workflow_run_id", "sequence"],
        **_where("published_at IS NULL AND dlq_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_events_published_at",
        "outbox_events",
        ["published_at"],
        **_where("published_at IS NOT NULL"),
    )
    op.create_index(
        "ix_outbox_events_dlq_at", "outbox_events", ["dlq_at"], **_where("dlq_at IS NOT NULL")
    )


def _create_keys_and_blobs() -> None:
    op.create_table(
        "idempotency_keys",
        _id(),
        *_stamps(updated=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("command_type", sa.String(255), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_keys"),
        sa.UniqueConstraint("key", "command_type", name="uq_idempotency_keys_key_command_type"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "blobs",
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("data", _json(), nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("key", name="pk_blobs"),
    )


def upgrade() -> None:
    """Create every table and index."""
    _create_runs()
    _create_stages()
    _create_logs_and_artifacts()
    _create_ai_calls()
    _create_job_queue()
    _create_outbox()
    _create_keys_and_blobs()


def downgrade() -> None:
    """Drop everything (indexes go with their tables)."""
    for table in (
        "blobs",
        "idempotency_keys",
        "outbox_events",
        "job_queue",
        "ai_calls",
        "workflow_artifacts",
        "workflow_logs",
        "workflow_stages",
        "workflow_runs",
    ):
        op.drop_table(table)
