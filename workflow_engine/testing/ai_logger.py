"""An in-memory :class:`~workflow_engine.ai.AICallLogger`: stores calls, totals them by topic."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from workflow_engine.ai.logger import (
    AICallStats,
    ModelStats,
    add_call_to_stats,
    empty_stats,
    topic_matches,
)
from workflow_engine.clock import Clock, SystemClock
from workflow_engine.testing.memory_blobs import json_clone

__all__ = ["AICallStats", "InMemoryAICallLogger", "ModelStats", "topic_matches"]


class InMemoryAICallLogger:
    """Keeps logged AI calls in a list. Each call is a mapping (or model) with at least ``topic``.

    Known keys: ``topic``, ``call_type``, ``model_key``, ``model_id``, ``prompt``, ``response``,
    ``input_tokens``, ``output_tokens``, ``cost``, ``metadata``; an ``id`` and a ``created_at``
    (from the clock) are added when missing. A call whose ``id`` is already stored is ignored,
    so a batch recorded twice counts once. Topic prefixes match whole dot-separated segments.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._calls: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._batches: list[str] = []
        self._lock = threading.Lock()

    # -- the port ------------------------------------------------------------------------------

    def log_call(self, call: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
        """Store a copy of the call and return it (the stored one, if its id is known)."""
        data = _as_data(call)
        data.setdefault("created_at", self.clock.now())
        with self._lock:
            return dict(self._store(data))

    def log_batch_results(
        self, batch_id: str, calls: Sequence[Mapping[str, Any] | BaseModel]
    ) -> None:
        """Store a batch's calls with ``batch_id`` in their metadata; mark the batch recorded."""
        now = self.clock.now()
        prepared = []
        for call in calls:
            data = _as_data(call)
            data["metadata"] = {**(data.get("metadata") or {}), "batch_id": batch_id}
            data.setdefault("created_at", now)
            prepared.append(data)
        with self._lock:
            for data in prepared:
                self._store(data)
            if prepared and batch_id not in self._batches:
                self._batches.append(batch_id)

    def get_stats(self, topic_prefix: str) -> AICallStats:
        """Totals of the calls whose topic is under ``topic_prefix`` (whole segments only)."""
        stats = empty_stats()
        for call in self.get_calls_by_topic_prefix(topic_prefix):
            add_call_to_stats(
                stats,
                str(call.get("model_key") or "unknown"),
                input_tokens=int(call.get("input_tokens") or 0),
                output_tokens=int(call.get("output_tokens") or 0),
                cost=float(call.get("cost") or 0.0),
            )
        return stats

    def is_recorded(self, batch_id: str) -> bool:
        """Whether the results of ``batch_id`` were logged."""
        with self._lock:
            return batch_id in self._batches

    # -- test helpers --------------------------------------------------------------------------

    def get_all_calls(self) -> list[dict[str, Any]]:
        """Every logged call, in order."""
        with self._lock:
            return [dict(call) for call in self._calls]

    def get_calls_by_topic(self, topic: str) -> list[dict[str, Any]]:
        """The calls logged under exactly ``topic``."""
        return self._where(lambda call: call["topic"] == topic)

    def get_calls_by_topic_prefix(self, prefix: str) -> list[dict[str, Any]]:
        """The calls under ``prefix`` (whole segments)."""
        return self._where(lambda call: topic_matches(str(call["topic"]), prefix))

    def get_calls_by_model(self, model_key: str) -> list[dict[str, Any]]:
        """The calls made with ``model_key``."""
        return self._where(lambda call: call.get("model_key") == model_key)

    def get_calls_by_type(self, call_type: str) -> list[dict[str, Any]]:
        """The calls of one type (``text``, ``object``, ``embed``, ``stream``, ``batch`` ...)."""
        return self._where(lambda call: call.get("call_type") == call_type)

    def get_total_cost(self, topic_prefix: str = "") -> float:
        """Total cost of the calls under ``topic_prefix`` (all calls by default)."""
        return self.get_stats(topic_prefix)["total_cost"]

    def get_total_tokens(self, topic_prefix: str = "") -> int:
        """Input plus output tokens of the calls under ``topic_prefix``."""
        stats = self.get_stats(topic_prefix)
        return stats["total_input_tokens"] + stats["total_output_tokens"]

    def get_call_count(self, topic_prefix: str = "") -> int:
        """How many calls are under ``topic_prefix``."""
        return len(self.get_calls_by_topic_prefix(topic_prefix))

    def get_recorded_batch_ids(self) -> list[str]:
        """The batches whose results were logged, in order."""
        with self._lock:
            return list(self._batches)

    def get_last_call(self) -> dict[str, Any] | None:
        """The most recent call, if any."""
        with self._lock:
            return dict(self._calls[-1]) if self._calls else None

    def has_call_matching(self, **fields: Any) -> bool:
        """Whether some call has all these field values (``metadata`` matches as a subset)."""
        return any(_matches(call, fields) for call in self.get_all_calls())

    def clear(self) -> None:
        """Forget every call and recorded batch."""
        with self._lock:
            self._calls.clear()
            self._ids.clear()
            self._batches.clear()

    def _store(self, data: dict[str, Any]) -> dict[str, Any]:
        call_id = data.setdefault("id", uuid.uuid4().hex)
        if call_id in self._ids:
            return next(call for call in self._calls if call["id"] == call_id)
        self._ids.add(call_id)
        self._calls.append(data)
        return data

    def _where(self, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [call for call in self.get_all_calls() if keep(call)]


def _as_data(call: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = (
        call.model_dump(mode="json") if isinstance(call, BaseModel) else json_clone(call)
    )
    if "topic" not in data:
        raise ValueError("An AI call needs a topic")
    if data.get("id") is None:
        data.pop("id", None)
    return data


def _matches(call: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    for name, wanted in fields.items():
        value = call.get(name)
        if name == "metadata" and isinstance(wanted, Mapping):
            if not all((value or {}).get(k) == v for k, v in wanted.items()):
                return False
        elif value != wanted:
            return False
    return True
