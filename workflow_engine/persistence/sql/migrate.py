"""Applying the schema migrations (Alembic, shipped in ``migrations/``) from Python.

``workflow-engine db upgrade`` calls :func:`upgrade`. Migrations are the only way the schema
is made: there is no ``metadata.create_all`` path, so what tests run on is what users get.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL, Connection, Engine

from workflow_engine.persistence.sql.dialect import configure_engine, create_engine, is_postgres

__all__ = ["MIGRATIONS_DIR", "VERSION_TABLE", "alembic_config", "current", "downgrade", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Our own version table, so an application's Alembic history in the same database is untouched.
VERSION_TABLE = "workflow_engine_alembic_version"

#: Advisory lock held while migrating, so concurrent ``upgrade`` calls run one after another.
_MIGRATION_LOCK = (0x5746_4531, 0)


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config built in code: our script location, and a connection or URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _engine(engine_or_url: Engine | str | URL) -> tuple[Engine, bool]:
    if isinstance(engine_or_url, Engine):
        return configure_engine(engine_or_url), False
    return create_engine(engine_or_url), True


def _run(engine_or_url: Engine | str | URL, action: str, revision: str) -> None:
    engine, owned = _engine(engine_or_url)
    try:
        with engine.begin() as conn:
            if is_postgres(conn):
                lock = "SELECT pg_advisory_xact_lock(CAST(:a AS integer), CAST(:b AS integer))"
                conn.execute(sa.text(lock), {"a": _MIGRATION_LOCK[0], "b": _MIGRATION_LOCK[1]})
            getattr(command, action)(alembic_config(conn), revision)
    finally:
        if owned:
            engine.dispose()


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Bring the database's schema up to ``revision`` (default: the latest), in one transaction."""
    _run(engine_or_url, "upgrade", revision)


def downgrade(engine_or_url: Engine | str | URL, revision: str) -> None:
    """Take the schema back to ``revision`` (``"base"``: drop everything)."""
    _run(engine_or_url, "downgrade", revision)


def current(engine_or_url: Engine | str | URL) -> str | None:
    """The revision the database is at (``None``: no schema yet)."""
    engine, owned = _engine(engine_or_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    finally:
        if owned:
            engine.dispose()
