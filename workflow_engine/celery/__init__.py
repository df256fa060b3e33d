"""Running the engine on Celery: the transport, scheduler, event sink, tasks and app factory.

``celery -A celery_app worker`` and ``celery -A celery_app beat`` (at the repository root) use
:func:`create_celery_app` with settings from the environment.
"""

from workflow_engine.celery.app import create_celery_app, maintenance_schedule
from workflow_engine.celery.context import EngineContext, build_context
from workflow_engine.celery.publisher import Publisher
from workflow_engine.celery.scheduler import CeleryScheduler
from workflow_engine.celery.sink import CeleryEventSink
from workflow_engine.celery.tasks import engine_context
from workflow_engine.celery.transport import CeleryJobTransport

__all__ = [
    "CeleryEventSink",
    "CeleryJobTransport",
    "CeleryScheduler",
    "EngineContext",
    "Publisher",
    "build_context",
    "create_celery_app",
    "engine_context",
    "maintenance_schedule",
]
