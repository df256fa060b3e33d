"""Workflow config: default extraction, merge with supplied values, and validation errors."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from workflow_engine import (
    InvalidConfigError,
    WorkflowBuilder,
    WorkflowEngineError,
    define_stage,
)


class In(BaseModel):
    value: int = 0


class Mode(StrEnum):
    FAST = "fast"
    SAFE = "safe"


class Retry(BaseModel):
    attempts: int = 3
    delay: float = 0.5


class Partial(BaseModel):
    model: str
    temperature: float = 0.7


class Rich(BaseModel):
    label: str | None = None
    tags: list[str] = Field(default_factory=lambda: ["a", "b"])
    mode: Mode = Mode.FAST
    since: datetime = datetime(2024, 1, 2, tzinfo=UTC)
    retry: Retry = Field(default_factory=Retry)


class NestedNoDefault(BaseModel):
    retry: Retry
    enabled: bool = True


class Strict(BaseModel):
    count: int = Field(default=1, ge=1, le=10)
    level: Literal["low", "high"] = "low"
    items: list[int] = Field(default_factory=list)
    retry: Retry = Field(default_factory=Retry)


def workflow(**configs: type[BaseModel] | None):
    b = WorkflowBuilder("cfg-wf", "Config workflow", input=In)
    for stage_id, config in configs.items():
        b.pipe(
            define_stage(
                id=stage_id,
                name=stage_id,
                input=In,
                output=In,
                config=config,
                execute=lambda ctx: ctx.input,
            )
        )
    return b.build()


# -- defaults ----------------------------------------------------------------------------------
def test_defaults_list_only_fields_that_have_a_default():
    assert workflow(s=Partial).get_default_config() == {"s": {"temperature": 0.7}}


def test_defaults_include_optional_factory_enum_datetime_and_nested_values_in_json_mode():
    defaults = workflow(s=Rich).get_default_config()["s"]

    assert defaults == {
        "label": None,
        "tags": ["a", "b"],
        "mode": "fast",
        "since": "2024-01-02T00:00:00Z",
        "retry": {"attempts": 3, "delay": 0.5},
    }


def test_default_factories_are_evaluated_afresh_each_time():
    wf = workflow(s=Rich)
    first, second = wf.get_default_config(), wf.get_default_config()

    first["s"]["tags"].append("mutated")

    assert second["s"]["tags"] == ["a", "b"]
    assert wf.get_default_config()["s"]["tags"] == ["a", "b"]


def test_a_nested_model_without_its_own_default_is_left_out():
    assert workflow(s=NestedNoDefault).get_default_config() == {"s": {"enabled": True}}


def test_every_stage_appears_even_with_an_empty_config():
    assert workflow(a=None, b=Partial).get_default_config() == {
        "a": {},
        "b": {"temperature": 0.7},
    }


# -- validate_config ---------------------------------------------------------------------------
def test_no_config_gives_every_stage_its_defaults():
    assert workflow(a=None, b=Strict).validate_config(None) == {
        "a": {},
        "b": {
            "count": 1,
            "level": "low",
            "items": [],
            "retry": {"attempts": 3, "delay": 0.5},
        },
    }


def test_supplied_values_are_merged_over_the_defaults():
    merged = workflow(a=Partial, b=Strict).validate_config(
        {"a": {"model": "m1"}, "b": {"count": "4", "retry": {"attempts": 9}}}
    )

    assert merged["a"] == {"model": "m1", "temperature": 0.7}
    assert merged["b"]["count"] == 4
    assert merged["b"]["retry"] == {"attempts": 9, "delay": 0.5}
    assert merged["b"]["level"] == "low"


def test_validate_config_does_not_modify_the_callers_mapping():
    supplied = {"a": {"model": "m1"}}

    workflow(a=Partial).validate_config(supplied)

    assert supplied == {"a": {"model": "m1"}}


def test_a_missing_required_field_names_the_stage_and_the_field():
    with pytest.raises(InvalidConfigError) as caught:
        workflow(gen=Partial).validate_config({})

    assert list(caught.value.errors) == ["gen"]
    assert caught.value.errors["gen"][0].startswith("model: ")
    assert str(caught.value).startswith("Invalid workflow config: gen: model: ")


def test_errors_of_every_stage_are_reported_together_with_field_paths():
    wf = workflow(ok=Strict, first=Strict, second=Partial)

    with pytest.raises(InvalidConfigError) as caught:
        wf.validate_config(
            {
                "first": {"count": 99, "level": "medium", "items": [1, "x"]},
                "second": {"temperature": "hot"},
                "ok": {"count": 2},
            }
        )

    errors = caught.value.errors
    assert set(errors) == {"first", "second"}
    assert [line.split(":")[0] for line in errors["first"]] == ["count", "level", "items.1"]
    assert {line.split(":")[0] for line in errors["second"]} == {"model", "temperature"}
    message = str(caught.value)
    assert "first: count:" in message
    assert "second: " in message
    assert "items.1" in message


def test_a_nested_field_error_has_a_dotted_path():
    with pytest.raises(InvalidConfigError) as caught:
        workflow(s=Strict).validate_config({"s": {"retry": {"attempts": "many"}}})

    assert caught.value.errors["s"][0].startswith("retry.attempts: ")


def test_unknown_stage_ids_are_rejected_alongside_other_errors():
    with pytest.raises(InvalidConfigError) as caught:
        workflow(s=Partial).validate_config({"typo": {"model": "x"}, "s": {}})

    assert caught.value.errors["typo"] == ["not a stage of workflow cfg-wf"]
    assert "s" in caught.value.errors


@pytest.mark.parametrize(("slice_", "type_name"), [([1, 2], "list"), ("fast", "str"), (3, "int")])
def test_a_stage_slice_that_is_not_an_object_is_rejected(slice_, type_name):
    with pytest.raises(InvalidConfigError) as caught:
        workflow(s=Strict).validate_config({"s": slice_})

    assert caught.value.errors == {"s": [f"config must be an object, got {type_name}"]}


def test_invalid_config_error_is_a_workflow_engine_error():
    assert issubclass(InvalidConfigError, WorkflowEngineError)
