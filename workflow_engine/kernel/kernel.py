"""The kernel: ``create_kernel(...)`` and ``Kernel.dispatch(command)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, overload

from pydantic import ValidationError

from workflow_engine.ai.logger import AICallLogger
from workflow_engine.ai.models import ModelRegistry
from workflow_engine.ai.providers import ProviderCache, ProviderResolver
from workflow_engine.clock import Clock, SystemClock
from workflow_engine.errors import InvalidCommandError
from workflow_engine.kernel import commands as c
from workflow_engine.kernel.handlers.job_execute import handle_job_execute
from workflow_engine.kernel.handlers.lease_reap_stale import handle_lease_reap_stale
from workflow_engine.kernel.handlers.outbox_flush import handle_outbox_flush
from workflow_engine.kernel.handlers.plugin_replay_dlq import handle_plugin_replay_dlq
from workflow_engine.kernel.handlers.retention_expire import handle_retention_expire
from workflow_engine.kernel.handlers.run_cancel import handle_run_cancel
from workflow_engine.kernel.handlers.run_claim_pending import handle_run_claim_pending
from workflow_engine.kernel.handlers.run_create import handle_run_create
from workflow_engine.kernel.handlers.run_reap_stuck import handle_run_reap_stuck
from workflow_engine.kernel.handlers.run_rerun_from import handle_run_rerun_from
from workflow_engine.kernel.handlers.run_transition import handle_run_transition
from workflow_engine.kernel.handlers.stage_poll_suspended import handle_stage_poll_suspended
from workflow_engine.kernel.runtime import Idempotency, KernelOptions, Replayed, Runtime, logger
from workflow_engine.ports import (
    BlobStore,
    EventSink,
    JobTransport,
    Persistence,
    Registry,
    Scheduler,
)

Handler = Callable[[Any, Runtime, Idempotency | None], c.Result]

_HANDLERS: dict[str, tuple[Handler, type[c.Result]]] = {
    "run.create": (handle_run_create, c.RunCreateResult),
    "run.claimPending": (handle_run_claim_pending, c.RunClaimPendingResult),
    "run.transition": (handle_run_transition, c.RunTransitionResult),
    "run.cancel": (handle_run_cancel, c.RunCancelResult),
    "run.rerunFrom": (handle_run_rerun_from, c.RunRerunFromResult),
    "job.execute": (handle_job_execute, c.JobExecuteResult),
    "stage.pollSuspended": (handle_stage_poll_suspended, c.StagePollSuspendedResult),
    "lease.reapStale": (handle_lease_reap_stale, c.LeaseReapStaleResult),
    "run.reapStuck": (handle_run_reap_stuck, c.RunReapStuckResult),
    "outbox.flush": (handle_outbox_flush, c.OutboxFlushResult),
    "plugin.replayDLQ": (handle_plugin_replay_dlq, c.PluginReplayDLQResult),
    "retention.expire": (handle_retention_expire, c.RetentionExpireResult),
}

_IDEMPOTENT = frozenset({"run.create", "job.execute", "run.rerunFrom"})


def parse_command(command: c.Command | Mapping[str, Any]) -> c.Command:
    """Validate a command given as a model or a dict; raise ``InvalidCommandError`` if malformed."""
    if isinstance(command, c.Command):
        if command.type not in _HANDLERS:  # type: ignore[attr-defined]
            raise InvalidCommandError(f"Unknown command {type(command).__name__}")
        return command
    if not isinstance(command, Mapping):
        raise InvalidCommandError(
            f"A command must be a command model or a mapping with a 'type', "
            f"not {type(command).__name__}"
        )
    command_type = command.get("type")
    if command_type is None:
        raise InvalidCommandError("The command has no 'type' field")
    if command_type not in _HANDLERS:
        raise InvalidCommandError(
            f"Unknown command type {command_type!r}; known types: {', '.join(c.COMMAND_TYPES)}"
        )
    try:
        parsed: c.Command = c.COMMAND_ADAPTER.validate_python(dict(command))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or '(command)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidCommandError(f"Invalid {command_type} command: {problems}") from None
    return parsed


class Kernel:
    """The pure command kernel: every change to workflow state is a dispatched command.

    It keeps no state of its own, starts no threads or timers and reads the time only from its
    clock; all state lives behind the ports it was created with.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def runtime(self) -> Runtime:
        """The ports and options this kernel works with."""
        return self._runtime

    @overload
    def dispatch(self, command: c.RunCreate) -> c.RunCreateResult: ...
    @overload
    def dispatch(self, command: c.RunClaimPending) -> c.RunClaimPendingResult: ...
    @overload
    def dispatch(self, command: c.RunTransition) -> c.RunTransitionResult: ...
    @overload
    def dispatch(self, command: c.RunCancel) -> c.RunCancelResult: ...
    @overload
    def dispatch(self, command: c.RunRerunFrom) -> c.RunRerunFromResult: ...
    @overload
    def dispatch(self, command: c.JobExecute) -> c.JobExecuteResult: ...
    @overload
    def dispatch(self, command: c.StagePollSuspended) -> c.StagePollSuspendedResult: ...
    @overload
    def dispatch(self, command: c.LeaseReapStale) -> c.LeaseReapStaleResult: ...
    @overload
    def dispatch(self, command: c.RunReapStuck) -> c.RunReapStuckResult: ...
    @overload
    def dispatch(self, command: c.OutboxFlush) -> c.OutboxFlushResult: ...
    @overload
    def dispatch(self, command: c.PluginReplayDLQ) -> c.PluginReplayDLQResult: ...
    @overload
    def dispatch(self, command: c.RetentionExpire) -> c.RetentionExpireResult: ...
    @overload
    def dispatch(self, command: Mapping[str, Any]) -> Any: ...

    def dispatch(self, command: c.Command | Mapping[str, Any]) -> Any:
        """Execute one command and return its result model.

        ``command`` is a command model or a dict with a ``type``. Raises
        ``InvalidCommandError`` for a malformed command and the typed errors of each command.
        """
        parsed = parse_command(command)
        command_type: str = parsed.type  # type: ignore[attr-defined]
        handler, result_model = _HANDLERS[command_type]
        # (membership first: a missing attribute costs a slow pydantic __getattr__)
        key = getattr(parsed, "idempotency_key", None) if command_type in _IDEMPOTENT else None
        if key is None:
            return handler(parsed, self._runtime, None)
        return self._dispatch_once(parsed, command_type, key, handler, result_model)

    def _dispatch_once(
        self,
        command: c.Command,
        command_type: str,
        key: str,
        handler: Handler,
        result_model: type[c.Result],
    ) -> c.Result:
        # The handler acquires the key in its first transaction and stores its result in its
        # last, so a dispatch that needs one transaction spends no other round trip on the key.
        idempotency = Idempotency(key, command_type)
        try:
            result = handler(command, self._runtime, idempotency)
        except Replayed as replay:
            return result_model.model_validate(replay.result)
        except BaseException:
            if idempotency.acquired and not idempotency.completed:
                self._release(key, command_type)  # a committed result stays for replays
            raise
        if idempotency.acquired and not idempotency.completed:
            self._runtime.persistence.complete_idempotency_key(
                key, command_type, result.model_dump(mode="json")
            )
        return result

    def _release(self, key: str, command_type: str) -> None:
        try:
            self._runtime.persistence.release_idempotency_key(key, command_type)
        except Exception:  # the stale-marker reclaim frees it later
            logger.warning("could not release idempotency key %s", key, exc_info=True)


def create_kernel(
    *,
    persistence: Persistence,
    blob_store: BlobStore,
    job_transport: JobTransport,
    event_sink: EventSink,
    registry: Registry,
    scheduler: Scheduler | None = None,
    clock: Clock | None = None,
    max_payload_bytes: int = KernelOptions.max_payload_bytes,
    inline_output_max_bytes: int = KernelOptions.inline_output_max_bytes,
    idempotency_stale_in_progress_ms: float | None = KernelOptions.idempotency_stale_in_progress_ms,
    outbox_claim_ms: int = KernelOptions.outbox_claim_ms,
    default_max_attempts: int = KernelOptions.default_max_attempts,
    ai_call_logger: AICallLogger | None = None,
    ai_provider_resolver: ProviderResolver | None = None,
    ai_models: ModelRegistry | None = None,
) -> Kernel:
    """Create a kernel over its ports.

    ``max_payload_bytes`` caps the JSON size of an input, config or output
    (``PayloadTooLargeError``); outputs up to ``inline_output_max_bytes`` are stored on the stage
    row, larger ones in the blob store. An in-progress idempotency key older than
    ``idempotency_stale_in_progress_ms`` is reclaimed (``None``: never). ``default_max_attempts``
    is the job attempt limit for stages that set none.

    ``ai_call_logger`` enables ``ctx.ai`` in stages (calls logged under
    ``workflow.{run_id}.stage.{stage_id}``) and adds every AI call logged under
    ``workflow.{run_id}`` to the run's ``total_cost``/``total_tokens``.
    ``ai_provider_resolver(model)`` may return a provider for a model (``None``: built-in);
    ``ai_models`` replaces the process-wide model registry. The kernel itself never calls a
    provider: only stage code does, through ``ctx.ai``.
    """
    if inline_output_max_bytes > max_payload_bytes:
        raise ValueError("inline_output_max_bytes cannot exceed max_payload_bytes")
    options = KernelOptions(
        max_payload_bytes=max_payload_bytes,
        inline_output_max_bytes=inline_output_max_bytes,
        idempotency_stale_in_progress_ms=idempotency_stale_in_progress_ms,
        outbox_claim_ms=outbox_claim_ms,
        default_max_attempts=default_max_attempts,
    )
    runtime = Runtime(
        persistence=persistence,
        blob_store=blob_store,
        job_transport=job_transport,
        event_sink=event_sink,
        scheduler=scheduler,
        clock=clock or SystemClock(),
        registry=registry,
        options=options,
        ai_call_logger=ai_call_logger,
        ai_models=ai_models,
        ai_providers=ProviderCache(ai_provider_resolver),
    )
    return Kernel(runtime)
