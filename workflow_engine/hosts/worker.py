"""The long-running worker host, for deployments without Celery.

One thread runs the maintenance tick every ``orchestration_interval_ms`` (ticks never overlap);
another dequeues and executes jobs one at a time (the commit that settles a stage starts the
run's next stage for this worker, which runs it at once); when the queue is empty it claims
pending runs, and sleeps ``job_poll_interval_ms`` only when there was nothing to claim either.
SIGTERM and SIGINT stop it gracefully: the job in flight finishes first.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from pydantic import BaseModel, ConfigDict

from workflow_engine.hosts.support import (
    HostConfig,
    LeaseKeeper,
    execute_job,
    run_maintenance_tick,
)
from workflow_engine.kernel import Kernel
from workflow_engine.kernel.commands import RunClaimPending
from workflow_engine.ports import JobTransport
from workflow_engine.records import JobRecord

logger = logging.getLogger("workflow_engine.hosts")

ERROR_BACKOFF_SECONDS = 5.0


class WorkerStats(BaseModel):
    """A snapshot of a worker host."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    jobs_processed: int
    orchestration_ticks: int
    is_running: bool
    uptime_ms: int


class WorkerHost:
    """Runs jobs and ticks in background threads. Create one with :func:`create_worker_host`."""

    def __init__(
        self,
        *,
        kernel: Kernel,
        job_transport: JobTransport,
        worker_id: str,
        config: HostConfig,
        orchestration_interval_ms: int,
        job_poll_interval_ms: int,
    ) -> None:
        self.kernel = kernel
        self.job_transport = job_transport
        self.worker_id = worker_id
        self.config = config
        self._tick_interval = orchestration_interval_ms / 1000
        self._poll_interval = job_poll_interval_ms / 1000
        self._lease_keeper = LeaseKeeper(job_transport, config.job_heartbeat_interval_ms)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._started_at: float | None = None
        self._jobs_processed = 0
        self._ticks = 0
        self._previous_handlers: dict[int, Any] = {}

    def start(self) -> None:
        """Start the tick and job threads (a second call does nothing)."""
        with self._lock:
            if self._started_at is not None:
                return
            self._stopping.clear()
            self._started_at = time.monotonic()
            self._threads = [
                threading.Thread(target=self._tick_loop, name="wf-tick", daemon=True),
                threading.Thread(target=self._job_loop, name="wf-jobs", daemon=True),
            ]
            for thread in self._threads:
                thread.start()
            self._install_signal_handlers()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking work and wait (up to ``timeout`` s) for the job in flight to finish."""
        with self._lock:
            if self._started_at is None:
                return
            self._stopping.set()
            threads, self._threads = self._threads, []
            self._started_at = None
            self._restore_signal_handlers()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def wait(self) -> None:
        """Block until the host is stopped (for a worker process's main thread)."""
        while self.is_running:
            self._stopping.wait(0.5)

    @property
    def is_running(self) -> bool:
        return self._started_at is not None

    def get_stats(self) -> WorkerStats:
        started = self._started_at
        return WorkerStats(
            worker_id=self.worker_id,
            jobs_processed=self._jobs_processed,
            orchestration_ticks=self._ticks,
            is_running=started is not None,
            uptime_ms=int((time.monotonic() - started) * 1000) if started is not None else 0,
        )

    def _tick_loop(self) -> None:
        while not self._stopping.is_set():
            self._ticks += 1
            try:
                run_maintenance_tick(self.kernel, self.worker_id, self.config)
            except Exception:  # each step already logs; this is a last resort
                logger.exception("maintenance tick failed")
            self._stopping.wait(self._tick_interval)

    def _job_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.job_transport.dequeue(self.worker_id)
                if job is None:
                    # Idle: start new runs now rather than at the next tick.
                    if not self._claim_pending():
                        self._stopping.wait(self._poll_interval)
                    continue
                self._run_jobs(job)
            except Exception:
                logger.exception("job loop error; pausing before the next job")
                self._stopping.wait(ERROR_BACKOFF_SECONDS)

    def _run_jobs(self, job: JobRecord, *, started: bool = False) -> None:
        """Run ``job`` (``started``: its stage was started when it was leased), then each
        next stage its commit started for this worker; once stopping, the job in hand
        finishes without starting another."""
        next_job: JobRecord | None = job
        while next_job is not None:
            lease_next_to = None if self._stopping.is_set() else self.worker_id
            outcome = execute_job(
                self.kernel,
                self.job_transport,
                next_job,
                self._lease_keeper,
                lease_next_to=lease_next_to,
                stage_started=started,
            )
            self._jobs_processed += 1
            next_job, started = outcome.next_job, True

    def _claim_pending(self) -> bool:
        """Claim pending runs and run the first one's first stage, started for this worker
        by its claim; False when there was nothing to claim."""
        command = RunClaimPending(
            worker_id=self.worker_id,
            max_claims=self.config.max_claims_per_tick,
            lease_first_job=True,
        )
        result = self.kernel.dispatch(command)
        if result.next_job is not None:
            self._run_jobs(result.next_job, started=True)
        return bool(result.claimed)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled on the main thread
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # (taken first: a signal handler may run this while stop() is in the middle of it)
        handlers, self._previous_handlers = self._previous_handlers, {}
        for signum, handler in handlers.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.info("signal %s: stopping after the job in flight", signum)
        # Restored here, on the main thread (``stop`` runs on another): a second signal then
        # does what it did before the host started, instead of reaching a stopped host.
        self._restore_signal_handlers()
        threading.Thread(target=self.stop, name="wf-stop", daemon=True).start()


def create_worker_host(
    *,
    kernel: Kernel,
    job_transport: JobTransport,
    worker_id: str,
    orchestration_interval_ms: int = 10_000,
    job_poll_interval_ms: int = 1_000,
    **tunables: Any,
) -> WorkerHost:
    """Create a long-running host; ``tunables`` are :class:`HostConfig` fields."""
    if orchestration_interval_ms <= 0 or job_poll_interval_ms <= 0:
        raise ValueError("orchestration_interval_ms and job_poll_interval_ms must be positive")
    return WorkerHost(
        kernel=kernel,
        job_transport=job_transport,
        worker_id=worker_id,
        config=HostConfig(**tunables),
        orchestration_interval_ms=orchestration_interval_ms,
        job_poll_interval_ms=job_poll_interval_ms,
    )
