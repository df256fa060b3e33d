"""Plugins: event handlers fed by ``outbox.flush``. A plugin runner is an ``EventSink``."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from workflow_engine.errors import WorkflowDefinitionError
from workflow_engine.kernel.events import EVENT_TYPES

EventHandler = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class Plugin:
    """A named handler for some event types. Make one with :func:`define_plugin`."""

    id: str
    name: str
    on: tuple[str, ...]
    handle: EventHandler


def define_plugin(*, id: str, name: str, on: Iterable[str], handle: EventHandler) -> Plugin:
    """Define a plugin that receives the payload of every event whose type is in ``on``.

    Events are delivered at least once, so ``handle`` should be idempotent (an event's
    ``workflow_run_id``, ``type`` and ``timestamp`` identify it).
    """
    event_types = tuple(on)
    if not id:
        raise WorkflowDefinitionError("A plugin needs an id")
    if not event_types:
        raise WorkflowDefinitionError(f"Plugin {id!r} subscribes to no event types")
    unknown = [event_type for event_type in event_types if event_type not in EVENT_TYPES]
    if unknown:
        raise WorkflowDefinitionError(
            f"Plugin {id!r} subscribes to unknown event types {', '.join(unknown)}; "
            f"known: {', '.join(EVENT_TYPES)}"
        )
    if not callable(handle):
        raise WorkflowDefinitionError(f"Plugin {id!r}: handle must be callable")
    return Plugin(id=id, name=name, on=event_types, handle=handle)


class PluginRunner:
    """Calls matching plugins in registration order; the first failure stops the delivery.

    ``outbox.flush`` delivers through :meth:`emit_pending`, which skips plugins that already
    handled the event and records each success, so a failing plugin does not make the others
    run twice. After ``max_retries`` failed deliveries an event moves to the DLQ.
    """

    def __init__(self, plugins: Iterable[Plugin], max_retries: int = 3) -> None:
        self.plugins = list(plugins)
        ids = [plugin.id for plugin in self.plugins]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise WorkflowDefinitionError(f"Duplicate plugin ids: {', '.join(duplicates)}")
        if max_retries < 1:
            raise ValueError("max_retries must be at least 1")
        self.max_retries = max_retries

    def plugins_for(self, event_type: str) -> list[Plugin]:
        return [plugin for plugin in self.plugins if event_type in plugin.on]

    def emit(self, event: Mapping[str, Any]) -> None:
        """Deliver to every matching plugin (an event no plugin wants is a success)."""
        self.emit_pending(event, frozenset(), lambda plugin_id: None)

    def emit_pending(
        self,
        event: Mapping[str, Any],
        delivered: Collection[str],
        on_delivered: Callable[[str], None],
    ) -> None:
        """Deliver to matching plugins not in ``delivered``, reporting each success."""
        for plugin in self.plugins_for(str(event.get("type"))):
            if plugin.id in delivered:
                continue
            plugin.handle(event)
            on_delivered(plugin.id)


def create_plugin_runner(*, plugins: Iterable[Plugin], max_retries: int = 3) -> PluginRunner:
    """An ``EventSink`` that routes events to ``plugins``."""
    return PluginRunner(plugins, max_retries=max_retries)
