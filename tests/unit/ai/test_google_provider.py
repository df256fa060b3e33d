"""The helper on Gemini, through the official google-genai SDK against a local stand-in."""

from __future__ import annotations

import pytest
from google.genai import errors as genai_errors
from pydantic import BaseModel

from tests.unit.ai.conftest import TOPIC, HelperFactory, google_provider
from tests.unit.ai.fakes import FakeGemini
from workflow_engine.ai import AIResponseError
from workflow_engine.testing import InMemoryAICallLogger


class Summary(BaseModel):
    title: str
    points: list[str]


def test_generate_text_sends_contents_and_generation_config(
    fake_gemini: FakeGemini, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_gemini.answer = lambda body: "Gemini says hi"
    ai = make_helper(google_provider(fake_gemini))

    result = ai.generate_text(
        "gemini",
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
        system="Be kind",
        max_tokens=64,
    )

    assert (result.text, result.input_tokens, result.output_tokens) == ("Gemini says hi", 12, 5)
    assert result.cost == pytest.approx((12 * 0.5 + 5 * 4.0) / 1e6)
    [request] = [r for r in fake_gemini.requests if r.path.endswith(":generateContent")]
    assert request.path.endswith("/models/gemini-test:generateContent")
    assert request.headers.get("X-Goog-Api-Key") == "g-test"
    body = request.body
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][2]["parts"] == [{"text": "again"}]
    assert body["systemInstruction"]["parts"] == [{"text": "Be kind"}]
    assert body["generationConfig"]["temperature"] == 0.7
    assert body["generationConfig"]["maxOutputTokens"] == 64
    [call] = ai_logger.get_all_calls()
    assert call["topic"] == TOPIC and call["prompt"] == "hi\n\nhello\n\nagain"
    assert call["metadata"]["finish_reason"] == "STOP"


def test_generate_object_uses_native_json_schema_output(
    fake_gemini: FakeGemini, make_helper: HelperFactory
) -> None:
    fake_gemini.answer = lambda body: '{"title": "T", "points": ["a", "b"]}'
    ai = make_helper(google_provider(fake_gemini))

    result = ai.generate_object("gemini", "Summarise", Summary)

    assert result.object == Summary(title="T", points=["a", "b"])
    [body] = fake_gemini.posted(":generateContent")
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["required"] == ["title", "points"]
    assert config["temperature"] == 0.0


def test_no_candidates_is_a_clear_error(
    fake_gemini: FakeGemini, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_gemini.malformed = {"promptFeedback": {"blockReason": "SAFETY"}}
    ai = make_helper(google_provider(fake_gemini))

    with pytest.raises(AIResponseError, match=r"no candidates \(blocked: SAFETY\)"):
        ai.generate_text("gemini", "hi")
    assert ai_logger.get_all_calls()[0]["metadata"]["status"] == "error"


@pytest.mark.parametrize("status", [429, 503])
def test_rate_limits_and_unavailability_are_retried(
    fake_gemini: FakeGemini, make_helper: HelperFactory, status: int
) -> None:
    fake_gemini.fail_next(status, status)
    ai = make_helper(google_provider(fake_gemini))

    assert ai.generate_text("gemini", "hi").text == "ok"
    assert len(fake_gemini.posted(":generateContent")) == 3


def test_retries_run_out(
    fake_gemini: FakeGemini, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_gemini.fail_next(500, 500, 500)
    ai = make_helper(google_provider(fake_gemini))

    with pytest.raises(genai_errors.ServerError):
        ai.generate_text("gemini", "hi")
    assert ai_logger.get_all_calls()[0]["metadata"]["status"] == "error"


def test_stream_text(
    fake_gemini: FakeGemini, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_gemini.answer = lambda body: "streaming from gemini"
    ai = make_helper(google_provider(fake_gemini))

    stream = ai.stream_text("gemini", "go")
    assert "".join(stream) == "streaming from gemini"
    assert stream.get_usage().input_tokens == 12
    [request] = [r for r in fake_gemini.requests if ":streamGenerateContent" in r.path]
    assert request.path.endswith("/models/gemini-test:streamGenerateContent")
    [call] = ai_logger.get_all_calls()
    assert (call["call_type"], call["output_tokens"]) == ("stream", 5)


def test_embed_sends_dimensions_and_task_type_and_estimates_tokens(
    fake_gemini: FakeGemini, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    ai = make_helper(google_provider(fake_gemini))

    result = ai.embed("gemini-embed", ["abcd" * 3, "xy"], dimensions=8)

    assert result.dimensions == 8 and len(result.embeddings) == 2
    assert result.input_tokens == 3 + 1
    [request] = [r for r in fake_gemini.requests if "mbed" in r.path]
    requests = request.body.get("requests") or [request.body]
    assert requests[0]["outputDimensionality"] == 8
    assert requests[0]["taskType"] == "RETRIEVAL_DOCUMENT"
    [call] = ai_logger.get_all_calls()
    assert call["metadata"]["estimated_tokens"] is True


def test_batch_mode_with_inline_requests(
    fake_gemini: FakeGemini, make_helper: HelperFactory, ai_logger: InMemoryAICallLogger
) -> None:
    fake_gemini.answer = lambda body: '{"title": "x", "points": []}'
    ai = make_helper(google_provider(fake_gemini))
    batch = ai.batch("gemini")

    handle = batch.submit(
        [{"id": "s1", "prompt": "one", "schema": Summary}, {"id": "s2", "prompt": "two"}]
    )

    assert handle.id == "batches/b1"
    requests = fake_gemini.batch_requests[handle.id]
    assert [r["metadata"]["key"] for r in requests] == ["s1", "s2"]
    assert requests[0]["request"]["generationConfig"]["responseMimeType"] == "application/json"
    assert requests[1]["request"]["contents"] == [{"role": "user", "parts": [{"text": "two"}]}]
    assert batch.get_status(handle.id).status == "pending"

    fake_gemini.finish_batch(handle.id, failed_ids=("s2",))
    results = {r.id: r for r in batch.get_results(handle.id)}

    assert results["s1"].result == Summary(title="x", points=[])
    assert results["s2"].status == "failed" and results["s2"].error == "s2 rejected"
    discounted = (12 * 0.5 + 5 * 4.0) / 1e6 * 0.5
    assert ai_logger.get_total_cost(TOPIC) == pytest.approx(discounted)
