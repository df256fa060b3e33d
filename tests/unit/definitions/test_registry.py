"""WorkflowRegistry: workflows by id."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from workflow_engine import WorkflowBuilder, WorkflowDefinitionError, WorkflowRegistry


class In(BaseModel):
    value: int = 0


@pytest.fixture
def build(make_stage):
    def factory(workflow_id: str):
        return WorkflowBuilder(workflow_id, workflow_id, input=In).pipe(make_stage("s")).build()

    return factory


def test_registered_workflows_are_found_by_id(build):
    registry = WorkflowRegistry()
    wf = build("alpha")

    assert registry.register(wf) is wf
    assert registry.get_workflow("alpha") is wf


def test_an_unknown_id_gives_none(build):
    assert WorkflowRegistry([build("alpha")]).get_workflow("beta") is None


def test_the_constructor_registers_an_iterable_of_workflows(build):
    registry = WorkflowRegistry(wf for wf in (build("b"), build("a")))

    assert registry.workflow_ids() == ["a", "b"]
    assert len(registry) == 2
    assert "a" in registry
    assert "c" not in registry


def test_a_second_workflow_with_the_same_id_is_rejected_naming_the_id(build):
    registry = WorkflowRegistry([build("alpha")])

    with pytest.raises(WorkflowDefinitionError, match="'alpha'"):
        registry.register(build("alpha"))
    with pytest.raises(WorkflowDefinitionError, match="'alpha'"):
        WorkflowRegistry([build("alpha"), build("alpha")])


def test_registering_the_same_workflow_twice_is_harmless(build):
    wf = build("alpha")
    registry = WorkflowRegistry([wf])

    registry.register(wf)

    assert registry.get_workflow("alpha") is wf
    assert len(registry) == 1
