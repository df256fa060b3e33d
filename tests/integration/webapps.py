"""Shared by the client, Flask, Django and CLI integration tests: a migrated Postgres database,
a Redis database of the test's own, a real ``celery worker`` process, and message counting.

Import the fixtures into a test module (``from tests.integration.webapps import ...``).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.e2e.harness import REPO_ROOT, Process, clean_environment, redis_database, wait_until
from workflow_engine.celery.publisher import CLAIM_PENDING
from workflow_engine.persistence.sql import upgrade

APP = "workflow_engine.celery.default_app"
T = TypeVar("T")


@pytest.fixture
def engine_db(pg_engine: Engine) -> str:
    """URL of a fresh Postgres database with the engine's schema; dropped after the test."""
    upgrade(pg_engine)
    return pg_engine.url.render_as_string(hide_password=False)


@pytest.fixture
def broker_url(redis_url: str) -> Iterator[str]:
    """A Redis database held by this test alone, flushed before and after."""
    with redis_database(redis_url) as url:
        yield url


@contextmanager
def fresh_database(server_url: str, *, migrate: bool = True) -> Iterator[str]:
    """A new database on the test server (migrated unless told otherwise); dropped after."""
    url = make_url(server_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    name = f"wfe_web_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = url.set(drivername="postgresql+psycopg", database=name)
    try:
        if migrate:
            engine = create_engine(database_url)
            try:
                upgrade(engine)
            finally:
                engine.dispose()
        yield database_url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@dataclass
class Stack:
    """A migrated database, a Redis database and a celery worker on both."""

    database_url: str
    broker_url: str
    worker: Process

    def engine(self) -> Engine:
        return create_engine(self.database_url)


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One :class:`Stack` for a whole test module (a worker takes seconds to start)."""
    workdir = tmp_path_factory.mktemp("worker")
    with (
        fresh_database(database_url) as db,
        redis_database(redis_url) as broker,
        celery_worker(db, broker, workdir) as worker,
    ):
        yield Stack(db, broker, worker)


def engine_env(
    database_url: str | None,
    broker_url: str,
    *,
    pythonpath: tuple[Path, ...] = (),
    **settings: Any,
) -> dict[str, str]:
    """A clean environment with the engine's settings (no ambient WORKFLOW_ENGINE_*);
    ``database_url=None`` leaves the database to other settings (Django's).
    """
    env = clean_environment()
    if database_url is not None:
        env["WORKFLOW_ENGINE_DATABASE_URL"] = database_url
    env["WORKFLOW_ENGINE_BROKER_URL"] = broker_url
    for key, value in settings.items():
        env[f"WORKFLOW_ENGINE_{key.upper()}"] = str(value)
    env["PYTHONPATH"] = os.pathsep.join(str(path) for path in (REPO_ROOT, *pythonpath))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def celery_worker(
    database_url: str | None,
    broker_url: str,
    workdir: Path,
    *,
    app: str = APP,
    pythonpath: tuple[Path, ...] = (),
    **settings: Any,
) -> Iterator[Process]:
    """A real ``celery worker`` on the database and broker, ready when the block starts.

    It inherits this process's environment (but no ``WORKFLOW_ENGINE_*``/``CELERY_*``
    setting of it); ``pythonpath`` adds folders to import from (a Django project's, say), and
    ``app`` is what ``celery -A`` loads.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "celery", "-A", app, "worker", "-c", "2",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        "-n", f"web-{uuid.uuid4().hex[:6]}@%h",
    ]  # fmt: skip
    env = engine_env(
        database_url, broker_url, pythonpath=pythonpath, tick_interval_seconds=1, **settings
    )
    process = Process("worker", argv, env=env, log=workdir / "worker.log", cwd=workdir)
    try:

        def ready() -> bool:
            if not process.alive():
                raise AssertionError(f"the worker exited early\n{process.tail()}")
            return " ready." in process.log()

        wait_until(ready, timeout=60, what="the celery worker to be ready", diagnose=process.tail)
        yield process
    finally:
        process.stop(timeout=5)


def poll(condition: Callable[[], T], *, timeout: float, what: str) -> T:
    """Poll until ``condition`` returns something truthy; fail at the deadline."""
    return wait_until(condition, timeout=timeout, what=what, interval=0.05)


def queued_tasks(broker_url: str, queue: str) -> list[str]:
    """Names of the tasks waiting in ``queue`` (every priority sub-queue) on Redis."""
    client = redis.Redis.from_url(broker_url)
    try:
        names = []
        for key in client.scan_iter(match=f"{queue}*"):
            if client.type(key) != b"list":
                continue
            for raw in client.lrange(key, 0, -1):
                names.append(json.loads(raw)["headers"]["task"])
        return names
    finally:
        client.close()


def claim_wakeups(broker_url: str, queue: str) -> int:
    """How many run wake-ups (``claim_pending`` messages) wait in ``queue``."""
    return sum(name == CLAIM_PENDING for name in queued_tasks(broker_url, queue))


def count_rows(engine: Engine, table: str) -> int:
    """Rows in one of the engine's tables."""
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
