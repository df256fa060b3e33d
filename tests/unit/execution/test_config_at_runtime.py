"""Config at run time: supplied values and defaults reach ctx.config; bad config stores nothing."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from workflow_engine import InvalidConfigError, Status, define_stage


class Text(BaseModel):
    text: str


class Words(BaseModel):
    words: list[str]


class SplitConfig(BaseModel):
    lowercase: bool = False
    separator: str = " "
    limit: int = Field(default=100, ge=1)


class FilterConfig(BaseModel):
    mode: Literal["keep", "drop"]
    min_length: int = 1


@pytest.fixture
def seen() -> dict[str, Any]:
    return {}


@pytest.fixture
def workflow(build_workflow, seen):
    def split(ctx):
        seen["split"] = ctx.config
        text = ctx.input.text.lower() if ctx.config.lowercase else ctx.input.text
        return Words(words=text.split(ctx.config.separator)[: ctx.config.limit])

    def filter_words(ctx):
        seen["filter"] = ctx.config
        long = [w for w in ctx.input.words if len(w) >= ctx.config.min_length]
        kept = long if ctx.config.mode == "keep" else [w for w in ctx.input.words if w not in long]
        return Words(words=kept)

    return build_workflow(
        Text,
        define_stage(
            id="split", name="Split", input=Text, output=Words, config=SplitConfig, execute=split
        ),
        define_stage(
            id="filter",
            name="Filter",
            input=Words,
            output=Words,
            config=FilterConfig,
            execute=filter_words,
        ),
    )


def test_supplied_config_reaches_ctx_config_as_a_model(make_harness, workflow, seen):
    h = make_harness(workflow)

    run = h.run(
        "wf",
        {"text": "A,Bb,Ccc"},
        config={"split": {"lowercase": True, "separator": ","}, "filter": {"mode": "keep"}},
    )

    assert isinstance(seen["split"], SplitConfig)
    assert seen["split"] == SplitConfig(lowercase=True, separator=",", limit=100)
    assert run.output == {"words": ["a", "bb", "ccc"]}


def test_defaults_fill_what_was_not_supplied(make_harness, workflow, seen):
    h = make_harness(workflow)

    run = h.run("wf", {"text": "a bb ccc"}, config={"filter": {"mode": "drop", "min_length": 2}})

    assert seen["split"] == SplitConfig()
    assert seen["filter"] == FilterConfig(mode="drop", min_length=2)
    assert run.output == {"words": ["a"]}


def test_the_merged_config_is_stored_on_the_run_and_each_stage_row(make_harness, workflow):
    h = make_harness(workflow)

    run = h.run("wf", {"text": "x"}, config={"filter": {"mode": "keep"}})

    assert run.config == {
        "split": {"lowercase": False, "separator": " ", "limit": 100},
        "filter": {"mode": "keep", "min_length": 1},
    }
    rows = h.stages_by_id(run.id)
    assert rows["split"].config == run.config["split"]
    assert rows["filter"].config == run.config["filter"]


@pytest.mark.parametrize(
    ("config", "faulty"),
    [
        (None, {"filter"}),
        ({"filter": {"mode": "maybe"}}, {"filter"}),
        ({"split": {"limit": 0}, "filter": {"mode": "keep"}}, {"split"}),
        ({"split": {"lowercase": "often"}, "filter": {}}, {"split", "filter"}),
        ({"filter": {"mode": "keep"}, "splt": {}}, {"splt"}),
    ],
)
def test_invalid_config_is_rejected_at_creation_and_nothing_is_stored(
    make_harness, workflow, seen, config, faulty
):
    h = make_harness(workflow)

    with pytest.raises(InvalidConfigError) as caught:
        h.create_run("wf", {"text": "x"}, config=config)

    assert set(caught.value.errors) == faulty
    assert h.persistence.get_all_runs() == []
    assert h.persistence.get_all_outbox_events() == []
    assert h.jobs.get_all_jobs() == []
    assert seen == {}


def test_a_rejected_create_does_not_block_a_corrected_retry_with_the_same_key(
    make_harness, workflow
):
    h = make_harness(workflow)
    with pytest.raises(InvalidConfigError):
        h.create_run("wf", {"text": "x"}, config={}, idempotency_key="order-1")

    run_id = h.create_run(
        "wf", {"text": "x"}, config={"filter": {"mode": "keep"}}, idempotency_key="order-1"
    )

    assert h.drive(run_id).status == Status.COMPLETED
