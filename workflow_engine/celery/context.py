"""Everything a worker process needs, built once per process from the settings."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy.engine import Engine

from workflow_engine.celery.publisher import Publisher
from workflow_engine.celery.scheduler import CeleryScheduler
from workflow_engine.celery.transport import CeleryJobTransport
from workflow_engine.clock import SystemClock
from workflow_engine.definitions.registry import WorkflowRegistry
from workflow_engine.hosts.support import HostConfig, LeaseKeeper
from workflow_engine.kernel import Kernel, create_kernel
from workflow_engine.persistence.sql import SqlBlobStore, SqlPersistence, create_engine
from workflow_engine.plugins import create_plugin_runner
from workflow_engine.ports import BlobStore, EventSink, Registry
from workflow_engine.settings import EngineSettings, SettingsError, load_object


@dataclass
class EngineContext:
    """The kernel and adapters of one process."""

    settings: EngineSettings
    engine: Engine
    persistence: SqlPersistence
    transport: CeleryJobTransport
    publisher: Publisher
    kernel: Kernel
    host_config: HostConfig
    lease_keeper: LeaseKeeper
    worker_id: str

    def dispose(self) -> None:
        self.engine.dispose()


def build_context(settings: EngineSettings, app: Celery) -> EngineContext:
    """Wire the SQL adapters, the Celery transport and scheduler, and the kernel."""
    clock = SystemClock()
    engine = database_engine(settings)
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    publisher = Publisher(app, settings.queue)
    eta_max_delay = timedelta(seconds=settings.eta_max_delay_seconds)
    transport = CeleryJobTransport(
        engine,
        publisher,
        clock=clock,
        worker_id=worker_id,
        default_max_attempts=settings.max_attempts,
        eta_max_delay=eta_max_delay,
    )
    persistence = SqlPersistence(engine, clock=clock)
    kernel = create_kernel(
        persistence=persistence,
        blob_store=blob_store(settings, engine),
        job_transport=transport,
        event_sink=event_sink(settings),
        scheduler=CeleryScheduler(publisher, clock, eta_max_delay),
        clock=clock,
        registry=load_registry(settings.registry),
        max_payload_bytes=settings.max_payload_bytes,
        inline_output_max_bytes=settings.inline_output_max_bytes,
        default_max_attempts=settings.max_attempts,
    )
    host_config = HostConfig(
        stale_lease_threshold_ms=settings.stale_lease_threshold_ms,
        max_claims_per_tick=settings.max_claims_per_tick,
        max_suspended_checks_per_tick=settings.max_suspended_checks_per_tick,
        max_outbox_flush_per_tick=settings.max_outbox_flush_per_tick,
        job_heartbeat_interval_ms=settings.job_heartbeat_interval_ms,
        stuck_threshold_ms=settings.stuck_threshold_ms,
        idempotency_key_retention_ms=settings.idempotency_key_retention_ms,
        outbox_retention_ms=settings.outbox_retention_ms,
    )
    return EngineContext(
        settings=settings,
        engine=engine,
        persistence=persistence,
        transport=transport,
        publisher=publisher,
        kernel=kernel,
        host_config=host_config,
        lease_keeper=LeaseKeeper(transport, settings.job_heartbeat_interval_ms),
        worker_id=worker_id,
    )


def database_engine(settings: EngineSettings) -> Engine:
    """The SQLAlchemy engine for the state database, with the pool settings applied."""
    options: dict[str, Any] = {}
    if settings.is_postgres:
        options = {
            "pool_size": settings.pool_size,
            "max_overflow": settings.max_overflow,
            "connect_args": {"prepare_threshold": settings.pg_prepare_threshold},
        }
    return create_engine(settings.database_url, **options)


def load_registry(path: str) -> Registry:
    """The registry named by ``module:attribute``: a registry, or a list of workflows."""
    target = load_object(path, "WORKFLOW_ENGINE_REGISTRY")
    if hasattr(target, "get_workflow"):
        registry: Registry = target
        return registry
    if isinstance(target, list | tuple):
        return WorkflowRegistry(target)
    raise SettingsError(
        f"WORKFLOW_ENGINE_REGISTRY {path!r} is neither a registry nor a list of workflows"
    )


def blob_store(settings: EngineSettings, engine: Engine) -> BlobStore:
    """Where large outputs go: the database by default, else a folder or an fsspec URL."""
    url = settings.blob_url
    if url is None:
        return SqlBlobStore(engine)
    if "://" not in url or url.startswith("file://"):
        from workflow_engine.blobs import FilesystemBlobStore

        return FilesystemBlobStore(url.removeprefix("file://"))
    from workflow_engine.blobs import FsspecBlobStore

    return FsspecBlobStore(url)


def event_sink(settings: EngineSettings) -> EventSink:
    """The configured event sink, or a plugin runner with no plugins."""
    if settings.plugins is None:
        return create_plugin_runner(plugins=[])
    sink: EventSink = load_object(settings.plugins, "WORKFLOW_ENGINE_PLUGINS")
    if not hasattr(sink, "emit"):
        raise SettingsError(f"WORKFLOW_ENGINE_PLUGINS {settings.plugins!r} has no emit()")
    return sink
