"""What every handler works with: the ports, the options, and transactional scopes."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from workflow_engine.ai.logger import AICallLogger
from workflow_engine.ai.models import ModelRegistry
from workflow_engine.ai.providers import ProviderCache
from workflow_engine.clock import Clock
from workflow_engine.definitions.workflow import Workflow
from workflow_engine.errors import (
    IdempotencyInProgressError,
    InvalidInputError,
    PayloadTooLargeError,
    WorkflowNotFoundError,
)
from workflow_engine.kernel.events import make_event
from workflow_engine.ports import (
    BlobStore,
    EventSink,
    JobTransport,
    Persistence,
    Registry,
    Scheduler,
)
from workflow_engine.records import LockedRun, NewOutboxEvent

T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)

logger = logging.getLogger("workflow_engine.kernel")


@dataclass(frozen=True)
class KernelOptions:
    """Tunables of one kernel (see :func:`workflow_engine.kernel.create_kernel`)."""

    max_payload_bytes: int = 10 * 1024 * 1024
    inline_output_max_bytes: int = 64 * 1024
    idempotency_stale_in_progress_ms: float | None = 600_000
    outbox_claim_ms: int = 60_000
    default_max_attempts: int = 3


@dataclass
class Idempotency:
    """The idempotency key of one dispatch: whether it holds the key yet (acquired in its
    first transaction, and committed), and whether its result was stored (and committed)."""

    key: str
    command_type: str
    acquired: bool = False
    completed: bool = False


class Replayed(Exception):
    """The key already holds a result: the dispatch returns it and writes nothing."""

    def __init__(self, result: Any) -> None:
        super().__init__("replayed")
        self.result = result


class StartedStages:
    """What the commits that started a stage for their own worker left of its run, by the
    stage's lease token (``JobExecute.lease_next_to``), for that worker's ``job.execute`` to
    run the stage from instead of reading the run and its stages back.

    The commit checked the run under its lock, so the stage may start at once. A hand-off
    older than :attr:`MAX_AGE` is not used: its worker was held up (a pause, a long GC) and
    the database has the last word on whether the stage is still its own to run.
    """

    MAX_AGE = timedelta(seconds=1)
    CAPACITY = 64  # a process runs few stages at once; more means some are never taken

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_token: dict[str, tuple[datetime, LockedRun]] = {}

    def put(self, lease_token: str, at: datetime, snapshot: LockedRun) -> None:
        """Keep ``snapshot`` for ``lease_token``; drop hand-offs never taken (a host that
        stopped, a job that failed first) once stale, and the oldest beyond the capacity."""
        with self._lock:
            by_token = self._by_token
            while by_token:
                oldest = next(iter(by_token))
                if len(by_token) < self.CAPACITY and at - by_token[oldest][0] <= self.MAX_AGE:
                    break
                del by_token[oldest]
            by_token[lease_token] = (at, snapshot)

    def take(self, lease_token: str, now: datetime) -> LockedRun | None:
        """The hand-off for ``lease_token`` (removed), unless there is none or it is stale."""
        with self._lock:
            entry = self._by_token.pop(lease_token, None)
        if entry is None or now - entry[0] > self.MAX_AGE:
            return None
        return entry[1]


@dataclass(frozen=True)
class Runtime:
    """The kernel's ports and options, shared by every handler.

    ``ai_call_logger`` (optional) is where ``ctx.ai`` logs and where run totals read AI cost;
    ``ai_providers`` finds (and caches) each model's provider, only when stage code calls one;
    ``started_stages`` holds the hand-offs of :class:`StartedStages`.
    """

    persistence: Persistence
    blob_store: BlobStore
    job_transport: JobTransport
    event_sink: EventSink
    scheduler: Scheduler | None
    clock: Clock
    registry: Registry
    options: KernelOptions
    ai_call_logger: AICallLogger | None = None
    ai_models: ModelRegistry | None = None
    ai_providers: ProviderCache = field(default_factory=ProviderCache)
    started_stages: StartedStages = field(default_factory=StartedStages)

    def now(self) -> datetime:
        return self.clock.now()

    def workflow(self, workflow_id: str) -> Workflow[Any, Any]:
        workflow = self.registry.get_workflow(workflow_id)
        if workflow is None:
            raise WorkflowNotFoundError(workflow_id)
        return workflow

    def transaction(
        self,
        fn: Callable[[Scope], T],
        *,
        causation_id: str | None = None,
        idempotency: Idempotency | None = None,
    ) -> T:
        """Run ``fn`` in one transaction; its events go to the outbox in that transaction.

        With ``idempotency``, the key is acquired first, in the same transaction, unless the
        dispatch already holds it: a stored result raises :class:`Replayed`, a key in progress
        ``IdempotencyInProgressError``, and nothing is written. ``fn`` stores its result under
        the key with :meth:`Scope.finish`.
        """

        def body(tx: Persistence) -> T:
            scope = Scope(self, tx, causation_id or new_causation_id(), idempotency)
            if idempotency is not None and not idempotency.acquired:
                scope.acquire_idempotency(idempotency)
            result = fn(scope)
            scope.write_events()
            return result

        return self.persistence.with_transaction(body)

    def check_payload(self, what: str, value: Any) -> int:
        """Size of ``value`` as JSON; raise ``PayloadTooLargeError`` over the limit and
        ``InvalidInputError`` for a value JSON cannot carry (NaN, infinities, objects).
        """
        try:
            size = json_size(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
        if size > self.options.max_payload_bytes:
            raise PayloadTooLargeError(what, size, self.options.max_payload_bytes)
        return size

    def schedule_after_commit(
        self, tx: Persistence, command_type: str, payload: dict[str, Any], run_at: datetime
    ) -> None:
        """Ask the scheduler for a deferred command once ``tx`` commits (best effort)."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        correlation_id = ":".join(str(value) for value in payload.values())

        def schedule() -> None:
            try:
                scheduler.schedule(command_type, payload, run_at, correlation_id)
            except Exception:  # the maintenance tick is the safety net
                logger.warning("could not schedule %s %s", command_type, payload, exc_info=True)

        tx.after_commit(schedule)


@dataclass
class Scope:
    """One transaction of one handler: the bound persistence and the events it produced."""

    runtime: Runtime
    tx: Persistence
    causation_id: str
    idempotency: Idempotency | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def emit(self, event_type: str, workflow_run_id: str, **fields: Any) -> None:
        self.events.append(make_event(event_type, workflow_run_id, self.runtime.now(), **fields))

    def extend(self, events: list[dict[str, Any]]) -> None:
        self.events.extend(events)

    def write_events(self) -> None:
        if not self.events:
            return
        rows = [
            NewOutboxEvent(
                workflow_run_id=event["workflow_run_id"],
                event_type=event["type"],
                payload=event,
                causation_id=self.causation_id,
                occurred_at=datetime.fromisoformat(event["timestamp"]),
            )
            for event in self.events
        ]
        self.tx.append_outbox_events(rows)
        self.events = []

    def acquire_idempotency(self, idempotency: Idempotency) -> None:
        """Take the key in this transaction (see :meth:`Runtime.transaction`)."""
        runtime = self.runtime
        acquired = self.tx.acquire_idempotency_key(
            idempotency.key,
            idempotency.command_type,
            now=runtime.now(),
            stale_in_progress_after_ms=runtime.options.idempotency_stale_in_progress_ms,
        )
        if acquired.status == "replay":
            raise Replayed(acquired.result)
        if acquired.status == "in_progress":
            raise IdempotencyInProgressError(idempotency.key, idempotency.command_type)
        self.tx.after_commit(lambda: setattr(idempotency, "acquired", True))

    def finish(self, result: R) -> R:
        """Store ``result`` under the dispatch's idempotency key (if any) in this transaction,
        so a replay returns it; return it."""
        idempotency = self.idempotency
        if idempotency is None:
            return result
        stored = result.model_dump(mode="json")
        self.tx.complete_idempotency_key(idempotency.key, idempotency.command_type, stored)
        # Completed only once the transaction commits: a failure after the commit (even in
        # an after-commit callback) must not release a key whose command took effect.
        self.tx.after_commit(lambda: setattr(idempotency, "completed", True))
        return result


# what json.dumps(separators=(",", ":"), ensure_ascii=False, allow_nan=False) uses, made once
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# Causation ids need to be unique, not unguessable: a private generator (seeded from os.urandom,
# and again in a forked child) formats them like uuid.uuid4().hex, several times faster.
_causation_ids = random.Random()
os.register_at_fork(after_in_child=_causation_ids.seed)
_UUID4_KEEP = ~((0xF << 76) | (0xC << 60)) & ((1 << 128) - 1)
_UUID4_SET = (0x4 << 76) | (0x8 << 60)  # version 4, RFC 4122 variant


def new_causation_id() -> str:
    """A fresh id for the events of one command."""
    return "%032x" % (_causation_ids.getrandbits(128) & _UUID4_KEEP | _UUID4_SET)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON."""
    return len(_COMPACT_JSON.encode(value).encode())
