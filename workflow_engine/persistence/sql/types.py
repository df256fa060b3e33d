"""Column types shared by the tables: UTC timestamps, JSON, statuses, and row ids."""

from __future__ import annotations

import os
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, Row
from sqlalchemy.types import TypeEngine

from workflow_engine.status import Status

__all__ = ["JSON_TYPE", "AnyRow", "StatusType", "UtcDateTime", "new_id"]

#: A result row of any shape.
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

#: JSONB on Postgres, JSON (text) on SQLite; Python ``None`` is stored as SQL ``NULL``.
JSON_TYPE: TypeEngine[Any] = sa.JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every dialect.

    Postgres stores ``timestamptz``. SQLite has no timestamp type: values are stored as UTC
    text in one fixed format, so comparing them as strings compares them as instants.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; refuse naive datetimes (their meaning is a guess)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class StatusType(sa.TypeDecorator[Status]):
    """A :class:`~workflow_engine.status.Status` stored as its plain string value."""

    impl = sa.String(16)
    cache_ok = True

    def process_bind_param(self, value: Status | str | None, dialect: Dialect) -> str | None:
        """Validate and store the value (``Status("NOPE")`` raises ``ValueError``)."""
        return None if value is None else Status(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> Status | None:
        """Return the enum member."""
        return None if value is None else Status(value)


class _IdSource:
    """Time-ordered ids: 48-bit milliseconds, a 16-bit counter, 64 random bits (32 hex).

    Ordered ids keep b-tree inserts at the right-hand edge and make ``ORDER BY created_at, id``
    follow insertion order when the clock stands still (a FakeClock); the random tail keeps
    ids from different processes apart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0
        self._pid = os.getpid()

    def __call__(self) -> str:
        with self._lock:
            if self._pid != os.getpid():  # forked: start a fresh sequence
                self._pid, self._last_ms, self._counter = os.getpid(), 0, 0
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                self._counter += 1
                if self._counter > 0xFFFF:
                    self._last_ms, self._counter = self._last_ms + 1, 0
                ms = self._last_ms
            else:
                self._counter = 0
            self._last_ms = ms
            counter = self._counter
        return f"{ms:012x}{counter:04x}{secrets.token_hex(8)}"


new_id = _IdSource()
