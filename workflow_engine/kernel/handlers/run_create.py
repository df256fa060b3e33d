"""``run.create``: validate input and config, insert the PENDING run, emit ``workflow:created``."""

from __future__ import annotations

from pydantic import ValidationError

from workflow_engine.definitions.config import describe_validation_error
from workflow_engine.errors import InvalidConfigError, InvalidInputError
from workflow_engine.kernel.commands import RunCreate, RunCreateResult
from workflow_engine.kernel.runtime import Idempotency, Runtime, Scope
from workflow_engine.records import NewRun


def handle_run_create(
    command: RunCreate, runtime: Runtime, idempotency: Idempotency | None
) -> RunCreateResult:
    workflow = runtime.workflow(command.workflow_id)
    runtime.check_payload("The workflow input", command.input)
    try:
        parsed = workflow.input_model.model_validate(command.input)
    except ValidationError as exc:
        raise InvalidInputError(
            "Invalid workflow input: " + "; ".join(describe_validation_error(exc))
        ) from None
    workflow_input = parsed.model_dump(mode="json", by_alias=True)
    if command.config is not None:
        try:
            runtime.check_payload("The workflow config", command.config)
        except InvalidInputError as exc:
            raise InvalidConfigError({"(config)": [str(exc)]}) from None
    config = workflow.validate_config(command.config)

    def create(scope: Scope) -> RunCreateResult:
        run = scope.tx.create_run(
            NewRun(
                workflow_id=workflow.id,
                workflow_name=workflow.name,
                workflow_type=workflow.id,
                input=workflow_input,
                config=config,
                priority=5 if command.priority is None else command.priority,
                metadata=command.metadata,
            )
        )
        scope.emit("workflow:created", run.id, workflow_id=workflow.id)
        return scope.finish(RunCreateResult(workflow_run_id=run.id, status=run.status))

    return runtime.transaction(
        create, causation_id=command.idempotency_key, idempotency=idempotency
    )
