"""OpenAI and OpenAI-compatible endpoints (OpenRouter, vLLM, Ollama) through the ``openai`` SDK.

The SDK is imported when the first client is made, so importing this module needs no SDK.
Chat completions, streaming (with usage), embeddings, and the Batch API (a JSONL file of
``/v1/chat/completions`` requests). Retries of 429 and 5xx answers are the SDK's
(``max_retries``).
"""

from __future__ import annotations

import json
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
)
from workflow_engine.ai.schema import is_strict_compatible

__all__ = ["OPENROUTER_BASE_URL", "OpenAIProvider"]

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"

_BATCH_ENDPOINT = "/v1/chat/completions"
_STATES: Mapping[str, BatchState] = {
    "validating": "pending",
    "in_progress": "processing",
    "finalizing": "processing",
    "completed": "completed",
}


class OpenAIProvider(SdkProvider):
    """Chat, streaming, embeddings and batches on OpenAI or an OpenAI-compatible server.

    ``api_key`` defaults to the ``api_key_env`` environment variable (``OPENAI_API_KEY``);
    ``base_url`` to the SDK's default (``OPENAI_BASE_URL`` or api.openai.com).
    ``max_tokens_param`` is ``max_completion_tokens`` for OpenAI, ``max_tokens`` for most
    compatible servers. ``client`` replaces the SDK client altogether.
    """

    sdk_package = "openai"
    sdk_class = "OpenAI"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        name: str = "openai",
        max_retries: int = 2,
        timeout: float | None = None,
        max_tokens_param: str = "max_completion_tokens",
        client: Any = None,
    ) -> None:
        super().__init__(
            name=name,
            api_key=api_key,
            api_key_env=api_key_env,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
            client=client,
        )
        self._max_tokens_param = max_tokens_param

    @classmethod
    def openrouter(cls, **options: Any) -> OpenAIProvider:
        """A provider for OpenRouter (``OPENROUTER_API_KEY``)."""
        options.setdefault("base_url", OPENROUTER_BASE_URL)
        options.setdefault("api_key_env", "OPENROUTER_API_KEY")
        options.setdefault("max_tokens_param", "max_tokens")
        return cls(name="openrouter", **options)

    # -- chat --------------------------------------------------------------------------------

    def chat_body(self, request: TextRequest) -> dict[str, Any]:
        """The ``chat.completions.create`` arguments (also one batch line's body)."""
        messages = list(request.messages)
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        body: dict[str, Any] = {"model": request.model_id, "messages": messages}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body[self._max_tokens_param] = request.max_tokens
        if request.json_schema is not None:
            body["response_format"] = _response_format(request)
        body.update(request.options)
        return body

    def generate(self, request: TextRequest) -> TextResponse:
        """One chat completion."""
        response = self.client.chat.completions.create(**self.chat_body(request))
        return parse_completion(response, self.name)

    def stream(self, request: TextRequest) -> Iterator[str | StreamEnd]:
        """Text deltas, then the usage (asked for with ``stream_options.include_usage``)."""
        body = {**self.chat_body(request), "stream": True}
        body.setdefault("stream_options", {"include_usage": True})
        input_tokens = output_tokens = 0
        finish: str | None = None
        for chunk in self.client.chat.completions.create(**body):
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                input_tokens = as_int(getattr(usage, "prompt_tokens", 0))
                output_tokens = as_int(getattr(usage, "completion_tokens", 0))
            for choice in getattr(chunk, "choices", None) or []:
                finish = getattr(choice, "finish_reason", None) or finish
                delta = getattr(getattr(choice, "delta", None), "content", None)
                if delta:
                    yield delta
        yield StreamEnd(input_tokens, output_tokens, finish)

    # -- embeddings --------------------------------------------------------------------------

    def embed(self, request: EmbedRequest) -> EmbedResponse:
        """Embeddings, as floats, in the order of the texts."""
        options: dict[str, Any] = {"encoding_format": "float", **request.options}
        if request.dimensions is not None:
            options["dimensions"] = request.dimensions
        response = self.client.embeddings.create(
            model=request.model_id, input=list(request.texts), **options
        )
        data = getattr(response, "data", None)
        if not isinstance(data, list) or len(data) != len(request.texts):
            raise AIResponseError(f"{self.name} returned a malformed embeddings response")
        ordered = sorted(data, key=lambda item: as_int(getattr(item, "index", 0)))
        usage = getattr(response, "usage", None)
        tokens = as_int(getattr(usage, "prompt_tokens", 0)) if usage is not None else None
        return EmbedResponse([list(item.embedding) for item in ordered], tokens)

    # -- batches -----------------------------------------------------------------------------

    def batch_lines(self, items: Sequence[BatchItem]) -> list[dict[str, Any]]:
        """The JSONL lines of a batch input file."""
        return [
            {
                "custom_id": item.id,
                "method": "POST",
                "url": _BATCH_ENDPOINT,
                "body": self.chat_body(item.request),
            }
            for item in items
        ]

    def submit_batch(self, model_id: str, items: Sequence[BatchItem]) -> str:
        """Upload the requests as a JSONL file and start a 24h batch on it."""
        lines = self.batch_lines(items)
        content = "\n".join(json.dumps(line, separators=(",", ":")) for line in lines) + "\n"
        uploaded = self.client.files.create(
            file=("batch.jsonl", content.encode(), "application/jsonl"), purpose="batch"
        )
        batch = self.client.batches.create(
            input_file_id=uploaded.id, endpoint=_BATCH_ENDPOINT, completion_window="24h"
        )
        return str(batch.id)

    def batch_state(self, batch_id: str) -> BatchState:
        """``validating`` is pending; failed, expired and cancelled batches are failed."""
        status = str(self.client.batches.retrieve(batch_id).status)
        return _STATES.get(status, "failed")

    def batch_results(self, batch_id: str) -> list[BatchItemResult]:
        """Parse the output file (and the error file) of a finished batch."""
        batch = self.client.batches.retrieve(batch_id)
        results: list[BatchItemResult] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                text = self.client.files.content(file_id).text
                results += [_batch_line(line, self.name) for line in _jsonl(text)]
        return results


def _response_format(request: TextRequest) -> dict[str, Any]:
    schema = dict(request.json_schema or {})
    return {
        "type": "json_schema",
        "json_schema": {
            "name": request.schema_name,
            "schema": schema,
            "strict": is_strict_compatible(schema),
        },
    }


def parse_completion(response: Any, provider: str) -> TextResponse:
    """A chat completion (SDK object or dict) as a :class:`TextResponse`."""
    data = response if isinstance(response, dict) else _dump(response)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise AIResponseError(f"{provider} returned a chat completion without choices")
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        raise AIResponseError(
            f"{provider} returned no text" + (f" (refusal: {refusal})" if refusal else "")
        )
    usage = data.get("usage") or {}
    return TextResponse(
        text=content,
        input_tokens=as_int(usage.get("prompt_tokens")),
        output_tokens=as_int(usage.get("completion_tokens")),
        finish_reason=choices[0].get("finish_reason"),
        reasoning=message.get("reasoning_content") or message.get("reasoning"),
    )


def _dump(response: Any) -> dict[str, Any]:
    dump = getattr(response, "model_dump", None)
    data = dump() if callable(dump) else None
    if not isinstance(data, dict):
        raise AIResponseError(f"unexpected response object {type(response).__name__}")
    return data


def _jsonl(text: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise AIResponseError(f"batch output line {number} is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise AIResponseError(f"batch output line {number} is not a JSON object")
        yield value


def _batch_line(line: dict[str, Any], provider: str) -> BatchItemResult:
    request_id = str(line.get("custom_id"))
    response = line.get("response") or {}
    error = line.get("error")
    body = response.get("body") if isinstance(response, dict) else None
    status = response.get("status_code") if isinstance(response, dict) else None
    if error or not isinstance(body, dict) or (isinstance(status, int) and status >= 400):
        message = _error_message(error or (body or {}).get("error")) or f"HTTP {status}"
        return BatchItemResult(request_id, None, error=message)
    try:
        parsed = parse_completion(body, provider)
    except AIResponseError as exc:
        return BatchItemResult(request_id, None, error=str(exc))
    return BatchItemResult(request_id, parsed.text, parsed.input_tokens, parsed.output_tokens)


def _error_message(error: Any) -> str | None:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)
    return str(error) if error else None
