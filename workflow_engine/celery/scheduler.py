"""``CeleryScheduler``: deferred commands as Celery ETA tasks, for short delays only."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from celery import Celery

from workflow_engine.celery.publisher import DEFAULT_QUEUE, Publisher
from workflow_engine.clock import Clock, SystemClock


class CeleryScheduler:
    """Schedules the next poll of a suspended stage as an ETA task.

    The due time is already stored in the database (``next_poll_at``), so this is only a
    prompt wake-up. Delays longer than ``eta_max_delay`` are left to the maintenance tick,
    because an ETA message waits unacknowledged in a worker and Redis re-delivers it after its
    visibility timeout.
    """

    def __init__(
        self,
        app: Celery,
        *,
        queue: str = DEFAULT_QUEUE,
        clock: Clock | None = None,
        eta_max_delay: timedelta = timedelta(minutes=10),
    ) -> None:
        self.publisher = Publisher(app, queue)
        self.clock: Clock = clock or SystemClock()
        self.eta_max_delay = eta_max_delay

    def schedule(
        self,
        command_type: str,
        payload: Mapping[str, Any],
        run_at: datetime,
        correlation_id: str,
    ) -> None:
        if command_type != "stage.pollSuspended":
            raise ValueError(f"CeleryScheduler cannot schedule {command_type!r}")
        if run_at - self.clock.now() > self.eta_max_delay:
            return
        self.publisher.poll_suspended(payload["workflow_run_id"], payload["stage_id"], run_at)

    def cancel(self, command_type: str, correlation_id: str) -> None:
        """Nothing to do: a poll that finds its stage no longer due does nothing."""
