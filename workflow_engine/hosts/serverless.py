"""The serverless host: no loops and no timers; something else calls it (cron, a queue, Celery).

``handle_job`` runs one job, ``process_available_jobs`` drains a few, ``run_maintenance_tick``
does the periodic work. The Celery tasks and the long-running worker host are built on these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from workflow_engine.hosts.support import (
    HostConfig,
    JobOutcome,
    LeaseKeeper,
    TickResult,
    execute_job,
    job_from_message,
    run_maintenance_tick,
)
from workflow_engine.kernel import Kernel
from workflow_engine.ports import JobTransport
from workflow_engine.records import JobRecord


class ProcessResult(BaseModel):
    """Counts of one ``process_available_jobs`` call (suspended counts as succeeded)."""

    model_config = ConfigDict(frozen=True)

    processed: int
    succeeded: int
    failed: int


class ServerlessHost:
    """Drives a kernel on demand. Create one with :func:`create_serverless_host`."""

    def __init__(
        self, *, kernel: Kernel, job_transport: JobTransport, worker_id: str, config: HostConfig
    ) -> None:
        self.kernel = kernel
        self.job_transport = job_transport
        self.worker_id = worker_id
        self.config = config
        self.lease_keeper = LeaseKeeper(job_transport, config.job_heartbeat_interval_ms)

    def handle_job(self, job: JobRecord | Mapping[str, Any]) -> JobOutcome:
        """Execute one job already leased from the job transport (a row or a message)."""
        record = (
            job if isinstance(job, JobRecord) else job_from_message(job, self.kernel.runtime.now())
        )
        return execute_job(
            self.kernel, self.job_transport, record, self.lease_keeper, deduplicate=True
        )

    def process_available_jobs(self, max_jobs: int = 1) -> ProcessResult:
        """Dequeue and execute up to ``max_jobs`` jobs."""
        processed = succeeded = 0
        while processed < max_jobs:
            job = self.job_transport.dequeue(self.worker_id)
            if job is None:
                break
            outcome = execute_job(self.kernel, self.job_transport, job, self.lease_keeper)
            processed += 1
            succeeded += outcome.outcome != "failed"
        return ProcessResult(processed=processed, succeeded=succeeded, failed=processed - succeeded)

    def run_maintenance_tick(self) -> TickResult:
        """Claim, poll, reap, flush and expire: one round of periodic work."""
        return run_maintenance_tick(self.kernel, self.worker_id, self.config)


def create_serverless_host(
    *, kernel: Kernel, job_transport: JobTransport, worker_id: str, **tunables: Any
) -> ServerlessHost:
    """Create a serverless host. ``tunables`` are :class:`HostConfig` fields, e.g.
    ``stale_lease_threshold_ms``, ``max_claims_per_tick``, ``job_heartbeat_interval_ms``.
    """
    return ServerlessHost(
        kernel=kernel,
        job_transport=job_transport,
        worker_id=worker_id,
        config=HostConfig(**tunables),
    )
