"""The shared port conformance suites, run against the in-memory adapters."""

from __future__ import annotations

import pytest

from workflow_engine.ports import BlobStore, JobTransport, Persistence
from workflow_engine.testing import (
    FakeClock,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
)
from workflow_engine.testing.conformance import (
    BlobStoreConformance,
    JobTransportConformance,
    PersistenceConformance,
)


class TestInMemoryPersistence(PersistenceConformance):
    @pytest.fixture
    def persistence(self, clock: FakeClock) -> Persistence:
        return InMemoryWorkflowPersistence(clock=clock)


class TestInMemoryJobQueue(JobTransportConformance):
    @pytest.fixture
    def persistence(self, clock: FakeClock) -> Persistence:
        return InMemoryWorkflowPersistence(clock=clock)

    @pytest.fixture
    def job_transport(self, clock: FakeClock) -> JobTransport:
        return InMemoryJobQueue("worker-test", clock=clock)


class TestInMemoryBlobStore(BlobStoreConformance):
    @pytest.fixture
    def blob_store(self) -> BlobStore:
        return InMemoryBlobStore()
