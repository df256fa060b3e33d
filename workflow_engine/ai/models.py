"""The model registry: which provider serves a model key, and what its tokens cost.

Prices are data: :data:`BUILTIN_MODELS` holds a few current models with their list prices
in US dollars per million tokens at the time of writing; :func:`register_models` adds models
or replaces any entry (your negotiated prices, a new model, a local vLLM deployment).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workflow_engine.errors import WorkflowEngineError

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL_KEY",
    "Cost",
    "ModelConfig",
    "ModelRegistry",
    "UnknownModelError",
    "calculate_cost",
    "default_registry",
    "get_model",
    "list_models",
    "register_models",
]


class UnknownModelError(WorkflowEngineError, KeyError):
    """No model is registered under this key."""

    def __init__(self, model_key: str, available: Iterable[str]) -> None:
        self.model_key = model_key
        names = ", ".join(sorted(available)) or "(none)"
        super().__init__(f"Unknown model {model_key!r}. Available models: {names}")

    def __str__(self) -> str:
        return str(self.args[0])


class ModelConfig(BaseModel):
    """One model: the provider's id for it, its provider, its prices and capabilities.

    ``provider`` is ``openai``, ``anthropic``, ``google``, ``openrouter`` or any name a
    provider resolver understands. ``base_url`` and ``api_key_env`` point an OpenAI-compatible
    model at another endpoint (vLLM, Ollama, ...). Prices are US dollars per million tokens;
    ``batch_discount_percent`` is taken off calls made through the provider's batch API.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    provider: str
    name: str = ""
    input_cost_per_million: float = Field(default=0.0, ge=0)
    output_cost_per_million: float = Field(default=0.0, ge=0)
    batch_discount_percent: float = Field(default=0.0, ge=0, le=100)
    supports_async_batch: bool = False
    supports_structured_outputs: bool = True
    supports_tools: bool = False
    is_embedding_model: bool = False
    context_length: int | None = None
    max_completion_tokens: int | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    description: str | None = None


def _chat(model_id: str, provider: str, prices: tuple[float, float], **fields: Any) -> ModelConfig:
    return ModelConfig(
        id=model_id,
        provider=provider,
        name=fields.pop("name", model_id),
        input_cost_per_million=prices[0],
        output_cost_per_million=prices[1],
        batch_discount_percent=50.0,
        supports_async_batch=True,
        supports_tools=True,
        **fields,
    )


def _embedding(model_id: str, provider: str, price: float) -> ModelConfig:
    return ModelConfig(
        id=model_id,
        provider=provider,
        name=model_id,
        input_cost_per_million=price,
        is_embedding_model=True,
        supports_structured_outputs=False,
    )


BUILTIN_MODELS: Mapping[str, ModelConfig] = {
    "gpt-4.1": _chat("gpt-4.1", "openai", (2.00, 8.00)),
    "gpt-4.1-mini": _chat("gpt-4.1-mini", "openai", (0.40, 1.60)),
    "gpt-4o-mini": _chat("gpt-4o-mini", "openai", (0.15, 0.60)),
    "text-embedding-3-small": _embedding("text-embedding-3-small", "openai", 0.02),
    "claude-sonnet-4": _chat("claude-sonnet-4-20250514", "anthropic", (3.00, 15.00)),
    "claude-haiku-3.5": _chat("claude-3-5-haiku-20241022", "anthropic", (0.80, 4.00)),
    "gemini-2.5-flash": _chat("gemini-2.5-flash", "google", (0.30, 2.50)),
    "gemini-2.5-pro": _chat("gemini-2.5-pro", "google", (1.25, 10.00)),
    "gemini-embedding-001": _embedding("gemini-embedding-001", "google", 0.15),
}
"""The models every registry starts with (list prices per million tokens, batch 50% off)."""

DEFAULT_MODEL_KEY = "gemini-2.5-flash"


@dataclass(frozen=True)
class Cost:
    """The cost of a call in US dollars."""

    input_cost: float
    output_cost: float
    total_cost: float


ModelFilter = Callable[[ModelConfig], bool] | Mapping[str, Any]


class ModelRegistry:
    """Model key -> :class:`ModelConfig`; starts with :data:`BUILTIN_MODELS` unless told not to."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig | Mapping[str, Any]] | None = None,
        *,
        include_builtins: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelConfig] = dict(BUILTIN_MODELS) if include_builtins else {}
        if models:
            self.register(models)

    def register(self, models: Mapping[str, ModelConfig | Mapping[str, Any]]) -> None:
        """Add models, or replace the entries with these keys."""
        parsed = {key: _as_config(value) for key, value in models.items()}
        with self._lock:
            self._models.update(parsed)

    def get(self, model_key: str) -> ModelConfig:
        """The model under ``model_key``; raise :class:`UnknownModelError` if there is none."""
        with self._lock:
            model = self._models.get(model_key)
            if model is None:
                raise UnknownModelError(model_key, list(self._models))
            return model

    def list(self, filter: ModelFilter | None = None) -> dict[str, ModelConfig]:
        """The models (sorted by key) that pass ``filter``: a predicate, or field values."""
        with self._lock:
            items = sorted(self._models.items())
        return {key: model for key, model in items if _passes(model, filter)}

    def calculate_cost(
        self, model_key: str, input_tokens: int, output_tokens: int, *, batch: bool = False
    ) -> Cost:
        """What the tokens cost on this model; ``batch`` applies its batch discount."""
        model = self.get(model_key)
        factor = 1 - model.batch_discount_percent / 100 if batch else 1.0
        input_cost = input_tokens / 1_000_000 * model.input_cost_per_million * factor
        output_cost = output_tokens / 1_000_000 * model.output_cost_per_million * factor
        return Cost(input_cost, output_cost, input_cost + output_cost)


def _as_config(value: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    return value if isinstance(value, ModelConfig) else ModelConfig.model_validate(dict(value))


def _passes(model: ModelConfig, filter: ModelFilter | None) -> bool:
    if filter is None:
        return True
    if callable(filter):
        return bool(filter(model))
    return all(getattr(model, name) == wanted for name, wanted in filter.items())


default_registry = ModelRegistry()
"""The process-wide registry the module-level functions (and helpers by default) use."""


def register_models(models: Mapping[str, ModelConfig | Mapping[str, Any]]) -> None:
    """Add models to (or replace entries of) the default registry."""
    default_registry.register(models)


def get_model(model_key: str) -> ModelConfig:
    """A model of the default registry; raise :class:`UnknownModelError` if unknown."""
    return default_registry.get(model_key)


def list_models(filter: ModelFilter | None = None) -> dict[str, ModelConfig]:
    """Models of the default registry, sorted by key, that pass ``filter``.

    ``filter`` is a predicate or a mapping of field values, e.g.
    ``list_models({"provider": "openai", "supports_async_batch": True})``.
    """
    return default_registry.list(filter)


def calculate_cost(
    model_key: str, input_tokens: int, output_tokens: int, batch: bool = False
) -> Cost:
    """What ``input_tokens`` and ``output_tokens`` cost on a model of the default registry."""
    return default_registry.calculate_cost(model_key, input_tokens, output_tokens, batch=batch)
