"""An in-memory :class:`~workflow_engine.ports.Persistence` with real transactions.

Every table is a dict of immutable records. Inside ``with_transaction`` each write records the
row it replaced in an undo log; a failure restores those rows in reverse order, so a rolled-back
transaction leaves nothing behind, as it would in a database.

Secondary indexes (rows by run, by status, pending outbox events...) are maintained by every
put, remove and restore of a table, so a rollback keeps them right too. Records handed out share
everything with the stored row except fresh copies of their JSON dicts and lists.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from workflow_engine.clock import Clock, SystemClock
from workflow_engine.errors import RecordNotFoundError, StaleVersionError
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
from workflow_engine.status import Status
from workflow_engine.testing._json import FlatList, store_json
from workflow_engine.testing._records import (
    build_record,
    copy_record,
    field_names,
    new_id,
    replace_fields,
    validated_update,
)
from workflow_engine.testing.memory_blobs import json_clone

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
M = TypeVar("M", bound=BaseModel)

_RUN_JSON_FIELDS = frozenset({"input", "output", "config", "metadata"})
_STAGE_JSON_FIELDS = frozenset(
    {"output", "artifact_keys", "config", "suspended_state", "metrics", "embedding_info"}
)
_MANAGED_FIELDS = frozenset({"id", "created_at", "updated_at", "version"})
_STAGE_KEY_FIELDS = frozenset({"workflow_run_id", "stage_id"})


_new_id = new_id


def _copy(record: M) -> M:
    """A copy whose JSON containers are fresh, so a caller cannot reach the stored row."""
    return copy_record(record)


class _Groups:
    """Keys by group, each group an insertion-ordered set (a dict with ``None`` values)."""

    def __init__(self) -> None:
        self._groups: dict[Any, dict[Any, None]] = {}

    def move(self, key: Any, old_group: Any, new_group: Any) -> None:
        """Move ``key`` between groups; ``None`` means in no group."""
        if old_group == new_group:
            return
        if old_group is not None:
            members = self._groups.get(old_group)
            if members is not None:
                members.pop(key, None)
                if not members:
                    del self._groups[old_group]
        if new_group is not None:
            members = self._groups.get(new_group)
            if members is None:
                self._groups[new_group] = {key: None}
            else:
                members[key] = None

    def keys(self, group: Any) -> list[Any]:
        """The keys in ``group``, in no particular order."""
        return list(self._groups.get(group, ()))

    def clear(self) -> None:
        self._groups.clear()


class _Heap:
    """Rows by a sort key, smallest first, for rows whose ``sort_key(row)`` is not ``None``.

    Entries are checked lazily: one counts only while its row is still there with the same
    insertion number and sort key. Whoever changes a row pushes an entry when its key changes.
    """

    def __init__(self, sort_key: Callable[[Any], tuple[Any, ...] | None]) -> None:
        self.sort_key = sort_key
        self._heap: list[tuple[tuple[Any, ...], int, Any]] = []

    def changed(self, key: Any, old: Any, new: Any, order: int) -> None:
        """Note a row change (``None`` rows: absent)."""
        if new is None:
            return  # the entry is dropped when it comes up
        new_key = self.sort_key(new)
        if new_key is not None and (old is None or self.sort_key(old) != new_key):
            heapq.heappush(self._heap, (new_key, order, key))

    def push(self, sort_key: tuple[Any, ...], order: int, key: Any) -> None:
        """Note a row that now has ``sort_key`` (what :meth:`changed` does, inlined by callers)."""
        heapq.heappush(self._heap, (sort_key, order, key))

    def first(self, table: _Table[Any, Any]) -> tuple[tuple[Any, ...], Any] | None:
        """The smallest current ``(sort key, row key)``, dropping outdated entries on the way."""
        heap = self._heap
        rows = table.rows
        while heap:
            sort_key, order, key = heap[0]
            row = rows.get(key)
            if row is not None and table.order(key) == order and self.sort_key(row) == sort_key:
                return sort_key, key
            heapq.heappop(heap)
        return None

    def pop_first(self) -> None:
        heapq.heappop(self._heap)

    def compact(self, table: _Table[Any, Any]) -> None:
        """Rebuild once outdated entries outnumber the rows (keeps memory bounded)."""
        if len(self._heap) > 2 * len(table.rows) + 1024:
            self._heap = []
            for key, row in table.rows.items():
                self.changed(key, None, row, table.order(key))

    def clear(self) -> None:
        self._heap.clear()


def _is_pending(event: OutboxEventRecord | None) -> bool:
    return event is not None and event.published_at is None and event.dlq_at is None


class _PendingOutbox:
    """Events neither published nor in the DLQ, by run (run ids kept sorted), then sequence."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, tuple[int, int]]] = {}
        self._run_ids: list[str] = []

    def changed(
        self, key: str, old: OutboxEventRecord | None, new: OutboxEventRecord | None, order: int
    ) -> None:
        was, now = _is_pending(old), _is_pending(new)
        if was and now:
            assert old is not None and new is not None
            if old.workflow_run_id == new.workflow_run_id and old.sequence == new.sequence:
                return
        if was:
            assert old is not None
            self._discard(key, old.workflow_run_id)
        if now:
            assert new is not None
            events = self._runs.get(new.workflow_run_id)
            if events is None:
                events = self._runs[new.workflow_run_id] = {}
                bisect.insort(self._run_ids, new.workflow_run_id)
            events[key] = (new.sequence, order)

    def _discard(self, key: str, run_id: str) -> None:
        events = self._runs.get(run_id)
        if events is None:
            return
        events.pop(key, None)
        if not events:
            del self._runs[run_id]
            del self._run_ids[bisect.bisect_left(self._run_ids, run_id)]

    def keys_in_order(self) -> Iterator[str]:
        """Event keys by run id, then sequence (safe to write to events while iterating)."""
        for run_id in list(self._run_ids):
            events = self._runs.get(run_id)
            if events:
                yield from sorted(events, key=events.__getitem__)

    def clear(self) -> None:
        self._runs.clear()
        self._run_ids.clear()


OnChange = Callable[[Any, Any, Any, int], None]


class _Table(Generic[K, V]):
    """Rows by key, remembering each key's insertion number so a rollback restores order.

    Every change goes through ``put``, ``remove`` or ``restore``, which report it to
    ``on_change(key, old row or None, new row or None, insertion number)`` so the owner can keep
    its secondary indexes current, rollbacks included.
    """

    def __init__(self, on_change: OnChange | None = None) -> None:
        self.rows: dict[K, V] = {}
        self._order: dict[K, int] = {}
        self._counter = 0
        self._on_change = on_change

    def get(self, key: K) -> V | None:
        return self.rows.get(key)

    def values(self) -> list[V]:
        return list(self.rows.values())

    def order(self, key: K) -> int:
        return self._order[key]

    def in_order(self, keys: Iterable[K]) -> list[V]:
        """The rows of ``keys`` in insertion order (the order of ``values()``)."""
        rows = self.rows
        return [rows[key] for key in sorted(keys, key=self._order.__getitem__)]

    def snapshot(self, key: K) -> tuple[int, V] | None:
        """The current row and its insertion number (``None`` when absent)."""
        if key not in self.rows:
            return None
        return self._order[key], self.rows[key]

    def put(self, key: K, value: V, undo: list[Any] | None = None) -> None:
        """Insert or replace a row; with ``undo``, append what restores the previous state."""
        rows = self.rows
        old = rows.get(key)  # (no row is None)
        if old is None:
            self._counter += 1
            order = self._order[key] = self._counter
            if undo is not None:
                undo.append((self, key, None))
        else:
            order = self._order[key]
            if undo is not None:
                undo.append((self, key, (order, old)))
        rows[key] = value
        if self._on_change is not None:
            self._on_change(key, old, value, order)

    def remove(self, key: K) -> None:
        old = self.rows.pop(key, None)
        if old is None:
            return
        order = self._order.pop(key)
        if self._on_change is not None:
            self._on_change(key, old, None, order)

    def restore(self, key: K, saved: tuple[int, V] | None) -> None:
        if saved is None:
            self.remove(key)
            return
        order, value = saved
        if key in self.rows and self._order[key] != order:
            self.remove(key)
        old = self.rows.get(key)
        self._order[key], self.rows[key] = order, value
        if self._on_change is not None:
            self._on_change(key, old, value, order)

    def reorder(self) -> None:
        """Put rows back in insertion order (after a rollback re-inserted deleted ones)."""
        self.rows = dict(sorted(self.rows.items(), key=lambda item: self._order[item[0]]))

    def clear(self) -> None:
        self.rows.clear()
        self._order.clear()


@dataclass(frozen=True)
class _IdempotencyRow:
    created_at: datetime
    completed: bool = False
    result: Any = None


class _TxLocal(threading.local):
    """The current thread's transaction (``None`` outside one; no AttributeError to catch)."""

    tx: _Transaction | None = None


@dataclass
class _Transaction:
    undo: list[tuple[_Table[Any, Any], Any, tuple[int, Any] | None]] = field(default_factory=list)
    callbacks: list[Callable[[], object]] = field(default_factory=list)


def _run_callbacks(callbacks: Iterable[Callable[[], object]]) -> None:
    """Run every callback; re-raise the first failure once all have run."""
    first_error: Exception | None = None
    for callback in callbacks:
        try:
            callback()
        except Exception as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error


def _check_changes(model: type[BaseModel], changes: Mapping[str, Any]) -> None:
    if field_names(model).issuperset(changes) and _MANAGED_FIELDS.isdisjoint(changes):
        return
    unknown = sorted(set(changes) - field_names(model))
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {', '.join(unknown)}")
    managed = sorted(set(changes) & _MANAGED_FIELDS)
    if managed:
        raise ValueError(f"{model.__name__} field(s) {', '.join(managed)} cannot be set")


def _with_changes(
    record: M, changes: Mapping[str, Any], json_fields: frozenset[str], now: datetime
) -> M:
    """``record`` with ``changes`` validated and applied, a bumped version and a new
    ``updated_at`` (field names are checked by :func:`_check_changes` beforehand)."""
    data = {
        name: store_json(value) if name in json_fields else value for name, value in changes.items()
    }
    data["version"] = record.version + 1  # type: ignore[attr-defined]
    data["updated_at"] = now
    return validated_update(record, data, json_fields)


# frozen and holding no JSON, so one instance of each serves every caller
_ACQUIRED = IdempotencyAcquire(status="acquired")
_IN_PROGRESS = IdempotencyAcquire(status="in_progress")


def _pending_run_key(run: WorkflowRunRecord) -> tuple[Any, ...] | None:
    return (-run.priority, run.created_at) if run.status == Status.PENDING else None


def _published_key(event: OutboxEventRecord) -> tuple[Any, ...] | None:
    return (event.published_at,) if event.published_at is not None else None


def _completed_key_key(row: _IdempotencyRow) -> tuple[Any, ...] | None:
    return (row.created_at,) if row.completed else None


class InMemoryWorkflowPersistence:
    """Runs, stages, logs, outbox and idempotency keys in dicts, with rollback on failure.

    Thread-safe: one re-entrant lock guards every method and is held for the whole of a
    transaction, which is tracked per thread. Pass ``clock=`` to control every timestamp.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._local = _TxLocal()
        # secondary indexes, kept current by the tables' change hooks (rollbacks included)
        self._runs_by_status = _Groups()
        self._pending_runs = _Heap(_pending_run_key)
        self._stages_by_run = _Groups()
        self._stages_by_status = _Groups()
        self._logs_by_run = _Groups()
        self._logs_by_stage = _Groups()
        self._outbox_by_run = _Groups()
        self._outbox_pending = _PendingOutbox()
        self._outbox_published = _Heap(_published_key)
        self._completed_keys = _Heap(_completed_key_key)
        self._runs: _Table[str, WorkflowRunRecord] = _Table(self._run_changed)
        self._stages: _Table[str, WorkflowStageRecord] = _Table(self._stage_changed)
        self._stage_keys: _Table[tuple[str, str], str] = _Table()
        self._logs: _Table[str, WorkflowLogRecord] = _Table(self._log_changed)
        self._outbox: _Table[str, OutboxEventRecord] = _Table(self._event_changed)
        self._sequences: _Table[str, int] = _Table()
        self._idempotency: _Table[tuple[str, str], _IdempotencyRow] = _Table(self._key_changed)

    # -- index maintenance --------------------------------------------------------------------
    def _indexes(self) -> list[_Groups | _Heap | _PendingOutbox]:
        return [
            self._runs_by_status,
            self._pending_runs,
            self._stages_by_run,
            self._stages_by_status,
            self._logs_by_run,
            self._logs_by_stage,
            self._outbox_by_run,
            self._outbox_pending,
            self._outbox_published,
            self._completed_keys,
        ]

    def _run_changed(
        self, key: str, old: WorkflowRunRecord | None, new: WorkflowRunRecord | None, order: int
    ) -> None:
        if (
            old is not None
            and new is not None
            and old.status == new.status
            and old.priority == new.priority
        ):
            return  # nothing indexed changed (created_at never does)
        self._runs_by_status.move(key, old and old.status, new and new.status)
        self._pending_runs.changed(key, old, new, order)

    def _stage_changed(
        self,
        key: str,
        old: WorkflowStageRecord | None,
        new: WorkflowStageRecord | None,
        order: int,
    ) -> None:
        if (
            old is not None
            and new is not None
            and old.status == new.status
            and old.workflow_run_id == new.workflow_run_id
        ):
            return  # nothing indexed changed
        self._stages_by_run.move(key, old and old.workflow_run_id, new and new.workflow_run_id)
        self._stages_by_status.move(key, old and old.status, new and new.status)

    def _log_changed(
        self, key: str, old: WorkflowLogRecord | None, new: WorkflowLogRecord | None, order: int
    ) -> None:
        self._logs_by_run.move(key, old and old.workflow_run_id, new and new.workflow_run_id)
        self._logs_by_stage.move(key, old and old.workflow_stage_id, new and new.workflow_stage_id)

    def _event_changed(
        self, key: str, old: OutboxEventRecord | None, new: OutboxEventRecord | None, order: int
    ) -> None:
        if (
            old is not None
            and new is not None
            and old.published_at == new.published_at
            and old.dlq_at == new.dlq_at
            and old.workflow_run_id == new.workflow_run_id
            and old.sequence == new.sequence
        ):
            return  # only a claim, retry count or plugin delivery changed: nothing indexed
        self._outbox_by_run.move(key, old and old.workflow_run_id, new and new.workflow_run_id)
        self._outbox_pending.changed(key, old, new, order)
        published = new.published_at if new is not None else None
        if published is not None and (old is None or old.published_at != published):
            self._outbox_published.push((published,), order, key)

    def _key_changed(
        self,
        key: tuple[str, str],
        old: _IdempotencyRow | None,
        new: _IdempotencyRow | None,
        order: int,
    ) -> None:
        if new is None or not new.completed:
            return
        if old is None or not old.completed or old.created_at != new.created_at:
            self._completed_keys.push((new.created_at,), order, key)

    # -- storage primitives -------------------------------------------------------------------
    def _tables(self) -> list[_Table[Any, Any]]:
        return [
            self._runs,
            self._stages,
            self._stage_keys,
            self._logs,
            self._outbox,
            self._sequences,
            self._idempotency,
        ]

    def _current(self) -> _Transaction | None:
        tx: _Transaction | None = self._local.tx
        return tx

    def _journal(self, table: _Table[K, V], key: K) -> None:
        tx: _Transaction | None = self._local.tx
        if tx is not None:
            tx.undo.append((table, key, table.snapshot(key)))

    def _put(self, table: _Table[K, V], key: K, value: V) -> None:
        tx: _Transaction | None = self._local.tx
        table.put(key, value, tx.undo if tx is not None else None)

    def _remove(self, table: _Table[K, V], key: K) -> None:
        self._journal(table, key)
        table.remove(key)

    def _rollback(self, tx: _Transaction) -> None:
        for table, key, saved in reversed(tx.undo):
            table.restore(key, saved)
        for table in self._tables():
            table.reorder()

    # -- transactions -------------------------------------------------------------------------
    def with_transaction(self, fn: Callable[[Persistence], T]) -> T:
        """Run ``fn(self)`` atomically; on exception undo its writes and re-raise.

        A call made inside a transaction joins it. ``after_commit`` callbacks run once the
        outermost transaction has committed, outside the lock.
        """
        if self._current() is not None:
            return fn(self)
        tx = _Transaction()
        with self._lock:
            self._local.tx = tx
            try:
                result = fn(self)
            except BaseException:
                self._rollback(tx)
                raise
            finally:
                self._local.tx = None
        _run_callbacks(tx.callbacks)
        return result

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Queue ``callback`` for after the current commit; run it at once outside one."""
        tx = self._current()
        if tx is None:
            callback()
        else:
            tx.callbacks.append(callback)

    # -- runs ---------------------------------------------------------------------------------
    def create_run(self, data: NewRun) -> WorkflowRunRecord:
        """Insert a run (``data.id`` or a new uuid4 hex) at version 1."""
        with self._lock:
            now = self.clock.now()
            fields = data.model_dump(exclude={"id"})
            for name in _RUN_JSON_FIELDS & set(fields):
                fields[name] = store_json(fields[name])
            fields.update(id=data.id or _new_id(), created_at=now, updated_at=now)
            run = build_record(WorkflowRunRecord, fields)
            self._put(self._runs, run.id, run)
            return _copy(run)

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
        _check_changes(WorkflowRunRecord, changes)
        with self._lock:
            run = self._runs.rows.get(run_id)
            if run is None:
                raise RecordNotFoundError(f"WorkflowRun {run_id} not found")
            if expected_version is not None and run.version != expected_version:
                raise StaleVersionError("WorkflowRun", run_id, expected_version, run.version)
            updated = _with_changes(run, changes, _RUN_JSON_FIELDS, self.clock.now())
            self._put(self._runs, run_id, updated)
            return _copy(updated)

    def get_run(self, run_id: str) -> WorkflowRunRecord | None:
        """The run, or ``None``."""
        with self._lock:
            run = self._runs.rows.get(run_id)
            return _copy(run) if run is not None else None

    def lock_run(self, run_id: str) -> LockedRun | None:
        """The run and its stages (transactions here are serialised by one lock already)."""
        run = self.get_run(run_id)
        return LockedRun(run, self.get_stages_by_run(run_id)) if run is not None else None

    def get_run_status(self, run_id: str) -> Status | None:
        """The run's status, or ``None`` if there is no such run."""
        with self._lock:
            run = self._runs.rows.get(run_id)
            return run.status if run is not None else None

    def list_runs(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[WorkflowRunRecord]:
        """Runs, newest first, optionally filtered by status and workflow."""
        with self._lock:
            candidates = (
                self._runs.values()
                if status is None
                else self._runs.in_order(self._runs_by_status.keys(status))
            )
            runs = [
                run
                for run in reversed(candidates)
                if (status is None or run.status == status)
                and (workflow_id is None or run.workflow_id == workflow_id)
            ]
        runs.sort(key=lambda run: run.created_at, reverse=True)
        return [_copy(run) for run in runs[offset : offset + limit]]

    def get_stuck_runs(self, since: datetime) -> list[WorkflowRunRecord]:
        """RUNNING runs not updated after ``since`` none of whose stages was either."""
        with self._lock:
            running = self._runs.in_order(self._runs_by_status.keys(Status.RUNNING))
            stuck = [
                run
                for run in running
                if run.updated_at <= since and not self._has_stage_updated_after(run.id, since)
            ]
        stuck.sort(key=lambda run: run.updated_at)
        return [_copy(run) for run in stuck]

    def _has_stage_updated_after(self, run_id: str, since: datetime) -> bool:
        stages = self._stages.rows
        return any(stages[key].updated_at > since for key in self._stages_by_run.keys(run_id))

    def claim_next_pending_run(self, run_id: str | None = None) -> WorkflowRunRecord | None:
        """Move the highest-priority, oldest PENDING run (with ``run_id``: that run, if it is
        still PENDING) to RUNNING and return it."""
        with self._lock:
            if run_id is not None:
                named = self._runs.rows.get(run_id)
                if named is None or named.status != Status.PENDING:
                    return None
                run = named
            else:
                self._pending_runs.compact(self._runs)
                first = self._pending_runs.first(self._runs)
                if first is None:
                    return None
                run = self._runs.rows[first[1]]
            now = self.clock.now()
            claimed = _with_changes(
                run, {"status": Status.RUNNING, "started_at": now}, frozenset(), now
            )
            self._put(self._runs, claimed.id, claimed)
            return _copy(claimed)

    # -- stages -------------------------------------------------------------------------------
    def create_stage(self, data: NewStage) -> WorkflowStageRecord:
        """Insert a stage at version 1; ``(workflow_run_id, stage_id)`` must be new."""
        with self._lock:
            key = (data.workflow_run_id, data.stage_id)
            if self._stage_keys.rows.get(key) is not None:
                raise ValueError(f"Stage {data.stage_id} already exists in run {key[0]}")
            now = self.clock.now()
            fields = dict(data.__dict__)  # a validated NewStage: its values need no second check
            fields.update(
                config=store_json(fields["config"]), id=_new_id(), created_at=now, updated_at=now
            )
            stage = build_record(WorkflowStageRecord, fields)
            self._put(self._stages, stage.id, stage)
            self._put(self._stage_keys, key, stage.id)
            return _copy(stage)

    def upsert_stage(
        self,
        workflow_run_id: str,
        stage_id: str,
        *,
        create: NewStage,
        update: Mapping[str, Any],
    ) -> WorkflowStageRecord:
        """Create the stage from ``create`` if missing, else apply ``update`` to it."""
        if (create.workflow_run_id, create.stage_id) != (workflow_run_id, stage_id):
            raise ValueError("upsert_stage: `create` names a different run or stage")
        with self._lock:
            stage_record_id = self._stage_keys.rows.get((workflow_run_id, stage_id))
            if stage_record_id is None:
                return self.create_stage(create)
            if not update:
                return _copy(self._require_stage(stage_record_id))
            return self.update_stage(stage_record_id, update)

    def update_stage(
        self,
        stage_record_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
        **fields: Any,
    ) -> WorkflowStageRecord:
        """Change the given fields, bump ``version``; raise ``StaleVersionError`` on mismatch."""
        changes = {**(data or {}), **fields}
        _check_changes(WorkflowStageRecord, changes)
        if not _STAGE_KEY_FIELDS.isdisjoint(changes):
            raise ValueError("A stage's workflow_run_id and stage_id cannot be changed")
        with self._lock:
            stage = self._require_stage(stage_record_id)
            if expected_version is not None and stage.version != expected_version:
                raise StaleVersionError(
                    "WorkflowStage", stage_record_id, expected_version, stage.version
                )
            updated = _with_changes(stage, changes, _STAGE_JSON_FIELDS, self.clock.now())
            self._put(self._stages, stage_record_id, updated)
            return _copy(updated)

    def _require_stage(self, stage_record_id: str) -> WorkflowStageRecord:
        stage = self._stages.rows.get(stage_record_id)
        if stage is None:
            raise RecordNotFoundError(f"WorkflowStage {stage_record_id} not found")
        return stage

    def get_stage(self, workflow_run_id: str, stage_id: str) -> WorkflowStageRecord | None:
        """The stage of this run with this stage id, or ``None``."""
        with self._lock:
            stage_record_id = self._stage_keys.rows.get((workflow_run_id, stage_id))
            if stage_record_id is None:
                return None
            return self.get_stage_by_id(stage_record_id)

    def get_stage_by_id(self, stage_record_id: str) -> WorkflowStageRecord | None:
        """The stage row with this id, or ``None``."""
        with self._lock:
            stage = self._stages.rows.get(stage_record_id)
            return _copy(stage) if stage is not None else None

    def get_stages_by_run(
        self,
        workflow_run_id: str,
        *,
        status: Status | None = None,
        descending: bool = False,
    ) -> list[WorkflowStageRecord]:
        """Stages of a run ordered by execution group, then stage number."""
        with self._lock:
            stages = [
                stage
                for stage in self._stages.in_order(self._stages_by_run.keys(workflow_run_id))
                if status is None or stage.status == status
            ]
        stages.sort(key=lambda s: (s.execution_group, s.stage_number), reverse=descending)
        return [_copy(stage) for stage in stages]

    def get_suspended_stages(
        self, before: datetime, limit: int | None = None
    ) -> list[WorkflowStageRecord]:
        """SUSPENDED stages whose ``next_poll_at`` is at or before ``before``, earliest first."""
        with self._lock:
            suspended = self._stages_by_status.keys(Status.SUSPENDED)
            due = [
                (stage.next_poll_at, stage)
                for stage in self._stages.in_order(suspended)
                if stage.next_poll_at is not None and stage.next_poll_at <= before
            ]
        due.sort(key=lambda pair: pair[0])
        stages = [_copy(stage) for _, stage in due]
        return stages if limit is None else stages[:limit]

    def delete_stage(self, stage_record_id: str) -> None:
        """Delete the stage and its logs (no error if it is absent)."""
        with self._lock:
            stage = self._stages.rows.get(stage_record_id)
            if stage is None:
                return
            for log in self._logs.in_order(self._logs_by_stage.keys(stage_record_id)):
                self._remove(self._logs, log.id)
            self._remove(self._stage_keys, (stage.workflow_run_id, stage.stage_id))
            self._remove(self._stages, stage_record_id)

    # -- logs ---------------------------------------------------------------------------------
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
        with self._lock:
            log = WorkflowLogRecord(
                id=_new_id(),
                created_at=self.clock.now(),
                workflow_run_id=workflow_run_id,
                workflow_stage_id=workflow_stage_id,
                level=level,
                message=message,
                metadata=json_clone(dict(metadata)) if metadata is not None else None,
            )
            self._put(self._logs, log.id, log)
            return _copy(log)

    def get_logs_by_run(self, workflow_run_id: str) -> list[WorkflowLogRecord]:
        """The run's log lines, oldest first."""
        with self._lock:
            logs = self._logs.in_order(self._logs_by_run.keys(workflow_run_id))
        logs.sort(key=lambda log: log.created_at)
        return [_copy(log) for log in logs]

    # -- outbox -------------------------------------------------------------------------------
    def append_outbox_events(self, events: Sequence[NewOutboxEvent]) -> list[OutboxEventRecord]:
        """Append events, numbering them 1, 2, 3... per run in the given order."""
        with self._lock:
            return [_copy(self._append_outbox_event(event)) for event in events]

    def _append_outbox_event(self, event: NewOutboxEvent) -> OutboxEventRecord:
        sequence = (self._sequences.rows.get(event.workflow_run_id) or 0) + 1
        self._put(self._sequences, event.workflow_run_id, sequence)
        record = build_record(
            OutboxEventRecord,
            {
                "id": _new_id(),
                "created_at": self.clock.now(),
                "workflow_run_id": event.workflow_run_id,
                "sequence": sequence,
                "event_type": event.event_type,
                "payload": store_json(event.payload),
                "causation_id": event.causation_id,
                "occurred_at": event.occurred_at,
            },
        )
        record.__dict__["delivered_plugins"] = FlatList()  # not yet shared: stored form of []
        self._put(self._outbox, record.id, record)
        return record

    def _pending_outbox(self) -> Iterator[OutboxEventRecord]:
        """Events neither published nor in the DLQ, by run then sequence."""
        rows = self._outbox.rows
        for key in self._outbox_pending.keys_in_order():
            yield rows[key]

    def _set_event(self, event: OutboxEventRecord, **changes: Any) -> OutboxEventRecord:
        updated = replace_fields(event, changes)
        self._put(self._outbox, event.id, updated)
        return updated

    def _require_event(self, event_id: str) -> OutboxEventRecord:
        event = self._outbox.rows.get(event_id)
        if event is None:
            raise RecordNotFoundError(f"OutboxEvent {event_id} not found")
        return event

    def get_unpublished_outbox_events(self, limit: int = 100) -> list[OutboxEventRecord]:
        """Events neither published nor in the DLQ, ordered by run then sequence."""
        with self._lock:
            pending = self._pending_outbox()
            events = list(islice(pending, limit)) if limit >= 0 else list(pending)[:limit]
            return [_copy(event) for event in events]

    def claim_outbox_events(
        self, limit: int, *, now: datetime, lease_ms: int
    ) -> list[OutboxEventRecord]:
        """Claim up to ``limit`` deliverable events until ``now + lease_ms``.

        Events go by run then sequence; a run stops at its first event that is held by a live
        claim or that does not fit in this call, so each run's events go out in order.
        """
        until = now + timedelta(milliseconds=lease_ms)
        claimed: list[OutboxEventRecord] = []
        blocked: set[str] = set()
        with self._lock:
            for event in self._pending_outbox():
                if len(claimed) >= limit:
                    break
                if event.workflow_run_id in blocked:
                    continue
                if event.claimed_until is not None and event.claimed_until > now:
                    blocked.add(event.workflow_run_id)
                    continue
                claimed.append(self._set_event(event, claimed_until=until))
        return [_copy(event) for event in claimed]

    def release_outbox_claims(self, event_ids: Sequence[str]) -> None:
        """Drop the claims on these events so the next flush can take them at once."""
        with self._lock:
            for event_id in event_ids:
                event = self._outbox.rows.get(event_id)
                if event is not None:
                    self._set_event(event, claimed_until=None)

    def mark_outbox_events_published(self, event_ids: Sequence[str]) -> None:
        """Set ``published_at`` (and release the claim) on each known event."""
        with self._lock:
            now = self.clock.now()
            for event_id in event_ids:
                event = self._outbox.rows.get(event_id)
                if event is not None:
                    self._set_event(event, published_at=now, claimed_until=None)

    def mark_outbox_plugin_delivered(self, event_id: str, plugin_id: str) -> None:
        """Remember that ``plugin_id`` has handled this event (so a retry skips it)."""
        with self._lock:
            event = self._require_event(event_id)
            if plugin_id not in event.delivered_plugins:
                plugins = FlatList([*event.delivered_plugins, plugin_id])
                self._set_event(event, delivered_plugins=plugins)

    def increment_outbox_retry_count(self, event_id: str) -> int:
        """Count one failed delivery, release the claim, and return the new count."""
        with self._lock:
            event = self._require_event(event_id)
            updated = self._set_event(event, retry_count=event.retry_count + 1, claimed_until=None)
            return updated.retry_count

    def move_outbox_event_to_dlq(self, event_id: str) -> None:
        """Park the event in the dead-letter queue."""
        with self._lock:
            event = self._require_event(event_id)
            self._set_event(event, dlq_at=self.clock.now(), claimed_until=None)

    def _dlq(self) -> list[OutboxEventRecord]:
        parked = [e for e in self._outbox.values() if e.dlq_at is not None]
        parked.sort(key=lambda e: (e.dlq_at, e.workflow_run_id, e.sequence))
        return parked

    def replay_dlq_events(self, max_events: int = 100) -> int:
        """Move up to ``max_events`` DLQ events back to the outbox with a zero retry count."""
        with self._lock:
            replayed = self._dlq()[:max_events]
            for event in replayed:
                self._set_event(event, dlq_at=None, retry_count=0, claimed_until=None)
            return len(replayed)

    def get_outbox_events(self, workflow_run_id: str) -> list[OutboxEventRecord]:
        """All outbox events of a run, by sequence (published, pending and DLQ)."""
        with self._lock:
            events = self._outbox.in_order(self._outbox_by_run.keys(workflow_run_id))
        events.sort(key=lambda e: e.sequence)
        return [_copy(event) for event in events]

    def get_dlq_events(self, limit: int = 100) -> list[OutboxEventRecord]:
        """Events in the DLQ, oldest parked first."""
        with self._lock:
            return [_copy(event) for event in self._dlq()[:limit]]

    def delete_published_outbox_events(self, before: datetime) -> int:
        """Delete events published before ``before``; return how many."""
        with self._lock:
            return self._delete_before(self._outbox, self._outbox_published, before)

    # -- idempotency --------------------------------------------------------------------------
    def acquire_idempotency_key(
        self,
        key: str,
        command_type: str,
        *,
        now: datetime,
        stale_in_progress_after_ms: float | None,
    ) -> IdempotencyAcquire:
        """Insert an in-progress marker; or report the stored result, or that it is in progress.

        A marker at least ``stale_in_progress_after_ms`` old is reclaimed (``None``: never).
        """
        with self._lock:
            row = self._idempotency.rows.get((key, command_type))
            if row is not None and row.completed:
                return IdempotencyAcquire(status="replay", result=json_clone(row.result))
            if row is not None and not _is_stale(row, now, stale_in_progress_after_ms):
                return _IN_PROGRESS
            self._put(self._idempotency, (key, command_type), _IdempotencyRow(created_at=now))
            return _ACQUIRED

    def complete_idempotency_key(self, key: str, command_type: str, result: Any) -> None:
        """Store the command's JSON result under the key."""
        with self._lock:
            row = self._idempotency.rows.get((key, command_type))
            created_at = row.created_at if row is not None else self.clock.now()
            completed = _IdempotencyRow(
                created_at=created_at, completed=True, result=json_clone(result)
            )
            self._put(self._idempotency, (key, command_type), completed)

    def release_idempotency_key(self, key: str, command_type: str) -> None:
        """Forget the key (the command failed; a retry may run it again)."""
        with self._lock:
            if self._idempotency.rows.get((key, command_type)) is not None:
                self._remove(self._idempotency, (key, command_type))

    def delete_idempotency_keys(self, before: datetime) -> int:
        """Delete completed keys created before ``before``; return how many."""
        with self._lock:
            return self._delete_before(self._idempotency, self._completed_keys, before)

    def _delete_before(self, table: _Table[Any, Any], index: _Heap, before: datetime) -> int:
        """Delete the rows of ``index`` whose (one-element) sort key is before ``before``."""
        index.compact(table)
        deleted = 0
        while (first := index.first(table)) is not None and first[0][0] < before:
            index.pop_first()
            self._remove(table, first[1])
            deleted += 1
        return deleted

    # -- test helpers -------------------------------------------------------------------------
    def clear(self) -> None:
        """Delete everything (test helper; not transactional)."""
        with self._lock:
            for table in self._tables():
                table.clear()
            for index in self._indexes():
                index.clear()

    def get_all_runs(self) -> list[WorkflowRunRecord]:
        """Every run, in insertion order."""
        with self._lock:
            return [_copy(run) for run in self._runs.values()]

    def get_all_stages(self) -> list[WorkflowStageRecord]:
        """Every stage, in insertion order."""
        with self._lock:
            return [_copy(stage) for stage in self._stages.values()]

    def get_all_logs(self) -> list[WorkflowLogRecord]:
        """Every log line, in insertion order."""
        with self._lock:
            return [_copy(log) for log in self._logs.values()]

    def get_all_outbox_events(self) -> list[OutboxEventRecord]:
        """Every outbox event, in insertion order."""
        with self._lock:
            return [_copy(event) for event in self._outbox.values()]


def _is_stale(row: _IdempotencyRow, now: datetime, stale_after_ms: float | None) -> bool:
    if stale_after_ms is None:
        return False
    return now - row.created_at >= timedelta(milliseconds=stale_after_ms)
