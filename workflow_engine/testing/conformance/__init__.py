"""Reusable pytest suites every adapter of a port must pass.

Subclass a suite in a test module and provide its fixtures::

    class TestInMemoryPersistence(PersistenceConformance):
        @pytest.fixture
        def persistence(self, clock: FakeClock) -> Persistence:
            return InMemoryWorkflowPersistence(clock=clock)

Each suite has a ``clock`` fixture returning a fresh :class:`~workflow_engine.testing.FakeClock`;
override it to share one clock with your adapter. The suites call only the port's methods.
"""

from __future__ import annotations

from workflow_engine.testing.conformance.ai_call_logger import AICallLoggerConformance
from workflow_engine.testing.conformance.blob_store import BlobStoreConformance
from workflow_engine.testing.conformance.job_transport import JobTransportConformance
from workflow_engine.testing.conformance.persistence import PersistenceConformance

__all__ = [
    "AICallLoggerConformance",
    "BlobStoreConformance",
    "JobTransportConformance",
    "PersistenceConformance",
]
