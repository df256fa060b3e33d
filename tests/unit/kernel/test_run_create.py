"""``run.create``: validate input and config, insert a PENDING run, emit ``workflow:created``."""

from __future__ import annotations

import pytest

from workflow_engine import (
    InvalidConfigError,
    InvalidInputError,
    PayloadTooLargeError,
    Status,
    WorkflowNotFoundError,
)
from workflow_engine.kernel.commands import RunCreate

TEXT = {"text": "a b c"}


def test_creates_a_pending_run_with_the_workflow_and_input(env):
    result = env.kernel.dispatch(
        RunCreate(idempotency_key="k", workflow_id="two-stage", input=TEXT)
    )

    run = env.run(result.workflow_run_id)
    assert result.status == Status.PENDING
    assert run.status == Status.PENDING
    assert (run.workflow_id, run.workflow_name, run.workflow_type) == (
        "two-stage",
        "Two-Stage",
        "two-stage",
    )
    assert run.input == TEXT
    assert run.created_at == env.clock.now()
    assert run.started_at is None and run.completed_at is None
    assert run.version == 1


def test_emits_workflow_created_in_the_outbox_only(env):
    run_id = env.create()

    assert env.event_types(run_id) == ["workflow:created"]
    assert env.last_event(run_id, "workflow:created")["workflow_id"] == "one-stage"
    assert env.sink.events == []  # delivered only by outbox.flush


def test_does_not_claim_or_enqueue_anything(env):
    run_id = env.create()

    assert env.stages(run_id) == []
    assert env.jobs_of(run_id) == []


def test_an_unknown_workflow_raises_and_writes_nothing(env):
    with pytest.raises(WorkflowNotFoundError) as caught:
        env.kernel.dispatch(RunCreate(idempotency_key="k", workflow_id="nope", input=TEXT))

    assert str(caught.value) == "Workflow nope not found in registry"
    assert env.persistence.get_all_runs() == []
    assert env.persistence.get_all_outbox_events() == []


def test_invalid_input_raises_with_the_field_and_writes_nothing(env):
    with pytest.raises(InvalidInputError) as caught:
        env.kernel.dispatch(RunCreate(idempotency_key="k", workflow_id="one-stage", input={}))

    assert str(caught.value) == "Invalid workflow input: text: Field required"
    assert env.persistence.get_all_runs() == []


def test_invalid_config_raises_naming_the_stage_and_writes_nothing(env):
    with pytest.raises(InvalidConfigError) as caught:
        env.kernel.dispatch(
            RunCreate(
                idempotency_key="k",
                workflow_id="one-stage",
                input=TEXT,
                config={"count": {"multiplier": "many"}},
            )
        )

    assert list(caught.value.errors) == ["count"]
    assert str(caught.value).startswith("Invalid workflow config: count: multiplier:")
    assert env.persistence.get_all_runs() == []


def test_config_for_a_stage_the_workflow_lacks_is_rejected(env):
    with pytest.raises(InvalidConfigError, match="ghost: not a stage of workflow one-stage"):
        env.create(config={"ghost": {}})


def test_config_defaults_are_merged_with_the_given_values(env):
    run_id = env.create("two-stage", config={"count": {"multiplier": 3}})

    assert env.run(run_id).config == {
        "count": {"multiplier": 3, "label": "count"},
        "double": {},
    }


def test_default_config_is_stored_when_none_is_given(env):
    run_id = env.create()

    assert env.run(run_id).config == {"count": {"multiplier": 1, "label": "count"}}


def test_priority_defaults_to_five(env):
    assert env.run(env.create()).priority == 5


def test_a_custom_priority_is_stored(env):
    assert env.run(env.create(priority=9)).priority == 9


def test_metadata_is_stored_as_a_json_field(env):
    run_id = env.create(metadata={"tenant": "acme", "tags": ["a", "b"]})

    assert env.run(run_id).metadata == {"tenant": "acme", "tags": ["a", "b"]}


def test_oversized_input_raises_payload_too_large_and_writes_nothing(env_factory):
    env = env_factory(max_payload_bytes=100, inline_output_max_bytes=50)

    with pytest.raises(PayloadTooLargeError) as caught:
        env.create(input={"text": "x" * 200})

    assert caught.value.limit == 100
    assert "The workflow input is" in str(caught.value)
    assert env.persistence.get_all_runs() == []


def test_a_zero_priority_is_kept_and_not_replaced_by_the_default(env):
    assert env.run(env.create(priority=0)).priority == 0
