"""Test doubles for the event sink and the scheduler."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any


class CollectingEventSink:
    """An :class:`~workflow_engine.ports.EventSink` that keeps every emitted event, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, event: Mapping[str, Any]) -> None:
        """Record a copy of the event payload."""
        with self._lock:
            self.events.append(dict(event))

    def get_by_type(self, event_type: str) -> list[dict[str, Any]]:
        """The events whose ``type`` is ``event_type``, in order."""
        with self._lock:
            return [event for event in self.events if event.get("type") == event_type]

    def clear(self) -> None:
        """Forget every event."""
        with self._lock:
            self.events.clear()

    def __len__(self) -> int:
        return len(self.events)


class NoopScheduler:
    """A :class:`~workflow_engine.ports.Scheduler` that only records what it was asked to do."""

    def __init__(self) -> None:
        self.scheduled: list[dict[str, Any]] = []
        self.cancelled: list[dict[str, Any]] = []

    def schedule(
        self,
        command_type: str,
        payload: Mapping[str, Any],
        run_at: datetime,
        correlation_id: str,
    ) -> None:
        """Record the request; nothing is ever dispatched."""
        self.scheduled.append(
            {
                "command_type": command_type,
                "payload": dict(payload),
                "run_at": run_at,
                "correlation_id": correlation_id,
            }
        )

    def cancel(self, command_type: str, correlation_id: str) -> None:
        """Record the cancellation; nothing else happens."""
        self.cancelled.append({"command_type": command_type, "correlation_id": correlation_id})
