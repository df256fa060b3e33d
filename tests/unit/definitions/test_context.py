"""StageContext: identification, earlier outputs, logging, progress and the idempotency key."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from workflow_engine import LogLevel, MissingStageOutputError, StageStorage, WorkflowEngineError


class Summary(BaseModel):
    words: int
    title: str = ""


def test_context_exposes_identification_input_config_and_resume_state(spy):
    ctx = spy.build(
        run_id="run-9",
        stage_id="summarise",
        attempt=2,
        input=Summary(words=1),
        config={"k": 1},
        resume_state={"batch_id": "b1"},
    )

    assert (ctx.workflow_run_id, ctx.workflow_id, ctx.stage_id) == ("run-9", "wf", "summarise")
    assert (ctx.stage_name, ctx.stage_number, ctx.stage_record_id) == (
        "Stage summarise",
        2,
        "row-1",
    )
    assert ctx.attempt == 2
    assert ctx.input == Summary(words=1)
    assert ctx.config == {"k": 1}
    assert ctx.resume_state == {"batch_id": "b1"}
    assert isinstance(ctx.storage, StageStorage)


def test_require_and_optional_return_earlier_outputs(spy):
    ctx = spy.build(workflow_context={"extract": {"words": 3}})

    assert ctx.require("extract") == {"words": 3}
    assert ctx.optional("extract") == {"words": 3}


@pytest.mark.parametrize("falsy", [0, "", False, [], {}, None])
def test_falsy_outputs_count_as_present(spy, falsy):
    ctx = spy.build(workflow_context={"s": falsy})

    assert ctx.require("s") == falsy
    assert ctx.optional("s", default="fallback") == falsy


def test_require_on_a_missing_stage_lists_the_available_ones(spy):
    ctx = spy.build(workflow_context={"a": {}, "b": {}})

    with pytest.raises(MissingStageOutputError) as caught:
        ctx.require("c")

    assert str(caught.value) == 'Missing required stage output: "c". Available stages: a, b'
    assert caught.value.stage_id == "c"
    assert caught.value.available == ["a", "b"]
    assert isinstance(caught.value, WorkflowEngineError)


def test_require_with_no_completed_stages_says_none(spy):
    with pytest.raises(MissingStageOutputError, match=r"Available stages: \(none\)$"):
        spy.build().require("anything")


def test_optional_returns_the_default_for_a_missing_stage(spy):
    ctx = spy.build()

    assert ctx.optional("missing") is None
    assert ctx.optional("missing", {"words": 0}) == {"words": 0}


def test_require_with_a_model_validates_the_stored_output(spy):
    ctx = spy.build(workflow_context={"s": {"words": "5"}, "bad": {"title": "x"}})

    summary = ctx.require("s", Summary)

    assert summary == Summary(words=5, title="")
    with pytest.raises(ValidationError):
        ctx.require("bad", Summary)
    with pytest.raises(MissingStageOutputError):
        ctx.require("gone", Summary)


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("debug", LogLevel.DEBUG),
        ("INFO", LogLevel.INFO),
        ("warn", LogLevel.WARN),
        ("warning", LogLevel.WARN),
        ("WARNING", LogLevel.WARN),
        ("error", LogLevel.ERROR),
        ("critical", LogLevel.ERROR),
        (LogLevel.ERROR, LogLevel.ERROR),
    ],
)
def test_log_levels_and_aliases(spy, level, expected):
    spy.build().log(level, "hello")

    assert spy.logs == [(expected, "hello", {})]


def test_log_passes_keyword_metadata(spy):
    spy.build().log("info", "fetched", url="https://x", count=3)

    assert spy.logs == [(LogLevel.INFO, "fetched", {"url": "https://x", "count": 3})]


@pytest.mark.parametrize("level", ["verbose", "", "trace"])
def test_an_unknown_log_level_is_rejected_listing_the_levels(spy, level):
    with pytest.raises(ValueError, match=r"unknown log level.*DEBUG, INFO, WARN, ERROR"):
        spy.build().log(level, "x")
    assert spy.logs == []


def test_progress_reports_percent_message_and_details(spy):
    ctx = spy.build()

    ctx.progress(0)
    ctx.progress(42, "halfway", done=21, total=50)
    ctx.progress(100, "done")

    assert spy.progress == [
        (0.0, "", {}),
        (42.0, "halfway", {"done": 21, "total": 50}),
        (100.0, "done", {}),
    ]
    assert all(isinstance(pct, float) for pct, _, _ in spy.progress)


@pytest.mark.parametrize("percent", [-0.1, 100.5, 250, float("nan")])
def test_progress_outside_zero_to_hundred_is_rejected(spy, percent):
    with pytest.raises(ValueError, match="between 0 and 100"):
        spy.build().progress(percent)
    assert spy.progress == []


def test_idempotency_key_depends_only_on_run_stage_and_attempt(spy):
    key = spy.build(run_id="r", stage_id="s", attempt=0).idempotency_key

    assert spy.build(run_id="r", stage_id="s", attempt=0, input={"x": 1}).idempotency_key == key
    others = {
        spy.build(run_id="r2", stage_id="s", attempt=0).idempotency_key,
        spy.build(run_id="r", stage_id="s2", attempt=0).idempotency_key,
        spy.build(run_id="r", stage_id="s", attempt=1).idempotency_key,
    }
    assert key not in others
    assert len(others) == 3
