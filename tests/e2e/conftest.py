"""Fixtures for tests/e2e (shared ones live in tests/conftest.py; the machinery in harness.py).

- ``e2e_database_url``: a fresh Postgres database (``pg_engine``) with the migrations applied.
- ``broker_url``: a database of the shared test Redis held by this test alone, flushed.
- ``cluster``: starts real ``celery worker`` / ``celery beat`` processes on them
  (``cluster.start_workers(n, concurrency, **tunables)``, ``cluster.start_beat()``), builds
  clients (``cluster.client()``), and stops everything at teardown; the processes' log tails
  are printed when the test failed.
- ``workers`` / ``beat`` / ``client``: shortcuts to the cluster's.
- ``db``: reads the test database (the tests count from it).
- ``probe_dir``: a folder shared with the stages of ``tests.e2e.workflows``.

tests/chaos imports these (``from tests.e2e.conftest import ...``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.e2e.harness import Cluster, Db, Process, redis_database
from workflow_engine.client import WorkflowClient
from workflow_engine.persistence.sql import upgrade

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def report_failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(report.failed for report in reports.values()) or "call" not in reports


@pytest.fixture
def e2e_database_url(pg_engine: Engine) -> str:
    """A fresh Postgres database with the schema migrated; dropped after the test."""
    upgrade(pg_engine)
    return pg_engine.url.render_as_string(hide_password=False)


@pytest.fixture
def broker_url(redis_url: str) -> Iterator[str]:
    with redis_database(redis_url) as url:
        yield url


@pytest.fixture
def db(pg_engine: Engine, e2e_database_url: str) -> Db:
    return Db(pg_engine)


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "probe"
    folder.mkdir()
    return folder


def managed_cluster(
    request: pytest.FixtureRequest, *, database_url: str, broker_url: str, workdir: Path
) -> Iterator[Cluster]:
    """A :class:`Cluster` stopped at the end; its logs are printed if the test failed."""
    cluster = Cluster(database_url=database_url, broker_url=broker_url, workdir=workdir)
    try:
        yield cluster
    finally:
        cluster.stop()
        if report_failed(request) and cluster.processes:
            print("\n" + cluster.logs())


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, e2e_database_url: str, broker_url: str, tmp_path: Path
) -> Iterator[Cluster]:
    yield from managed_cluster(
        request, database_url=e2e_database_url, broker_url=broker_url, workdir=tmp_path / "procs"
    )


@pytest.fixture
def workers(cluster: Cluster) -> Callable[..., list[Process]]:
    """``workers(n=1, concurrency=2, **tunables)``: start real celery workers, wait for them."""
    return cluster.start_workers


@pytest.fixture
def beat(cluster: Cluster) -> Callable[..., Process]:
    """``beat(**tunables)``: start a real celery beat."""
    return cluster.start_beat


@pytest.fixture
def client(cluster: Cluster) -> WorkflowClient:
    """A client on the test database and broker (explicit settings, nothing from the env)."""
    return cluster.client()
