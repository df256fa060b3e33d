"""The helper's own behaviour: topics, children, manual records, errors, provider resolution."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from workflow_engine.ai import (
    AIError,
    AnthropicProvider,
    GoogleProvider,
    MissingAPIKeyError,
    ModelConfig,
    ModelRegistry,
    OpenAIProvider,
    ProviderCache,
    UnknownModelError,
    UnknownProviderError,
    create_ai_helper,
)
from workflow_engine.ai.providers.base import (
    BatchItem,
    BatchItemResult,
    BatchState,
    EmbedRequest,
    EmbedResponse,
    StreamEnd,
    TextRequest,
    TextResponse,
)
from workflow_engine.testing import FakeClock, InMemoryAICallLogger

MODELS = ModelRegistry(
    {
        "echo": {
            "id": "echo-1",
            "provider": "echo",
            "input_cost_per_million": 1.0,
            "output_cost_per_million": 1.0,
            "batch_discount_percent": 50,
        }
    },
    include_builtins=False,
)


class EchoProvider:
    """A provider a resolver can plug in: answers with the prompt."""

    name = "echo"

    def __init__(self) -> None:
        self.requests: list[TextRequest] = []

    def generate(self, request: TextRequest) -> TextResponse:
        self.requests.append(request)
        text = str(request.messages[-1]["content"])
        return TextResponse(text, len(text), len(text), "stop")

    def stream(self, request: TextRequest) -> Iterator[str | StreamEnd]:
        yield from ("ec", "ho")
        raise ConnectionError("stream cut")

    def embed(self, request: EmbedRequest) -> EmbedResponse:
        return EmbedResponse([[1.0, 2.0]] * len(request.texts), 4)

    def submit_batch(self, model_id: str, items: Sequence[BatchItem]) -> str:
        raise ConnectionError("provider down")

    def batch_state(self, batch_id: str) -> BatchState:
        return "processing"

    def batch_results(self, batch_id: str) -> list[BatchItemResult]:
        return []


@pytest.fixture
def logger() -> InMemoryAICallLogger:
    return InMemoryAICallLogger(clock=FakeClock())


@pytest.fixture
def echo() -> EchoProvider:
    return EchoProvider()


def _helper(logger: Any, provider: Any, topic: str = "workflow.r.stage.s") -> Any:
    return create_ai_helper(topic, logger, provider_resolver=lambda m: provider, models=MODELS)


def test_a_resolver_plugs_in_any_provider(logger: InMemoryAICallLogger, echo: EchoProvider) -> None:
    result = _helper(logger, echo).generate_text("echo", "hello")
    assert result.text == "hello" and result.cost == pytest.approx(10 / 1e6)
    assert echo.requests[0].model_id == "echo-1"


def test_children_log_under_added_segments(
    logger: InMemoryAICallLogger, echo: EchoProvider
) -> None:
    ai = _helper(logger, echo)
    child = ai.create_child("tool", "search")
    assert child.topic == "workflow.r.stage.s.tool.search"
    assert ai.create_child("step").topic == "workflow.r.stage.s.step"
    child.generate_text("echo", "x")
    ai.generate_text("echo", "y")
    assert child.get_stats()["total_calls"] == 1 and ai.get_stats()["total_calls"] == 2
    with pytest.raises(ValueError):
        ai.create_child("a.b")


def test_record_call_prices_manual_calls(logger: InMemoryAICallLogger, echo: EchoProvider) -> None:
    ai = _helper(logger, echo)
    assert ai.record_call("echo", "text", "p", "r", 1_000_000, 0) == pytest.approx(1.0)
    assert ai.record_call("echo", "batch", "p", "r", 1_000_000, 0) == pytest.approx(0.5)
    call = logger.get_last_call()
    assert call is not None and call["metadata"]["status"] == "success"


def test_unknown_model(logger: InMemoryAICallLogger, echo: EchoProvider) -> None:
    with pytest.raises(UnknownModelError):
        _helper(logger, echo).generate_text("nope", "x")


def test_a_failing_logger_never_breaks_the_call(echo: EchoProvider) -> None:
    class Broken(InMemoryAICallLogger):
        def log_call(self, call: Any) -> Any:
            raise RuntimeError("db down")

    assert _helper(Broken(), echo).generate_text("echo", "still works").text == "still works"


def test_a_stream_error_is_logged_once_as_failed(
    logger: InMemoryAICallLogger, echo: EchoProvider
) -> None:
    stream = _helper(logger, echo).stream_text("echo", "x")
    with pytest.raises(ConnectionError):
        list(stream)
    [call] = logger.get_all_calls()
    assert call["metadata"]["status"] == "error" and call["response"] == "echo"
    assert "stream cut" in call["metadata"]["error"]


def test_a_failed_batch_submission_is_logged(
    logger: InMemoryAICallLogger, echo: EchoProvider
) -> None:
    batch = _helper(logger, echo).batch("echo")
    with pytest.raises(ConnectionError):
        batch.submit([{"id": "a", "prompt": "x"}])
    [call] = logger.get_all_calls()
    assert call["call_type"] == "batch_submit" and call["metadata"]["status"] == "error"
    with pytest.raises(AIError, match="is processing, not completed"):
        batch.get_results("b1")
    with pytest.raises(AIError, match="unique"):
        batch.submit([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])


def test_create_ai_helper_needs_a_logger() -> None:
    with pytest.raises(AIError):
        create_ai_helper("t", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("provider", "env_var"),
    [
        (OpenAIProvider(), "OPENAI_API_KEY"),
        (OpenAIProvider.openrouter(), "OPENROUTER_API_KEY"),
        (AnthropicProvider(), "ANTHROPIC_API_KEY"),
        (GoogleProvider(), "GEMINI_API_KEY or GOOGLE_API_KEY"),
    ],
)
def test_a_missing_api_key_names_the_environment_variable(
    provider: Any, env_var: str, monkeypatch: pytest.MonkeyPatch, logger: InMemoryAICallLogger
) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENROUTER_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    ai = _helper(logger, provider)
    with pytest.raises(MissingAPIKeyError, match=f"set the {env_var} environment variable"):
        ai.generate_text("echo", "x")
    assert logger.get_all_calls()[0]["metadata"]["status"] == "error"


def test_built_in_providers_are_chosen_by_model_provider_and_reused() -> None:
    cache = ProviderCache()
    openai_model = ModelConfig(id="gpt", provider="openai")
    assert isinstance(cache.get(openai_model), OpenAIProvider)
    assert cache.get(openai_model) is cache.get(ModelConfig(id="gpt-2", provider="openai"))
    assert isinstance(cache.get(ModelConfig(id="c", provider="anthropic")), AnthropicProvider)
    assert isinstance(cache.get(ModelConfig(id="g", provider="google")), GoogleProvider)
    router = cache.get(ModelConfig(id="x/y", provider="openrouter"))
    assert isinstance(router, OpenAIProvider) and router.name == "openrouter"
    local = cache.get(ModelConfig(id="llama", provider="vllm", base_url="http://h/v1"))
    assert isinstance(local, OpenAIProvider) and local.name == "vllm"
    with pytest.raises(UnknownProviderError, match="pass provider_resolver="):
        cache.get(ModelConfig(id="m", provider="mystery"))


def test_a_resolver_returning_none_falls_back_to_built_ins() -> None:
    cache = ProviderCache(lambda model: None)
    assert isinstance(cache.get(ModelConfig(id="g", provider="google")), GoogleProvider)


def test_importing_the_ai_package_loads_no_sdk() -> None:
    script = textwrap.dedent(
        """
        import sys, workflow_engine, workflow_engine.kernel, workflow_engine.ai
        import workflow_engine.testing
        from workflow_engine.ai import OpenAIProvider, AnthropicProvider, GoogleProvider
        OpenAIProvider(); AnthropicProvider(); GoogleProvider()
        sdks = ("openai", "anthropic", "google.genai", "httpx", "httpx2")
        print(sorted(m for m in sdks if m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
