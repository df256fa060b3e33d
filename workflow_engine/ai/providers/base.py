"""What the helper asks of a provider, and the plain data that goes back and forth.

A provider turns a :class:`TextRequest` into a :class:`TextResponse` (and streams, embeds,
and runs batches) through some SDK. The built-in ones wrap the official OpenAI, Anthropic and
Google SDKs; a provider resolver may return any object with these methods. A provider that
cannot do something (embeddings on Anthropic, say) raises :class:`AIError`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from workflow_engine.ai.errors import AIError, MissingAPIKeyError, ProviderNotInstalledError

__all__ = [
    "BatchItem",
    "BatchItemResult",
    "BatchState",
    "EmbedRequest",
    "EmbedResponse",
    "Provider",
    "StreamEnd",
    "TextRequest",
    "TextResponse",
    "require_api_key",
    "unsupported",
]

BatchState = Literal["pending", "processing", "completed", "failed"]


@dataclass(frozen=True)
class TextRequest:
    """One chat call: ``messages`` are ``{"role": "user" | "assistant", "content": str}``.

    ``json_schema`` asks for JSON output matching it (named ``schema_name``). ``options`` are
    passed to the SDK call as they are (provider-specific parameters).
    """

    model_id: str
    messages: tuple[Mapping[str, Any], ...]
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    json_schema: Mapping[str, Any] | None = None
    schema_name: str = "response"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextResponse:
    """A chat call's text and usage."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None = None
    reasoning: str | None = None


@dataclass(frozen=True)
class StreamEnd:
    """The last item of a provider's stream: the usage of the whole call."""

    input_tokens: int
    output_tokens: int
    finish_reason: str | None = None


@dataclass(frozen=True)
class EmbedRequest:
    """Embed ``texts``; ``dimensions`` and ``task_type`` where the provider supports them."""

    model_id: str
    texts: tuple[str, ...]
    dimensions: int | None = None
    task_type: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EmbedResponse:
    """One vector per text; ``input_tokens`` is ``None`` when the provider reports none."""

    embeddings: list[list[float]]
    input_tokens: int | None


@dataclass(frozen=True)
class BatchItem:
    """One request of a provider batch, identified by ``id`` in the results."""

    id: str
    request: TextRequest


@dataclass(frozen=True)
class BatchItemResult:
    """One result of a provider batch: ``text`` on success, else ``error``."""

    id: str
    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None


@runtime_checkable
class Provider(Protocol):
    """An AI provider as the helper uses it. All methods are synchronous."""

    name: str

    def generate(self, request: TextRequest) -> TextResponse:
        """One chat completion."""
        ...

    def stream(self, request: TextRequest) -> Iterator[str | StreamEnd]:
        """Text chunks as they arrive, then one :class:`StreamEnd`."""
        ...

    def embed(self, request: EmbedRequest) -> EmbedResponse:
        """Embeddings of ``request.texts``."""
        ...

    def submit_batch(self, model_id: str, items: Sequence[BatchItem]) -> str:
        """Submit a batch of chat requests; return the provider's batch id."""
        ...

    def batch_state(self, batch_id: str) -> BatchState:
        """Where the batch is."""
        ...

    def batch_results(self, batch_id: str) -> list[BatchItemResult]:
        """The results of a completed batch, one per request."""
        ...


def require_api_key(provider: str, api_key: str | None, env_var: str) -> str:
    """``api_key``, else the environment variable; raise :class:`MissingAPIKeyError`."""
    key = api_key or os.environ.get(env_var)
    if not key:
        raise MissingAPIKeyError(provider, env_var)
    return key


def unsupported(provider: str, what: str) -> AIError:
    """The error for a capability a provider does not have."""
    return AIError(f"The {provider} provider does not support {what}")


def as_int(value: Any) -> int:
    """A token count from a response field that may be missing."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class SdkProvider:
    """A provider over an OpenAI-style SDK client (``openai.OpenAI``, ``anthropic.Anthropic``):
    the connection settings, and the client, imported and made on first use.
    """

    sdk_package: ClassVar[str]
    sdk_class: ClassVar[str]

    def __init__(
        self,
        *,
        name: str,
        api_key: str | None,
        api_key_env: str,
        base_url: str | None,
        max_retries: int,
        timeout: float | None,
        client: Any,
    ) -> None:
        self.name = name
        self._api_key = api_key
        self._api_key_env = api_key_env
        self._base_url = base_url
        self._max_retries = max_retries
        self._timeout = timeout
        if client is not None:
            self.__dict__["client"] = client

    @cached_property
    def client(self) -> Any:
        """The SDK client, made on first use (or the one given to the constructor)."""
        try:
            module = importlib.import_module(self.sdk_package)
        except ImportError as exc:
            raise ProviderNotInstalledError(self.name, self.sdk_package, self.sdk_package) from exc
        options: dict[str, Any] = {
            "api_key": require_api_key(self.name, self._api_key, self._api_key_env),
            "max_retries": self._max_retries,
        }
        if self._base_url is not None:
            options["base_url"] = self._base_url
        if self._timeout is not None:
            options["timeout"] = self._timeout
        return getattr(module, self.sdk_class)(**options)
