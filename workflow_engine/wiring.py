"""The composition root: a kernel over the SQL adapters, built from :class:`EngineSettings`.

Celery workers, the client, the CLI and the process host all wire themselves here, each with
its own job transport (Celery-woken rows, or plain rows for the process host).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.engine import Engine

from workflow_engine.ai.providers import ProviderResolver
from workflow_engine.clock import Clock
from workflow_engine.definitions.registry import WorkflowRegistry
from workflow_engine.hosts.support import HostConfig
from workflow_engine.kernel import Kernel, create_kernel
from workflow_engine.persistence.sql import (
    SqlAICallLogger,
    SqlBlobStore,
    SqlPersistence,
    create_engine,
)
from workflow_engine.plugins import create_plugin_runner
from workflow_engine.ports import BlobStore, EventSink, JobTransport, Registry, Scheduler
from workflow_engine.settings import EngineSettings, SettingsError, load_object


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


def build_kernel(
    settings: EngineSettings,
    *,
    engine: Engine,
    persistence: SqlPersistence,
    job_transport: JobTransport,
    clock: Clock,
    scheduler: Scheduler | None = None,
) -> Kernel:
    """A kernel over the SQL persistence and the given job transport."""
    return create_kernel(
        persistence=persistence,
        blob_store=blob_store(settings, engine),
        job_transport=job_transport,
        event_sink=event_sink(settings),
        scheduler=scheduler,
        clock=clock,
        registry=load_registry(settings.registry),
        max_payload_bytes=settings.max_payload_bytes,
        inline_output_max_bytes=settings.inline_output_max_bytes,
        default_max_attempts=settings.max_attempts,
        ai_call_logger=SqlAICallLogger(engine, clock=clock),
        ai_provider_resolver=ai_provider_resolver(settings),
    )


def ai_provider_resolver(settings: EngineSettings) -> ProviderResolver | None:
    """The resolver named by ``WORKFLOW_ENGINE_AI_PROVIDER_RESOLVER``, if any."""
    if settings.ai_provider_resolver is None:
        return None
    resolver = load_object(settings.ai_provider_resolver, "WORKFLOW_ENGINE_AI_PROVIDER_RESOLVER")
    if not callable(resolver):
        raise SettingsError(
            f"WORKFLOW_ENGINE_AI_PROVIDER_RESOLVER {settings.ai_provider_resolver!r} "
            "is not callable"
        )
    return cast("ProviderResolver", resolver)


def host_config(settings: EngineSettings) -> HostConfig:
    """The host tunables named in the settings."""
    return HostConfig(
        stale_lease_threshold_ms=settings.stale_lease_threshold_ms,
        max_claims_per_tick=settings.max_claims_per_tick,
        max_suspended_checks_per_tick=settings.max_suspended_checks_per_tick,
        max_outbox_flush_per_tick=settings.max_outbox_flush_per_tick,
        job_heartbeat_interval_ms=settings.job_heartbeat_interval_ms,
        stuck_threshold_ms=settings.stuck_threshold_ms,
        idempotency_key_retention_ms=settings.idempotency_key_retention_ms,
        outbox_retention_ms=settings.outbox_retention_ms,
    )


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
    from workflow_engine import blobs

    if "://" not in url or url.startswith("file://"):
        return blobs.FilesystemBlobStore(url.removeprefix("file://"))
    return blobs.FsspecBlobStore(url)


def event_sink(settings: EngineSettings) -> EventSink:
    """The configured event sink, or a plugin runner with no plugins."""
    if settings.plugins is None:
        return create_plugin_runner(plugins=[])
    sink: EventSink = load_object(settings.plugins, "WORKFLOW_ENGINE_PLUGINS")
    if not hasattr(sink, "emit"):
        raise SettingsError(f"WORKFLOW_ENGINE_PLUGINS {settings.plugins!r} has no emit()")
    return sink
