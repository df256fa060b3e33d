"""``AIHelper``: one object for a stage's AI calls, each logged with tokens and cost under a topic.

>>> ai = create_ai_helper("workflow.run1.stage.classify", logger)
>>> ai.generate_text("gpt-4o-mini", "Say hi").text

Every method has an ``async`` twin (``agenerate_text`` ...) that runs the provider's
synchronous SDK client in a worker thread, for ``async def`` stages.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from workflow_engine.ai.errors import AIError, AIResponseError
from workflow_engine.ai.logger import AICall, AICallLogger, AICallStats
from workflow_engine.ai.models import ModelConfig, ModelRegistry, default_registry
from workflow_engine.ai.prompts import Prompt, messages, prompt_text
from workflow_engine.ai.providers import Provider, ProviderCache, ProviderResolver
from workflow_engine.ai.providers.base import EmbedRequest, TextRequest
from workflow_engine.ai.recording import CallLog, Recorder
from workflow_engine.ai.results import EmbedResult, ObjectResult, TextResult
from workflow_engine.ai.schema import closed_schema, validate_json_text
from workflow_engine.ai.streams import AsyncTextStream, TextStream

if TYPE_CHECKING:
    from workflow_engine.ai.batch import AIBatch

__all__ = ["AIHelper", "Prompt", "create_ai_helper"]

M = TypeVar("M", bound=BaseModel)


def create_ai_helper(
    topic: str,
    logger: AICallLogger,
    *,
    provider_resolver: ProviderResolver | None = None,
    models: ModelRegistry | None = None,
    log_context: Mapping[str, Any] | None = None,
    providers: ProviderCache | None = None,
) -> AIHelper:
    """A helper logging under ``topic`` to ``logger``.

    ``provider_resolver(model)`` may return a provider for a model (``None``: built-in);
    ``models`` defaults to the process-wide registry; ``log_context`` is added to every
    call's metadata; ``providers`` shares built-in provider clients between helpers.
    """
    if logger is None:
        raise AIError("create_ai_helper needs an AI call logger")
    recorder = Recorder(logger, models or default_registry, log_context)
    return AIHelper(topic, recorder, providers or ProviderCache(provider_resolver))


class AIHelper:
    """Text, structured objects, embeddings, streams and batches; every call logged."""

    def __init__(self, topic: str, recorder: Recorder, providers: ProviderCache) -> None:
        self._topic = topic
        self._recorder = recorder
        self._providers = providers

    @property
    def topic(self) -> str:
        """The topic this helper logs under."""
        return self._topic

    @property
    def logger(self) -> AICallLogger:
        """Where calls are logged."""
        return self._recorder.logger

    @property
    def models(self) -> ModelRegistry:
        """The model registry (prices, providers) this helper uses."""
        return self._recorder.models

    def model(self, model_key: str) -> ModelConfig:
        """The registered model under ``model_key``."""
        return self.models.get(model_key)

    def provider(self, model: ModelConfig) -> Provider:
        """The provider serving ``model``."""
        return self._providers.get(model)

    # -- text ----------------------------------------------------------------------------------

    def generate_text(
        self,
        model_key: str,
        prompt: Prompt,
        *,
        system: str | None = None,
        temperature: float | None = 0.7,
        max_tokens: int | None = None,
        provider_options: Mapping[str, Any] | None = None,
    ) -> TextResult:
        """Generate text. ``provider_options`` go to the SDK call unchanged."""
        model = self.model(model_key)
        request = _request(model, prompt, system, temperature, max_tokens, provider_options)
        with self._recorder.call(
            self._topic,
            "text",
            model_key,
            model,
            prompt_text(prompt),
            temperature=temperature,
            max_tokens=max_tokens,
        ) as call:
            response = self.provider(model).generate(request)
            cost = self._recorder.cost(
                model_key, response.input_tokens, response.output_tokens, False
            )
            call.succeed(
                response.text,
                response.input_tokens,
                response.output_tokens,
                cost,
                finish_reason=response.finish_reason,
                has_reasoning=bool(response.reasoning) or None,
            )
        return TextResult(
            response.text,
            response.input_tokens,
            response.output_tokens,
            cost,
            response.finish_reason,
            response.reasoning,
        )

    async def agenerate_text(self, model_key: str, prompt: Prompt, **options: Any) -> TextResult:
        """:meth:`generate_text` for ``async`` code."""
        return await asyncio.to_thread(self.generate_text, model_key, prompt, **options)

    # -- objects -------------------------------------------------------------------------------

    def generate_object(
        self,
        model_key: str,
        prompt: Prompt,
        schema: type[M],
        *,
        system: str | None = None,
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        provider_options: Mapping[str, Any] | None = None,
    ) -> ObjectResult[M]:
        """Generate JSON matching ``schema`` and return it validated.

        Raises :class:`AIResponseError` (and logs the call as failed, tokens included) when
        the output is not valid JSON for the schema.
        """
        model = self.model(model_key)
        request = _request(model, prompt, system, temperature, max_tokens, provider_options)
        request = _with_schema(request, schema)
        with self._recorder.call(
            self._topic,
            "object",
            model_key,
            model,
            prompt_text(prompt),
            temperature=temperature,
            max_tokens=max_tokens,
            schema=schema.__name__,
        ) as call:
            response = self.provider(model).generate(request)
            cost = self._recorder.cost(
                model_key, response.input_tokens, response.output_tokens, False
            )
            call.bill(response.text, response.input_tokens, response.output_tokens, cost)
            value = validate_json_text(schema, response.text, where=f"{model.provider} {model.id}")
            call.succeed(
                value.model_dump_json(indent=2),
                response.input_tokens,
                response.output_tokens,
                cost,
                finish_reason=response.finish_reason,
            )
        return ObjectResult(value, response.input_tokens, response.output_tokens, cost)

    async def agenerate_object(
        self, model_key: str, prompt: Prompt, schema: type[M], **options: Any
    ) -> ObjectResult[M]:
        """:meth:`generate_object` for ``async`` code."""
        call = functools.partial(self.generate_object, model_key, prompt, schema, **options)
        return await asyncio.to_thread(call)

    # -- embeddings ----------------------------------------------------------------------------

    def embed(
        self,
        model_key: str,
        text: str | Sequence[str],
        *,
        dimensions: int | None = None,
        task_type: str | None = None,
        provider_options: Mapping[str, Any] | None = None,
    ) -> EmbedResult:
        """Embed one text or several (one provider call either way).

        When the provider reports no token usage, tokens are estimated (4 characters per
        token) and the call's metadata says ``estimated_tokens``.
        """
        texts = (text,) if isinstance(text, str) else tuple(text)
        if not texts:
            raise AIError("embed needs at least one text")
        model = self.model(model_key)
        request = EmbedRequest(model.id, texts, dimensions, task_type, provider_options or {})
        prompt = texts[0] if len(texts) == 1 else f"[{len(texts)} texts]"
        with self._recorder.call(
            self._topic, "embed", model_key, model, prompt, dimensions=dimensions
        ) as call:
            response = self.provider(model).embed(request)
            vectors = response.embeddings
            if len(vectors) != len(texts) or not all(vectors):
                raise AIResponseError(
                    f"{model.provider} returned {len(vectors)} embeddings for {len(texts)} texts"
                )
            tokens = response.input_tokens
            estimated = tokens is None
            tokens = _estimate_tokens(texts) if tokens is None else tokens
            cost = self._recorder.cost(model_key, tokens, 0, False)
            size = len(vectors[0])
            call.succeed(
                f"[{len(vectors)} embeddings, {size} dims]",
                tokens,
                0,
                cost,
                estimated_tokens=estimated or None,
            )
        return EmbedResult(vectors[0], vectors, size, tokens, cost)

    async def aembed(
        self, model_key: str, text: str | Sequence[str], **options: Any
    ) -> EmbedResult:
        """:meth:`embed` for ``async`` code."""
        return await asyncio.to_thread(self.embed, model_key, text, **options)

    # -- streams -------------------------------------------------------------------------------

    def stream_text(
        self,
        model_key: str,
        prompt: Prompt,
        *,
        system: str | None = None,
        temperature: float | None = 0.7,
        max_tokens: int | None = None,
        provider_options: Mapping[str, Any] | None = None,
    ) -> TextStream:
        """Stream text: iterate the result for chunks. Logged once, when the stream ends."""
        model = self.model(model_key)
        request = _request(model, prompt, system, temperature, max_tokens, provider_options)
        entry = self._recorder_entry("stream", model_key, model, prompt, temperature, max_tokens)
        provider = self.provider(model)
        return TextStream(lambda: provider.stream(request), self._recorder, entry)

    def astream_text(self, model_key: str, prompt: Prompt, **options: Any) -> AsyncTextStream:
        """:meth:`stream_text` for ``async`` code: ``async for chunk in ...``."""
        return AsyncTextStream(self.stream_text(model_key, prompt, **options))

    def _recorder_entry(
        self,
        call_type: str,
        model_key: str,
        model: ModelConfig,
        prompt: Prompt,
        temperature: float | None,
        max_tokens: int | None,
    ) -> CallLog:
        details = {"temperature": temperature, "max_tokens": max_tokens}
        return CallLog(self._topic, call_type, model_key, model, prompt_text(prompt), details)

    # -- batches, children, manual records --------------------------------------------------------

    def batch(self, model_key: str, provider: str | None = None) -> AIBatch:
        """A provider batch for ``model_key`` (on ``provider`` if given, else the model's own)."""
        from workflow_engine.ai.batch import AIBatch

        model = self.model(model_key)
        if provider is not None and provider != model.provider:
            model = model.model_copy(update={"provider": provider})
        return AIBatch(self, model_key, model)

    def create_child(self, segment: str, id: str | None = None) -> AIHelper:
        """A helper logging under ``{topic}.{segment}`` (or ``{topic}.{segment}.{id}``)."""
        if not segment or "." in segment:
            raise ValueError(f"a topic segment must be non-empty and have no dot: {segment!r}")
        topic = f"{self._topic}.{segment}" + (f".{id}" if id is not None else "")
        return AIHelper(topic, self._recorder, self._providers)

    def record_call(
        self,
        model_key: str,
        call_type: str,
        prompt: str,
        response: str,
        input_tokens: int,
        output_tokens: int,
        metadata: Mapping[str, Any] | None = None,
    ) -> float:
        """Log a call made some other way; return its cost (batch discount for ``batch``)."""
        model = self.model(model_key)
        cost = self._recorder.cost(model_key, input_tokens, output_tokens, call_type == "batch")
        self._recorder.log(
            AICall(
                topic=self._topic,
                call_type=call_type,
                model_key=model_key,
                model_id=model.id,
                prompt=prompt,
                response=response,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=cost,
                metadata=self._recorder.metadata(status="success", **dict(metadata or {})),
            )
        )
        return cost

    def get_stats(self) -> AICallStats:
        """Totals of every call logged under this helper's topic (children included)."""
        return self.logger.get_stats(self._topic)

    @property
    def recorder(self) -> Recorder:
        """The object that prices and logs this helper's calls."""
        return self._recorder


def _request(
    model: ModelConfig,
    prompt: Prompt,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
    options: Mapping[str, Any] | None,
) -> TextRequest:
    return TextRequest(
        model_id=model.id,
        messages=messages(prompt),
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        options=dict(options or {}),
    )


def _with_schema(request: TextRequest, schema: type[BaseModel]) -> TextRequest:
    return replace(request, json_schema=closed_schema(schema), schema_name=schema.__name__)


def _estimate_tokens(texts: Sequence[str]) -> int:
    return sum(math.ceil(len(text) / 4) for text in texts)
