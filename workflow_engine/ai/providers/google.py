"""Google Gemini through the ``google-genai`` SDK: content, streaming, embeddings, batch mode.

The SDK is imported when the first client is made. Structured output is native
(``response_json_schema``); batches are inline batch-mode requests whose ``metadata.key``
carries the request id. Retries of 408, 429 and 5xx answers are the SDK's
(``HttpRetryOptions``: ``max_retries`` plus the first attempt).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

from workflow_engine.ai.errors import AIResponseError, MissingAPIKeyError, ProviderNotInstalledError
from workflow_engine.ai.providers.base import (
    BatchItem,
    BatchItemResult,
    BatchState,
    EmbedRequest,
    EmbedResponse,
    StreamEnd,
    TextRequest,
    TextResponse,
    as_int,
)

__all__ = ["GoogleProvider"]

_KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
_STATES: Mapping[str, BatchState] = {
    "JOB_STATE_UNSPECIFIED": "pending",
    "JOB_STATE_QUEUED": "pending",
    "JOB_STATE_PENDING": "pending",
    "JOB_STATE_RUNNING": "processing",
    "JOB_STATE_UPDATING": "processing",
    "JOB_STATE_PAUSED": "processing",
    "JOB_STATE_CANCELLING": "processing",
    "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",
}


class GoogleProvider:
    """Gemini models on the Gemini Developer API.

    ``api_key`` defaults to ``GEMINI_API_KEY`` (or ``GOOGLE_API_KEY``). ``base_url`` points
    the SDK elsewhere; ``retry_initial_delay``/``retry_max_delay`` tune its back-off.
    """

    name = "google"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 2,
        retry_initial_delay: float = 1.0,
        retry_max_delay: float = 30.0,
        timeout_ms: int | None = None,
        client: Any = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._retry = (max_retries + 1, retry_initial_delay, retry_max_delay)
        self._timeout_ms = timeout_ms
        if client is not None:
            self.__dict__["client"] = client

    @cached_property
    def client(self) -> Any:
        """The ``google.genai.Client``, made on first use."""
        try:
            from google import genai
            from google.genai import types
        except ImportError as exc:
            raise ProviderNotInstalledError(self.name, "google-genai", "google") from exc
        attempts, initial, maximum = self._retry
        http_options = types.HttpOptions(
            base_url=self._base_url,
            timeout=self._timeout_ms,
            retry_options=types.HttpRetryOptions(
                attempts=attempts, initial_delay=initial, max_delay=maximum
            ),
        )
        return genai.Client(api_key=self._key(), http_options=http_options)

    def _key(self) -> str:
        key = self._api_key or next((os.environ[e] for e in _KEY_ENVS if os.environ.get(e)), None)
        if not key:
            raise MissingAPIKeyError(self.name, " or ".join(_KEY_ENVS))
        return key

    def config(self, request: TextRequest) -> dict[str, Any]:
        """The ``GenerateContentConfig`` fields of a request."""
        config: dict[str, Any] = {}
        if request.system:
            config["system_instruction"] = request.system
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.max_tokens is not None:
            config["max_output_tokens"] = request.max_tokens
        if request.json_schema is not None:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = dict(request.json_schema)
        config.update(request.options)
        return config

    def generate(self, request: TextRequest) -> TextResponse:
        """One ``generate_content`` call."""
        response = self.client.models.generate_content(
            model=request.model_id, contents=contents(request), config=self.config(request)
        )
        return parse_content_response(response)

    def stream(self, request: TextRequest) -> Iterator[str | StreamEnd]:
        """Text of each streamed chunk; the usage comes with the last chunks."""
        input_tokens = output_tokens = 0
        finish: str | None = None
        for chunk in self.client.models.generate_content_stream(
            model=request.model_id, contents=contents(request), config=self.config(request)
        ):
            data = _dump(chunk)
            tokens = _usage(data)
            if tokens != (0, 0):
                input_tokens, output_tokens = tokens
            finish = _finish_reason(data) or finish
            text = "".join(_texts(data, thought=False))
            if text:
                yield text
        yield StreamEnd(input_tokens, output_tokens, finish)

    def embed(self, request: EmbedRequest) -> EmbedResponse:
        """``embed_content`` with one content per text (a plain list of strings would be one
        multi-part content on multimodal models); Gemini reports no token usage for it."""
        config: dict[str, Any] = {"task_type": request.task_type or "RETRIEVAL_DOCUMENT"}
        if request.dimensions is not None:
            config["output_dimensionality"] = request.dimensions
        config.update(request.options)
        response = self.client.models.embed_content(
            model=request.model_id,
            contents=[{"parts": [{"text": text}]} for text in request.texts],
            config=config,
        )
        vectors = [e.get("values") for e in _dump(response).get("embeddings") or []]
        if len(vectors) != len(request.texts) or not all(isinstance(v, list) for v in vectors):
            raise AIResponseError("google returned a malformed embeddings response")
        return EmbedResponse([list(v) for v in vectors if isinstance(v, list)], None)

    def batch_requests(self, items: Sequence[BatchItem]) -> list[dict[str, Any]]:
        """The inline requests of a batch job."""
        return [
            {
                "contents": contents(item.request),
                "config": self.config(item.request),
                "metadata": {"key": item.id},
            }
            for item in items
        ]

    def submit_batch(self, model_id: str, items: Sequence[BatchItem]) -> str:
        """Create an inline batch job; return its name (``batches/...``)."""
        job = self.client.batches.create(
            model=model_id,
            src=self.batch_requests(items),
            config={"display_name": f"workflow-engine-{len(items)}"},
        )
        return str(job.name)

    def batch_state(self, batch_id: str) -> BatchState:
        """Queued and pending are pending; failed, cancelled and expired are failed."""
        return _STATES.get(_state(self.client.batches.get(name=batch_id)), "failed")

    def batch_results(self, batch_id: str) -> list[BatchItemResult]:
        """The inline responses of a finished job, matched by ``metadata.key`` (else order)."""
        job = _dump(self.client.batches.get(name=batch_id))
        responses = (job.get("dest") or {}).get("inlined_responses") or []
        return [_inline_result(index, entry) for index, entry in enumerate(responses)]


def contents(request: TextRequest) -> list[dict[str, Any]]:
    """Chat messages as Gemini contents (``assistant`` is ``model``)."""
    return [
        {
            "role": "model" if message.get("role") == "assistant" else "user",
            "parts": [{"text": str(message.get("content", ""))}],
        }
        for message in request.messages
    ]


def parse_content_response(response: Any) -> TextResponse:
    """A ``GenerateContentResponse`` (SDK object or dict) as a :class:`TextResponse`."""
    data = _dump(response)
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        feedback = data.get("prompt_feedback") or {}
        reason = feedback.get("block_reason") if isinstance(feedback, dict) else None
        raise AIResponseError(
            "google returned no candidates" + (f" (blocked: {reason})" if reason else "")
        )
    texts = _texts(data, thought=False)
    if not texts:
        raise AIResponseError("google returned a candidate with no text")
    input_tokens, output_tokens = _usage(data)
    return TextResponse(
        text="".join(texts),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        finish_reason=_finish_reason(data),
        reasoning="".join(_texts(data, thought=True)) or None,
    )


def _dump(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    dump = getattr(value, "model_dump", None)
    data = dump(mode="json", exclude_none=True) if callable(dump) else None
    if not isinstance(data, dict):
        raise AIResponseError(f"google returned an unexpected {type(value).__name__}")
    return data


def _parts(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    candidates = data.get("candidates") or []
    first = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    parts = (first.get("content") or {}).get("parts") or []
    return [part for part in parts if isinstance(part, dict)]


def _texts(data: Mapping[str, Any], *, thought: bool) -> list[str]:
    return [
        str(part["text"])
        for part in _parts(data)
        if part.get("text") is not None and bool(part.get("thought")) is thought
    ]


def _finish_reason(data: Mapping[str, Any]) -> str | None:
    candidates = data.get("candidates") or []
    if candidates and isinstance(candidates[0], dict):
        reason = candidates[0].get("finish_reason")
        return str(reason) if reason else None
    return None


def _usage(data: Mapping[str, Any]) -> tuple[int, int]:
    usage = data.get("usage_metadata") or {}
    output = as_int(usage.get("candidates_token_count")) + as_int(usage.get("thoughts_token_count"))
    return as_int(usage.get("prompt_token_count")), output


def _state(job: Any) -> str:
    state = getattr(job, "state", None)
    return str(getattr(state, "value", state) or "JOB_STATE_UNSPECIFIED")


def _inline_result(index: int, entry: Mapping[str, Any]) -> BatchItemResult:
    request_id = str((entry.get("metadata") or {}).get("key") or index)
    error = entry.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        return BatchItemResult(request_id, None, error=str(message or "request failed"))
    try:
        parsed = parse_content_response(entry.get("response") or {})
    except AIResponseError as exc:
        return BatchItemResult(request_id, None, error=str(exc))
    return BatchItemResult(request_id, parsed.text, parsed.input_tokens, parsed.output_tokens)
