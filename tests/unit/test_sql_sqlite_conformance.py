"""The port conformance suites against the SQL adapters on SQLite (a file per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.sql_databases import SqliteTemplate
from workflow_engine.persistence.sql import SqlBlobStore, SqlJobQueue, SqlPersistence
from workflow_engine.ports import BlobStore, JobTransport, Persistence
from workflow_engine.testing import FakeClock
from workflow_engine.testing.conformance import (
    BlobStoreConformance,
    JobTransportConformance,
    PersistenceConformance,
)


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture
def migrated_sqlite(sqlite_template: SqliteTemplate, tmp_path: Path) -> Iterator[Engine]:
    with sqlite_template.clone(tmp_path) as engine:
        yield engine


class TestSqlitePersistence(PersistenceConformance):
    @pytest.fixture
    def persistence(self, migrated_sqlite: Engine, clock: FakeClock) -> Persistence:
        return SqlPersistence(migrated_sqlite, clock=clock)


class TestSqliteJobQueue(JobTransportConformance):
    @pytest.fixture
    def persistence(self, migrated_sqlite: Engine, clock: FakeClock) -> Persistence:
        return SqlPersistence(migrated_sqlite, clock=clock)

    @pytest.fixture
    def job_transport(self, migrated_sqlite: Engine, clock: FakeClock) -> JobTransport:
        return SqlJobQueue(migrated_sqlite, clock=clock, worker_id="worker-test")


class TestSqliteBlobStore(BlobStoreConformance):
    @pytest.fixture
    def blob_store(self, migrated_sqlite: Engine) -> BlobStore:
        return SqlBlobStore(migrated_sqlite)
