"""``outbox.flush``: deliver claimed outbox events to the event sink, in order per run.

Rows are claimed first, so concurrent flushers never deliver the same event in one pass. When
the sink is a plugin runner, delivery is per plugin: a plugin that already handled an event is
not called again when the event is retried for another plugin's failure.
"""

from __future__ import annotations

from typing import Any, Protocol, cast, runtime_checkable

from workflow_engine.kernel.commands import OutboxFlush, OutboxFlushResult
from workflow_engine.kernel.runtime import Idempotency, Runtime, logger
from workflow_engine.records import OutboxEventRecord

DEFAULT_MAX_RETRIES = 3


@runtime_checkable
class PerPluginSink(Protocol):
    """An event sink that can skip plugins that already handled an event."""

    max_retries: int

    def emit_pending(
        self,
        event: dict[str, Any],
        delivered: frozenset[str],
        on_delivered: Any,
    ) -> None: ...


def handle_outbox_flush(
    command: OutboxFlush, runtime: Runtime, idempotency: Idempotency | None
) -> OutboxFlushResult:
    persistence = runtime.persistence
    events = persistence.claim_outbox_events(
        command.max_events, now=runtime.now(), lease_ms=runtime.options.outbox_claim_ms
    )
    max_retries = getattr(runtime.event_sink, "max_retries", DEFAULT_MAX_RETRIES)
    per_plugin = isinstance(runtime.event_sink, PerPluginSink)  # slow check: once per flush
    blocked_runs: set[str] = set()
    published: list[str] = []
    held_back: list[str] = []
    for event in events:
        if event.workflow_run_id in blocked_runs:
            held_back.append(event.id)
            continue
        try:
            _deliver(runtime, event, per_plugin)
        except Exception:
            logger.warning("delivering event %s failed", event.id, exc_info=True)
            blocked_runs.add(event.workflow_run_id)
            if persistence.increment_outbox_retry_count(event.id) >= max_retries:
                persistence.move_outbox_event_to_dlq(event.id)
            continue
        published.append(event.id)
    if published:
        persistence.mark_outbox_events_published(published)
    if held_back:
        persistence.release_outbox_claims(held_back)
    return OutboxFlushResult(published=len(published))


def _deliver(runtime: Runtime, event: OutboxEventRecord, per_plugin: bool) -> None:
    sink = runtime.event_sink
    if per_plugin:
        cast(PerPluginSink, sink).emit_pending(
            dict(event.payload),
            frozenset(event.delivered_plugins),
            lambda plugin_id: runtime.persistence.mark_outbox_plugin_delivered(event.id, plugin_id),
        )
    else:
        sink.emit(dict(event.payload))
