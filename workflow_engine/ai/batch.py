"""Provider batch APIs: submit many requests at the batch discount, poll, collect the results.

An async-batch stage submits in ``execute``, keeps the batch id in its suspended state, and in
``check_completion`` asks :meth:`AIBatch.get_status` and then :meth:`AIBatch.get_results`.
Results are logged once per batch (at the discounted price) under the helper's topic, even if
``get_results`` is called again (after a crash, say).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from workflow_engine.ai.errors import AIError, AIResponseError
from workflow_engine.ai.logger import AICall, batch_call_id
from workflow_engine.ai.models import ModelConfig
from workflow_engine.ai.prompts import Prompt, messages
from workflow_engine.ai.providers.base import BatchItem, BatchItemResult, TextRequest
from workflow_engine.ai.recording import log
from workflow_engine.ai.results import BatchHandle, BatchResult, BatchStatus
from workflow_engine.ai.schema import closed_schema, parse_json_text, validate_json_text

if TYPE_CHECKING:
    from workflow_engine.ai.helper import AIHelper

__all__ = ["AIBatch", "BatchRequest"]

SchemaSpec = type[BaseModel] | Mapping[str, type[BaseModel]] | None


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch. ``id`` names its result; ``schema`` asks for JSON output."""

    id: str
    prompt: Prompt
    system: str | None = None
    schema: type[BaseModel] | None = None
    temperature: float | None = None
    max_tokens: int | None = None


class AIBatch:
    """A batch of chat requests on one model, through the provider's batch API."""

    def __init__(self, helper: AIHelper, model_key: str, model: ModelConfig) -> None:
        self._helper = helper
        self.model_key = model_key
        self.model = model
        self._schemas: dict[str, dict[str, type[BaseModel]]] = {}

    @property
    def provider_name(self) -> str:
        """The provider running the batch."""
        return self.model.provider

    def submit(self, requests: Sequence[BatchRequest | Mapping[str, Any]]) -> BatchHandle:
        """Submit the requests; return the handle (its ``id`` is what to poll).

        The submission is logged as a ``batch_submit`` call (no tokens); a failed one is
        logged as failed and re-raised.
        """
        items = [_as_request(r) for r in requests]
        if not items:
            raise AIError("a batch needs at least one request")
        if len({item.id for item in items}) != len(items):
            raise AIError("batch request ids must be unique")
        recorder = self._helper.recorder
        with recorder.call(
            self._helper.topic,
            "batch_submit",
            self.model_key,
            self.model,
            f"[batch of {len(items)} requests]",
        ) as call:
            batch_id = self._provider().submit_batch(self.model.id, self._items(items))
            call.succeed("", 0, 0, 0.0, batch_id=batch_id)
        self._schemas[batch_id] = {i.id: i.schema for i in items if i.schema is not None}
        return BatchHandle(batch_id, "pending", self.provider_name, self.model_key, len(items))

    def get_status(self, batch_id: str) -> BatchStatus:
        """Where the batch is: pending, processing, completed or failed."""
        return BatchStatus(batch_id, self._provider().batch_state(batch_id), self.provider_name)

    def get_results(self, batch_id: str, *, schema: SchemaSpec = None) -> list[BatchResult]:
        """The results of a completed batch, validated and logged (once per batch).

        ``schema`` (one model for all requests, or request id -> model) is needed when the
        batch was submitted by another process; otherwise the submit-time schemas are used.
        Output that is not valid for its schema becomes a failed result. Without a schema,
        JSON output is parsed and anything else is returned as text.
        """
        status = self._provider().batch_state(batch_id)
        if status != "completed":
            raise AIError(f"batch {batch_id} is {status}, not completed")
        raw = self._provider().batch_results(batch_id)
        results = [self._result(item, self._schema_for(batch_id, item.id, schema)) for item in raw]
        self._record(batch_id, results)
        return results

    async def asubmit(self, requests: Sequence[BatchRequest | Mapping[str, Any]]) -> BatchHandle:
        """:meth:`submit` for ``async`` code."""
        return await asyncio.to_thread(self.submit, requests)

    async def aget_status(self, batch_id: str) -> BatchStatus:
        """:meth:`get_status` for ``async`` code."""
        return await asyncio.to_thread(self.get_status, batch_id)

    async def aget_results(self, batch_id: str, *, schema: SchemaSpec = None) -> list[BatchResult]:
        """:meth:`get_results` for ``async`` code."""
        return await asyncio.to_thread(self.get_results, batch_id, schema=schema)

    # -- internals -----------------------------------------------------------------------------

    def _provider(self) -> Any:
        return self._helper.provider(self.model)

    def _items(self, requests: Sequence[BatchRequest]) -> list[BatchItem]:
        items = []
        for request in requests:
            text_request = TextRequest(
                model_id=self.model.id,
                messages=messages(request.prompt),
                system=request.system,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
            )
            if request.schema is not None:
                text_request = replace(
                    text_request,
                    json_schema=closed_schema(request.schema),
                    schema_name=request.schema.__name__,
                )
            items.append(BatchItem(request.id, text_request))
        return items

    def _schema_for(
        self, batch_id: str, request_id: str, spec: SchemaSpec
    ) -> type[BaseModel] | None:
        if isinstance(spec, type):
            return spec
        if spec is not None:
            return spec.get(request_id)
        return self._schemas.get(batch_id, {}).get(request_id)

    def _result(self, item: BatchItemResult, schema: type[BaseModel] | None) -> BatchResult:
        cost = self._helper.recorder.cost(
            self.model_key, item.input_tokens, item.output_tokens, True
        )
        base = BatchResult(
            item.id, "failed", None, item.text, item.input_tokens, item.output_tokens, cost
        )
        if item.text is None:
            return replace(base, error=item.error or "no output")
        try:
            value = _parse(item.text, schema, where=f"batch request {item.id}")
        except AIResponseError as exc:
            return replace(base, error=str(exc))
        return replace(base, status="succeeded", result=value)

    def _record(self, batch_id: str, results: Sequence[BatchResult]) -> None:
        recorder = self._helper.recorder
        logger = recorder.logger
        try:
            if logger.is_recorded(batch_id):
                return
            logger.log_batch_results(batch_id, [self._call(batch_id, r) for r in results])
        except Exception:
            log.warning("could not log the results of batch %s", batch_id, exc_info=True)

    def _call(self, batch_id: str, result: BatchResult) -> AICall:
        metadata = self._helper.recorder.metadata(
            batch_id=batch_id,
            request_id=result.id,
            status="success" if result.status == "succeeded" else "error",
            error=result.error,
            provider=self.provider_name,
        )
        return AICall(
            id=batch_call_id(batch_id, result.id),
            topic=self._helper.topic,
            call_type="batch",
            model_key=self.model_key,
            model_id=self.model.id,
            prompt=f"[batch {batch_id} request {result.id}]",
            response=result.text or "",
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost=result.cost,
            metadata=metadata,
        )


def _as_request(request: BatchRequest | Mapping[str, Any]) -> BatchRequest:
    if isinstance(request, BatchRequest):
        return request
    return BatchRequest(**dict(request))


def _parse(text: str, schema: type[BaseModel] | None, *, where: str) -> Any:
    if schema is not None:
        return validate_json_text(schema, text, where=where)
    try:
        return parse_json_text(text)
    except ValueError:
        return text
