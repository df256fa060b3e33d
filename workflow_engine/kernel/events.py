"""Event payloads: each carries ``type``, ``timestamp`` (ISO 8601) and ``workflow_run_id``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

EVENT_TYPES: tuple[str, ...] = (
    "workflow:created",
    "workflow:started",
    "workflow:completed",
    "workflow:failed",
    "workflow:cancelled",
    "workflow:suspended",
    "stage:started",
    "stage:completed",
    "stage:suspended",
    "stage:failed",
    "stage:progress",
)


def make_event(
    event_type: str, workflow_run_id: str, at: datetime, **fields: Any
) -> dict[str, Any]:
    """A JSON-ready event payload; datetimes among ``fields`` become ISO strings."""
    payload: dict[str, Any] = {
        "type": event_type,
        "timestamp": at.isoformat(),
        "workflow_run_id": workflow_run_id,
    }
    for name, value in fields.items():
        payload[name] = value.isoformat() if isinstance(value, datetime) else value
    return payload
