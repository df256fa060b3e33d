"""The :class:`~workflow_engine.ports.BlobStore` port as a table: ``blobs``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from workflow_engine.clock import Clock, SystemClock
from workflow_engine.errors import BlobNotFoundError
from workflow_engine.persistence.sql.dialect import ConnectionSource
from workflow_engine.persistence.sql.queries import insert_on_conflict
from workflow_engine.persistence.sql.tables import blobs
from workflow_engine.persistence.sql.values import DEFAULT_MAX_JSON_BYTES, json_value

__all__ = ["SqlBlobStore"]


class SqlBlobStore:
    """JSON values by key in the ``blobs`` table of the state database.

    The default store when no ``WORKFLOW_ENGINE_BLOB_URL`` is set: large outputs then live
    next to the rows that point at them, and need no other service.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.max_json_bytes = max_json_bytes
        self._db = ConnectionSource(engine)

    def put(self, key: str, data: Any) -> None:
        """Store ``data`` (in JSON form) under ``key``, replacing any previous value."""
        value = json_value(f"blob {key!r}", data, self.max_json_bytes)
        now = self.clock.now()
        with self._db.statement() as conn:
            row = {"key": key, "data": value, "created_at": now, "updated_at": now}
            set_ = {"data": value, "updated_at": now}
            conn.execute(insert_on_conflict(conn.dialect.name, blobs, row, ["key"], set_))

    def get(self, key: str) -> Any:
        """Return the value; raise ``BlobNotFoundError`` if the key is absent."""
        with self._db.read() as conn:
            row = conn.execute(sa.select(blobs.c.data).where(blobs.c.key == key)).first()
        if row is None:
            raise BlobNotFoundError(key)
        return row.data

    def has(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        with self._db.read() as conn:
            found = conn.scalar(sa.select(blobs.c.key).where(blobs.c.key == key))
        return found is not None

    def delete(self, key: str) -> None:
        """Delete the key; no error if it is absent."""
        with self._db.statement() as conn:
            conn.execute(sa.delete(blobs).where(blobs.c.key == key))

    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted (by code point, whatever the collation)."""
        query = sa.select(blobs.c.key).where(blobs.c.key.startswith(prefix, autoescape=True))
        with self._db.read() as conn:
            found = [key for key in conn.scalars(query) if key.startswith(prefix)]
        return sorted(found)
