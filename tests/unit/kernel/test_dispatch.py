"""``Kernel.dispatch``: commands as models or dicts, typed results, malformed commands."""

from __future__ import annotations

import pytest

from workflow_engine import InvalidCommandError, Status, WorkflowEngineError
from workflow_engine.kernel import commands, parse_command
from workflow_engine.kernel.commands import COMMAND_TYPES, RunCreate, RunCreateResult

TEXT = {"text": "a b c"}

# The smallest valid dict for every command type, and the result model it returns.
MINIMAL: dict[str, tuple[dict[str, object], type[commands.Result]]] = {
    "run.create": (
        {"idempotency_key": "k", "workflow_id": "one-stage", "input": TEXT},
        commands.RunCreateResult,
    ),
    "run.claimPending": ({"worker_id": "w"}, commands.RunClaimPendingResult),
    "run.transition": ({"workflow_run_id": "missing"}, commands.RunTransitionResult),
    "run.cancel": ({"workflow_run_id": "missing"}, commands.RunCancelResult),
    "stage.pollSuspended": ({}, commands.StagePollSuspendedResult),
    "lease.reapStale": ({}, commands.LeaseReapStaleResult),
    "run.reapStuck": ({}, commands.RunReapStuckResult),
    "outbox.flush": ({}, commands.OutboxFlushResult),
    "plugin.replayDLQ": ({}, commands.PluginReplayDLQResult),
    "retention.expire": ({}, commands.RetentionExpireResult),
}


@pytest.mark.parametrize("command_type", sorted(MINIMAL))
def test_a_dict_command_returns_its_typed_result_model(kernel, command_type):
    fields, result_model = MINIMAL[command_type]

    result = kernel.dispatch({"type": command_type, **fields})

    assert type(result) is result_model


def test_every_command_type_has_a_minimal_example_or_needs_an_existing_run():
    needs_a_run = {"run.rerunFrom", "job.execute"}
    assert set(COMMAND_TYPES) == set(MINIMAL) | needs_a_run


def test_a_model_command_returns_the_same_result_as_its_dict_form(env):
    from_model = env.kernel.dispatch(
        RunCreate(idempotency_key="m", workflow_id="one-stage", input=TEXT)
    )
    from_dict = env.kernel.dispatch(
        {"type": "run.create", "idempotency_key": "d", "workflow_id": "one-stage", "input": TEXT}
    )

    assert isinstance(from_model, RunCreateResult)
    assert isinstance(from_dict, RunCreateResult)
    assert from_model.status == from_dict.status == Status.PENDING
    assert from_model.workflow_run_id != from_dict.workflow_run_id


def test_result_fields_are_snake_case(env):
    run_id = env.create()

    claimed = env.claim().model_dump()

    assert claimed == {
        "claimed": [
            {
                "workflow_run_id": run_id,
                "workflow_id": "one-stage",
                "job_ids": [env.job_of(run_id, "count").id],
            }
        ]
    }


def test_an_unknown_type_is_rejected_with_the_known_types_listed(kernel):
    with pytest.raises(InvalidCommandError) as caught:
        kernel.dispatch({"type": "run.explode"})

    message = str(caught.value)
    assert "Unknown command type 'run.explode'" in message
    assert "run.create" in message and "plugin.replayDLQ" in message


def test_a_command_without_type_is_rejected(kernel):
    with pytest.raises(InvalidCommandError, match="no 'type' field"):
        kernel.dispatch({"workflow_run_id": "r"})


def test_a_command_that_is_neither_model_nor_mapping_is_rejected(kernel):
    with pytest.raises(InvalidCommandError, match="not str"):
        kernel.dispatch("run.create")  # type: ignore[call-overload]


def test_a_missing_field_is_named_in_the_error(kernel):
    with pytest.raises(InvalidCommandError) as caught:
        kernel.dispatch({"type": "run.create", "idempotency_key": "k", "input": TEXT})

    assert str(caught.value) == "Invalid run.create command: workflow_id: Field required"


def test_an_ill_typed_field_is_named_in_the_error(kernel):
    with pytest.raises(InvalidCommandError) as caught:
        kernel.dispatch({"type": "run.claimPending", "worker_id": "w", "max_claims": "lots"})

    message = str(caught.value)
    assert message.startswith("Invalid run.claimPending command: max_claims:")
    assert "integer" in message


def test_an_unknown_field_is_named_in_the_error(kernel):
    with pytest.raises(InvalidCommandError) as caught:
        kernel.dispatch({"type": "run.cancel", "workflow_run_id": "r", "resaon": "typo"})

    assert "resaon: Extra inputs are not permitted" in str(caught.value)


def test_every_problem_of_a_command_is_listed(kernel):
    with pytest.raises(InvalidCommandError) as caught:
        kernel.dispatch({"type": "job.execute", "workflow_run_id": 1, "extra": True})

    message = str(caught.value)
    for name in ("workflow_run_id", "workflow_id", "stage_id", "extra"):
        assert f"{name}:" in message


def test_a_negative_limit_is_rejected(kernel):
    with pytest.raises(InvalidCommandError, match="max_events"):
        kernel.dispatch({"type": "outbox.flush", "max_events": -1})


def test_run_create_needs_a_non_empty_idempotency_key(kernel):
    with pytest.raises(InvalidCommandError, match="idempotency_key"):
        kernel.dispatch({"type": "run.create", "idempotency_key": "", "workflow_id": "one-stage"})


def test_invalid_command_error_is_a_workflow_engine_error():
    assert issubclass(InvalidCommandError, WorkflowEngineError)


def test_a_malformed_command_writes_nothing(env):
    with pytest.raises(InvalidCommandError):
        env.kernel.dispatch(
            {"type": "run.create", "idempotency_key": "k", "workflow_id": "one-stage", "x": 1}
        )

    assert env.persistence.get_all_runs() == []
    assert env.persistence.get_all_outbox_events() == []
    # the key was never taken: a valid command with it runs
    valid = {
        "type": "run.create",
        "idempotency_key": "k",
        "workflow_id": "one-stage",
        "input": TEXT,
    }
    assert env.kernel.dispatch(valid).status == Status.PENDING


def test_parse_command_turns_a_dict_into_its_model():
    parsed = parse_command({"type": "run.cancel", "workflow_run_id": "r", "reason": "why"})

    assert parsed == commands.RunCancel(workflow_run_id="r", reason="why")


def test_command_defaults_are_the_originals():
    assert commands.RunClaimPending(worker_id="w").max_claims == 10
    assert commands.StagePollSuspended().max_checks == 50
    assert commands.LeaseReapStale().stale_threshold_ms == 300_000
    assert commands.OutboxFlush().max_events == 100
    assert commands.PluginReplayDLQ().max_events == 100


def test_events_of_a_command_carry_type_timestamp_and_run_id(env):
    run_id = env.create()

    (event,) = env.events(run_id)

    assert event == {
        "type": "workflow:created",
        "timestamp": env.clock.now().isoformat(),
        "workflow_run_id": run_id,
        "workflow_id": "one-stage",
    }


def test_events_of_one_dispatch_share_a_causation_id(env):
    env.create("parallel")
    env.claim()
    run_id = env.persistence.get_all_runs()[0].id
    env.kernel.dispatch({"type": "run.cancel", "workflow_run_id": run_id})

    rows = env.persistence.get_outbox_events(run_id)
    by_type = {row.event_type: row.causation_id for row in rows}

    assert by_type["workflow:created"] == "create-0"  # the idempotency key
    assert by_type["workflow:started"] != by_type["workflow:cancelled"]
