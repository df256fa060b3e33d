"""``plugin.replayDLQ``: give dead-lettered events another round of delivery attempts."""

from __future__ import annotations

from workflow_engine.kernel.commands import PluginReplayDLQ, PluginReplayDLQResult
from workflow_engine.kernel.runtime import Idempotency, Runtime


def handle_plugin_replay_dlq(
    command: PluginReplayDLQ, runtime: Runtime, idempotency: Idempotency | None
) -> PluginReplayDLQResult:
    return PluginReplayDLQResult(replayed=runtime.persistence.replay_dlq_events(command.max_events))
