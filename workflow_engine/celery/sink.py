"""``CeleryEventSink``: each flushed outbox event becomes a Celery task of yours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery


class CeleryEventSink:
    """Sends every event as ``task_name(event)`` to ``queue``; the task is yours to define.

    Use it to fan events out to other services. Delivery is at least once: make the task
    idempotent (``workflow_run_id``, ``type`` and ``timestamp`` identify an event).
    """

    def __init__(self, app: Celery, task_name: str, queue: str | None = None) -> None:
        self.app = app
        self.task_name = task_name
        self.queue = queue

    def emit(self, event: Mapping[str, Any]) -> None:
        self.app.send_task(self.task_name, args=[dict(event)], queue=self.queue)
