"""WorkflowBuilder: execution groups, dependency checks, duplicate ids and workflow queries."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from workflow_engine import (
    StageNotFoundError,
    Workflow,
    WorkflowBuilder,
    WorkflowDefinitionError,
    WorkflowEngineError,
)
from workflow_engine.definitions import EmptyConfig


class In(BaseModel):
    value: int = 0


class Out(BaseModel):
    total: int


class Cfg(BaseModel):
    factor: int = 2


def builder(workflow_id: str = "wf") -> WorkflowBuilder:
    return WorkflowBuilder(workflow_id, "Workflow", "A test workflow", input=In, output=Out)


def plan_ids(workflow: Workflow) -> list[list[str]]:
    return [[stage.id for stage in group] for group in workflow.get_execution_plan()]


@pytest.fixture
def mixed(make_stage) -> Workflow:
    """a | (b, c) | d | (e, f): six stages in four groups."""
    return (
        builder()
        .pipe(make_stage("a"))
        .parallel([make_stage("b"), make_stage("c", config=Cfg)])
        .pipe(make_stage("d"))
        .parallel([make_stage("e"), make_stage("f")])
        .build()
    )


# -- groups ------------------------------------------------------------------------------------
def test_each_pipe_is_its_own_group_numbered_from_one(make_stage):
    wf = builder().pipe(make_stage("a")).pipe(make_stage("b")).pipe(make_stage("c")).build()

    assert [wf.get_execution_group_index(s) for s in ("a", "b", "c")] == [1, 2, 3]
    assert plan_ids(wf) == [["a"], ["b"], ["c"]]
    assert wf.group_count == 3


def test_a_parallel_call_puts_all_its_stages_in_one_group(make_stage):
    wf = builder().parallel([make_stage("a"), make_stage("b"), make_stage("c")]).build()

    assert plan_ids(wf) == [["a", "b", "c"]]
    assert {wf.get_execution_group_index(s) for s in ("a", "b", "c")} == {1}


def test_groups_are_contiguous_across_pipe_and_parallel(mixed):
    assert plan_ids(mixed) == [["a"], ["b", "c"], ["d"], ["e", "f"]]
    assert [mixed.get_execution_group_index(s) for s in "abcdef"] == [1, 2, 2, 3, 4, 4]
    assert mixed.group_count == 4


def test_execution_plan_holds_the_stage_objects(make_stage):
    a, b = make_stage("a"), make_stage("b")
    wf = builder().pipe(a).parallel([b]).build()

    assert wf.get_execution_plan() == [[a], [b]]
    assert wf.get_execution_plan() is not wf.get_execution_plan()


def test_builder_methods_chain_and_build_keeps_workflow_metadata(make_stage):
    b = builder("my-wf")
    assert b.pipe(make_stage("a")) is b
    wf = b.build()

    assert (wf.id, wf.name, wf.description) == ("my-wf", "Workflow", "A test workflow")
    assert (wf.input_model, wf.output_model) == (In, Out)


# -- dependencies ------------------------------------------------------------------------------
def test_dependencies_on_earlier_groups_are_accepted(make_stage):
    wf = (
        builder()
        .pipe(make_stage("a"))
        .parallel([make_stage("b", dependencies=["a"]), make_stage("c", dependencies=["a"])])
        .pipe(make_stage("d", dependencies=["a", "b", "c"]))
        .build()
    )

    assert wf.get_stage_ids() == ["a", "b", "c", "d"]


def test_a_missing_dependency_is_rejected_naming_stage_missing_ids_and_current_stages(
    make_stage,
):
    b = builder().pipe(make_stage("a"))

    with pytest.raises(WorkflowDefinitionError) as caught:
        b.pipe(make_stage("b", dependencies=["a", "ghost", "phantom"]))

    message = str(caught.value)
    assert "'b'" in message
    assert "missing dependencies: ghost, phantom" in message
    assert "Current stages: a" in message


def test_a_forward_dependency_is_rejected(make_stage):
    b = builder()

    with pytest.raises(WorkflowDefinitionError, match="missing dependencies: later"):
        b.pipe(make_stage("first", dependencies=["later"]))


def test_the_first_stage_with_a_dependency_reports_no_current_stages(make_stage):
    with pytest.raises(WorkflowDefinitionError, match=r"Current stages: \(none\)"):
        builder().pipe(make_stage("a", dependencies=["x"]))


def test_siblings_in_the_same_parallel_group_do_not_satisfy_a_dependency(make_stage):
    b = builder().pipe(make_stage("a"))

    with pytest.raises(WorkflowDefinitionError, match="'c' has missing dependencies: b"):
        b.parallel([make_stage("b"), make_stage("c", dependencies=["b"])])


def test_a_rejected_group_leaves_the_builder_unchanged(make_stage):
    b = builder().pipe(make_stage("a"))
    with pytest.raises(WorkflowDefinitionError):
        b.parallel([make_stage("b"), make_stage("c", dependencies=["missing"])])

    wf = b.pipe(make_stage("b")).build()

    assert plan_ids(wf) == [["a"], ["b"]]


# -- rejections --------------------------------------------------------------------------------
def test_a_repeated_stage_id_across_groups_is_rejected_naming_the_id(make_stage):
    b = builder().pipe(make_stage("extract"))

    with pytest.raises(WorkflowDefinitionError, match="duplicate stage id 'extract'"):
        b.pipe(make_stage("extract"))


def test_a_repeated_stage_id_inside_one_parallel_group_is_rejected(make_stage):
    with pytest.raises(WorkflowDefinitionError, match="duplicate stage id 'x'"):
        builder().parallel([make_stage("x"), make_stage("y"), make_stage("x")])


def test_a_workflow_without_stages_cannot_be_built():
    with pytest.raises(WorkflowDefinitionError, match="'empty' has no stages"):
        builder("empty").build()


def test_an_empty_parallel_group_is_rejected():
    with pytest.raises(WorkflowDefinitionError, match="parallel"):
        builder().parallel([])


def test_only_defined_stages_can_be_added():
    with pytest.raises(WorkflowDefinitionError, match="expected a stage"):
        builder().pipe(lambda ctx: None)


@pytest.mark.parametrize(
    ("workflow_id", "input_model"), [("", In), ("wf", dict), ("wf", In(value=1))]
)
def test_workflow_id_and_input_model_are_checked(workflow_id, input_model):
    with pytest.raises(WorkflowDefinitionError):
        WorkflowBuilder(workflow_id, "W", input=input_model)


def test_builder_errors_are_workflow_engine_errors(make_stage):
    with pytest.raises(WorkflowEngineError):
        builder().pipe(make_stage("a")).pipe(make_stage("a"))


# -- queries -----------------------------------------------------------------------------------
def test_stage_ids_and_all_stages_follow_definition_order(mixed):
    assert mixed.get_stage_ids() == ["a", "b", "c", "d", "e", "f"]
    nodes = mixed.get_all_stages()
    assert [(n.stage.id, n.execution_group, n.index) for n in nodes] == [
        ("a", 1, 0),
        ("b", 2, 1),
        ("c", 2, 2),
        ("d", 3, 3),
        ("e", 4, 4),
        ("f", 4, 5),
    ]


def test_get_stage_and_has_stage(mixed):
    assert mixed.get_stage("c").id == "c"
    assert mixed.get_stage("nope") is None
    assert mixed.has_stage("f")
    assert not mixed.has_stage("nope")


def test_get_stage_index_is_zero_based_in_definition_order(mixed):
    assert [mixed.get_stage_index(s) for s in "abcdef"] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("query", ["get_stage_index", "get_execution_group_index"])
def test_position_queries_on_an_unknown_stage_raise_stage_not_found(mixed, query):
    with pytest.raises(StageNotFoundError) as caught:
        getattr(mixed, query)("nope")

    assert caught.value.stage_id == "nope"
    assert str(caught.value) == "Stage nope not found in workflow wf"


def test_get_previous_stage_id(mixed):
    assert mixed.get_previous_stage_id("a") is None
    assert mixed.get_previous_stage_id("b") == "a"
    assert mixed.get_previous_stage_id("c") == "b"
    assert mixed.get_previous_stage_id("e") == "d"
    with pytest.raises(StageNotFoundError):
        mixed.get_previous_stage_id("nope")


def test_get_stages_in_execution_group(mixed):
    assert [s.id for s in mixed.get_stages_in_execution_group(2)] == ["b", "c"]
    assert [s.id for s in mixed.get_stages_in_execution_group(3)] == ["d"]
    assert mixed.get_stages_in_execution_group(0) == []
    assert mixed.get_stages_in_execution_group(9) == []


def test_get_stage_configs_maps_every_stage_to_its_config_model(mixed):
    configs = mixed.get_stage_configs()

    assert list(configs) == ["a", "b", "c", "d", "e", "f"]
    assert configs["c"] is Cfg
    assert configs["a"] is EmptyConfig
