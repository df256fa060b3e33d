"""The port conformance suites against the SQL adapters on a real Postgres.

The migrations make one database per module; each test starts with it emptied.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from workflow_engine.persistence.sql import SqlBlobStore, SqlJobQueue, SqlPersistence
from workflow_engine.ports import BlobStore, JobTransport, Persistence
from workflow_engine.testing import FakeClock
from workflow_engine.testing.conformance import (
    BlobStoreConformance,
    JobTransportConformance,
    PersistenceConformance,
)

pytestmark = pytest.mark.integration


class TestPostgresPersistence(PersistenceConformance):
    @pytest.fixture
    def persistence(self, migrated_pg: Engine, clock: FakeClock) -> Persistence:
        return SqlPersistence(migrated_pg, clock=clock)


class TestPostgresJobQueue(JobTransportConformance):
    @pytest.fixture
    def persistence(self, migrated_pg: Engine, clock: FakeClock) -> Persistence:
        return SqlPersistence(migrated_pg, clock=clock)

    @pytest.fixture
    def job_transport(self, migrated_pg: Engine, clock: FakeClock) -> JobTransport:
        return SqlJobQueue(migrated_pg, clock=clock, worker_id="worker-test")


class TestPostgresBlobStore(BlobStoreConformance):
    @pytest.fixture
    def blob_store(self, migrated_pg: Engine) -> BlobStore:
        return SqlBlobStore(migrated_pg)
