"""How data moves: workflow input, previous-group output, parallel merges, ctx.require."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, RootModel

from workflow_engine import Status, define_stage
from workflow_engine.definitions import NoInput


class Numbers(BaseModel):
    values: list[int]
    label: str = "default-label"


class Total(BaseModel):
    total: int


class Stamp(BaseModel):
    at: datetime
    total: int


def recorder(seen: dict[str, Any], stage_id, input_model, output_model, produce):
    """A stage that records its input and context, then returns ``produce(ctx)``."""

    def execute(ctx):
        seen[stage_id] = {"input": ctx.input, "context": dict(ctx.workflow_context)}
        return produce(ctx)

    return define_stage(
        id=stage_id, name=stage_id, input=input_model, output=output_model, execute=execute
    )


def test_the_first_group_gets_the_parsed_workflow_input(make_harness, build_workflow):
    seen: dict[str, Any] = {}
    first = recorder(seen, "sum", Numbers, Total, lambda ctx: Total(total=sum(ctx.input.values)))
    h = make_harness(build_workflow(Numbers, first))

    h.run("wf", {"values": [1, 2, 3]})

    assert seen["sum"]["input"] == Numbers(values=[1, 2, 3], label="default-label")
    assert seen["sum"]["context"] == {}


def test_parallel_stages_of_the_first_group_all_get_the_workflow_input(
    make_harness, build_workflow
):
    seen: dict[str, Any] = {}
    stages = [recorder(seen, sid, Numbers, Total, lambda ctx: Total(total=0)) for sid in ("a", "b")]
    h = make_harness(build_workflow(Numbers, stages))

    h.run("wf", {"values": [7]})

    assert seen["a"]["input"] == seen["b"]["input"] == Numbers(values=[7])


def test_each_stage_gets_the_previous_stage_output_as_typed_input(make_harness, build_workflow):
    seen: dict[str, Any] = {}
    total = recorder(seen, "sum", Numbers, Total, lambda ctx: Total(total=sum(ctx.input.values)))
    stamp = recorder(
        seen,
        "stamp",
        Total,
        Stamp,
        lambda ctx: Stamp(at=datetime(2025, 5, 1, tzinfo=UTC), total=ctx.input.total),
    )
    h = make_harness(build_workflow(Numbers, total, stamp))

    run = h.run("wf", {"values": [4, 5]})

    assert seen["stamp"]["input"] == Total(total=9)
    assert run.output == {"at": "2025-05-01T00:00:00Z", "total": 9}


def test_a_parallel_group_output_is_keyed_by_stage_id_as_the_next_input(
    make_harness, build_workflow
):
    class Merged(BaseModel):
        model_config = ConfigDict(populate_by_name=True)
        minimum: Total = Field(alias="find-min")
        maximum: Total = Field(alias="find-max")

    seen: dict[str, Any] = {}
    find_min = recorder(
        seen, "find-min", Numbers, Total, lambda c: Total(total=min(c.input.values))
    )
    find_max = recorder(
        seen, "find-max", Numbers, Total, lambda c: Total(total=max(c.input.values))
    )
    spread = recorder(
        seen,
        "spread",
        Merged,
        Total,
        lambda ctx: Total(total=ctx.input.maximum.total - ctx.input.minimum.total),
    )
    h = make_harness(build_workflow(Numbers, [find_min, find_max], spread))

    run = h.run("wf", {"values": [3, 9, 4]})

    assert seen["spread"]["input"].minimum == Total(total=3)
    assert seen["spread"]["input"].maximum == Total(total=9)
    assert run.output == {"total": 6}


def test_a_later_stage_reads_a_non_adjacent_output_through_require(make_harness, build_workflow):
    seen: dict[str, Any] = {}
    first = recorder(seen, "first", Numbers, Total, lambda ctx: Total(total=len(ctx.input.values)))
    middle = recorder(seen, "middle", Total, Total, lambda ctx: Total(total=ctx.input.total * 10))
    last = recorder(
        seen,
        "last",
        Total,
        Total,
        lambda ctx: Total(total=ctx.input.total + ctx.require("first", Total).total),
    )
    h = make_harness(build_workflow(Numbers, first, middle, last))

    run = h.run("wf", {"values": [1, 1]})

    assert run.output == {"total": 22}
    assert seen["last"]["context"] == {"first": {"total": 2}, "middle": {"total": 20}}


def test_workflow_context_holds_completed_stages_in_group_order(make_harness, build_workflow):
    seen: dict[str, Any] = {}

    def const(stage_id, value, input_model=Numbers):
        return recorder(seen, stage_id, input_model, Total, lambda ctx: Total(total=value))

    h = make_harness(
        build_workflow(
            Numbers,
            const("a", 1),
            [const("b", 2, NoInput), const("c", 3, NoInput)],
            const("d", 4, NoInput),
        )
    )

    h.run("wf", {"values": []})

    # Siblings run independently: whether one sees the other's output depends on timing.
    assert seen["b"]["context"]["a"] == {"total": 1}
    assert "d" not in seen["b"]["context"]
    assert "d" not in seen["c"]["context"]
    assert list(seen["d"]["context"]) == ["a", "b", "c"]


def test_workflow_context_is_read_only(make_harness, build_workflow):
    def tamper(ctx):
        ctx.workflow_context["first"] = {"total": -1}

    first = define_stage(
        id="first", name="First", input=Numbers, output=Total, execute=lambda c: Total(total=1)
    )
    second = define_stage(id="second", name="Second", input=Total, output=Total, execute=tamper)
    h = make_harness(build_workflow(Numbers, first, second))

    run = h.run("wf", {"values": []})

    assert run.status == Status.FAILED
    assert run.error_message.startswith("TypeError: ")
    assert h.stages_by_id(run.id)["first"].output == {"total": 1}


def test_a_stage_without_input_reads_everything_through_require(make_harness, build_workflow):
    seen: dict[str, Any] = {}
    first = recorder(seen, "first", Numbers, Total, lambda ctx: Total(total=5))
    report = recorder(
        seen,
        "report",
        None,
        Total,
        lambda ctx: Total(total=ctx.require("first")["total"] + 1),
    )
    h = make_harness(build_workflow(Numbers, first, report))

    run = h.run("wf", {"values": []})

    assert isinstance(seen["report"]["input"], NoInput)
    assert run.output == {"total": 6}


def test_extra_fields_of_the_previous_output_are_dropped_from_the_next_input(
    make_harness, build_workflow
):
    seen: dict[str, Any] = {}
    first = recorder(
        seen, "first", Numbers, Stamp, lambda ctx: Stamp(at=datetime.now(UTC), total=1)
    )
    second = recorder(seen, "second", Total, Total, lambda ctx: ctx.input)
    h = make_harness(build_workflow(Numbers, first, second))

    h.run("wf", {"values": []})

    assert seen["second"]["input"].model_dump() == {"total": 1}


@pytest.mark.parametrize("trailing_parallel", [False, True])
def test_the_run_output_is_the_last_groups_output(make_harness, build_workflow, trailing_parallel):
    def const(stage_id, value):
        return define_stage(
            id=stage_id,
            name=stage_id,
            input=None,
            output=Total,
            execute=lambda ctx: Total(total=value),
        )

    last = [const("x", 1), const("y", 2)] if trailing_parallel else const("z", 3)
    h = make_harness(build_workflow(Numbers, const("first", 0), last))

    run = h.run("wf", {"values": []})

    expected = {"x": {"total": 1}, "y": {"total": 2}} if trailing_parallel else {"total": 3}
    assert run.output == expected


@pytest.mark.parametrize(
    ("model", "falsy"), [(RootModel[int], 0), (RootModel[str], ""), (RootModel[bool], False)]
)
def test_a_falsy_output_is_passed_on_as_input_and_through_require(
    make_harness, build_workflow, model, falsy
):
    seen: dict[str, Any] = {}
    first = recorder(seen, "first", Numbers, model, lambda ctx: falsy)
    second = recorder(
        seen,
        "second",
        model,
        Total,
        lambda ctx: Total(total=len(repr(ctx.require("first")))),
    )
    h = make_harness(build_workflow(Numbers, first, second))

    run = h.run("wf", {"values": []})

    assert run.status == Status.COMPLETED
    assert seen["second"]["input"].root == falsy
    assert seen["second"]["context"] == {"first": falsy}
    assert h.stages_by_id(run.id)["first"].output == falsy
