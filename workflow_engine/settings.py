"""Settings every process reads (worker, beat, CLI, web app): environment variables
with the ``WORKFLOW_ENGINE_`` prefix, or a mapping from Django/Flask settings.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflow_engine.errors import WorkflowEngineError

ENV_PREFIX = "WORKFLOW_ENGINE_"


class SettingsError(WorkflowEngineError):
    """A setting is invalid or names something that cannot be loaded."""


class EngineSettings(BaseSettings):
    """Where state lives, which broker wakes workers, and the engine's tunables.

    Read from the environment (``WORKFLOW_ENGINE_DATABASE_URL`` and so on), or built from a
    mapping with :meth:`from_mapping` (the ``WORKFLOW_ENGINE`` dict of Django settings, or
    Flask's ``app.config``). The README's configuration table lists every field.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    database_url: str = Field(
        default="sqlite:///workflow_engine.db",
        description="SQLAlchemy URL of the state database (Postgres or SQLite).",
    )
    broker_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "WORKFLOW_ENGINE_BROKER_URL", "CELERY_BROKER_URL", "broker_url"
        ),
        description="Celery broker URL; unset means the embedded server-less broker.",
    )
    broker_dir: Path = Field(
        default=Path(".workflow_engine/broker"),
        description="Folder of the embedded broker (used when broker_url is unset).",
    )
    registry: str = Field(
        default="workflow_engine.examples:registry",
        description="`module:attribute` naming a WorkflowRegistry, or a list of workflows.",
    )
    blob_url: str | None = Field(
        default=None,
        description="Where large outputs go: a folder path, file:// or any fsspec URL; "
        "unset means a table in the state database.",
    )
    plugins: str | None = Field(
        default=None,
        description="`module:attribute` naming the event sink (e.g. a plugin runner).",
    )
    ai_provider_resolver: str | None = Field(
        default=None,
        description="`module:attribute` naming a function model -> AI provider (or None).",
    )
    queue: str = Field(default="workflow_engine", description="Default Celery queue for jobs.")
    tick_interval_seconds: float = Field(default=5.0, gt=0)
    stale_lease_threshold_ms: int = Field(default=60_000, gt=0)
    job_heartbeat_interval_ms: int = Field(default=10_000, gt=0)
    stuck_threshold_ms: int = Field(
        default=60_000,
        gt=0,
        description="A RUNNING run with no queued or leased job, no suspended stage and no "
        "update for this long is recovered (transitioned, re-queued) or failed.",
    )
    max_attempts: int = Field(default=3, ge=1)
    max_claims_per_tick: int = Field(default=50, ge=1)
    max_suspended_checks_per_tick: int = Field(default=50, ge=1)
    max_outbox_flush_per_tick: int = Field(default=500, ge=1)
    republish_after_seconds: float = Field(default=30.0, gt=0)
    max_republish_per_tick: int = Field(default=500, ge=1)
    eta_max_delay_seconds: float = Field(default=600.0, gt=0)
    visibility_timeout_seconds: int = Field(default=3600, gt=0)
    idempotency_key_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=0)
    outbox_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=0)
    max_payload_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    inline_output_max_bytes: int = Field(default=64 * 1024, gt=0)
    pool_size: int = Field(default=5, ge=1)
    max_overflow: int = Field(default=5, ge=0)
    pg_prepare_threshold: int | None = Field(
        default=5,
        ge=0,
        description="After how many runs psycopg prepares a statement server-side (halves "
        "Postgres' CPU per stage); 'off' never does (for PgBouncer < 1.21 in transaction mode).",
    )

    @field_validator("pg_prepare_threshold", mode="before")
    @classmethod
    def _prepare_off(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("postgresql", "postgres", "sqlite")):
            raise ValueError(f"unsupported database URL {value!r}: use postgresql:// or sqlite://")
        return value

    @classmethod
    def from_env(cls) -> EngineSettings:
        """Settings from ``WORKFLOW_ENGINE_*`` environment variables."""
        return cls()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EngineSettings:
        """Settings from a mapping of field names (``{"database_url": ...}``); keys may also
        carry the ``WORKFLOW_ENGINE_`` prefix, as in Flask's ``app.config``. Unset fields fall
        back to the environment, then to the defaults.
        """
        fields = {}
        for key, value in values.items():
            name = key[len(ENV_PREFIX) :] if key.upper().startswith(ENV_PREFIX) else key
            if name.lower() in cls.model_fields:
                fields[name.lower()] = value
        return cls(**fields)

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url is None

    @cached_property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))


def load_object(path: str, what: str) -> Any:
    """Import ``module:attribute``; raise ``SettingsError`` naming ``what`` if it fails."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise SettingsError(f"{what} must look like 'module:attribute', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"cannot import {what} module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise SettingsError(f"{what}: module {module_name!r} has no {attribute!r}") from None
