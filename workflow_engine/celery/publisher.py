"""Publishing wake-up messages. A message carries a job id only; the row is the truth."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import Celery

logger = logging.getLogger("workflow_engine.celery")

DEFAULT_QUEUE = "workflow_engine"
EXECUTE_JOB = "workflow_engine.execute_job"
CLAIM_PENDING = "workflow_engine.claim_pending"
POLL_SUSPENDED = "workflow_engine.poll_suspended"
MAINTENANCE_TICK = "workflow_engine.maintenance_tick"
DISPATCH_COMMAND = "workflow_engine.dispatch_command"

# Runs have priorities 0..10 (higher first); Celery on Redis takes 0..9 (lower first).
MAX_CELERY_PRIORITY = 9


def celery_priority(run_priority: int) -> int:
    """Map a run priority (default 5, higher runs first) onto Celery's 0 (first) .. 9."""
    return min(MAX_CELERY_PRIORITY, max(0, MAX_CELERY_PRIORITY - run_priority))


class Publisher:
    """Sends the engine's tasks. Failures are logged, never raised: a lost wake-up is found
    and re-sent by the maintenance tick, and the state change it follows has committed.
    """

    def __init__(self, app: Celery, default_queue: str) -> None:
        self.app = app
        self.default_queue = default_queue

    def execute_job(
        self, job_id: str, *, queue: str | None, priority: int, eta: datetime | None = None
    ) -> bool:
        return self._send(
            EXECUTE_JOB,
            args=[job_id],
            queue=queue or self.default_queue,
            priority=celery_priority(priority),
            eta=eta,
        )

    def claim_pending(self, workflow_run_id: str | None = None) -> bool:
        """Wake a worker to claim run ``workflow_run_id`` (``None``: any pending runs)."""
        kwargs = {} if workflow_run_id is None else {"workflow_run_id": workflow_run_id}
        return self._send(CLAIM_PENDING, kwargs=kwargs, queue=self.default_queue)

    def poll_suspended(self, workflow_run_id: str, stage_id: str, eta: datetime) -> bool:
        return self._send(
            POLL_SUSPENDED,
            kwargs={"workflow_run_id": workflow_run_id, "stage_id": stage_id},
            queue=self.default_queue,
            eta=eta,
        )

    def _send(self, name: str, **options: Any) -> bool:
        # Ids only: their plain repr spares Celery's safe-repr of them for the message headers.
        options["argsrepr"] = repr(options.get("args") or ())
        options["kwargsrepr"] = repr(options.get("kwargs") or {})
        try:
            self.app.send_task(name, **options)
        except Exception:
            logger.warning("could not publish %s %s", name, options.get("args"), exc_info=True)
            return False
        return True
