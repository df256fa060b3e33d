"""Logging each call once, with its duration and status, whether it succeeded or not."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from workflow_engine.ai.logger import AICall, AICallLogger
from workflow_engine.ai.models import ModelConfig, ModelRegistry

__all__ = ["CallLog", "Recorder"]

log = logging.getLogger("workflow_engine.ai")


@dataclass
class CallLog:
    """One call being made: fill in ``response`` and tokens with :meth:`succeed`."""

    topic: str
    call_type: str
    model_key: str
    model: ModelConfig
    prompt: str
    details: dict[str, Any]
    response: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    status: str = "error"
    extra: dict[str, Any] = field(default_factory=dict)

    def bill(self, response: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        """Record what came back and was paid for (logged even if the call then fails)."""
        self.response = response
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cost = cost

    def succeed(
        self, response: str, input_tokens: int, output_tokens: int, cost: float, **extra: Any
    ) -> None:
        """Record what came back; the call is logged as a success."""
        self.bill(response, input_tokens, output_tokens, cost)
        self.status = "success"
        self.extra.update(extra)


class Recorder:
    """Prices calls and logs them; a logger that fails is reported, never raised."""

    def __init__(
        self,
        logger: AICallLogger,
        models: ModelRegistry,
        log_context: Mapping[str, Any] | None = None,
    ) -> None:
        self.logger = logger
        self.models = models
        self.log_context = dict(log_context or {})

    def cost(self, model_key: str, input_tokens: int, output_tokens: int, batch: bool) -> float:
        """Total cost of the tokens on a model."""
        return self.models.calculate_cost(
            model_key, input_tokens, output_tokens, batch=batch
        ).total_cost

    def log(self, call: AICall) -> None:
        """Hand ``call`` to the logger; log (do not raise) if the logger fails."""
        try:
            self.logger.log_call(call)
        except Exception:
            log.warning("could not log an AI call on topic %s", call.topic, exc_info=True)

    def metadata(self, **fields: Any) -> dict[str, Any]:
        """Call metadata with the helper's log context; ``None`` values dropped."""
        merged = {**self.log_context, **fields}
        return {key: value for key, value in merged.items() if value is not None}

    @contextmanager
    def call(
        self,
        topic: str,
        call_type: str,
        model_key: str,
        model: ModelConfig,
        prompt: str,
        **details: Any,
    ) -> Iterator[CallLog]:
        """Time a call and log it once on the way out, as a failure if it raised."""
        entry = CallLog(topic, call_type, model_key, model, prompt, details)
        started = time.perf_counter()
        try:
            yield entry
        except BaseException as exc:
            entry.extra["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.finish(entry, started)

    def finish(self, entry: CallLog, started: float) -> None:
        """Log ``entry`` with its duration since ``started`` (a ``perf_counter`` value)."""
        duration_ms = int((time.perf_counter() - started) * 1000)
        metadata = self.metadata(
            status=entry.status,
            duration_ms=duration_ms,
            provider=entry.model.provider,
            **entry.details,
            **entry.extra,
        )
        self.log(
            AICall(
                topic=entry.topic,
                call_type=entry.call_type,
                model_key=entry.model_key,
                model_id=entry.model.id,
                prompt=entry.prompt,
                response=entry.response,
                input_tokens=entry.input_tokens,
                output_tokens=entry.output_tokens,
                cost=entry.cost,
                metadata=metadata,
            )
        )
