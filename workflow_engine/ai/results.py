"""What the helper's calls return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from workflow_engine.ai.providers.base import BatchState

__all__ = [
    "BatchHandle",
    "BatchResult",
    "BatchStatus",
    "EmbedResult",
    "ObjectResult",
    "TextResult",
    "Usage",
]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class TextResult:
    """Generated text, its tokens and its cost (US dollars)."""

    text: str
    input_tokens: int
    output_tokens: int
    cost: float
    finish_reason: str | None = None
    reasoning: str | None = None


@dataclass(frozen=True)
class ObjectResult(Generic[M]):
    """A validated structured output, its tokens and its cost."""

    object: M
    input_tokens: int
    output_tokens: int
    cost: float


@dataclass(frozen=True)
class EmbedResult:
    """Embeddings (``embedding`` is the first), their size, tokens and cost."""

    embedding: list[float]
    embeddings: list[list[float]]
    dimensions: int
    input_tokens: int
    cost: float


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of a finished stream."""

    input_tokens: int
    output_tokens: int
    cost: float
    finish_reason: str | None = None


@dataclass(frozen=True)
class BatchHandle:
    """A submitted provider batch: keep ``id`` (e.g. in the suspended state) to poll it."""

    id: str
    status: BatchState
    provider: str
    model_key: str
    request_count: int


@dataclass(frozen=True)
class BatchStatus:
    """Where a provider batch is."""

    id: str
    status: BatchState
    provider: str


@dataclass(frozen=True)
class BatchResult:
    """One request's result: ``result`` is the validated model, parsed JSON, or raw text.

    A request that failed at the provider, or whose output did not match its schema, has
    ``status="failed"`` and an ``error``; its tokens (if any were billed) are still counted.
    """

    id: str
    status: Literal["succeeded", "failed"]
    result: Any = None
    text: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    error: str | None = None
