"""Number outbox events from a per-run counter.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_sequences",
        sa.Column("workflow_run_id", sa.String(64), nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_run_id", name="pk_outbox_sequences"),
    )
    # Continue each run's numbering from its highest event still stored.
    op.execute(
        "INSERT INTO outbox_sequences (workflow_run_id, last_sequence) "
        "SELECT workflow_run_id, max(sequence) FROM outbox_events GROUP BY workflow_run_id"
    )


def downgrade() -> None:
    op.drop_table("outbox_sequences")
