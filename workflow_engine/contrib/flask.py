"""The Flask extension: ``WorkflowEngine(app)`` or ``engine.init_app(app)``.

Settings come from ``app.config`` keys with the ``WORKFLOW_ENGINE_`` prefix (the same names as
the environment variables; unset ones fall back to the environment). Without
``WORKFLOW_ENGINE_DATABASE_URL`` anywhere, the engine uses the app's
``SQLALCHEMY_DATABASE_URI``, so its tables live next to the app's and a run can join the
request's transaction::

    db = SQLAlchemy(app)
    engine = WorkflowEngine(app, db=db)

    @app.post("/orders")
    def place_order():
        order = Order(...)
        db.session.add(order)
        run_id = engine.create_run("fulfil-order", {"order": order.number})  # joins db.session
        db.session.commit()        # the run exists now, and a worker is woken up
        return {"run": run_id}

A request that rolls back (or never commits) leaves no run and sends no message.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from workflow_engine.client import CallerTransaction, OnCommit, RunView, WorkflowClient
from workflow_engine.settings import ENV_PREFIX, EngineSettings

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

__all__ = ["EXTENSION_KEY", "WorkflowEngine", "settings_from_config"]

#: Where the extension keeps its per-app state: ``app.extensions["workflow_engine"]``.
EXTENSION_KEY = "workflow_engine"


def settings_from_config(config: dict[str, Any] | Any) -> EngineSettings:
    """Engine settings from a Flask config: ``WORKFLOW_ENGINE_*`` keys, then the environment,
    then ``SQLALCHEMY_DATABASE_URI`` for the database, then the defaults.
    """
    values = {key: value for key, value in config.items() if key.startswith(ENV_PREFIX)}
    database_key = f"{ENV_PREFIX}DATABASE_URL"
    app_database = config.get("SQLALCHEMY_DATABASE_URI")
    if database_key not in values and database_key not in os.environ and app_database:
        values[database_key] = str(app_database)
    return EngineSettings.from_mapping(values)


class _AppState:
    """One app's settings and its client (made on first use)."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._client: WorkflowClient | None = None

    @property
    def client(self) -> WorkflowClient:
        if self._client is None:
            self._client = WorkflowClient(self.settings)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class WorkflowEngine:
    """Flask extension giving each app a :class:`WorkflowClient` built from ``app.config``.

    ``db``: a Flask-SQLAlchemy instance; :meth:`create_run` then joins ``db.session`` (the
    request's transaction) unless told otherwise. The client is at ``engine.client`` (for the
    current app) and the per-app state at ``app.extensions["workflow_engine"]``.
    """

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy | None = None) -> None:
        self.db = db
        self._app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the app's settings and register the extension on it."""
        app.extensions[EXTENSION_KEY] = _AppState(settings_from_config(app.config))

    def _state(self) -> _AppState:
        app = self._app if self._app is not None else current_app
        state = app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, _AppState):
            raise RuntimeError("WorkflowEngine.init_app(app) was not called for this app")
        return state

    @property
    def settings(self) -> EngineSettings:
        """The engine settings of the current app."""
        return self._state().settings

    @property
    def client(self) -> WorkflowClient:
        """The current app's client (created on first use, shared by its requests)."""
        return self._state().client

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
        join_session: bool = True,
    ) -> str:
        """Create a run; return its id. See :meth:`WorkflowClient.create_run`.

        With ``db`` given to the extension, the run joins ``db.session``: it exists once the
        session commits, and the wake-up is sent then. ``join_session=False`` (or no ``db``)
        creates it at once in its own transaction; ``connection`` joins another one.
        """
        if connection is None and join_session and self.db is not None:
            connection = self.db.session
        return self.client.create_run(
            workflow_id,
            input,
            config=config,
            priority=priority,
            idempotency_key=idempotency_key,
            connection=connection,
            on_commit=on_commit,
        )

    def get_run(self, run_id: str) -> RunView:
        """The run with its stages; raises ``RunNotFoundError``."""
        return self.client.get_run(run_id)

    def cancel(self, run_id: str, reason: str | None = None) -> bool:
        """Cancel a pending or running run; ``False`` once it has finished."""
        return self.client.cancel(run_id, reason)

    def close(self) -> None:
        """Release the current app's database connections (a new client is made if needed)."""
        self._state().close()
