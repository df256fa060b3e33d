"""The :class:`~workflow_engine.ports.Persistence` port on Postgres and SQLite."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from workflow_engine.clock import Clock, SystemClock
from workflow_engine.errors import RecordNotFoundError, StaleVersionError
from workflow_engine.persistence.sql import queries
from workflow_engine.persistence.sql.dialect import (
    ConnectionSource,
    current_transaction,
    transaction,
)
from workflow_engine.persistence.sql.queries import params
from workflow_engine.persistence.sql.tables import (
    idempotency_keys,
    outbox_events,
    workflow_logs,
    workflow_runs,
    workflow_stages,
)
from workflow_engine.persistence.sql.types import AnyRow, new_id
from workflow_engine.persistence.sql.values import (
    DEFAULT_MAX_JSON_BYTES,
    check_changes,
    json_value,
)
from workflow_engine.ports import Persistence
from workflow_engine.records import (
    IdempotencyAcquire,
    LockedRun,
    LogLevel,
    NewOutboxEvent,
    NewRun,
    NewStage,
    OutboxEventRecord,
    WorkflowLogRecord,
    WorkflowRunRecord,
    WorkflowStageRecord,
)
from workflow_engine.status import TERMINAL_RUN_STATUSES, Status

__all__ = ["SqlPersistence"]

T = TypeVar("T")

runs, stages, logs = workflow_runs, workflow_stages, workflow_logs
outbox, keys = outbox_events, idempotency_keys


def _run(row: AnyRow) -> WorkflowRunRecord:
    return WorkflowRunRecord.model_validate(dict(row._mapping))


def _stage(row: AnyRow) -> WorkflowStageRecord:
    return WorkflowStageRecord.model_validate(dict(row._mapping))


def _event(row: AnyRow) -> OutboxEventRecord:
    return OutboxEventRecord.model_validate(dict(row._mapping))


_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


RUN_FINISHED_CHANNEL = "workflow_engine_run_finished"
"""Postgres NOTIFY channel on which the id of every run that reaches a terminal state is sent."""


class SqlPersistence:
    """Runs, stages, logs, the outbox and idempotency keys in a SQL database.

    ``engine`` is a SQLAlchemy engine on Postgres (psycopg 3) or SQLite; the dialect is read
    from it. The schema comes from :func:`workflow_engine.persistence.sql.migrate.upgrade`.
    Every timestamp written comes from ``clock``. JSON values above ``max_json_bytes`` are
    refused with :class:`~workflow_engine.errors.PayloadTooLargeError`.

    Outside :meth:`with_transaction` each method is its own short transaction. A transaction
    belongs to the thread that opened it: while it is open, every call that thread makes on
    the same database, through this or any other adapter instance, runs in it (see
    :attr:`connection`). So ``fn`` simply gets this persistence back, as with the in-memory
    adapter.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.max_json_bytes = max_json_bytes
        self._db = ConnectionSource(engine)
        self._dialect = engine.dialect.name

    # -- transactions -------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The engine this persistence writes through."""
        return self._db.engine

    @property
    def connection(self) -> Connection | None:
        """The connection of this thread's open transaction on the database (``None``: none).

        :class:`SqlJobQueue` writes its rows on it when handed this persistence as ``tx=``.
        """
        return self._db.joined()

    def with_transaction(self, fn: Callable[[Persistence], T]) -> T:
        """Run ``fn(self)`` in one transaction (joining this thread's open one on the database).

        On an exception everything rolls back and the ``after_commit`` callbacks are dropped;
        after the commit they run, in order.
        """
        with transaction(self._db.engine):
            return fn(self)

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the current transaction commits (at once outside one)."""
        tx = current_transaction(self._db.engine)
        if tx is None:
            callback()
        else:
            tx.callbacks.append(callback)

    def _json(self, where: str, value: Any) -> Any:
        return json_value(where, value, self.max_json_bytes)

    # -- runs -----------------------------------------------------------------------------------
    def create_run(self, data: NewRun) -> WorkflowRunRecord:
        """Insert a run (``data.id`` or a new id) at version 1."""
        now = self.clock.now()
        values = data.model_dump(exclude={"id"})
        for name in ("input", "config", "metadata"):
            values[name] = self._json(f"workflow_runs.{name}", values[name])
        record = WorkflowRunRecord(id=data.id or new_id(), created_at=now, updated_at=now, **values)
        with _integrity(f"WorkflowRun {record.id} already exists"), self._db.statement() as conn:
            conn.execute(queries.INSERT_RUN, record.model_dump())
        return record

    def update_run(
        self,
        run_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
        **fields: Any,
    ) -> WorkflowRunRecord:
        """Change the given fields, bump ``version``; raise ``StaleVersionError`` on mismatch."""
        changes = {**(data or {}), **fields}
        values = check_changes(WorkflowRunRecord, runs, changes, self.max_json_bytes)
        run = _run(self._versioned_update(runs, "WorkflowRun", run_id, expected_version, values))
        if "status" in changes and run.status in TERMINAL_RUN_STATUSES:
            self._notify_finished(run_id)
        return run

    def _notify_finished(self, run_id: str) -> None:
        """Tell listeners (``WorkflowClient.wait``) the run ended; sent when the change commits."""
        if self.engine.dialect.name != "postgresql":
            return
        with self._db.statement() as conn:
            conn.execute(queries.NOTIFY, params(channel=RUN_FINISHED_CHANNEL, run_id=run_id))

    def _versioned_update(
        self,
        table: sa.Table,
        entity: str,
        row_id: str,
        expected_version: int | None,
        values: Mapping[str, Any],
    ) -> AnyRow:
        """One ``UPDATE ... RETURNING``; on no row, find out whether it is missing or stale."""
        stmt = queries.versioned_update(table, tuple(values), expected_version is not None)
        bound = params(id=row_id, expected_version=expected_version, now=self.clock.now(), **values)
        with self._db.statement() as conn:
            row = conn.execute(stmt, bound).first()
            if row is not None:
                return row
            actual = conn.scalar(queries.version_of(table), params(id=row_id))
        if actual is None or expected_version is None:
            raise RecordNotFoundError(f"{entity} {row_id} not found")
        raise StaleVersionError(entity, row_id, expected_version, actual)

    def get_run(self, run_id: str) -> WorkflowRunRecord | None:
        """The run, or ``None``."""
        with self._db.read() as conn:
            row = conn.execute(queries.by_id(runs), params(id=run_id)).first()
        return _run(row) if row is not None else None

    def lock_run(self, run_id: str) -> LockedRun | None:
        """The run, row-locked until the transaction ends (``FOR UPDATE`` on Postgres; on
        SQLite the transaction's write lock already keeps other writers out), and its stages.

        The stages are read by a second statement, after the lock is granted: a statement that
        waited for the lock still sees the other tables as they were when it started, so a
        join would miss the stage a concurrent settler just committed.
        """
        with self._db.read() as conn:
            row = conn.execute(queries.lock_run(self._dialect), params(id=run_id)).first()
            if row is None:
                return None
            stage_rows = conn.execute(queries.stages_of_run(False, False), params(run_id=run_id))
            return LockedRun(_run(row), [_stage(stage) for stage in stage_rows.all()])

    def get_run_status(self, run_id: str) -> Status | None:
        """The run's status, or ``None`` if there is no such run."""
        with self._db.read() as conn:
            status: Status | None = conn.scalar(queries.RUN_STATUS, params(id=run_id))
        return status

    def list_runs(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[WorkflowRunRecord]:
        """Runs, newest first, optionally filtered by status and workflow."""
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc())
        if status is not None:
            query = query.where(runs.c.status == status)
        if workflow_id is not None:
            query = query.where(runs.c.workflow_id == workflow_id)
        with self._db.read() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
        return [_run(row) for row in rows]

    def get_stuck_runs(self, since: datetime) -> list[WorkflowRunRecord]:
        """RUNNING runs not updated after ``since`` none of whose stages was either."""
        with self._db.read() as conn:
            rows = conn.execute(queries.STUCK_RUNS, params(since=since)).all()
        return [_run(row) for row in rows]

    def claim_next_pending_run(self, run_id: str | None = None) -> WorkflowRunRecord | None:
        """Atomically move the highest-priority, oldest PENDING run (with ``run_id``: that run,
        if it is still PENDING) to RUNNING and return it.

        One statement; on Postgres the candidate is locked with ``SKIP LOCKED`` so concurrent
        claimers take different runs, on SQLite the write lock serialises them.
        """
        now = self.clock.now()
        if run_id is None:
            stmt, bound = queries.CLAIM_PENDING_RUN, params(now=now)
        else:
            stmt, bound = queries.CLAIM_NAMED_RUN, params(now=now, id=run_id)
        with self._db.statement() as conn:
            row = conn.execute(stmt, bound).first()
        return _run(row) if row is not None else None

    # -- stages ---------------------------------------------------------------------------------
    def create_stage(self, data: NewStage) -> WorkflowStageRecord:
        """Insert a stage at version 1; ``(workflow_run_id, stage_id)`` must be new."""
        stmt = queries.insert_stage(self._dialect, None)
        missing_run = f"WorkflowRun {data.workflow_run_id} not found"
        with _integrity(missing_run, RecordNotFoundError), self._db.statement() as conn:
            inserted = conn.execute(stmt, params(**self._new_stage_values(data))).first()
        if inserted is None:
            raise ValueError(f"Stage {data.stage_id} already exists in run {data.workflow_run_id}")
        return _stage(inserted)

    def upsert_stage(
        self,
        workflow_run_id: str,
        stage_id: str,
        *,
        create: NewStage,
        update: Mapping[str, Any],
    ) -> WorkflowStageRecord:
        """Create the stage from ``create`` if missing, else apply ``update`` to it.

        One ``INSERT ... ON CONFLICT`` statement. An empty ``update`` leaves an existing row
        untouched (its version too).
        """
        if (create.workflow_run_id, create.stage_id) != (workflow_run_id, stage_id):
            raise ValueError("upsert_stage: `create` names a different run or stage")
        changes = self._stage_changes(update)
        stmt = queries.insert_stage(self._dialect, tuple(changes) if changes else None)
        bound = params(**self._new_stage_values(create), now=self.clock.now())
        bound.update(params(**{f"set_{name}": value for name, value in changes.items()}))
        missing_run = f"WorkflowRun {workflow_run_id} not found"
        with _integrity(missing_run, RecordNotFoundError), self._db.statement() as conn:
            row = conn.execute(stmt, bound).first()
            if row is None:  # it existed, and there was nothing to change
                key = params(run_id=workflow_run_id, stage_id=stage_id)
                row = conn.execute(queries.STAGE_BY_KEY, key).first()
        if row is None:  # deleted in between: only possible outside a transaction
            raise RecordNotFoundError(f"WorkflowStage {stage_id} of run {workflow_run_id} vanished")
        return _stage(row)

    def _stage_changes(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        return check_changes(
            WorkflowStageRecord,
            stages,
            changes,
            self.max_json_bytes,
            frozen=frozenset({"workflow_run_id", "stage_id"}),
        )

    def _new_stage_values(self, data: NewStage) -> dict[str, Any]:
        now = self.clock.now()
        values = data.model_dump()
        values["config"] = self._json("workflow_stages.config", values["config"])
        record = WorkflowStageRecord(id=new_id(), created_at=now, updated_at=now, **values)
        return record.model_dump()

    def update_stage(
        self,
        stage_record_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
        **fields: Any,
    ) -> WorkflowStageRecord:
        """Change the given fields, bump ``version``; raise ``StaleVersionError`` on mismatch."""
        values = self._stage_changes({**(data or {}), **fields})
        row = self._versioned_update(
            stages, "WorkflowStage", stage_record_id, expected_version, values
        )
        return _stage(row)

    def get_stage(self, workflow_run_id: str, stage_id: str) -> WorkflowStageRecord | None:
        """The stage of this run with this stage id, or ``None``."""
        key = params(run_id=workflow_run_id, stage_id=stage_id)
        with self._db.read() as conn:
            row = conn.execute(queries.STAGE_BY_KEY, key).first()
        return _stage(row) if row is not None else None

    def get_stage_by_id(self, stage_record_id: str) -> WorkflowStageRecord | None:
        """The stage row with this id, or ``None``."""
        with self._db.read() as conn:
            row = conn.execute(queries.by_id(stages), params(id=stage_record_id)).first()
        return _stage(row) if row is not None else None

    def get_stages_by_run(
        self,
        workflow_run_id: str,
        *,
        status: Status | None = None,
        descending: bool = False,
    ) -> list[WorkflowStageRecord]:
        """Stages of a run ordered by execution group, then stage number."""
        query = queries.stages_of_run(status is not None, descending)
        with self._db.read() as conn:
            rows = conn.execute(query, params(run_id=workflow_run_id, status=status)).all()
        return [_stage(row) for row in rows]

    def get_suspended_stages(
        self, before: datetime, limit: int | None = None
    ) -> list[WorkflowStageRecord]:
        """SUSPENDED stages whose ``next_poll_at`` is at or before ``before``, earliest first."""
        query = queries.due_suspended_stages(limit is not None)
        with self._db.read() as conn:
            rows = conn.execute(query, params(before=before, limit=limit)).all()
        return [_stage(row) for row in rows]

    def delete_stage(self, stage_record_id: str) -> None:
        """Delete the stage and (by cascade) its logs; no error if it is absent."""
        with self._db.statement() as conn:
            conn.execute(sa.delete(stages).where(stages.c.id == stage_record_id))

    # -- logs -----------------------------------------------------------------------------------
    def create_log(
        self,
        *,
        level: LogLevel,
        message: str,
        workflow_run_id: str | None = None,
        workflow_stage_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> WorkflowLogRecord:
        """Append a log line."""
        record = WorkflowLogRecord(
            id=new_id(),
            created_at=self.clock.now(),
            workflow_run_id=workflow_run_id,
            workflow_stage_id=workflow_stage_id,
            level=level,
            message=message,
            metadata=self._json(
                "workflow_logs.metadata", dict(metadata) if metadata is not None else None
            ),
        )
        values = record.model_dump()
        values["level"] = record.level.value
        missing = f"the run or stage of log line {message!r} does not exist"
        with _integrity(missing, RecordNotFoundError), self._db.statement() as conn:
            conn.execute(queries.INSERT_LOG, values)
        return record

    def get_logs_by_run(self, workflow_run_id: str) -> list[WorkflowLogRecord]:
        """The run's log lines, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(queries.LOGS_OF_RUN, params(run_id=workflow_run_id)).all()
        return [WorkflowLogRecord.model_validate(dict(row._mapping)) for row in rows]

    # -- outbox ---------------------------------------------------------------------------------
    def append_outbox_events(self, events: Sequence[NewOutboxEvent]) -> list[OutboxEventRecord]:
        """Append events, numbering them 1, 2, 3... per run in the given order.

        Two statements: one upsert adds each run's event count to its counter row in
        ``outbox_sequences`` and returns the new last sequence (so the run's events get
        ``last - count + 1 .. last``), then one multi-row insert of the events. The upsert
        row-locks the counters until the transaction ends (on SQLite the write lock does), so
        two appenders never pick the same number; numbering never restarts, even after
        :meth:`delete_published_outbox_events` removed a run's events.
        """
        if not events:
            return []
        now = self.clock.now()
        payloads = [self._json("outbox_events.payload", event.payload) for event in events]
        run_ids = {event.workflow_run_id for event in events}
        if self._dialect == "postgresql" and len(run_ids) == 1:
            return self._append_run_events(run_ids.pop(), events, payloads, now)
        counts: dict[str, int] = {}
        for event in events:
            counts[event.workflow_run_id] = counts.get(event.workflow_run_id, 0) + 1
        reserve = [params(workflow_run_id=run, count=n) for run, n in sorted(counts.items())]
        with self._db.write() as conn:
            rows = conn.execute(queries.reserve_sequences(self._dialect), reserve).all()
            # The number before each run's first new event.
            last = {run_id: int(sequence) - counts[run_id] for run_id, sequence in rows}
            records = []
            for event, payload in zip(events, payloads, strict=True):
                last[event.workflow_run_id] += 1
                records.append(
                    OutboxEventRecord(
                        id=new_id(),
                        created_at=now,
                        workflow_run_id=event.workflow_run_id,
                        sequence=last[event.workflow_run_id],
                        event_type=event.event_type,
                        payload=payload,
                        causation_id=event.causation_id,
                        occurred_at=event.occurred_at,
                    )
                )
            conn.execute(queries.INSERT_OUTBOX, [record.model_dump() for record in records])
        return records

    def _append_run_events(
        self,
        run_id: str,
        events: Sequence[NewOutboxEvent],
        payloads: list[Any],
        now: datetime,
    ) -> list[OutboxEventRecord]:
        """Postgres, one run: the counter upsert and the insert as one statement (the hot path
        appends one run's events per transaction)."""
        rows = [
            {
                "n": n,
                "id": new_id(),
                "event_type": event.event_type,
                "payload": payload,
                "causation_id": event.causation_id,
                "occurred_at": event.occurred_at.isoformat(),
            }
            for n, (event, payload) in enumerate(zip(events, payloads, strict=True), start=1)
        ]
        bound = {"run_id": run_id, "count": len(rows), "created_at": now, "events": _dumps(rows)}
        with self._db.write() as conn:
            result = conn.execute(queries.APPEND_RUN_EVENTS, bound)
            numbers: dict[str, int] = {event_id: sequence for event_id, sequence in result}
        return [
            OutboxEventRecord(
                id=row["id"],
                created_at=now,
                workflow_run_id=run_id,
                sequence=numbers[row["id"]],
                event_type=event.event_type,
                payload=row["payload"],
                causation_id=event.causation_id,
                occurred_at=event.occurred_at,
            )
            for row, event in zip(rows, events, strict=True)
        ]

    def get_unpublished_outbox_events(self, limit: int = 100) -> list[OutboxEventRecord]:
        """Events neither published nor in the DLQ, ordered by run then sequence."""
        with self._db.read() as conn:
            rows = conn.execute(queries.UNPUBLISHED_EVENTS, params(limit=limit)).all()
        return [_event(row) for row in rows]

    def claim_outbox_events(
        self, limit: int, *, now: datetime, lease_ms: int
    ) -> list[OutboxEventRecord]:
        """Claim up to ``limit`` deliverable events until ``now + lease_ms``.

        Events go by run then sequence; a run stops at its first event that is held by a live
        claim (or by a concurrent claimer), so each run's events go out in order. One
        statement: candidates are locked with ``SKIP LOCKED`` on Postgres, so two flushers
        never hold the same event.
        """
        until = now + timedelta(milliseconds=lease_ms)
        with self._db.statement() as conn:
            rows = conn.execute(
                queries.CLAIM_OUTBOX, params(limit=limit, now=now, until=until)
            ).all()
        claimed = [_event(row) for row in rows]
        claimed.sort(key=lambda event: (event.workflow_run_id, event.sequence))
        return claimed

    def release_outbox_claims(self, event_ids: Sequence[str]) -> None:
        """Drop the claims on these events so the next flush can take them at once."""
        self._update_events(event_ids, claimed_until=None)

    def mark_outbox_events_published(self, event_ids: Sequence[str]) -> None:
        """Set ``published_at`` (and release the claim) on each known event."""
        self._update_events(event_ids, published_at=self.clock.now(), claimed_until=None)

    def _update_events(self, event_ids: Sequence[str], **values: Any) -> None:
        if not event_ids:
            return
        stmt = queries.update_events(tuple(values))
        with self._db.statement() as conn:
            conn.execute(stmt, params(ids=list(event_ids), **values))

    def mark_outbox_plugin_delivered(self, event_id: str, plugin_id: str) -> None:
        """Remember that ``plugin_id`` has handled this event (so a retry skips it)."""
        with self._db.write() as conn:
            delivered = conn.scalar(queries.LOCK_EVENT_PLUGINS, params(id=event_id))
            if delivered is None:
                raise RecordNotFoundError(f"OutboxEvent {event_id} not found")
            if plugin_id not in delivered:
                plugins = [*delivered, plugin_id]
                conn.execute(
                    queries.SET_EVENT_PLUGINS, params(id=event_id, delivered_plugins=plugins)
                )

    def increment_outbox_retry_count(self, event_id: str) -> int:
        """Count one failed delivery, release the claim, and return the new count."""
        with self._db.statement() as conn:
            count: int | None = conn.scalar(queries.COUNT_RETRY, params(id=event_id))
        if count is None:
            raise RecordNotFoundError(f"OutboxEvent {event_id} not found")
        return count

    def move_outbox_event_to_dlq(self, event_id: str) -> None:
        """Park the event in the dead-letter queue."""
        bound = params(id=event_id, now=self.clock.now())
        with self._db.statement() as conn:
            if conn.execute(queries.MOVE_TO_DLQ, bound).rowcount == 0:
                raise RecordNotFoundError(f"OutboxEvent {event_id} not found")

    def replay_dlq_events(self, max_events: int = 100) -> int:
        """Move up to ``max_events`` DLQ events back to the outbox with a zero retry count."""
        with self._db.statement() as conn:
            return conn.execute(queries.REPLAY_DLQ, params(limit=max_events)).rowcount

    def get_outbox_events(self, workflow_run_id: str) -> list[OutboxEventRecord]:
        """All outbox events of a run, by sequence (published, pending and DLQ)."""
        with self._db.read() as conn:
            rows = conn.execute(queries.EVENTS_OF_RUN, params(run_id=workflow_run_id)).all()
        return [_event(row) for row in rows]

    def get_dlq_events(self, limit: int = 100) -> list[OutboxEventRecord]:
        """Events in the DLQ, oldest parked first."""
        with self._db.read() as conn:
            rows = conn.execute(queries.DLQ_EVENTS, params(limit=limit)).all()
        return [_event(row) for row in rows]

    def delete_published_outbox_events(self, before: datetime) -> int:
        """Delete events published before ``before``; return how many."""
        with self._db.statement() as conn:
            return conn.execute(queries.DELETE_PUBLISHED, params(before=before)).rowcount

    # -- idempotency ----------------------------------------------------------------------------
    def acquire_idempotency_key(
        self,
        key: str,
        command_type: str,
        *,
        now: datetime,
        stale_in_progress_after_ms: float | None,
    ) -> IdempotencyAcquire:
        """Insert an in-progress marker; or report the stored result, or that it is in progress.

        ``INSERT ... ON CONFLICT DO NOTHING`` decides who owns the key. A marker at least
        ``stale_in_progress_after_ms`` old is reclaimed (``None``: never) by a conditional
        update, so of two reclaimers only one wins.
        """
        marker = params(
            id=new_id(),
            key=key,
            command_type=command_type,
            completed=False,
            result=None,
            created_at=now,
            completed_at=None,
        )
        scope = params(key=key, command_type=command_type)
        with self._db.write() as conn:
            if conn.execute(queries.insert_key_marker(self._dialect), marker).first():
                return IdempotencyAcquire(status="acquired")
            row = conn.execute(queries.SELECT_KEY, scope).first()
            if row is not None and _is_stale(row, now, stale_in_progress_after_ms):
                reclaim = params(id=row.id, created_at=row.created_at, now=now)
                if conn.execute(queries.RECLAIM_KEY, reclaim).rowcount == 1:
                    return IdempotencyAcquire(status="acquired")
                row = conn.execute(queries.SELECT_KEY, scope).first()
        if row is not None and row.completed:
            return IdempotencyAcquire(status="replay", result=row.result)
        return IdempotencyAcquire(status="in_progress")

    def complete_idempotency_key(self, key: str, command_type: str, result: Any) -> None:
        """Store the command's JSON result under the key, on the current transaction.

        Called inside the command's transaction, the result commits with the command's writes.
        """
        stored = self._json("idempotency_keys.result", result)
        now = self.clock.now()
        values = params(
            id=new_id(),
            key=key,
            command_type=command_type,
            completed=True,
            result=stored,
            created_at=now,
            completed_at=now,
            set_result=stored,
            now=now,
        )
        with self._db.statement() as conn:
            conn.execute(queries.complete_key(self._dialect), values)

    def release_idempotency_key(self, key: str, command_type: str) -> None:
        """Forget the key (the command failed; a retry may run it again)."""
        with self._db.statement() as conn:
            conn.execute(queries.DELETE_KEY, params(key=key, command_type=command_type))

    def delete_idempotency_keys(self, before: datetime) -> int:
        """Delete completed keys created before ``before``; return how many."""
        with self._db.statement() as conn:
            return conn.execute(queries.DELETE_OLD_KEYS, params(before=before)).rowcount


@contextmanager
def _integrity(message: str, error: type[Exception] = ValueError) -> Iterator[None]:
    """Turn a constraint violation (duplicate key, missing parent row) into ``error``."""
    try:
        yield
    except sa.exc.IntegrityError as violation:
        raise error(message) from violation


def _is_stale(row: AnyRow, now: datetime, stale_after_ms: float | None) -> bool:
    """An in-progress marker at least ``stale_after_ms`` old (never, when it is ``None``)."""
    if row.completed or stale_after_ms is None:
        return False
    return bool(now - row.created_at >= timedelta(milliseconds=stale_after_ms))
