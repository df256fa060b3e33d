"""In-memory adapters of every port, for tests (yours and ours).

They keep the semantics of the SQL adapters, including rollback of a failed transaction and
retry back-off. The shared conformance suites live in :mod:`workflow_engine.testing.conformance`
(they need pytest, so they are not imported here).
"""

from __future__ import annotations

from workflow_engine.testing.ai_logger import InMemoryAICallLogger
from workflow_engine.testing.clock import FakeClock
from workflow_engine.testing.harness import WorkflowTestHarness
from workflow_engine.testing.memory_blobs import InMemoryBlobStore
from workflow_engine.testing.memory_jobs import InMemoryJobQueue
from workflow_engine.testing.memory_persistence import InMemoryWorkflowPersistence
from workflow_engine.testing.sinks import CollectingEventSink, NoopScheduler

__all__ = [
    "CollectingEventSink",
    "FakeClock",
    "InMemoryAICallLogger",
    "InMemoryBlobStore",
    "InMemoryJobQueue",
    "InMemoryWorkflowPersistence",
    "NoopScheduler",
    "WorkflowTestHarness",
]
