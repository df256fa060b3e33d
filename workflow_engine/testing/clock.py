"""A clock tests move by hand."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"FakeClock needs a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


class FakeClock:
    """A :class:`~workflow_engine.clock.Clock` that stands still until told to move.

    Starts at ``start`` (default 2025-01-01T00:00:00Z). ``now()`` always returns an aware UTC
    datetime; ``advance`` and ``set`` move it. Safe to share between threads.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _as_utc(start) if start is not None else DEFAULT_START
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """Return the current fake time."""
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a ``timedelta`` or seconds); return the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self._now = self._now + step
            return self._now

    def set(self, value: datetime) -> datetime:
        """Jump to ``value`` (timezone-aware); return it in UTC."""
        moved = _as_utc(value)
        with self._lock:
            self._now = moved
        return moved

    def __repr__(self) -> str:
        return f"FakeClock({self.now().isoformat()})"
