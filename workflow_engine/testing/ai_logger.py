"""A minimal in-memory AI call logger (stores calls, aggregates cost per topic)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from typing import Any, TypedDict

from pydantic import BaseModel

from workflow_engine.clock import Clock, SystemClock
from workflow_engine.testing.memory_blobs import json_clone


class ModelStats(TypedDict):
    """Totals of the calls made with one model."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


class AICallStats(TypedDict):
    """Totals of the calls under one topic prefix."""

    total_calls: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost: float
    per_model: dict[str, ModelStats]


def topic_matches(topic: str, prefix: str) -> bool:
    """Whether ``topic`` is ``prefix`` or lies under it, on dot-segment boundaries.

    ``workflow.run1`` matches ``workflow.run1`` and ``workflow.run1.stage.a``, but not
    ``workflow.run10``. An empty prefix matches every topic.
    """
    if not prefix or prefix.endswith("."):
        return topic.startswith(prefix)
    return topic == prefix or topic.startswith(prefix + ".")


class InMemoryAICallLogger:
    """Keeps logged AI calls in a list. Each call is a mapping (or model) with at least ``topic``.

    Known keys: ``topic``, ``call_type``, ``model_key``, ``model_id``, ``prompt``, ``response``,
    ``input_tokens``, ``output_tokens``, ``cost``, ``metadata``; an ``id`` and a ``created_at``
    (from the clock) are added when missing.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def log_call(self, call: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
        """Store a copy of the call and return it."""
        data = call.model_dump(mode="json") if isinstance(call, BaseModel) else json_clone(call)
        if "topic" not in data:
            raise ValueError("An AI call needs a topic")
        data.setdefault("id", uuid.uuid4().hex)
        data.setdefault("created_at", self.clock.now())
        with self._lock:
            self._calls.append(data)
        return dict(data)

    def get_stats(self, topic_prefix: str) -> AICallStats:
        """Totals of the calls whose topic is under ``topic_prefix`` (whole segments only)."""
        stats = AICallStats(
            total_calls=0,
            total_input_tokens=0,
            total_output_tokens=0,
            total_cost=0.0,
            per_model={},
        )
        for call in self.get_all_calls():
            if topic_matches(str(call["topic"]), topic_prefix):
                _add_call(stats, call)
        return stats

    def get_all_calls(self) -> list[dict[str, Any]]:
        """Every logged call, in order."""
        with self._lock:
            return [dict(call) for call in self._calls]

    def clear(self) -> None:
        """Forget every call."""
        with self._lock:
            self._calls.clear()


def _add_call(stats: AICallStats, call: Mapping[str, Any]) -> None:
    input_tokens = int(call.get("input_tokens") or 0)
    output_tokens = int(call.get("output_tokens") or 0)
    cost = float(call.get("cost") or 0.0)
    stats["total_calls"] += 1
    stats["total_input_tokens"] += input_tokens
    stats["total_output_tokens"] += output_tokens
    stats["total_cost"] += cost
    model = stats["per_model"].setdefault(
        str(call.get("model_key") or "unknown"),
        ModelStats(calls=0, input_tokens=0, output_tokens=0, cost=0.0),
    )
    model["calls"] += 1
    model["input_tokens"] += input_tokens
    model["output_tokens"] += output_tokens
    model["cost"] += cost
