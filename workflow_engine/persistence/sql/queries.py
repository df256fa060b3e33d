"""The statements of the persistence adapter that are more than a one-liner.

Status tests on hot paths compare against SQL literals (``status = 'PENDING'``), not bound
parameters: a partial index is usable only when the planner can prove the query's predicate
implies the index's, which a parameter in a cached generic plan does not allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from workflow_engine.persistence.sql.tables import (
    idempotency_keys,
    outbox_events,
    workflow_runs,
    workflow_stages,
)
from workflow_engine.persistence.sql.types import new_id
from workflow_engine.status import Status

runs, stages, outbox, keys = workflow_runs, workflow_stages, outbox_events, idempotency_keys

#: Advisory-lock class of "appending to a run's outbox" (the two-key form keeps our locks
#: apart from any the application takes with one key).
OUTBOX_LOCK_CLASS = 0x5746_4531  # "WFE1"

UNPUBLISHED = sa.and_(outbox.c.published_at.is_(None), outbox.c.dlq_at.is_(None))


def is_status(column: sa.ColumnElement[Any], status: Status) -> sa.ColumnElement[bool]:
    """``column = '<STATUS>'`` with the status inlined (see the module docstring)."""
    return column == sa.literal_column(f"'{status.value}'")


def insert_on_conflict(
    conn: Connection,
    table: sa.Table,
    values: Mapping[str, Any],
    index_elements: Sequence[str],
    set_: Mapping[str, Any] | None = None,
) -> sa.Insert:
    """``INSERT ... ON CONFLICT (index_elements) DO NOTHING`` (or ``DO UPDATE SET set_``)."""
    stmt: PgInsert | SqliteInsert = (
        pg_insert(table) if conn.dialect.name == "postgresql" else sqlite_insert(table)
    ).values(dict(values))
    if set_ is None:
        return stmt.on_conflict_do_nothing(index_elements=list(index_elements))
    return stmt.on_conflict_do_update(index_elements=list(index_elements), set_=dict(set_))


def versioned_update(
    table: sa.Table,
    row_id: str,
    expected_version: int | None,
    values: Mapping[str, Any],
    now: datetime,
) -> sa.Update:
    """Update a row by id, bumping ``version``; with ``expected_version``, only at it."""
    stmt = sa.update(table).where(table.c.id == row_id)
    if expected_version is not None:
        stmt = stmt.where(table.c.version == expected_version)
    changes = {**values, "version": table.c.version + 1, "updated_at": now}
    return stmt.values(changes).returning(*table.c)


# -- runs and stages -------------------------------------------------------------------------
def claim_pending_run(now: datetime) -> sa.Update:
    """Move the best PENDING run to RUNNING, skipping runs another claimer has locked."""
    pick = (
        sa.select(runs.c.id)
        .where(is_status(runs.c.status, Status.PENDING))
        .order_by(runs.c.priority.desc(), runs.c.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        sa.update(runs)
        .where(runs.c.id == pick, is_status(runs.c.status, Status.PENDING))
        .values(
            status=Status.RUNNING,
            started_at=now,
            updated_at=now,
            version=runs.c.version + 1,
        )
        .returning(*runs.c)
    )


def stuck_runs(since: datetime) -> sa.Select[Any]:
    """RUNNING runs last updated at or before ``since`` with no stage updated after it."""
    recent_stage = sa.exists().where(
        stages.c.workflow_run_id == runs.c.id, stages.c.updated_at > since
    )
    return (
        sa.select(runs)
        .where(is_status(runs.c.status, Status.RUNNING), runs.c.updated_at <= since, ~recent_stage)
        .order_by(runs.c.updated_at, runs.c.id)
    )


def insert_stage(
    conn: Connection, values: Mapping[str, Any], update: Mapping[str, Any] | None
) -> sa.Insert:
    """Insert a stage row; on a ``(run, stage_id)`` conflict do nothing, or apply ``update``."""
    set_ = None if update is None else {**update, "version": stages.c.version + 1}
    stmt = insert_on_conflict(conn, stages, values, ["workflow_run_id", "stage_id"], set_)
    return stmt.returning(*stages.c)


def due_suspended_stages(before: datetime, limit: int | None) -> sa.Select[Any]:
    """SUSPENDED stages due at ``before``, earliest first."""
    query = (
        sa.select(stages)
        .where(is_status(stages.c.status, Status.SUSPENDED), stages.c.next_poll_at <= before)
        .order_by(stages.c.next_poll_at, stages.c.id)
    )
    return query if limit is None else query.limit(limit)


# -- outbox ----------------------------------------------------------------------------------
def lock_and_read_sequences(conn: Connection, run_ids: Sequence[str]) -> dict[str, int]:
    """Serialise appenders per run, then read each run's last sequence number.

    On Postgres a transaction-level advisory lock per run (taken in sorted order, so two
    appenders cannot deadlock); it must be its own statement, because the ``max`` below needs
    a snapshot taken after the lock is held. On SQLite the write lock already serialises.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(
                "SELECT pg_advisory_xact_lock(:lock_class, hashtext(r)) "
                "FROM unnest(CAST(:run_ids AS text[])) AS r"
            ),
            {"lock_class": OUTBOX_LOCK_CLASS, "run_ids": sorted(run_ids)},
        )
    query = (
        sa.select(outbox.c.workflow_run_id, sa.func.max(outbox.c.sequence))
        .where(outbox.c.workflow_run_id.in_(list(run_ids)))
        .group_by(outbox.c.workflow_run_id)
    )
    return {run_id: int(last) for run_id, last in conn.execute(query).all()}


def claim_outbox(limit: int, now: datetime, until: datetime) -> sa.Update:
    """Claim deliverable events: each run's unclaimed prefix, up to ``limit`` events.

    Candidates are the outstanding events not under a live claim and not behind one, in
    (run, sequence) order; on Postgres they are locked with ``SKIP LOCKED``. A candidate is
    then kept only if no earlier outstanding event of its run was left out (skipped because
    a concurrent claimer holds it), so a run's events are never claimed out of order.
    """
    held = outbox.alias("held")
    behind_live_claim = sa.exists().where(
        held.c.workflow_run_id == outbox.c.workflow_run_id,
        held.c.sequence < outbox.c.sequence,
        held.c.published_at.is_(None),
        held.c.dlq_at.is_(None),
        held.c.claimed_until > now,
    )
    candidates = (
        sa.select(outbox.c.id, outbox.c.workflow_run_id, outbox.c.sequence)
        .where(
            UNPUBLISHED,
            sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now),
            ~behind_live_claim,
        )
        .order_by(outbox.c.workflow_run_id, outbox.c.sequence)
        .limit(limit)
        .with_for_update(skip_locked=True, of=outbox)
        .cte("candidates")
    )
    earlier = outbox.alias("earlier")
    left_out_before = sa.exists().where(
        earlier.c.workflow_run_id == candidates.c.workflow_run_id,
        earlier.c.sequence < candidates.c.sequence,
        earlier.c.published_at.is_(None),
        earlier.c.dlq_at.is_(None),
        earlier.c.id.not_in(sa.select(candidates.c.id)),
    )
    chosen = sa.select(candidates.c.id).where(~left_out_before)
    return (
        sa.update(outbox)
        .where(outbox.c.id.in_(chosen))
        .values(claimed_until=until)
        .returning(*outbox.c)
    )


def lock_event_plugins(event_id: str) -> sa.Select[Any]:
    """An event's delivered plugins, row-locked for the read-modify-write that follows."""
    return sa.select(outbox.c.delivered_plugins).where(outbox.c.id == event_id).with_for_update()


def dlq_events() -> sa.Select[Any]:
    """Events in the DLQ, oldest parked first."""
    return (
        sa.select(outbox)
        .where(outbox.c.dlq_at.is_not(None))
        .order_by(outbox.c.dlq_at, outbox.c.workflow_run_id, outbox.c.sequence)
    )


def replay_dlq(max_events: int) -> sa.Update:
    """Move the oldest ``max_events`` DLQ events back to the outbox."""
    pick = (
        sa.select(outbox.c.id)
        .where(outbox.c.dlq_at.is_not(None))
        .order_by(outbox.c.dlq_at, outbox.c.workflow_run_id, outbox.c.sequence)
        .limit(max_events)
    )
    return (
        sa.update(outbox)
        .where(outbox.c.id.in_(pick))
        .values(dlq_at=None, retry_count=0, claimed_until=None)
    )


# -- idempotency keys ------------------------------------------------------------------------
def insert_key_marker(conn: Connection, key: str, command_type: str, now: datetime) -> sa.Insert:
    """Insert the in-progress marker unless the key exists; returns the id if inserted."""
    values = {
        "id": new_id(),
        "key": key,
        "command_type": command_type,
        "completed": False,
        "result": None,
        "created_at": now,
        "completed_at": None,
    }
    stmt = insert_on_conflict(conn, keys, values, ["key", "command_type"])
    return stmt.returning(keys.c.id)


def select_key(key: str, command_type: str) -> sa.Select[Any]:
    """The key's row."""
    return sa.select(keys.c.id, keys.c.created_at, keys.c.completed, keys.c.result).where(
        keys.c.key == key, keys.c.command_type == command_type
    )


def reclaim_key(key_id: str, created_at: datetime, now: datetime) -> sa.Update:
    """Take over a stale marker, if nobody else did since it was read."""
    return (
        sa.update(keys)
        .where(
            keys.c.id == key_id,
            keys.c.created_at == created_at,
            keys.c.completed.is_(False),
        )
        .values(created_at=now)
    )


def complete_key(
    conn: Connection, key: str, command_type: str, result: Any, now: datetime
) -> sa.Insert:
    """Store the result under the key (creating the row if the marker is missing)."""
    values = {
        "id": new_id(),
        "key": key,
        "command_type": command_type,
        "completed": True,
        "result": result,
        "created_at": now,
        "completed_at": now,
    }
    set_ = {"completed": True, "result": result, "completed_at": now}
    return insert_on_conflict(conn, keys, values, ["key", "command_type"], set_)
