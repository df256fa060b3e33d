"""Root fixtures: the real Postgres and Redis servers started by ``scripts/services.sh start``.

A missing server is a test failure, never a skip: ``make test`` starts them and exports
WORKFLOW_ENGINE_TEST_DATABASE_URL / WORKFLOW_ENGINE_TEST_REDIS_URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

# Classic Celery fixtures (celery_app, celery_worker, ...), without pytest-celery's Docker ones.
pytest_plugins = ("celery.contrib.pytest",)

DATABASE_URL_ENV = "WORKFLOW_ENGINE_TEST_DATABASE_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kernel-backends",
        default="memory,postgres,sqlite",
        help="Comma-separated adapters the kernel suite runs on: memory, postgres, sqlite.",
    )


REDIS_URL_ENV = "WORKFLOW_ENGINE_TEST_REDIS_URL"


def _required_env(name: str) -> str:
    __tracebackhide__ = True
    value = os.environ.get(name)
    if value:
        return value
    if os.environ.get("CI"):
        pytest.fail(
            f"{name} is not set on CI: .ci/run must start the servers (make test).", pytrace=False
        )
    pytest.fail(
        f"{name} is not set. Start the test servers and export their URLs:\n"
        f'    scripts/services.sh start && eval "$(scripts/services.sh env)"\n'
        f"or just run `make test`.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def database_url() -> str:
    """SQLAlchemy URL of the test Postgres server's maintenance database (``postgres``)."""
    return _required_env(DATABASE_URL_ENV)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test Redis server (db 0)."""
    return _required_env(REDIS_URL_ENV)


@pytest.fixture
def pg_engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh, uniquely named Postgres database, dropped after the test."""
    url = make_url(database_url)
    admin_dsn = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    dbname = f"wfe_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    engine = create_engine(url.set(drivername="postgresql+psycopg", database=dbname))
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a file-based SQLite database in the test's tmp_path."""
    engine = create_engine(f"sqlite:///{tmp_path}/state.db")
    try:
        yield engine
    finally:
        engine.dispose()
