"""Fixtures: the three provider stand-ins, providers pointed at them, a helper per provider."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pytest_httpserver import HTTPServer

from tests.unit.ai.fakes import FakeAnthropic, FakeGemini, FakeOpenAI
from workflow_engine.ai import (
    AIHelper,
    AnthropicProvider,
    GoogleProvider,
    ModelConfig,
    ModelRegistry,
    OpenAIProvider,
    Provider,
    create_ai_helper,
)
from workflow_engine.testing import FakeClock, InMemoryAICallLogger

TOPIC = "workflow.run1.stage.classify"

#: Test models: round prices so costs are easy to check by hand.
TEST_MODELS = {
    "gpt": ModelConfig(
        id="gpt-test",
        provider="openai",
        input_cost_per_million=1.0,
        output_cost_per_million=2.0,
        batch_discount_percent=50,
        supports_async_batch=True,
    ),
    "embed": ModelConfig(
        id="embed-test", provider="openai", input_cost_per_million=1.0, is_embedding_model=True
    ),
    "claude": ModelConfig(
        id="claude-test",
        provider="anthropic",
        input_cost_per_million=3.0,
        output_cost_per_million=15.0,
        batch_discount_percent=50,
        supports_async_batch=True,
    ),
    "gemini": ModelConfig(
        id="gemini-test",
        provider="google",
        input_cost_per_million=0.5,
        output_cost_per_million=4.0,
        batch_discount_percent=50,
        supports_async_batch=True,
    ),
    "gemini-embed": ModelConfig(
        id="gemini-embed-test",
        provider="google",
        input_cost_per_million=1.0,
        is_embedding_model=True,
    ),
}


@pytest.fixture
def server(httpserver: HTTPServer) -> HTTPServer:
    """pytest-httpserver's server (one per session, its handlers cleared after each test)."""
    return httpserver


@pytest.fixture
def fake_openai(server: HTTPServer) -> FakeOpenAI:
    return FakeOpenAI(server)


@pytest.fixture
def fake_anthropic(server: HTTPServer) -> FakeAnthropic:
    return FakeAnthropic(server)


@pytest.fixture
def fake_gemini(server: HTTPServer) -> FakeGemini:
    return FakeGemini(server)


@pytest.fixture
def models() -> ModelRegistry:
    return ModelRegistry(TEST_MODELS, include_builtins=False)


@pytest.fixture
def ai_logger() -> InMemoryAICallLogger:
    return InMemoryAICallLogger(clock=FakeClock())


def openai_provider(fake: FakeOpenAI, **options: object) -> OpenAIProvider:
    return OpenAIProvider(api_key="sk-test", base_url=fake.base_url, max_retries=2, **options)


def anthropic_provider(fake: FakeAnthropic) -> AnthropicProvider:
    return AnthropicProvider(api_key="sk-ant-test", base_url=fake.base_url, max_retries=2)


def google_provider(fake: FakeGemini) -> GoogleProvider:
    return GoogleProvider(
        api_key="g-test",
        base_url=fake.base_url,
        max_retries=2,
        retry_initial_delay=0.01,
        retry_max_delay=0.02,
    )


HelperFactory = Callable[[Provider], AIHelper]


@pytest.fixture
def make_helper(models: ModelRegistry, ai_logger: InMemoryAICallLogger) -> HelperFactory:
    """A helper on TOPIC whose every model is served by ``provider``."""

    def make(provider: Provider) -> AIHelper:
        return create_ai_helper(
            TOPIC, ai_logger, provider_resolver=lambda model: provider, models=models
        )

    return make
