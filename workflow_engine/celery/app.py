"""``create_celery_app``: a Celery app wired for the engine, from :class:`EngineSettings`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery

from workflow_engine.celery.publisher import MAINTENANCE_TICK
from workflow_engine.celery.tasks import register_tasks
from workflow_engine.settings import EngineSettings


def create_celery_app(
    settings: EngineSettings | None = None, *, main: str = "workflow_engine"
) -> Celery:
    """A Celery app whose workers run the engine's tasks and whose beat runs the tick.

    Worker defaults suit this workload: JSON only, no result backend, prefetch 1 (stages are
    long and uneven), early acks (a message is only a wake-up: the lease reaper recovers a
    stage whose worker died, and the tick re-sends a wake-up lost before its job was leased),
    and a consumer that survives a Redis restart (:class:`ReconnectingConsumer`).
    """
    settings = settings or EngineSettings.from_env()
    app = Celery(main)
    app.conf.update(
        broker_url=broker_url(settings),
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=False,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        worker_consumer="workflow_engine.celery.consumer:ReconnectingConsumer",
        task_default_queue=settings.queue,
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 1,
        },
        timezone="UTC",
        enable_utc=True,
        beat_schedule=maintenance_schedule(settings),
        workflow_engine_settings=settings,
    )
    register_tasks(app)
    return app


def maintenance_schedule(settings: EngineSettings) -> dict[str, dict[str, Any]]:
    """Beat's schedule: the maintenance tick every ``tick_interval_seconds``."""
    return {
        "workflow-engine-maintenance-tick": {
            "task": MAINTENANCE_TICK,
            "schedule": settings.tick_interval_seconds,
            "options": {"queue": settings.queue, "expires": settings.tick_interval_seconds * 2},
        }
    }


def broker_url(settings: EngineSettings) -> str:
    return settings.broker_url or "filesystem://"


def broker_options(settings: EngineSettings) -> dict[str, Any]:
    """Transport options: the embedded broker's folders, or Redis' visibility and priorities."""
    if settings.uses_embedded_broker:
        folder = Path(settings.broker_dir).resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "control_folder": str(folder / "control"),
            "polling_interval": 0.05,
        }
    if settings.broker_url and settings.broker_url.startswith(("redis://", "rediss://")):
        return {
            "visibility_timeout": settings.visibility_timeout_seconds,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "sep": ":",
        }
    return {}
