"""Plugins: ``define_plugin`` and the plugin runner, the event sink ``outbox.flush`` feeds."""

from __future__ import annotations

import pytest

from workflow_engine import (
    PluginRunner,
    WorkflowDefinitionError,
    create_plugin_runner,
    define_plugin,
)

CREATED = {"type": "workflow:created", "workflow_run_id": "r1", "timestamp": "t"}
STARTED = {"type": "workflow:started", "workflow_run_id": "r1", "timestamp": "t"}


def _recording(plugin_id, on, log):
    return define_plugin(
        id=plugin_id, name=plugin_id, on=on, handle=lambda event: log.append((plugin_id, event))
    )


def test_an_event_is_routed_to_the_plugins_subscribed_to_its_type():
    log = []
    runner = create_plugin_runner(plugins=[_recording("a", ["workflow:created"], log)])

    runner.emit(CREATED)

    assert log == [("a", CREATED)]


def test_plugins_of_other_types_are_skipped():
    log = []
    runner = create_plugin_runner(plugins=[_recording("a", ["workflow:started"], log)])

    runner.emit(CREATED)

    assert log == []


def test_several_plugins_of_one_type_run_in_registration_order():
    log = []
    runner = create_plugin_runner(
        plugins=[_recording(p, ["workflow:created"], log) for p in ("b", "a", "c")]
    )

    runner.emit(CREATED)

    assert [plugin_id for plugin_id, _ in log] == ["b", "a", "c"]


def test_one_plugin_can_subscribe_to_several_types():
    log = []
    runner = create_plugin_runner(
        plugins=[_recording("a", ["workflow:created", "workflow:started"], log)]
    )

    runner.emit(CREATED)
    runner.emit(STARTED)

    assert [event["type"] for _, event in log] == ["workflow:created", "workflow:started"]


def test_a_handler_error_propagates_and_stops_later_plugins():
    log = []

    def broken(event):
        raise RuntimeError("plugin down")

    runner = create_plugin_runner(
        plugins=[
            define_plugin(id="broken", name="Broken", on=["workflow:created"], handle=broken),
            _recording("after", ["workflow:created"], log),
        ]
    )

    with pytest.raises(RuntimeError, match="plugin down"):
        runner.emit(CREATED)
    assert log == []


def test_an_event_no_plugin_wants_is_a_successful_no_op():
    runner = create_plugin_runner(plugins=[])

    runner.emit(CREATED)  # does not raise


def test_emit_pending_skips_delivered_plugins_and_reports_each_success():
    log, delivered = [], []
    runner = create_plugin_runner(
        plugins=[_recording(p, ["workflow:created"], log) for p in ("a", "b", "c")]
    )

    runner.emit_pending(CREATED, frozenset({"b"}), delivered.append)

    assert [plugin_id for plugin_id, _ in log] == ["a", "c"]
    assert delivered == ["a", "c"]


def test_max_retries_is_exposed_and_defaults_to_three():
    assert create_plugin_runner(plugins=[]).max_retries == 3
    assert create_plugin_runner(plugins=[], max_retries=5).max_retries == 5
    assert isinstance(create_plugin_runner(plugins=[]), PluginRunner)


def test_max_retries_below_one_is_rejected():
    with pytest.raises(ValueError, match="max_retries must be at least 1"):
        create_plugin_runner(plugins=[], max_retries=0)


def test_duplicate_plugin_ids_are_rejected():
    log = []
    with pytest.raises(WorkflowDefinitionError, match="Duplicate plugin ids: a"):
        create_plugin_runner(
            plugins=[_recording("a", ["workflow:created"], log)] * 2,
        )


def test_a_plugin_must_subscribe_to_something():
    with pytest.raises(WorkflowDefinitionError, match="subscribes to no event types"):
        define_plugin(id="a", name="A", on=[], handle=lambda event: None)


def test_a_plugin_needs_an_id_and_a_callable_handler():
    with pytest.raises(WorkflowDefinitionError, match="needs an id"):
        define_plugin(id="", name="A", on=["workflow:created"], handle=lambda event: None)
    with pytest.raises(WorkflowDefinitionError, match="handle must be callable"):
        define_plugin(id="a", name="A", on=["workflow:created"], handle="nope")


def test_a_plugin_for_an_unknown_event_type_is_rejected_naming_it():
    with pytest.raises(WorkflowDefinitionError, match="unknown event types stage:complete"):
        define_plugin(id="typo", name="Typo", on=["stage:complete"], handle=lambda event: None)
