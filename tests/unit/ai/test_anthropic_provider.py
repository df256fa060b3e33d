"""The helper on Anthropic, through the official SDK against a local stand-in."""

from __future__ import annotations

import anthropic
import pytest
from pydantic import BaseModel

from tests.unit.ai.conftest import TOPIC, HelperFactory, anthropic_provider
from tests.unit.ai.fakes import FakeAnthropic
from workflow_engine.ai import AIError, AIResponseError
from workflow_engine.testing import InMemoryAICallLogger


class Topic(BaseModel):
    topic: str


def test_generate_text_sends_system_and_messages(
    fake_anthropic: FakeAnthropic, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_anthropic.answer = lambda body: "Bonjour"
    ai = make_helper(anthropic_provider(fake_anthropic))

    result = ai.generate_text("claude", "Say hello in French", system="Be terse")

    assert (result.text, result.input_tokens, result.output_tokens) == ("Bonjour", 12, 5)
    assert result.cost == pytest.approx((12 * 3.0 + 5 * 15.0) / 1e6)
    [body] = fake_anthropic.posted("/v1/messages")
    assert body["model"] == "claude-test" and body["system"] == "Be terse"
    assert body["messages"] == [{"role": "user", "content": "Say hello in French"}]
    assert body["max_tokens"] == 4096  # required by the API: the provider's default
    [call] = ai_logger.get_all_calls()
    assert call["topic"] == TOPIC and call["metadata"]["finish_reason"] == "end_turn"


def test_generate_object_uses_the_output_format_schema(
    fake_anthropic: FakeAnthropic, make_helper: HelperFactory
) -> None:
    fake_anthropic.answer = lambda body: '```json\n{"topic": "sports"}\n```'
    ai = make_helper(anthropic_provider(fake_anthropic))

    assert ai.generate_object("claude", "Match report", Topic).object == Topic(topic="sports")

    [body] = fake_anthropic.posted("/v1/messages")
    output_format = body["output_config"]["format"]
    assert output_format["type"] == "json_schema"
    assert output_format["schema"]["properties"] == {"topic": {"title": "Topic", "type": "string"}}


def test_a_message_without_text_is_a_clear_error(
    fake_anthropic: FakeAnthropic, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_anthropic.malformed = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 0},
    }
    ai = make_helper(anthropic_provider(fake_anthropic))

    with pytest.raises(AIResponseError, match="no text block"):
        ai.generate_text("claude", "hi")
    assert ai_logger.get_all_calls()[0]["metadata"]["status"] == "error"


@pytest.mark.parametrize("status", [429, 529])
def test_overload_and_rate_limits_are_retried(
    fake_anthropic: FakeAnthropic, make_helper: HelperFactory, status: int
) -> None:
    fake_anthropic.fail_next(status)
    ai = make_helper(anthropic_provider(fake_anthropic))

    assert ai.generate_text("claude", "hi").text == "ok"
    assert len(fake_anthropic.posted("/v1/messages")) == 2


def test_a_client_error_is_not_retried(
    fake_anthropic: FakeAnthropic, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_anthropic.fail_next(400)
    ai = make_helper(anthropic_provider(fake_anthropic))

    with pytest.raises(anthropic.APIStatusError):
        ai.generate_text("claude", "hi")
    assert len(fake_anthropic.posted("/v1/messages")) == 1
    assert ai_logger.get_all_calls()[0]["metadata"]["status"] == "error"


def test_stream_text_reads_the_event_stream(
    fake_anthropic: FakeAnthropic, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_anthropic.answer = lambda body: "one two three four"
    ai = make_helper(anthropic_provider(fake_anthropic))

    stream = ai.stream_text("claude", "count")
    assert stream.get_text() == "one two three four"
    assert (stream.get_usage().input_tokens, stream.get_usage().output_tokens) == (12, 5)
    [call] = ai_logger.get_all_calls()
    assert call["call_type"] == "stream" and call["output_tokens"] == 5
    assert fake_anthropic.posted("/v1/messages")[0]["stream"] is True


def test_embeddings_are_not_offered(
    fake_anthropic: FakeAnthropic, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    ai = make_helper(anthropic_provider(fake_anthropic))
    with pytest.raises(AIError, match="does not support embeddings"):
        ai.embed("claude", "text")
    assert ai_logger.get_all_calls()[0]["metadata"]["status"] == "error"


def test_message_batches_end_to_end(
    fake_anthropic: FakeAnthropic, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_anthropic.answer = lambda body: '{"topic": "finance"}'
    ai = make_helper(anthropic_provider(fake_anthropic))
    batch = ai.batch("claude")

    handle = batch.submit(
        [{"id": "r1", "prompt": "Stocks", "schema": Topic}, {"id": "r2", "prompt": "Bonds"}]
    )

    [body] = fake_anthropic.posted("/v1/messages/batches")
    assert [r["custom_id"] for r in body["requests"]] == ["r1", "r2"]
    assert body["requests"][0]["params"]["output_config"]["format"]["type"] == "json_schema"
    assert body["requests"][1]["params"]["messages"] == [{"role": "user", "content": "Bonds"}]
    assert batch.get_status(handle.id).status == "processing"

    fake_anthropic.finish_batch(handle.id, failed_ids=("r2",))
    assert batch.get_status(handle.id).status == "completed"
    results = {r.id: r for r in batch.get_results(handle.id)}

    assert results["r1"].result == Topic(topic="finance")
    assert results["r2"].status == "failed" and results["r2"].error == "r2 refused"
    discounted = (12 * 3.0 + 5 * 15.0) / 1e6 * 0.5
    assert ai_logger.get_total_cost(TOPIC) == pytest.approx(discounted)
    assert ai_logger.get_recorded_batch_ids() == [handle.id]
