"""SQL adapters of the persistence ports, on Postgres (psycopg 3) and SQLite.

The dialect is read from the SQLAlchemy engine. Make the schema with
:func:`workflow_engine.persistence.sql.migrate.upgrade` (``workflow-engine db upgrade``)::

    from workflow_engine.persistence.sql import SqlJobQueue, SqlPersistence, create_engine, upgrade

    engine = create_engine("postgresql://user@host/db")   # or "sqlite:///state.db"
    upgrade(engine)
    persistence, queue = SqlPersistence(engine), SqlJobQueue(engine)
"""

from __future__ import annotations

from workflow_engine.persistence.sql.ai_calls import SqlAICallLogger
from workflow_engine.persistence.sql.blobs import SqlBlobStore
from workflow_engine.persistence.sql.dialect import (
    configure_engine,
    create_engine,
    create_postgres_engine,
    create_sqlite_engine,
)
from workflow_engine.persistence.sql.jobs import SqlJobQueue
from workflow_engine.persistence.sql.migrate import upgrade
from workflow_engine.persistence.sql.persistence import SqlPersistence
from workflow_engine.persistence.sql.tables import metadata
from workflow_engine.persistence.sql.values import InvalidValueError

__all__ = [
    "InvalidValueError",
    "SqlAICallLogger",
    "SqlBlobStore",
    "SqlJobQueue",
    "SqlPersistence",
    "configure_engine",
    "create_engine",
    "create_postgres_engine",
    "create_sqlite_engine",
    "metadata",
    "upgrade",
]
