"""The statements of the persistence adapter, built once and run with parameters.

Hot statements are module constants or cached builders whose per-call values are named bind
parameters (``p_<name>``; see :func:`params`): building a SQLAlchemy statement costs more
Python time than running a short one over loopback.

Status tests on hot paths compare against SQL literals (``status = 'PENDING'``), not bound
parameters: a partial index is usable only when the planner can prove the query's predicate
implies the index's, which a parameter in a cached generic plan does not allow. (No other
index leads with ``status``: SQLite's planner, without statistics, would take any index with
an equality on ``status`` plus a sort over the partial index that needs no sort.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeEngine

from workflow_engine.persistence.sql.tables import (
    idempotency_keys,
    outbox_events,
    outbox_sequences,
    workflow_logs,
    workflow_runs,
    workflow_stages,
)
from workflow_engine.persistence.sql.types import UtcDateTime
from workflow_engine.status import Status

runs, stages, outbox, keys = workflow_runs, workflow_stages, outbox_events, idempotency_keys


def param(name: str, type_: TypeEngine[Any] | None = None) -> BindParameter[Any]:
    """The bind parameter ``p_<name>`` (``p_`` keeps clear of the names SQLAlchemy reserves
    for columns in ``SET`` and ``VALUES``)."""
    return sa.bindparam(f"p_{name}", type_=type_)


def params(**values: Any) -> dict[str, Any]:
    """Parameters for :func:`param` placeholders: ``params(id=1)`` is ``{"p_id": 1}``."""
    return {f"p_{name}": value for name, value in values.items()}


def is_status(column: sa.ColumnElement[Any], status: Status) -> sa.ColumnElement[bool]:
    """``column = '<STATUS>'`` with the status inlined (see the module docstring)."""
    return column == sa.literal_column(f"'{status.value}'")


UNPUBLISHED = sa.and_(outbox.c.published_at.is_(None), outbox.c.dlq_at.is_(None))


def insert_on_conflict(
    dialect: str,
    table: sa.Table,
    values: Mapping[str, Any],
    index_elements: Sequence[str],
    set_: Mapping[str, Any] | None = None,
) -> sa.Insert:
    """``INSERT ... ON CONFLICT (index_elements) DO NOTHING`` (or ``DO UPDATE SET set_``)."""
    stmt: PgInsert | SqliteInsert = (
        pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)
    ).values(dict(values))
    if set_ is None:
        return stmt.on_conflict_do_nothing(index_elements=list(index_elements))
    return stmt.on_conflict_do_update(index_elements=list(index_elements), set_=dict(set_))


def _all_columns(table: sa.Table) -> dict[str, BindParameter[Any]]:
    return {column.name: param(column.name) for column in table.c}


# -- shared ------------------------------------------------------------------------------------
INSERT_RUN = sa.insert(runs)
INSERT_LOG = sa.insert(workflow_logs)
INSERT_OUTBOX = sa.insert(outbox)


@cache
def by_id(table: sa.Table) -> sa.Select[Any]:
    """The row of ``table`` with id ``p_id``."""
    return sa.select(table).where(table.c.id == param("id"))


@cache
def version_of(table: sa.Table) -> sa.Select[Any]:
    """The version of the row of ``table`` with id ``p_id``."""
    return sa.select(table.c.version).where(table.c.id == param("id"))


@cache
def versioned_update(table: sa.Table, names: tuple[str, ...], checked: bool) -> sa.Update:
    """Set columns ``names`` (from ``p_<name>``) of row ``p_id``, bump ``version``, stamp
    ``updated_at`` with ``p_now``; if ``checked``, only at version ``p_expected_version``."""
    stmt = sa.update(table).where(table.c.id == param("id"))
    if checked:
        stmt = stmt.where(table.c.version == param("expected_version"))
    values: dict[str, Any] = {name: param(name) for name in names}
    values.update(version=table.c.version + 1, updated_at=param("now"))
    return stmt.values(values).returning(*table.c)


# -- runs and stages -------------------------------------------------------------------------
RUN_STATUS = sa.select(runs.c.status).where(runs.c.id == param("id"))


@cache
def lock_run(dialect: str) -> sa.Select[Any]:
    """Run ``p_id``, row-locked on Postgres."""
    query = by_id(runs)
    return query.with_for_update() if dialect == "postgresql" else query


_STARTED: dict[str, Any] = {
    "status": Status.RUNNING,
    "started_at": param("now"),
    "updated_at": param("now"),
    "version": runs.c.version + 1,
}

#: Move the best PENDING run to RUNNING, skipping runs another claimer has locked.
CLAIM_PENDING_RUN = (
    sa.update(runs)
    .where(
        runs.c.id
        == sa.select(runs.c.id)
        .where(is_status(runs.c.status, Status.PENDING))
        .order_by(runs.c.priority.desc(), runs.c.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery(),
        # No second "status = 'PENDING'" here: the subquery locked the row while PENDING,
        # and a second predicate tempts the planner to scan the pending index instead of
        # fetching one row by primary key.
    )
    .values(_STARTED)
    .returning(*runs.c)
)

#: Move run ``p_id`` to RUNNING if it is still PENDING (the run a wake-up names).
CLAIM_NAMED_RUN = (
    sa.update(runs)
    .where(runs.c.id == param("id"), is_status(runs.c.status, Status.PENDING))
    .values(_STARTED)
    .returning(*runs.c)
)

#: RUNNING runs last updated at or before ``p_since`` with no stage updated after it.
STUCK_RUNS = (
    sa.select(runs)
    .where(
        is_status(runs.c.status, Status.RUNNING),
        runs.c.updated_at <= param("since"),
        ~sa.exists().where(
            stages.c.workflow_run_id == runs.c.id, stages.c.updated_at > param("since")
        ),
    )
    .order_by(runs.c.updated_at, runs.c.id)
)

STAGE_BY_KEY = sa.select(stages).where(
    stages.c.workflow_run_id == param("run_id"), stages.c.stage_id == param("stage_id")
)


@cache
def stages_of_run(with_status: bool, descending: bool) -> sa.Select[Any]:
    """Stages of run ``p_run_id`` (with status ``p_status``) by group, then number."""
    query = sa.select(stages).where(stages.c.workflow_run_id == param("run_id"))
    if with_status:
        query = query.where(stages.c.status == param("status"))
    order = [stages.c.execution_group, stages.c.stage_number]
    return query.order_by(*(column.desc() if descending else column for column in order))


@cache
def insert_stage(dialect: str, update: tuple[str, ...] | None) -> sa.Insert:
    """Insert a stage from ``p_<column>``; on a ``(run, stage_id)`` conflict do nothing, or
    set ``update``'s columns from ``p_set_<name>`` (bumping ``version``, ``updated_at``)."""
    set_: dict[str, Any] | None = None
    if update is not None:
        set_ = {name: param(f"set_{name}") for name in update}
        set_.update(version=stages.c.version + 1, updated_at=param("now"))
    stmt = insert_on_conflict(
        dialect, stages, _all_columns(stages), ["workflow_run_id", "stage_id"], set_
    )
    return stmt.returning(*stages.c)


@cache
def due_suspended_stages(limited: bool) -> sa.Select[Any]:
    """SUSPENDED stages due at ``p_before``, earliest first (at most ``p_limit``)."""
    query = (
        sa.select(stages)
        .where(
            is_status(stages.c.status, Status.SUSPENDED),
            stages.c.next_poll_at <= param("before"),
        )
        .order_by(stages.c.next_poll_at, stages.c.id)
    )
    return query.limit(param("limit")) if limited else query


LOGS_OF_RUN = (
    sa.select(workflow_logs)
    .where(workflow_logs.c.workflow_run_id == param("run_id"))
    .order_by(workflow_logs.c.created_at, workflow_logs.c.id)
)


# -- outbox ----------------------------------------------------------------------------------
@cache
def reserve_sequences(dialect: str) -> sa.Insert:
    """Add ``p_count`` to run ``p_workflow_run_id``'s counter (from 0 if it has none); returns
    the run id and its new last sequence.

    Run with one parameter set per run: SQLAlchemy sends them as one multi-row ``INSERT``
    (give the runs sorted, so appenders to several runs lock their counter rows in one order
    and cannot deadlock). The upsert row-locks each counter until the transaction ends, which
    serialises appenders per run.
    """
    seq = outbox_sequences
    stmt: PgInsert | SqliteInsert = (
        pg_insert(seq) if dialect == "postgresql" else sqlite_insert(seq)
    ).values(workflow_run_id=param("workflow_run_id"), last_sequence=param("count"))
    return stmt.on_conflict_do_update(
        index_elements=[seq.c.workflow_run_id],
        set_={"last_sequence": seq.c.last_sequence + stmt.excluded.last_sequence},
    ).returning(seq.c.workflow_run_id, seq.c.last_sequence)


#: Postgres: reserve one run's sequence numbers and insert its events in one statement (the
#: events come as one JSON array, numbered by ``n`` from 1); returns each event's id and number.
APPEND_RUN_EVENTS = (
    sa.text(
        """
    WITH reserved AS (
        INSERT INTO outbox_sequences (workflow_run_id, last_sequence)
        VALUES (:run_id, :count)
        ON CONFLICT (workflow_run_id)
        DO UPDATE SET last_sequence = outbox_sequences.last_sequence + excluded.last_sequence
        RETURNING last_sequence
    )
    INSERT INTO outbox_events (
        id, created_at, workflow_run_id, sequence, event_type, payload, causation_id,
        occurred_at, retry_count, delivered_plugins
    )
    SELECT e.id, :created_at, :run_id, reserved.last_sequence - :count + e.n, e.event_type,
        e.payload, e.causation_id, e.occurred_at, 0, '[]'::jsonb
    FROM reserved, jsonb_to_recordset(CAST(:events AS jsonb)) AS e(
        n integer, id text, event_type text, payload jsonb, causation_id text,
        occurred_at timestamptz
    )
    RETURNING id, sequence
    """
    )
    .bindparams(sa.bindparam("created_at", type_=UtcDateTime()))
    .columns(id=sa.String(), sequence=sa.Integer())
)

#: Tell ``LISTEN``ers on ``p_channel`` that run ``p_run_id`` ended (sent at commit).
NOTIFY = sa.select(sa.func.pg_notify(param("channel"), param("run_id")))

UNPUBLISHED_EVENTS = (
    sa.select(outbox)
    .where(UNPUBLISHED)
    .order_by(outbox.c.workflow_run_id, outbox.c.sequence)
    .limit(param("limit"))
)

EVENTS_OF_RUN = (
    sa.select(outbox).where(outbox.c.workflow_run_id == param("run_id")).order_by(outbox.c.sequence)
)

DLQ_ORDER = (outbox.c.dlq_at, outbox.c.workflow_run_id, outbox.c.sequence)

DLQ_EVENTS = (
    sa.select(outbox).where(outbox.c.dlq_at.is_not(None)).order_by(*DLQ_ORDER).limit(param("limit"))
)

#: Move the oldest ``p_limit`` DLQ events back to the outbox.
REPLAY_DLQ = (
    sa.update(outbox)
    .where(
        outbox.c.id.in_(
            sa.select(outbox.c.id)
            .where(outbox.c.dlq_at.is_not(None))
            .order_by(*DLQ_ORDER)
            .limit(param("limit"))
        )
    )
    .values(dlq_at=None, retry_count=0, claimed_until=None)
)


def _claim_outbox() -> sa.Update:
    """Claim deliverable events until ``p_until``: each run's unclaimed prefix, ``p_limit``
    events at most.

    Candidates are the outstanding events not under a live claim and not behind one, in
    (run, sequence) order; on Postgres they are locked with ``SKIP LOCKED``. A candidate is
    then kept only if no earlier outstanding event of its run was left out (skipped because
    a concurrent claimer holds it), so a run's events are never claimed out of order.
    """
    now = param("now", UtcDateTime())
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
        .limit(param("limit"))
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
    return (
        sa.update(outbox)
        .where(outbox.c.id.in_(sa.select(candidates.c.id).where(~left_out_before)))
        .values(claimed_until=param("until"))
        .returning(*outbox.c)
    )


CLAIM_OUTBOX = _claim_outbox()


@cache
def update_events(names: tuple[str, ...]) -> sa.Update:
    """Set columns ``names`` (from ``p_<name>``) on the events with ids ``p_ids``."""
    return (
        sa.update(outbox)
        .where(outbox.c.id.in_(sa.bindparam("p_ids", expanding=True)))
        .values({name: param(name) for name in names})
    )


#: An event's delivered plugins, row-locked for the read-modify-write that follows.
LOCK_EVENT_PLUGINS = (
    sa.select(outbox.c.delivered_plugins).where(outbox.c.id == param("id")).with_for_update()
)

SET_EVENT_PLUGINS = (
    sa.update(outbox)
    .where(outbox.c.id == param("id"))
    .values(delivered_plugins=param("delivered_plugins"))
)

COUNT_RETRY = (
    sa.update(outbox)
    .where(outbox.c.id == param("id"))
    .values(retry_count=outbox.c.retry_count + 1, claimed_until=None)
    .returning(outbox.c.retry_count)
)

MOVE_TO_DLQ = (
    sa.update(outbox)
    .where(outbox.c.id == param("id"))
    .values(dlq_at=param("now"), claimed_until=None)
)

DELETE_PUBLISHED = sa.delete(outbox).where(
    outbox.c.published_at.is_not(None), outbox.c.published_at < param("before")
)


# -- idempotency keys ------------------------------------------------------------------------
@cache
def insert_key_marker(dialect: str) -> sa.Insert:
    """Insert an in-progress marker (from ``p_<column>``) unless the key exists; returns the
    id only if it inserted."""
    stmt = insert_on_conflict(dialect, keys, _all_columns(keys), ["key", "command_type"])
    return stmt.returning(keys.c.id)


SELECT_KEY = sa.select(keys.c.id, keys.c.created_at, keys.c.completed, keys.c.result).where(
    keys.c.key == param("key"), keys.c.command_type == param("command_type")
)

#: Take over stale marker ``p_id`` (created at ``p_created_at``) if nobody did since.
RECLAIM_KEY = (
    sa.update(keys)
    .where(
        keys.c.id == param("id"),
        keys.c.created_at == param("created_at"),
        keys.c.completed.is_(False),
    )
    .values(created_at=param("now"))
)


@cache
def complete_key(dialect: str) -> sa.Insert:
    """Store result ``p_result`` under the key (creating the row if the marker is missing)."""
    set_ = {"completed": True, "result": param("set_result"), "completed_at": param("now")}
    return insert_on_conflict(dialect, keys, _all_columns(keys), ["key", "command_type"], set_)


DELETE_KEY = sa.delete(keys).where(
    keys.c.key == param("key"), keys.c.command_type == param("command_type")
)

DELETE_OLD_KEYS = sa.delete(keys).where(
    keys.c.completed.is_(True), keys.c.created_at < param("before")
)
