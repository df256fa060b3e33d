"""The ``AICallLogger`` port: where every AI call's tokens and cost are written.

Calls are logged under a dot-separated *topic*; the engine's convention is
``workflow.{run_id}.stage.{stage_id}`` (children add segments, e.g. ``.tool.search``), so
``get_stats("workflow.{run_id}")`` totals a run. Prefixes match whole segments:
``workflow.run1`` covers ``workflow.run1.stage.a`` but not ``workflow.run10``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AICall",
    "AICallLogger",
    "AICallStats",
    "ModelStats",
    "add_call_to_stats",
    "batch_call_id",
    "empty_stats",
    "topic_matches",
]


class AICall(BaseModel):
    """One AI call as it is logged: what was asked, what came back, tokens and cost.

    ``call_type`` is ``text``, ``object``, ``embed``, ``stream``, ``batch`` or ``tool`` (or
    anything a ``record_call`` user chooses). ``metadata`` carries ``status`` (``success`` or
    ``error``), ``duration_ms`` and call details. ``id`` is set for batch results (so a batch
    is recorded once); otherwise the logger assigns one.
    """

    model_config = ConfigDict(frozen=True)

    topic: str
    call_type: str
    model_key: str
    model_id: str
    prompt: str
    response: str
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost: float = Field(default=0.0, ge=0)
    metadata: dict[str, Any] | None = None
    id: str | None = None


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


@runtime_checkable
class AICallLogger(Protocol):
    """Stores AI calls and totals them by topic prefix (whole dot-separated segments)."""

    def log_call(self, call: Mapping[str, Any] | BaseModel) -> Any:
        """Store one call (a mapping or model with at least ``topic``)."""
        ...

    def log_batch_results(
        self, batch_id: str, calls: Sequence[Mapping[str, Any] | BaseModel]
    ) -> None:
        """Store the results of one provider batch, with ``batch_id`` in their metadata.

        Calls carrying an ``id`` that is already stored are skipped, so recording a batch
        twice (a poller retried after a crash) does not count it twice.
        """
        ...

    def get_stats(self, topic_prefix: str) -> AICallStats:
        """Totals of the calls whose topic is ``topic_prefix`` or lies under it."""
        ...

    def is_recorded(self, batch_id: str) -> bool:
        """Whether the results of batch ``batch_id`` were logged."""
        ...


def topic_matches(topic: str, prefix: str) -> bool:
    """Whether ``topic`` is ``prefix`` or lies under it, on dot-segment boundaries.

    ``workflow.run1`` matches ``workflow.run1`` and ``workflow.run1.stage.a``, but not
    ``workflow.run10``. A prefix ending in a dot matches plainly; an empty one matches all.
    """
    if not prefix or prefix.endswith("."):
        return topic.startswith(prefix)
    return topic == prefix or topic.startswith(prefix + ".")


def empty_stats() -> AICallStats:
    """Stats of no calls."""
    return AICallStats(
        total_calls=0,
        total_input_tokens=0,
        total_output_tokens=0,
        total_cost=0.0,
        per_model={},
    )


def add_call_to_stats(
    stats: AICallStats,
    model_key: str,
    *,
    calls: int = 1,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost: float = 0.0,
) -> None:
    """Add one call (or ``calls`` calls of one model) to ``stats`` in place."""
    stats["total_calls"] += calls
    stats["total_input_tokens"] += input_tokens
    stats["total_output_tokens"] += output_tokens
    stats["total_cost"] += cost
    model = stats["per_model"].setdefault(
        model_key, ModelStats(calls=0, input_tokens=0, output_tokens=0, cost=0.0)
    )
    model["calls"] += calls
    model["input_tokens"] += input_tokens
    model["output_tokens"] += output_tokens
    model["cost"] += cost


def batch_call_id(batch_id: str, request_id: str) -> str:
    """The id of a batch result's logged call: the same every time it is recorded."""
    digest = hashlib.sha256(f"{batch_id}\x00{request_id}".encode()).hexdigest()
    return f"batch-{digest[:40]}"
