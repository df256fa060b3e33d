"""``run.transition``: advance, complete or fail a run whose current group has settled."""

from __future__ import annotations

from workflow_engine.kernel.commands import RunTransition, RunTransitionResult
from workflow_engine.kernel.progress import transition_run
from workflow_engine.kernel.runtime import Idempotency, Runtime


def handle_run_transition(
    command: RunTransition, runtime: Runtime, idempotency: Idempotency | None
) -> RunTransitionResult:
    return runtime.transaction(lambda scope: transition_run(scope, command.workflow_run_id))
