"""Guarantee 7 (contract §5.7): bad input gets a typed, readable error and writes nothing."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel, Field

from workflow_engine import (
    InvalidCommandError,
    InvalidConfigError,
    InvalidInputError,
    InvalidStateError,
    PayloadTooLargeError,
    RunNotFoundError,
    StageNotFoundError,
    Status,
    WorkflowBuilder,
    WorkflowEngineError,
    WorkflowNotFoundError,
    define_stage,
)
from workflow_engine.hosts.serverless import create_serverless_host
from workflow_engine.kernel import commands, create_kernel
from workflow_engine.kernel.commands import (
    JobExecute,
    RunCancel,
    RunClaimPending,
    RunCreate,
    RunRerunFrom,
    RunTransition,
)
from workflow_engine.testing import (
    CollectingEventSink,
    FakeClock,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
)

LIMIT = 2_000


class In(BaseModel):
    text: str = Field(min_length=1)
    copies: int = 1


class Out(BaseModel):
    words: int


class AnyOut(BaseModel):
    value: Any = None


class Cfg(BaseModel):
    threshold: float = Field(default=0.5, ge=0, le=1)
    mode: str = "fast"


count = define_stage(
    id="count",
    name="Count",
    input=In,
    output=Out,
    config=Cfg,
    execute=lambda ctx: Out(words=len(ctx.input.text.split())),
)
report = define_stage(
    id="report", name="Report", input=Out, output=Out, config=Cfg, execute=lambda ctx: ctx.input
)
WC = WorkflowBuilder("wc", "Word count", input=In, output=Out).pipe(count).pipe(report).build()


def returns(value: Any) -> Any:
    stage = define_stage(id="emit", name="Emit", input=In, output=AnyOut, execute=lambda c: value)
    return WorkflowBuilder("emit", "Emit", input=In, output=AnyOut).pipe(stage).build()


class DictRegistry:
    def __init__(self, workflows: Any) -> None:
        self.workflows = {wf.id: wf for wf in workflows}

    def get_workflow(self, workflow_id: str) -> Any:
        return self.workflows.get(workflow_id)


class Env:
    def __init__(self, *workflows: Any) -> None:
        self.clock = FakeClock()
        self.persistence = InMemoryWorkflowPersistence(clock=self.clock)
        self.jobs = InMemoryJobQueue("w", clock=self.clock)
        self.blobs = InMemoryBlobStore()
        self.registry = DictRegistry(workflows or [WC])
        self.kernel = create_kernel(
            persistence=self.persistence,
            blob_store=self.blobs,
            job_transport=self.jobs,
            event_sink=CollectingEventSink(),
            registry=self.registry,
            clock=self.clock,
            max_payload_bytes=LIMIT,
            inline_output_max_bytes=LIMIT // 2,
        )
        self.host = create_serverless_host(
            kernel=self.kernel, job_transport=self.jobs, worker_id="w"
        )

    def key_state(self, key: str, command_type: str = "run.create") -> str:
        return self.persistence.acquire_idempotency_key(
            key, command_type, now=self.clock.now(), stale_in_progress_after_ms=None
        ).status

    def assert_nothing_written(self, key: str | None = None) -> None:
        assert self.persistence.get_all_runs() == []
        assert self.persistence.get_all_stages() == []
        assert self.persistence.get_all_outbox_events() == []
        assert self.jobs.get_all_jobs() == []
        assert self.blobs.size == 0
        if key is not None:  # neither completed nor left in progress: free to use again
            assert self.key_state(key) == "acquired"

    def create(self, **fields: Any) -> Any:
        command = {"type": "run.create", "idempotency_key": "k1", "workflow_id": "wc"}
        command.setdefault("input", {"text": "a b"})
        command.update(fields)
        return self.kernel.dispatch(command)

    def finished_run(self) -> str:
        run_id = self.create().workflow_run_id
        self.host.run_maintenance_tick()
        self.host.process_available_jobs(max_jobs=10)
        assert self.persistence.get_run(run_id).status == Status.COMPLETED
        return run_id

    def snapshot(self, run_id: str) -> tuple[Any, ...]:
        return (
            self.persistence.get_run(run_id),
            self.persistence.get_stages_by_run(run_id),
            self.persistence.get_outbox_events(run_id),
            self.jobs.get_jobs_by_workflow_run(run_id),
        )


# -- run.create: input, config, workflow ----------------------------------------------------------
@pytest.mark.parametrize(
    ("bad_input", "field"),
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "a", "copies": "many"}, "copies"),
        ({"text": ["not", "a", "string"]}, "text"),
        ("just a string", "(input)"),
    ],
)
def test_invalid_input_is_rejected_and_nothing_is_written(bad_input: Any, field: str) -> None:
    env = Env()
    with pytest.raises(InvalidInputError, match=r"^Invalid workflow input: ") as caught:
        env.create(input=bad_input)
    if field != "(input)":
        assert field in str(caught.value)
    env.assert_nothing_written("k1")


def test_invalid_config_names_every_stage_at_fault() -> None:
    env = Env()
    with pytest.raises(InvalidConfigError) as caught:
        env.create(config={"count": {"threshold": 7}, "report": {"mode": 3}})
    message = str(caught.value)
    assert message.startswith("Invalid workflow config: ")
    assert "count" in message and "threshold" in message
    assert "report" in message and "mode" in message
    assert set(caught.value.errors) == {"count", "report"}
    env.assert_nothing_written("k1")


@pytest.mark.parametrize(
    "config",
    [{"nope": {}}, {"count": "fast"}, {"count": {"threshold": "high"}}],
)
def test_config_for_an_unknown_stage_or_of_the_wrong_shape_is_rejected(config: Any) -> None:
    env = Env()
    with pytest.raises(InvalidConfigError):
        env.create(config=config)
    env.assert_nothing_written("k1")


def test_unknown_workflow_is_rejected() -> None:
    env = Env()
    with pytest.raises(WorkflowNotFoundError, match="Workflow nope not found in registry"):
        env.create(workflow_id="nope")
    env.assert_nothing_written("k1")


def test_the_key_of_a_rejected_create_can_be_used_for_a_good_one() -> None:
    env = Env()
    with pytest.raises(InvalidInputError):
        env.create(input={})
    run = env.create()
    assert run.status == Status.PENDING
    assert len(env.persistence.get_all_runs()) == 1


# -- payload size ---------------------------------------------------------------------------------
def test_oversized_input_is_rejected_with_its_size() -> None:
    env = Env()
    with pytest.raises(PayloadTooLargeError) as caught:
        env.create(input={"text": "x" * LIMIT})
    assert caught.value.limit == LIMIT
    assert caught.value.size > LIMIT
    assert "workflow input" in str(caught.value) and str(LIMIT) in str(caught.value)
    env.assert_nothing_written("k1")


def test_oversized_config_is_rejected() -> None:
    env = Env()
    with pytest.raises(PayloadTooLargeError, match="config"):
        env.create(config={"count": {"mode": "y" * LIMIT}})
    env.assert_nothing_written("k1")


def test_input_just_under_the_limit_is_accepted() -> None:
    env = Env()
    run = env.create(input={"text": "x" * (LIMIT - 100)})
    assert env.persistence.get_run(run.workflow_run_id) is not None


def test_oversized_output_fails_the_stage_without_storing_it_or_retrying() -> None:
    env = Env(returns({"value": "z" * LIMIT}))
    run_id = env.create(workflow_id="emit").workflow_run_id
    env.host.run_maintenance_tick()
    result = env.host.process_available_jobs(max_jobs=10)
    assert (result.processed, result.failed) == (1, 1)  # not retried: it would not shrink
    stage = env.persistence.get_stage(run_id, "emit")
    assert stage.status == Status.FAILED
    assert (stage.output, stage.output_ref) == (None, None)
    assert "bytes" in stage.error_message and str(LIMIT) in stage.error_message
    assert env.blobs.size == 0
    assert env.persistence.get_run(run_id).status == Status.FAILED


class FloatOut(BaseModel):
    value: float


@pytest.mark.parametrize(
    ("model", "value"),
    [(AnyOut, object()), (FloatOut, float("nan")), (FloatOut, math.inf), (FloatOut, -math.inf)],
    ids=["object", "nan", "inf", "-inf"],
)
def test_non_json_output_fails_the_stage_with_a_readable_message(model: Any, value: Any) -> None:
    stage = define_stage(
        id="emit", name="Emit", input=In, output=model, execute=lambda c: {"value": value}
    )
    env = Env(WorkflowBuilder("emit", "Emit", input=In, output=model).pipe(stage).build())
    run_id = env.create(workflow_id="emit").workflow_run_id
    env.host.run_maintenance_tick()
    result = env.host.process_available_jobs(max_jobs=10)
    assert (result.processed, result.failed) == (1, 1)  # not retried
    stage_row = env.persistence.get_stage(run_id, "emit")
    assert stage_row.status == Status.FAILED
    assert stage_row.output is None
    assert "Stage emit returned an output that is not JSON" in stage_row.error_message
    assert env.persistence.get_run(run_id).status == Status.FAILED


def test_an_output_that_does_not_match_the_model_fails_the_stage() -> None:
    wrong = define_stage(id="w", name="W", input=In, output=Out, execute=lambda c: {"words": "?"})
    env = Env(WorkflowBuilder("wrong", "Wrong", input=In, output=Out).pipe(wrong).build())
    run_id = env.create(workflow_id="wrong").workflow_run_id
    env.host.run_maintenance_tick()
    env.host.process_available_jobs(max_jobs=10)
    stage = env.persistence.get_stage(run_id, "w")
    assert stage.status == Status.FAILED
    assert "Stage w returned an invalid output" in stage.error_message
    assert "words" in stage.error_message
    assert stage.output is None


# -- malformed commands ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ({"type": "run.explode"}, "run.explode"),
        ({"workflow_id": "wc"}, "type"),
        ({"type": "run.create", "workflow_id": "wc", "input": {"text": "a"}}, "idempotency_key"),
        ({"type": "run.create", "idempotency_key": "", "workflow_id": "wc"}, "idempotency_key"),
        ({"type": "run.create", "idempotency_key": "k1"}, "workflow_id"),
        (
            {"type": "run.create", "idempotency_key": "k1", "workflow_id": "wc", "colour": "red"},
            "colour",
        ),
        (
            {"type": "run.create", "idempotency_key": "k1", "workflow_id": "wc", "priority": "hi"},
            "priority",
        ),
        (
            {"type": "run.create", "idempotency_key": "k1", "workflow_id": "wc", "config": [1]},
            "config",
        ),
        ({"type": "run.claimPending", "worker_id": "w", "max_claims": -1}, "max_claims"),
        ({"type": "run.claimPending"}, "worker_id"),
        ({"type": "run.transition", "workflowRunId": "r"}, "workflowRunId"),
        ({"type": "outbox.flush", "max_events": "all"}, "max_events"),
        ({"type": "lease.reapStale", "stale_threshold_ms": -5}, "stale_threshold_ms"),
    ],
)
def test_malformed_commands_raise_invalid_command_error(
    command: dict[str, Any], mentions: str
) -> None:
    env = Env()
    with pytest.raises(InvalidCommandError) as caught:
        env.kernel.dispatch(command)
    assert mentions in str(caught.value)
    env.assert_nothing_written("k1")


@pytest.mark.parametrize("command", [None, "run.create", 42, ["run.create"]])
def test_a_command_that_is_not_a_mapping_is_rejected(command: Any) -> None:
    env = Env()
    with pytest.raises(InvalidCommandError, match="mapping"):
        env.kernel.dispatch(command)
    env.assert_nothing_written()


def test_invalid_command_error_is_a_workflow_engine_error() -> None:
    assert issubclass(InvalidCommandError, WorkflowEngineError)
    with pytest.raises(WorkflowEngineError):
        Env().kernel.dispatch({"type": 7})


def test_command_models_reject_unknown_fields_at_construction() -> None:
    with pytest.raises(ValueError, match="colour"):
        commands.RunCreate(idempotency_key="k", workflow_id="wc", colour="red")  # type: ignore[call-arg]


# -- unknown runs and stages ----------------------------------------------------------------------
def test_commands_on_an_unknown_run() -> None:
    env = Env()
    assert env.kernel.dispatch(RunCancel(workflow_run_id="ghost")).cancelled is False
    assert env.kernel.dispatch(RunTransition(workflow_run_id="ghost")).action == "noop"
    with pytest.raises(RunNotFoundError, match="WorkflowRun ghost not found"):
        env.kernel.dispatch(RunRerunFrom(workflow_run_id="ghost", from_stage_id="count"))
    with pytest.raises(RunNotFoundError, match="WorkflowRun ghost not found"):
        env.kernel.dispatch(JobExecute(workflow_run_id="ghost", workflow_id="wc", stage_id="count"))
    env.assert_nothing_written()


def test_job_execute_for_an_unknown_workflow_or_stage() -> None:
    env = Env()
    with pytest.raises(WorkflowNotFoundError):
        env.kernel.dispatch(JobExecute(workflow_run_id="r", workflow_id="nope", stage_id="count"))
    with pytest.raises(StageNotFoundError, match="Stage nope not found in workflow wc"):
        env.kernel.dispatch(JobExecute(workflow_run_id="r", workflow_id="wc", stage_id="nope"))
    env.assert_nothing_written()


def test_rerun_from_an_unknown_stage_changes_nothing() -> None:
    env = Env()
    run_id = env.finished_run()
    before = env.snapshot(run_id)
    with pytest.raises(StageNotFoundError, match="Stage nope not found in workflow wc"):
        env.kernel.dispatch(
            RunRerunFrom(workflow_run_id=run_id, from_stage_id="nope", idempotency_key="re-1")
        )
    assert env.snapshot(run_id) == before
    assert env.key_state("re-1", "run.rerunFrom") == "acquired"  # not left in progress


def test_rerun_of_a_run_that_is_not_finished_is_an_invalid_state() -> None:
    env = Env()
    run_id = env.create().workflow_run_id
    before = env.snapshot(run_id)
    with pytest.raises(InvalidStateError, match="Cannot rerun workflow in PENDING state"):
        env.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="count"))
    assert env.snapshot(run_id) == before


def test_rerun_whose_workflow_was_removed_changes_nothing() -> None:
    env = Env()
    run_id = env.finished_run()
    before = env.snapshot(run_id)
    env.registry.workflows.clear()
    with pytest.raises(WorkflowNotFoundError):
        env.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="count"))
    assert env.snapshot(run_id) == before


def test_claim_with_nothing_pending_writes_nothing() -> None:
    env = Env()
    assert env.kernel.dispatch(RunClaimPending(worker_id="w")).claimed == []
    env.assert_nothing_written()


def test_run_create_command_model_is_accepted_like_its_dict() -> None:
    env = Env()
    result = env.kernel.dispatch(
        RunCreate(idempotency_key="k1", workflow_id="wc", input={"text": "a b"})
    )
    assert env.create().workflow_run_id == result.workflow_run_id  # same key: replay
