"""Settings, the shared client, and ``create_run`` inside Django's ``transaction.atomic``.

Inside an atomic block, the run is written on Django's own database connection, in Django's
transaction: SQLAlchemy borrows the psycopg connection Django holds (it never commits, rolls
back or closes it), and the worker's wake-up is handed to ``transaction.on_commit``. So a
request that rolls back creates no run and sends no message, and one that commits has both.
"""

from __future__ import annotations

import os
import threading
from functools import partial
from typing import Any

import psycopg
import sqlalchemy as sa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from psycopg.types.json import JsonbLoader, JsonLoader
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from workflow_engine.client import WorkflowClient
from workflow_engine.persistence.sql.dialect import same_database
from workflow_engine.settings import ENV_PREFIX, EngineSettings

__all__ = ["create_run", "database_url", "engine_settings", "get_client", "reset_client"]

_lock = threading.Lock()
_client: WorkflowClient | None = None
_bridges: dict[str, Engine] = {}


def _options() -> dict[str, Any]:
    options = getattr(settings, "WORKFLOW_ENGINE", None) or {}
    if not isinstance(options, dict):
        raise ImproperlyConfigured("settings.WORKFLOW_ENGINE must be a dict")
    return {str(key).upper(): value for key, value in options.items()}


def database_alias() -> str:
    """The Django database whose transactions runs join (``WORKFLOW_ENGINE["DATABASE"]``)."""
    return str(_options().get("DATABASE", DEFAULT_DB_ALIAS))


def database_url(alias: str | None = None) -> URL:
    """The SQLAlchemy URL of a Django database (Postgres or SQLite)."""
    conf = connections[alias or database_alias()].settings_dict
    vendor = conf["ENGINE"].rsplit(".", 1)[-1]
    if vendor == "sqlite3":
        return URL.create("sqlite", database=str(conf["NAME"]))
    if vendor != "postgresql":
        raise ImproperlyConfigured(f"the workflow engine needs Postgres or SQLite, not {vendor}")
    return URL.create(
        "postgresql+psycopg",
        username=conf.get("USER") or None,
        password=conf.get("PASSWORD") or None,
        host=conf.get("HOST") or None,
        port=int(conf["PORT"]) if conf.get("PORT") else None,
        database=conf.get("NAME") or None,
    )


def engine_settings() -> EngineSettings:
    """``settings.WORKFLOW_ENGINE``, then the ``WORKFLOW_ENGINE_*`` environment; the database
    defaults to Django's (``WORKFLOW_ENGINE["DATABASE"]``, ``"default"`` unless set).
    """
    values = {key: value for key, value in _options().items() if key != "DATABASE"}
    if "DATABASE_URL" not in values and f"{ENV_PREFIX}DATABASE_URL" not in os.environ:
        values["DATABASE_URL"] = database_url().render_as_string(hide_password=False)
    return EngineSettings.from_mapping(values)


def get_client() -> WorkflowClient:
    """The process's :class:`WorkflowClient`, built from the settings on first use."""
    global _client
    with _lock:
        if _client is None:
            _client = WorkflowClient(engine_settings())
        return _client


def reset_client() -> None:
    """Close the client and forget it (the next :func:`get_client` builds a new one)."""
    global _client
    with _lock:
        client, _client = _client, None
        bridges = list(_bridges.values())
        _bridges.clear()
    if client is not None:
        client.close()
    for bridge in bridges:
        bridge.dispose()


def on_setting_changed(*, setting: str, **_: Any) -> None:
    """``setting_changed`` receiver: settings the client depends on were overridden."""
    if setting in ("WORKFLOW_ENGINE", "DATABASES"):
        reset_client()


def create_run(
    workflow_id: str,
    input: Any,
    *,
    config: dict[str, Any] | None = None,
    priority: int | None = None,
    idempotency_key: str | None = None,
    using: str | None = None,
) -> str:
    """Create a run; return its id. Inside ``transaction.atomic`` it joins the transaction.

    In an atomic block on ``using`` (default ``WORKFLOW_ENGINE["DATABASE"]``), the run is
    written in Django's transaction and the wake-up is sent by ``transaction.on_commit``: a
    rollback leaves neither. That needs the engine's tables in that Postgres database (the
    default). In autocommit mode the run is created and a worker woken at once. Raises what
    :meth:`WorkflowClient.create_run` raises, and ``ImproperlyConfigured`` when the atomic
    block is on a database the engine cannot write through.
    """
    alias = using or database_alias()
    client = get_client()
    options: dict[str, Any] = {
        "config": config,
        "priority": priority,
        "idempotency_key": idempotency_key,
    }
    if not connections[alias].in_atomic_block:
        return client.create_run(workflow_id, input, **options)
    with _bridge(alias, client).connect() as conn:
        return client.create_run(
            workflow_id,
            input,
            connection=conn,
            on_commit=partial(_on_commit, alias),
            **options,
        )


def _on_commit(alias: str, callback: Any) -> None:
    transaction.on_commit(callback, using=alias, robust=True)


def _bridge(alias: str, client: WorkflowClient) -> Engine:
    """A SQLAlchemy engine whose connections are this thread's Django connection."""
    bridge = _bridges.get(alias)
    if bridge is not None:
        return bridge
    url = database_url(alias)
    if url.get_backend_name() != "postgresql":
        raise ImproperlyConfigured(
            "create_run can join transaction.atomic on Postgres only; on SQLite call it outside "
            "the atomic block, or from transaction.on_commit"
        )
    bridge = sa.create_engine(
        url,
        creator=partial(_borrow, alias),
        poolclass=NullPool,
        pool_reset_on_return=None,
        use_native_hstore=False,
    )
    if not same_database(client.context.engine, bridge):
        bridge.dispose()
        raise ImproperlyConfigured(
            f"the engine's database ({client.settings.database_url}) is not Django's "
            f"{alias!r} database: create_run cannot join its transactions. Leave "
            f"WORKFLOW_ENGINE_DATABASE_URL unset to use Django's, or call create_run outside "
            f"transaction.atomic"
        )
    with _lock:
        return _bridges.setdefault(alias, bridge)


def _borrow(alias: str) -> _BorrowedConnection:
    connection = connections[alias]
    connection.ensure_connection()
    raw = connection.connection
    if not isinstance(raw, psycopg.Connection):
        raise ImproperlyConfigured("joining Django's transaction needs the psycopg (3) driver")
    return _BorrowedConnection(raw)


class _BorrowedConnection:
    """Django's psycopg connection, lent to SQLAlchemy's pool: statements run on it, in
    Django's transaction, but commit, rollback and close are Django's business alone.

    Cursors use server-side binding (Django's default cursor binds on the client) and parse
    JSON (Django's connection leaves ``jsonb`` as text for its own fields to decode).
    """

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self._raw = raw

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs.get("name"):
            return self._raw.cursor(*args, **kwargs)
        cursor: psycopg.Cursor[Any] = psycopg.Cursor(self._raw)
        cursor.adapters.register_loader("jsonb", JsonbLoader)
        cursor.adapters.register_loader("json", JsonLoader)
        return cursor

    def commit(self) -> None:
        """Django commits."""

    def rollback(self) -> None:
        """Django rolls back."""

    def close(self) -> None:
        """Django closes."""

    def add_notice_handler(self, handler: Any) -> None:
        """Django's connection keeps its own notice handling."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)
