"""Anthropic through the ``anthropic`` SDK: messages, streaming and Message Batches.

The SDK is imported when the first client is made. Structured output uses the Messages API's
``output_config.format`` JSON schema. ``temperature`` is sent only if the installed SDK still
has the parameter. Anthropic has no embeddings API. Retries of 429 and 5xx
answers are the SDK's (``max_retries``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from workflow_engine.ai.errors import AIResponseError
from workflow_engine.ai.providers.base import (
    BatchItem,
    BatchItemResult,
    BatchState,
    EmbedRequest,
    EmbedResponse,
    SdkProvider,
    StreamEnd,
    TextRequest,
    TextResponse,
    as_int,
    unsupported,
)

__all__ = ["AnthropicProvider"]

_STATES: Mapping[str, BatchState] = {
    "in_progress": "processing",
    "canceling": "processing",
    "ended": "completed",
}


class AnthropicProvider(SdkProvider):
    """Claude models. ``api_key`` defaults to ``ANTHROPIC_API_KEY``; ``base_url`` to the SDK's.

    The Messages API requires ``max_tokens``: ``default_max_tokens`` is used when a call
    gives none.
    """

    sdk_package = "anthropic"
    sdk_class = "Anthropic"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        max_retries: int = 2,
        timeout: float | None = None,
        default_max_tokens: int = 4096,
        client: Any = None,
    ) -> None:
        super().__init__(
            name="anthropic",
            api_key=api_key,
            api_key_env=api_key_env,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
            client=client,
        )
        self.default_max_tokens = default_max_tokens

    def params(self, request: TextRequest) -> dict[str, Any]:
        """The ``messages.create`` arguments (also one batch request's ``params``)."""
        params: dict[str, Any] = {
            "model": request.model_id,
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": list(request.messages),
        }
        if request.system:
            params["system"] = request.system
        if request.temperature is not None and self._accepts("temperature"):
            params["temperature"] = request.temperature
        if request.json_schema is not None:
            schema = dict(request.json_schema)
            params["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        params.update(request.options)
        return params

    def _accepts(self, parameter: str) -> bool:
        """Whether this SDK's ``messages.create`` takes ``parameter`` (recent ones have no
        ``temperature``: it is then left out rather than failing the call)."""
        accepted = self.__dict__.get("_accepted")
        if accepted is None:
            try:
                accepted = set(inspect.signature(self.client.messages.create).parameters)
            except (TypeError, ValueError):
                accepted = {parameter}
            self.__dict__["_accepted"] = accepted
        return parameter in accepted

    def generate(self, request: TextRequest) -> TextResponse:
        """One message."""
        return parse_message(self.client.messages.create(**self.params(request)))

    def stream(self, request: TextRequest) -> Iterator[str | StreamEnd]:
        """Text deltas from the raw event stream, then the usage."""
        input_tokens = output_tokens = 0
        finish: str | None = None
        for event in self.client.messages.create(**self.params(request), stream=True):
            kind = getattr(event, "type", None)
            if kind == "message_start":
                usage = getattr(getattr(event, "message", None), "usage", None)
                input_tokens = as_int(getattr(usage, "input_tokens", 0))
            elif kind == "content_block_delta":
                text = getattr(getattr(event, "delta", None), "text", None)
                if text:
                    yield text
            elif kind == "message_delta":
                output_tokens = as_int(getattr(getattr(event, "usage", None), "output_tokens", 0))
                finish = getattr(getattr(event, "delta", None), "stop_reason", None) or finish
        yield StreamEnd(input_tokens, output_tokens, finish)

    def embed(self, request: EmbedRequest) -> EmbedResponse:
        """Anthropic has no embeddings API."""
        raise unsupported(self.name, "embeddings")

    def submit_batch(self, model_id: str, items: Sequence[BatchItem]) -> str:
        """Create a Message Batch; each request's ``custom_id`` is the item id."""
        requests = [{"custom_id": item.id, "params": self.params(item.request)} for item in items]
        return str(self.client.messages.batches.create(requests=requests).id)

    def batch_state(self, batch_id: str) -> BatchState:
        """``ended`` is completed (single requests may still have failed)."""
        status = str(self.client.messages.batches.retrieve(batch_id).processing_status)
        return _STATES.get(status, "failed")

    def batch_results(self, batch_id: str) -> list[BatchItemResult]:
        """Read the results JSONL of an ended batch."""
        return [_batch_entry(entry) for entry in self.client.messages.batches.results(batch_id)]


def parse_message(message: Any) -> TextResponse:
    """A Messages API response (SDK object or dict) as a :class:`TextResponse`."""
    data = message if isinstance(message, dict) else _dump(message)
    blocks = data.get("content")
    if not isinstance(blocks, list):
        raise AIResponseError("anthropic returned a message without content")
    texts = [b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
    thinking = [
        b.get("thinking", "") for b in blocks if isinstance(b, dict) and b.get("type") == "thinking"
    ]
    if not texts:
        raise AIResponseError("anthropic returned a message with no text block")
    usage = data.get("usage") or {}
    return TextResponse(
        text="".join(texts),
        input_tokens=as_int(usage.get("input_tokens")),
        output_tokens=as_int(usage.get("output_tokens")),
        finish_reason=data.get("stop_reason"),
        reasoning="".join(thinking) or None,
    )


def _dump(value: Any) -> dict[str, Any]:
    dump = getattr(value, "model_dump", None)
    data = dump() if callable(dump) else value
    if not isinstance(data, dict):
        raise AIResponseError(f"anthropic returned an unexpected {type(value).__name__}")
    return data


def _batch_entry(entry: Any) -> BatchItemResult:
    data = _dump(entry)
    request_id = str(data.get("custom_id"))
    result = data.get("result") or {}
    kind = result.get("type")
    if kind != "succeeded":
        return BatchItemResult(request_id, None, error=_entry_error(kind, result))
    try:
        parsed = parse_message(result.get("message") or {})
    except AIResponseError as exc:
        return BatchItemResult(request_id, None, error=str(exc))
    return BatchItemResult(request_id, parsed.text, parsed.input_tokens, parsed.output_tokens)


def _entry_error(kind: Any, result: Mapping[str, Any]) -> str:
    error = result.get("error") or {}
    inner = error.get("error") if isinstance(error, dict) else None
    source = inner if isinstance(inner, dict) else error
    message = source.get("message") if isinstance(source, dict) else None
    return str(message or f"request {kind or 'failed'}")
