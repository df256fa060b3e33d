"""Everything a worker process needs, built once per process from the settings."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from celery import Celery
from sqlalchemy.engine import Engine

from workflow_engine.celery.publisher import Publisher
from workflow_engine.celery.scheduler import CeleryScheduler
from workflow_engine.celery.transport import CeleryJobTransport
from workflow_engine.clock import SystemClock
from workflow_engine.hosts.support import HostConfig, LeaseKeeper
from workflow_engine.kernel import Kernel
from workflow_engine.persistence.sql import SqlPersistence
from workflow_engine.settings import EngineSettings
from workflow_engine.wiring import build_kernel, database_engine, host_config


@dataclass
class EngineContext:
    """The kernel and adapters of one process."""

    settings: EngineSettings
    engine: Engine
    persistence: SqlPersistence
    transport: CeleryJobTransport
    kernel: Kernel
    host_config: HostConfig
    lease_keeper: LeaseKeeper
    worker_id: str

    @property
    def publisher(self) -> Publisher:
        """Sends the engine's wake-up tasks (the transport's publisher)."""
        return self.transport.publisher

    def dispose(self) -> None:
        self.engine.dispose()


def build_context(settings: EngineSettings, app: Celery) -> EngineContext:
    """Wire the SQL adapters, the Celery transport and scheduler, and the kernel."""
    clock = SystemClock()
    engine = database_engine(settings)
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    eta_max_delay = timedelta(seconds=settings.eta_max_delay_seconds)
    transport = CeleryJobTransport(
        engine,
        app,
        queue=settings.queue,
        clock=clock,
        worker_id=worker_id,
        default_max_attempts=settings.max_attempts,
        eta_max_delay=eta_max_delay,
    )
    persistence = SqlPersistence(engine, clock=clock)
    kernel = build_kernel(
        settings,
        engine=engine,
        persistence=persistence,
        job_transport=transport,
        clock=clock,
        scheduler=CeleryScheduler(
            app, queue=settings.queue, clock=clock, eta_max_delay=eta_max_delay
        ),
    )
    config = host_config(settings)
    return EngineContext(
        settings=settings,
        engine=engine,
        persistence=persistence,
        transport=transport,
        kernel=kernel,
        host_config=config,
        lease_keeper=LeaseKeeper(transport, config.job_heartbeat_interval_ms),
        worker_id=worker_id,
    )
