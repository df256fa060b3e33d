"""Example workflows, registered by default (``WORKFLOW_ENGINE_REGISTRY``).

- ``document-processing``: several stages, a parallel group, an async-batch stage.
- ``noop-chain``: three no-op stages, used by the benchmarks.
"""

from workflow_engine.definitions.registry import WorkflowRegistry
from workflow_engine.examples.document_processing import document_processing
from workflow_engine.examples.noop import noop_chain

registry = WorkflowRegistry([document_processing, noop_chain])

__all__ = ["document_processing", "noop_chain", "registry"]
