"""The model registry and cost calculation."""

from __future__ import annotations

import pytest

from workflow_engine.ai import (
    BUILTIN_MODELS,
    DEFAULT_MODEL_KEY,
    ModelConfig,
    ModelRegistry,
    UnknownModelError,
    calculate_cost,
    default_registry,
    get_model,
    list_models,
    register_models,
)


def test_builtins_cover_the_three_providers_with_prices() -> None:
    providers = {model.provider for model in BUILTIN_MODELS.values()}
    assert {"openai", "anthropic", "google"} <= providers
    assert DEFAULT_MODEL_KEY in BUILTIN_MODELS
    for model in BUILTIN_MODELS.values():
        assert model.input_cost_per_million > 0


def test_cost_is_per_million_tokens_with_the_batch_discount() -> None:
    registry = ModelRegistry(
        {
            "m": {
                "id": "m-1",
                "provider": "openai",
                "input_cost_per_million": 2.0,
                "output_cost_per_million": 8.0,
                "batch_discount_percent": 50,
            }
        },
        include_builtins=False,
    )
    cost = registry.calculate_cost("m", 1_000_000, 500_000)
    assert (cost.input_cost, cost.output_cost, cost.total_cost) == (2.0, 4.0, 6.0)
    batch = registry.calculate_cost("m", 1_000_000, 500_000, batch=True)
    assert (batch.input_cost, batch.output_cost, batch.total_cost) == (1.0, 2.0, 3.0)
    assert registry.calculate_cost("m", 0, 0).total_cost == 0


def test_gemini_flash_price_matches_the_original() -> None:
    cost = calculate_cost("gemini-2.5-flash", 1_000_000, 1_000_000)
    assert cost.total_cost == pytest.approx(0.30 + 2.50)
    assert calculate_cost("gemini-2.5-flash", 1_000_000, 1_000_000, batch=True).total_cost == (
        pytest.approx((0.30 + 2.50) / 2)
    )


def test_unknown_model_lists_the_available_keys() -> None:
    registry = ModelRegistry({"b": {"id": "b", "provider": "x"}}, include_builtins=False)
    with pytest.raises(UnknownModelError, match=r"Unknown model 'a'\. Available models: b") as err:
        registry.get("a")
    assert isinstance(err.value, KeyError)


def test_prices_are_data_users_override() -> None:
    registry = ModelRegistry()
    registry.register(
        {"gpt-4o-mini": {"id": "gpt-4o-mini", "provider": "openai", "input_cost_per_million": 0.01}}
    )
    assert registry.get("gpt-4o-mini").input_cost_per_million == 0.01
    assert BUILTIN_MODELS["gpt-4o-mini"].input_cost_per_million == 0.15  # builtins untouched


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        ModelRegistry({"m": {"id": "m", "provider": "p", "batch_discount_percent": 150}})
    with pytest.raises(ValueError):
        ModelConfig(id="m", provider="p", unknown_field=1)  # type: ignore[call-arg]


def test_list_models_filters_by_fields_or_predicate_sorted_by_key() -> None:
    embeddings = list_models({"is_embedding_model": True})
    assert list(embeddings) == sorted(embeddings) and "text-embedding-3-small" in embeddings
    cheap = list_models(lambda m: m.input_cost_per_million < 0.5)
    assert all(m.input_cost_per_million < 0.5 for m in cheap.values())
    assert "gpt-4.1" not in cheap


def test_the_default_registry_is_process_wide() -> None:
    register_models(
        {"my-local": ModelConfig(id="llama3", provider="vllm", base_url="http://localhost:8000/v1")}
    )
    try:
        assert get_model("my-local").id == "llama3"
        assert "my-local" in list_models({"provider": "vllm"})
    finally:
        default_registry._models.pop("my-local")
