"""Blob values as JSON text."""

from __future__ import annotations

import json
from typing import Any

from workflow_engine.persistence.sql.values import json_value

__all__ = ["dumps", "loads"]


def dumps(key: str, value: Any, max_bytes: int) -> bytes:
    """``value`` as UTF-8 JSON (models and datetimes in their JSON form).

    Raises ``InvalidValueError`` for a value with no JSON form and ``PayloadTooLargeError``
    above ``max_bytes``.
    """
    plain = json_value(f"blob {key!r}", value, max_bytes)
    return json.dumps(plain, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes) -> Any:
    """The value stored as ``data``."""
    return json.loads(data)
