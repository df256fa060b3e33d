"""``WorkflowClient``: start, inspect, wait for, cancel and rerun runs from any process.

``create_run`` can also join the caller's own database transaction (a SQLAlchemy
``Connection`` or ``Session``, Flask-SQLAlchemy's ``db.session``): the run exists if and only
if that transaction commits, and the worker's wake-up is published only after the commit.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

from celery import Celery
from pydantic import BaseModel, ConfigDict
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session

from workflow_engine.celery.app import create_celery_app
from workflow_engine.celery.context import EngineContext, build_context
from workflow_engine.errors import RunNotFoundError
from workflow_engine.kernel.commands import RunCancel, RunCreate, RunRerunFrom
from workflow_engine.persistence.sql.dialect import join_transaction, pinned_connection
from workflow_engine.records import WorkflowRunRecord, WorkflowStageRecord
from workflow_engine.settings import EngineSettings
from workflow_engine.status import TERMINAL_RUN_STATUSES, Status
from workflow_engine.waiting import RunWaiter

logger = logging.getLogger("workflow_engine.client")

#: A caller's open transaction that ``create_run`` can join.
CallerTransaction: TypeAlias = "Connection | Session | scoped_session[Any]"

#: Registers a callback to run once the caller's transaction commits (and never otherwise).
OnCommit: TypeAlias = Callable[[Callable[[], None]], object]


class StageView(BaseModel):
    """One stage of a run, as a user sees it."""

    model_config = ConfigDict(frozen=True)

    stage_id: str
    stage_name: str
    execution_group: int
    status: Status
    attempt: int
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    error: str | None

    @classmethod
    def of(cls, stage: WorkflowStageRecord) -> StageView:
        return cls(
            stage_id=stage.stage_id,
            stage_name=stage.stage_name,
            execution_group=stage.execution_group,
            status=stage.status,
            attempt=stage.attempt,
            started_at=stage.started_at,
            completed_at=stage.completed_at,
            duration_ms=stage.duration,
            error=stage.error_message,
        )


class RunView(BaseModel):
    """A run with its stages: status, timings, output and error."""

    model_config = ConfigDict(frozen=True)

    id: str
    workflow_id: str
    status: Status
    input: Any
    output: Any
    error: str | None
    priority: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    total_cost: float
    total_tokens: int
    stages: list[StageView]

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES

    @classmethod
    def of(cls, run: WorkflowRunRecord, stages: list[WorkflowStageRecord]) -> RunView:
        return cls(
            id=run.id,
            workflow_id=run.workflow_id,
            status=run.status,
            input=run.input,
            output=run.output if run.status == Status.COMPLETED else None,
            error=run.error_message,
            priority=run.priority,
            created_at=run.created_at,
            started_at=run.started_at,
            completed_at=run.completed_at,
            duration_ms=run.duration,
            total_cost=run.total_cost,
            total_tokens=run.total_tokens,
            stages=[StageView.of(stage) for stage in stages],
        )


class WorkflowClient:
    """Talks to the engine's database and wakes its workers.

    ``WorkflowClient.from_env()`` reads ``WORKFLOW_ENGINE_*`` settings; pass ``settings`` or
    ``database_url``/``broker_url`` to be explicit, and ``app`` to reuse your Celery app.
    """

    def __init__(
        self,
        settings: EngineSettings | None = None,
        *,
        database_url: str | None = None,
        broker_url: str | None = None,
        app: Celery | None = None,
    ) -> None:
        overrides = {
            key: value
            for key, value in {"database_url": database_url, "broker_url": broker_url}.items()
            if value is not None
        }
        base = settings or EngineSettings.from_env()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self._owns_app = app is None
        self.app = app or create_celery_app(self.settings)
        self._context: EngineContext = build_context(self.settings, self.app)
        self._waiter = RunWaiter(self._context.engine, self._context.persistence)

    @classmethod
    def from_env(cls) -> WorkflowClient:
        """A client configured from ``WORKFLOW_ENGINE_*`` environment variables."""
        return cls()

    @property
    def context(self) -> EngineContext:
        """The kernel and adapters this client uses."""
        return self._context

    def create_run(
        self,
        workflow_id: str,
        input: Any,
        *,
        config: dict[str, Any] | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        connection: CallerTransaction | None = None,
        on_commit: OnCommit | None = None,
    ) -> str:
        """Create a run and wake a worker to start it; return the run id.

        The same ``idempotency_key`` always returns the same run. Raises
        ``WorkflowNotFoundError``, ``InvalidInputError`` or ``InvalidConfigError`` (nothing is
        stored then).

        ``connection``: a SQLAlchemy ``Connection`` or ``Session`` (Flask-SQLAlchemy's
        ``db.session``) on the engine's database. The run, its outbox event and the
        idempotency key are written in that transaction, inside a savepoint (a refused run
        leaves the caller's transaction usable); the wake-up is published once the caller
        commits, and never if it rolls back. ``on_commit`` replaces how "once it commits" is
        detected (Django passes ``transaction.on_commit``).
        """
        command = RunCreate(
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            workflow_id=workflow_id,
            input=input,
            config=config,
            priority=priority,
        )
        if connection is None:
            result = self._context.kernel.dispatch(command)
            self._context.publisher.claim_pending(result.workflow_run_id)
            return result.workflow_run_id
        conn, after_commit = _caller_connection(connection)
        with join_transaction(self._context.engine, conn) as tx:
            savepoint = conn.begin_nested()
            try:
                result = self._context.kernel.dispatch(command)
            except BaseException:
                if savepoint.is_active:
                    savepoint.rollback()
                raise
            savepoint.commit()
        run_id = result.workflow_run_id
        callbacks = [*tx.callbacks, lambda: self._context.publisher.claim_pending(run_id)]
        (on_commit or after_commit)(lambda: _run_callbacks(callbacks))
        return run_id

    def get_run(self, run_id: str) -> RunView:
        """The run and its stages; raise ``RunNotFoundError`` for an unknown id."""
        persistence = self._context.persistence
        with pinned_connection(self._context.engine):  # one pool checkout for both reads
            run = persistence.get_run(run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            return RunView.of(run, persistence.get_stages_by_run(run_id))

    def list_runs(
        self,
        *,
        status: Status | str | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunView]:
        """Runs, newest first (stages included)."""
        persistence = self._context.persistence
        runs = persistence.list_runs(
            status=Status(status) if status is not None else None,
            workflow_id=workflow_id,
            limit=limit,
            offset=offset,
        )
        return [RunView.of(run, persistence.get_stages_by_run(run.id)) for run in runs]

    def cancel(self, run_id: str, reason: str | None = None) -> bool:
        """Cancel a pending or running run; ``False`` if it had already finished."""
        self.get_run(run_id)
        result = self._context.kernel.dispatch(RunCancel(workflow_run_id=run_id, reason=reason))
        return result.cancelled

    def rerun_from(self, run_id: str, stage_id: str) -> list[str]:
        """Run a finished run again from ``stage_id``'s group; return the stage ids reset."""
        result = self._context.kernel.dispatch(
            RunRerunFrom(workflow_run_id=run_id, from_stage_id=stage_id)
        )
        return result.deleted_stages

    def wait(self, run_id: str, timeout: float = 60.0) -> RunView:
        """Block until the run is COMPLETED, FAILED or CANCELLED; raise ``TimeoutError``.

        On Postgres it wakes on the run's ``NOTIFY`` within milliseconds of the end.
        """
        self._waiter.wait(run_id, timeout)
        return self.get_run(run_id)

    def close(self) -> None:
        """Release database connections, and the broker's if the client made its Celery app."""
        self._waiter.close()
        self._context.dispose()
        if self._owns_app:
            self.app.close()


# -- joining the caller's transaction -------------------------------------------------------------
def _run_callbacks(callbacks: Sequence[Callable[[], object]]) -> None:
    """Run every callback; log failures (the caller's transaction has committed already)."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.warning("after-commit callback %r failed", callback, exc_info=True)


def _caller_connection(owner: CallerTransaction) -> tuple[Connection, OnCommit]:
    """The connection of the caller's transaction, and how to run code once it commits."""
    if isinstance(owner, scoped_session):
        owner = owner()
    if isinstance(owner, Session):
        session = owner
        return session.connection(), lambda callback: _after_session_commit(session, callback)
    if isinstance(owner, Connection):
        if owner.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            raise ValueError(
                "the connection is in AUTOCOMMIT mode: there is no transaction to join "
                "(call create_run without connection=)"
            )
        conn = owner
        return conn, lambda callback: _after_connection_commit(conn, callback)
    raise TypeError(
        f"connection must be a SQLAlchemy Connection or Session, not {type(owner).__name__}"
    )


_SESSION_PENDING = "workflow_engine.after_commit"


def _after_session_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` after the session's outermost transaction commits; drop it otherwise."""
    pending: list[Callable[[], None]] | None = session.info.get(_SESSION_PENDING)
    if pending is None:
        pending = session.info[_SESSION_PENDING] = []
        event.listen(session, "after_commit", _session_committed)
        event.listen(session, "after_transaction_end", _session_transaction_ended)
    pending.append(callback)


def _session_committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released; the transaction itself may still roll back
    pending: list[Callable[[], None]] = session.info.get(_SESSION_PENDING, [])
    callbacks, pending[:] = list(pending), []
    _run_callbacks(callbacks)


def _session_transaction_ended(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost transaction ended without a commit we saw
        session.info.get(_SESSION_PENDING, []).clear()


_connection_pending: weakref.WeakKeyDictionary[Connection, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def _after_connection_commit(conn: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` after ``conn``'s transaction commits; drop it if it rolls back."""
    pending = _connection_pending.get(conn)
    if pending is None:
        pending = _connection_pending[conn] = []
        event.listen(conn, "commit", _connection_committing)
        event.listen(conn, "rollback", _connection_rolled_back)
    pending.append(callback)


def _connection_committing(conn: Connection) -> None:
    # SQLAlchemy fires ConnectionEvents.commit just *before* the DBAPI commit, and has no
    # event after it. A wake-up sent now could reach a worker before the run is visible, so
    # commit the DBAPI connection here (SQLAlchemy's own commit then finds nothing to do),
    # and only then publish.
    pending = _connection_pending.get(conn)
    if not pending:
        return
    callbacks, pending[:] = list(pending), []
    dbapi_connection = conn.connection.dbapi_connection
    if dbapi_connection is not None:
        dbapi_connection.commit()
    _run_callbacks(callbacks)


def _connection_rolled_back(conn: Connection) -> None:
    pending = _connection_pending.get(conn)
    if pending:
        pending.clear()
