"""Built-in providers, and how a model finds its provider.

A :data:`ProviderResolver` (``model -> provider | None``) is asked first; ``None`` falls back
to the built-in provider named by ``model.provider``: ``openai``, ``openrouter``,
``anthropic`` or ``google`` (a model with a ``base_url`` is served by an OpenAI-compatible
client). Built-in providers are made once per :class:`ProviderCache` and reused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from workflow_engine.ai.errors import UnknownProviderError
from workflow_engine.ai.models import ModelConfig
from workflow_engine.ai.providers.anthropic import AnthropicProvider
from workflow_engine.ai.providers.base import (
    BatchItem,
    BatchItemResult,
    BatchState,
    EmbedRequest,
    EmbedResponse,
    Provider,
    StreamEnd,
    TextRequest,
    TextResponse,
)
from workflow_engine.ai.providers.google import GoogleProvider
from workflow_engine.ai.providers.openai import OpenAIProvider

__all__ = [
    "AnthropicProvider",
    "BatchItem",
    "BatchItemResult",
    "BatchState",
    "EmbedRequest",
    "EmbedResponse",
    "GoogleProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderCache",
    "ProviderResolver",
    "StreamEnd",
    "TextRequest",
    "TextResponse",
]

ProviderResolver = Callable[[ModelConfig], Provider | None]
"""Returns the provider for a model, or ``None`` to use the built-in one."""

BUILTIN_PROVIDERS = ("openai", "openrouter", "anthropic", "google")


class ProviderCache:
    """Finds each model's provider: the resolver first, then built-ins made once and reused."""

    def __init__(self, resolver: ProviderResolver | None = None) -> None:
        self.resolver = resolver
        self._lock = threading.Lock()
        self._built: dict[tuple[str, str | None, str | None], Provider] = {}

    def get(self, model: ModelConfig) -> Provider:
        """The provider of ``model``; raise :class:`UnknownProviderError` if there is none."""
        if self.resolver is not None:
            provider = self.resolver(model)
            if provider is not None:
                return provider
        key = (model.provider, model.base_url, model.api_key_env)
        with self._lock:
            if key not in self._built:
                self._built[key] = builtin_provider(model)
            return self._built[key]


def builtin_provider(model: ModelConfig) -> Provider:
    """A new built-in provider for ``model`` (no client is made until first use)."""
    options: dict[str, Any] = {}
    if model.base_url is not None:
        options["base_url"] = model.base_url
    if model.api_key_env is not None:
        options["api_key_env"] = model.api_key_env
    if model.provider == "openai":
        return OpenAIProvider(**options)
    if model.provider == "openrouter":
        return OpenAIProvider.openrouter(**options)
    if model.provider == "anthropic":
        return AnthropicProvider(**options)
    if model.provider == "google":
        options.pop("api_key_env", None)
        return GoogleProvider(**options)
    if model.base_url is not None:
        return OpenAIProvider(name=model.provider, max_tokens_param="max_tokens", **options)
    raise UnknownProviderError(
        f"No provider for model {model.id!r}: provider {model.provider!r} is not one of "
        f"{', '.join(BUILTIN_PROVIDERS)}; give the model a base_url (OpenAI-compatible) or "
        "pass provider_resolver= to return a provider for it"
    )
