"""define_stage / define_async_batch_stage: both forms, models, options and rejections."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from workflow_engine import (
    CompletionCheck,
    Stage,
    StageResult,
    Suspend,
    WorkflowDefinitionError,
    WorkflowEngineError,
    define_async_batch_stage,
    define_stage,
)
from workflow_engine.definitions import EmptyConfig, NoInput


class In(BaseModel):
    text: str


class Out(BaseModel):
    words: int


class Cfg(BaseModel):
    lowercase: bool = False


def count_words(ctx):
    return Out(words=len(ctx.input.text.split()))


def never_ready(state, ctx):
    return CompletionCheck(ready=False)


def test_decorator_form_builds_a_sync_stage_with_every_field():
    @define_stage(
        id="count", name="Count words", input=In, output=Out, config=Cfg, description="Counts"
    )
    def count(ctx):
        return Out(words=1)

    assert isinstance(count, Stage)
    assert (count.id, count.name, count.description) == ("count", "Count words", "Counts")
    assert (count.input_model, count.output_model, count.config_model) == (In, Out, Cfg)
    assert count.mode == "sync"
    assert count.check_completion is None
    assert count.execute.__name__ == "count"


def test_call_form_with_execute_builds_the_same_stage():
    stage = define_stage(id="count", name="Count", input=In, output=Out, execute=count_words)

    assert isinstance(stage, Stage)
    assert stage.execute is count_words
    assert stage.description is None


def test_async_def_execute_is_kept_as_a_coroutine_function():
    @define_stage(id="a", name="A", input=In, output=Out)
    async def stage(ctx):
        return Out(words=0)

    assert inspect.iscoroutinefunction(stage.execute)


def test_input_none_means_a_model_without_fields_that_ignores_extras():
    stage = define_stage(id="a", name="A", input=None, output=Out, execute=count_words)

    assert stage.input_model is NoInput
    parsed = stage.input_model.model_validate({"anything": 1, "else": [2]})
    assert parsed.model_dump() == {}


def test_config_none_means_an_empty_config_model():
    stage = define_stage(id="a", name="A", input=In, output=Out, execute=count_words)

    assert stage.config_model is EmptyConfig
    assert stage.config_model.model_validate({}).model_dump() == {}


def test_dependencies_are_stored_as_a_tuple_in_order():
    stage = define_stage(
        id="c", name="C", input=In, output=Out, dependencies=["a", "b"], execute=count_words
    )

    assert stage.dependencies == ("a", "b")


def test_queue_and_max_attempts_default_to_none_and_can_be_set():
    plain = define_stage(id="a", name="A", input=In, output=Out, execute=count_words)
    routed = define_stage(
        id="b", name="B", input=In, output=Out, execute=count_words, queue="gpu", max_attempts=5
    )

    assert (plain.queue, plain.max_attempts) == (None, None)
    assert (routed.queue, routed.max_attempts) == ("gpu", 5)


@pytest.mark.parametrize("attempts", [0, -1])
def test_max_attempts_below_one_is_rejected(attempts):
    with pytest.raises(WorkflowDefinitionError, match=r"'a'.*max_attempts"):
        define_stage(
            id="a", name="A", input=In, output=Out, execute=count_words, max_attempts=attempts
        )


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("input", {"text": str}),
        ("output", Out(words=1)),
        ("config", dict),
        ("output", "Out"),
    ],
)
def test_a_non_model_schema_is_rejected_naming_the_stage_and_the_field(field, bad):
    kwargs = {"input": In, "output": Out, "config": Cfg, field: bad}

    with pytest.raises(WorkflowDefinitionError) as caught:
        define_stage(id="my-stage", name="S", execute=count_words, **kwargs)

    message = str(caught.value)
    assert "'my-stage'" in message
    assert f"{field} must be a pydantic BaseModel class" in message


@pytest.mark.parametrize("bad_id", ["", None, 42])
def test_a_stage_id_must_be_a_non_empty_string(bad_id):
    with pytest.raises(WorkflowDefinitionError, match="non-empty string"):
        define_stage(id=bad_id, name="S", input=In, output=Out, execute=count_words)


def test_a_non_callable_execute_is_rejected():
    with pytest.raises(WorkflowDefinitionError, match="execute must be callable"):
        define_stage(id="a", name="A", input=In, output=Out, execute="not a function")


def test_definition_errors_are_workflow_engine_errors():
    assert issubclass(WorkflowDefinitionError, WorkflowEngineError)


def test_async_batch_stage_has_its_mode_and_check_completion():
    stage = define_async_batch_stage(
        id="batch",
        name="Batch",
        input=In,
        output=Out,
        dependencies=["prep"],
        execute=lambda ctx: Suspend(state={"batch_id": "b1"}),
        check_completion=never_ready,
        queue="batches",
    )

    assert stage.mode == "async-batch"
    assert stage.check_completion is never_ready
    assert stage.dependencies == ("prep",)
    assert stage.queue == "batches"
    assert stage.config_model is EmptyConfig


def test_async_batch_stage_without_callable_check_completion_is_rejected():
    with pytest.raises(WorkflowDefinitionError, match=r"'batch'.*check_completion"):
        define_async_batch_stage(
            id="batch",
            name="Batch",
            input=In,
            output=Out,
            execute=count_words,
            check_completion=None,
        )


def test_suspend_accepts_timedelta_or_seconds_and_has_defaults():
    default = Suspend(state={"batch_id": "b"})
    explicit = Suspend(state={}, poll_interval=5, max_wait=timedelta(minutes=2))

    assert default.poll_interval == timedelta(seconds=30)
    assert default.max_wait == timedelta(hours=24)
    assert default.next_poll_at is None
    assert explicit.poll_interval == 5
    assert explicit.max_wait == timedelta(minutes=2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"poll_interval": 0},
        {"poll_interval": timedelta(seconds=-1)},
        {"max_wait": 0},
        {"next_poll_at": datetime(2025, 1, 1)},
    ],
)
def test_suspend_rejects_non_positive_durations_and_naive_datetimes(kwargs):
    with pytest.raises(ValueError, match="Suspend"):
        Suspend(state={}, **kwargs)


@pytest.mark.parametrize("bad", ["30", True, None])
def test_suspend_rejects_durations_that_are_not_timedelta_or_seconds(bad):
    with pytest.raises(TypeError, match="duration"):
        Suspend(state={}, poll_interval=bad)


def test_suspend_accepts_an_aware_next_poll_at():
    at = datetime(2025, 6, 1, tzinfo=UTC)

    assert Suspend(state={}, next_poll_at=at).next_poll_at == at


def test_stage_result_and_completion_check_defaults():
    result = StageResult(output={"words": 1})
    check = CompletionCheck(ready=False)

    assert (dict(result.metrics), dict(result.artifacts)) == ({}, {})
    assert (check.output, check.error, check.next_check_in) == (None, None, None)
    assert dict(check.metrics) == {}


def test_dependencies_given_as_a_single_string_are_rejected():
    with pytest.raises(WorkflowDefinitionError, match="dependencies must be a list of stage ids"):
        define_stage(
            id="load", name="L", input=In, output=Out, dependencies="extract", execute=count_words
        )
