"""The helper on OpenAI (and OpenAI-compatible servers), through the official SDK."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from pydantic import BaseModel

from tests.unit.ai.conftest import TOPIC, HelperFactory, openai_provider
from tests.unit.ai.fakes import FakeOpenAI
from workflow_engine.ai import AIResponseError, BatchRequest
from workflow_engine.testing import InMemoryAICallLogger


class Sentiment(BaseModel):
    label: str
    score: float


def test_generate_text_sends_the_messages_and_logs_tokens_and_cost(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.answer = lambda body: "Hello there"
    ai = make_helper(openai_provider(fake_openai))

    result = ai.generate_text("gpt", "Say hello", system="Be brief", max_tokens=50)

    assert (result.text, result.input_tokens, result.output_tokens) == ("Hello there", 12, 5)
    assert result.cost == pytest.approx((12 * 1.0 + 5 * 2.0) / 1e6)
    [body] = fake_openai.posted("/chat/completions")
    assert body["model"] == "gpt-test"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hello"},
    ]
    assert (body["temperature"], body["max_completion_tokens"]) == (0.7, 50)
    [call] = ai_logger.get_all_calls()
    assert call["topic"] == TOPIC and call["call_type"] == "text"
    assert (call["model_key"], call["model_id"]) == ("gpt", "gpt-test")
    assert (call["prompt"], call["response"]) == ("Say hello", "Hello there")
    assert call["cost"] == pytest.approx(result.cost)
    assert call["metadata"]["status"] == "success"
    assert call["metadata"]["finish_reason"] == "stop"
    assert call["metadata"]["duration_ms"] >= 0


def test_generate_object_sends_the_json_schema_and_validates_the_answer(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.answer = lambda body: '{"label": "positive", "score": 0.9}'
    ai = make_helper(openai_provider(fake_openai))

    result = ai.generate_object("gpt", "Great product!", Sentiment)

    assert result.object == Sentiment(label="positive", score=0.9)
    [body] = fake_openai.posted("/chat/completions")
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Sentiment"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert set(schema["properties"]) == {"label", "score"}
    assert schema["additionalProperties"] is False
    assert body["temperature"] == 0.0
    call = ai_logger.get_last_call()
    assert call is not None and call["call_type"] == "object"
    assert json.loads(call["response"]) == {"label": "positive", "score": 0.9}


def test_an_answer_not_matching_the_schema_is_a_clear_error_logged_with_its_tokens(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.answer = lambda body: '{"label": "positive"}'
    ai = make_helper(openai_provider(fake_openai))

    with pytest.raises(AIResponseError, match="does not match Sentiment"):
        ai.generate_object("gpt", "Great product!", Sentiment)

    [call] = ai_logger.get_all_calls()
    assert call["metadata"]["status"] == "error"
    assert "does not match Sentiment" in call["metadata"]["error"]
    assert (call["input_tokens"], call["output_tokens"]) == (12, 5)
    assert call["cost"] > 0


def test_a_malformed_response_is_a_clear_error_and_a_failed_call(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.malformed = {"id": "x", "object": "chat.completion", "unexpected": True}
    ai = make_helper(openai_provider(fake_openai))

    with pytest.raises(AIResponseError, match="without choices"):
        ai.generate_text("gpt", "hi")

    [call] = ai_logger.get_all_calls()
    assert call["metadata"]["status"] == "error" and call["cost"] == 0
    assert ai.generate_text("gpt", "hi").text == "ok"  # the next call works


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_retried(
    fake_openai: FakeOpenAI,
    make_helper: HelperFactory,
    ai_logger: InMemoryAICallLogger,
    status: int,
) -> None:
    fake_openai.fail_next(status, status)
    ai = make_helper(openai_provider(fake_openai))

    assert ai.generate_text("gpt", "hi").text == "ok"

    assert len(fake_openai.posted("/chat/completions")) == 3
    assert [c["metadata"]["status"] for c in ai_logger.get_all_calls()] == ["success"]


def test_when_retries_run_out_the_sdk_error_is_raised_and_logged(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.fail_next(429, 429, 429)
    ai = make_helper(openai_provider(fake_openai))

    with pytest.raises(openai.RateLimitError):
        ai.generate_text("gpt", "hi")

    [call] = ai_logger.get_all_calls()
    assert call["metadata"]["status"] == "error"
    assert "RateLimitError" in call["metadata"]["error"]


def test_stream_text_passes_chunks_through_and_logs_once_at_the_end(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.answer = lambda body: "streamed words here"
    ai = make_helper(openai_provider(fake_openai))

    stream = ai.stream_text("gpt", "go")
    chunks = list(stream)

    assert "".join(chunks) == "streamed words here" and len(chunks) > 1
    usage = stream.get_usage()
    assert (usage.input_tokens, usage.output_tokens) == (12, 5)
    [body] = fake_openai.posted("/chat/completions")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    [call] = ai_logger.get_all_calls()
    assert call["call_type"] == "stream" and call["response"] == "streamed words here"
    assert call["metadata"]["status"] == "success"
    assert call["cost"] == pytest.approx(usage.cost)
    stream.get_text()
    assert len(ai_logger.get_all_calls()) == 1


def test_a_stream_closed_early_is_logged_once_as_incomplete(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.answer = lambda body: "a long answer in many chunks"
    ai = make_helper(openai_provider(fake_openai))

    stream = ai.stream_text("gpt", "go")
    first = next(iter(stream))
    stream.close()

    [call] = ai_logger.get_all_calls()
    assert call["metadata"]["status"] == "incomplete" and call["response"] == first


def test_embed_many_texts_is_one_call(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    ai = make_helper(openai_provider(fake_openai))

    result = ai.embed("embed", ["one", "two"], dimensions=4)

    assert result.embeddings == [[0.0] * 4, [1.0] * 4] and result.dimensions == 4
    assert result.embedding == [0.0] * 4
    [body] = fake_openai.posted("/embeddings")
    assert body == {
        "model": "embed-test",
        "input": ["one", "two"],
        "dimensions": 4,
        "encoding_format": "float",
    }
    [call] = ai_logger.get_all_calls()
    assert call["call_type"] == "embed" and call["prompt"] == "[2 texts]"
    assert call["response"] == "[2 embeddings, 4 dims]"
    assert (call["input_tokens"], call["cost"]) == (14, pytest.approx(14 / 1e6))


def test_async_twins(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.answer = lambda body: '{"label": "neutral", "score": 0.5}'
    ai = make_helper(openai_provider(fake_openai))

    async def main() -> tuple[str, Sentiment, list[str]]:
        text = await ai.agenerate_text("gpt", "hi")
        obj = await ai.agenerate_object("gpt", "hi", Sentiment)
        chunks = [chunk async for chunk in ai.astream_text("gpt", "hi")]
        return text.text, obj.object, chunks

    text, obj, chunks = asyncio.run(main())
    assert obj.label == "neutral" and "".join(chunks) == text
    assert [c["call_type"] for c in ai_logger.get_all_calls()] == ["text", "object", "stream"]


def test_batch_writes_a_jsonl_file_and_records_discounted_results_once(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.answer = lambda body: '{"label": "positive", "score": 1.0}'
    ai = make_helper(openai_provider(fake_openai))
    batch = ai.batch("gpt")

    handle = batch.submit(
        [
            BatchRequest(id="doc-1", prompt="Nice", schema=Sentiment),
            {"id": "doc-2", "prompt": "Fine", "system": "Classify", "max_tokens": 20},
        ]
    )

    assert (handle.status, handle.provider, handle.request_count) == ("pending", "openai", 2)
    lines = fake_openai.batch_lines(handle.id)
    assert [line["custom_id"] for line in lines] == ["doc-1", "doc-2"]
    assert {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert lines[0]["body"]["response_format"]["json_schema"]["name"] == "Sentiment"
    assert lines[1]["body"]["messages"][0] == {"role": "system", "content": "Classify"}
    assert lines[1]["body"]["max_completion_tokens"] == 20
    [upload] = [r for r in fake_openai.requests if r.path == "/v1/files"]
    assert b'name="purpose"' in upload.body and b"batch" in upload.body
    assert batch.get_status(handle.id).status == "pending"
    fake_openai.batches[handle.id]["status"] = "in_progress"
    assert batch.get_status(handle.id).status == "processing"

    fake_openai.finish_batch(handle.id)
    results = batch.get_results(handle.id)
    batch.get_results(handle.id)  # recorded once only

    assert [r.status for r in results] == ["succeeded", "succeeded"]
    assert results[0].result == Sentiment(label="positive", score=1.0)
    assert results[1].result == {"label": "positive", "score": 1.0}  # no schema: parsed JSON
    discounted = (12 * 1.0 + 5 * 2.0) / 1e6 * 0.5
    assert results[0].cost == pytest.approx(discounted)
    batch_calls = ai_logger.get_calls_by_type("batch")
    assert len(batch_calls) == 2 and ai_logger.is_recorded(handle.id)
    assert {c["metadata"]["request_id"] for c in batch_calls} == {"doc-1", "doc-2"}
    assert ai_logger.get_total_cost(TOPIC) == pytest.approx(2 * discounted)


def test_batch_failures_and_schema_mismatches_become_failed_results(
    fake_openai: FakeOpenAI, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_openai.answer = lambda body: "not json at all"
    ai = make_helper(openai_provider(fake_openai))
    batch = ai.batch("gpt")
    handle = batch.submit([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}])
    fake_openai.finish_batch(handle.id, failed_ids=("b",))

    results = {r.id: r for r in ai.batch("gpt").get_results(handle.id, schema=Sentiment)}

    assert results["a"].status == "failed" and "did not return JSON" in (results["a"].error or "")
    assert results["a"].input_tokens == 12  # billed, so counted
    assert results["b"].status == "failed" and results["b"].error == "b was rejected"
    statuses = {
        c["metadata"]["request_id"]: c["metadata"]["status"]
        for c in ai_logger.get_calls_by_type("batch")
    }
    assert statuses == {"a": "error", "b": "error"}


def test_openai_compatible_servers_get_max_tokens(
    fake_openai: FakeOpenAI, make_helper: HelperFactory
) -> None:
    ai = make_helper(openai_provider(fake_openai, max_tokens_param="max_tokens"))
    ai.generate_text("gpt", "hi", max_tokens=10, provider_options={"top_p": 0.5})
    [body] = fake_openai.posted("/chat/completions")
    assert body["max_tokens"] == 10 and body["top_p"] == 0.5
    assert "max_completion_tokens" not in body
