"""Fixtures for tests/chaos: the e2e ones, plus servers of the test's own to break.

- ``redis_server``: a dedicated redis-server on a free port (flush or restart it freely).
- ``redis_cluster``: a ``Cluster`` on the test database with ``redis_server`` as its broker.
- ``postgres_server``: a throwaway Postgres cluster (initdb + pg_ctl) on a free port.
- ``postgres_cluster``: a ``Cluster`` on a migrated database of ``postgres_server``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import conftest as e2e
from tests.e2e.harness import Cluster, Db, PostgresServer, RedisServer
from workflow_engine.persistence.sql import create_engine, upgrade

# The e2e fixtures and the hook that prints the processes' logs when a test failed.
pytest_runtest_makereport = e2e.pytest_runtest_makereport
e2e_database_url = e2e.e2e_database_url
broker_url = e2e.broker_url
db = e2e.db
probe_dir = e2e.probe_dir
cluster = e2e.cluster
workers = e2e.workers
beat = e2e.beat
client = e2e.client


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_cluster(
    request: pytest.FixtureRequest,
    e2e_database_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> Iterator[Cluster]:
    yield from e2e.managed_cluster(
        request,
        database_url=e2e_database_url,
        broker_url=redis_server.url(0),
        workdir=tmp_path / "procs",
    )


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_cluster(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    broker_url: str,
    tmp_path: Path,
) -> Iterator[Cluster]:
    url = postgres_server.create_database("chaos")
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield from e2e.managed_cluster(
        request, database_url=url, broker_url=broker_url, workdir=tmp_path / "procs"
    )


@pytest.fixture
def postgres_db(postgres_cluster: Cluster) -> Iterator[Db]:
    engine = create_engine(postgres_cluster.database_url)  # pre-ping: survives the restart
    try:
        yield Db(engine)
    finally:
        engine.dispose()
