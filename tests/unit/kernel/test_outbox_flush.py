"""``outbox.flush``: deliver claimed outbox events to the event sink, in order per run."""

from __future__ import annotations

from datetime import timedelta

from workflow_engine import create_plugin_runner, define_plugin
from workflow_engine.kernel.commands import OutboxFlush


def _flush(env, max_events=100):
    return env.kernel.dispatch(OutboxFlush(max_events=max_events)).published


class Recorder:
    """A plugin handler that records events and fails while ``failures`` is positive."""

    def __init__(self, failures=0):
        self.failures = failures
        self.seen = []

    def __call__(self, event):
        self.seen.append(event["type"])
        if self.failures:
            self.failures -= 1
            raise RuntimeError("plugin down")


def _with_plugins(env_factory, *handlers, on=("workflow:created", "workflow:started"), **kw):
    plugins = [
        define_plugin(id=f"p{i}", name=f"Plugin {i}", on=on, handle=handler)
        for i, handler in enumerate(handlers)
    ]
    return env_factory(event_sink=create_plugin_runner(plugins=plugins, **kw))


def test_events_wait_in_the_outbox_until_flushed(env):
    run_id = env.start()

    assert env.sink.events == []
    assert [e.event_type for e in env.persistence.get_unpublished_outbox_events()] == [
        "workflow:created",
        "workflow:started",
    ]
    assert env.event_types(run_id) == ["workflow:created", "workflow:started"]


def test_flush_delivers_events_in_order_and_marks_them_published(env):
    run_id = env.start()

    assert _flush(env) == 2

    assert [e["type"] for e in env.sink.events] == ["workflow:created", "workflow:started"]
    rows = env.persistence.get_outbox_events(run_id)
    assert [row.published_at for row in rows] == [env.clock.now()] * 2
    assert env.persistence.get_unpublished_outbox_events() == []


def test_the_sink_gets_the_stored_payloads(env):
    run_id = env.create()

    _flush(env)

    assert env.sink.events == env.events(run_id)


def test_max_events_limits_one_flush(env):
    env.start()

    assert _flush(env, max_events=1) == 1
    assert [e["type"] for e in env.sink.events] == ["workflow:created"]
    assert _flush(env, max_events=1) == 1
    assert [e["type"] for e in env.sink.events] == ["workflow:created", "workflow:started"]


def test_a_second_flush_publishes_nothing(env):
    env.start()
    _flush(env)

    assert _flush(env) == 0
    assert len(env.sink.events) == 2


def test_sequences_are_monotonic_per_run(env):
    run_id = env.start("two-stage")
    env.finish(run_id)

    rows = env.persistence.get_outbox_events(run_id)

    assert [(row.sequence, row.event_type) for row in rows] == [
        (1, "workflow:created"),
        (2, "workflow:started"),
        (3, "stage:started"),
        (4, "stage:completed"),
        (5, "stage:started"),
        (6, "stage:completed"),
        (7, "workflow:completed"),
    ]


def test_each_run_has_its_own_sequence(env):
    first = env.create()
    second = env.create()
    env.claim()

    for run_id in (first, second):
        assert [row.sequence for row in env.persistence.get_outbox_events(run_id)] == [1, 2]


def test_a_failed_delivery_is_retried_by_the_next_flush(env_factory):
    plugin = Recorder(failures=1)
    env = _with_plugins(env_factory, plugin, on=["workflow:created"])
    run_id = env.create()

    assert _flush(env) == 0
    (row,) = env.persistence.get_outbox_events(run_id)
    assert (row.retry_count, row.published_at, row.claimed_until) == (1, None, None)

    assert _flush(env) == 1
    assert plugin.seen == ["workflow:created", "workflow:created"]


def test_an_event_moves_to_the_dlq_after_max_retries(env_factory):
    plugin = Recorder(failures=99)
    env = _with_plugins(env_factory, plugin, on=["workflow:created"], max_retries=2)
    run_id = env.create()

    _flush(env)
    _flush(env)
    assert _flush(env) == 0

    (row,) = env.persistence.get_outbox_events(run_id)
    assert (row.retry_count, row.dlq_at) == (2, env.clock.now())
    assert plugin.seen == ["workflow:created"] * 2
    assert [e.id for e in env.persistence.get_dlq_events()] == [row.id]


def test_a_plain_sink_gets_three_attempts_by_default(env_factory):
    class BrokenSink:
        attempts = 0

        def emit(self, event):
            BrokenSink.attempts += 1
            raise RuntimeError("sink down")

    env = env_factory(event_sink=BrokenSink())
    run_id = env.create()

    for _ in range(4):
        _flush(env)

    assert BrokenSink.attempts == 3
    (row,) = env.persistence.get_outbox_events(run_id)
    assert row.dlq_at is not None


def test_a_failing_event_holds_back_its_run_but_not_others(env_factory):
    blocked_runs = []

    def fail_first_event_of_blocked_runs(event):
        if event["workflow_run_id"] in blocked_runs and event["type"] == "workflow:created":
            raise RuntimeError("plugin down")

    env = _with_plugins(env_factory, fail_first_event_of_blocked_runs)
    blocked = env.create()
    blocked_runs.append(blocked)
    flowing = env.create()
    env.claim()

    assert _flush(env) == 2

    rows = {row.event_type: row for row in env.persistence.get_outbox_events(blocked)}
    assert rows["workflow:created"].retry_count == 1
    assert rows["workflow:started"].published_at is None
    assert rows["workflow:started"].claimed_until is None  # released for the next flush
    assert all(row.published_at for row in env.persistence.get_outbox_events(flowing))


def test_published_counts_only_successful_deliveries(env_factory):
    env = _with_plugins(env_factory, Recorder(failures=1), on=["workflow:created"])
    env.create()
    env.create()

    assert _flush(env) == 1


def test_a_plugin_that_already_handled_an_event_is_not_called_again(env_factory):
    steady, flaky = Recorder(), Recorder(failures=1)
    env = _with_plugins(env_factory, steady, flaky, on=["workflow:created"])
    run_id = env.create()

    _flush(env)
    (row,) = env.persistence.get_outbox_events(run_id)
    assert row.delivered_plugins == ["p0"]
    _flush(env)

    assert steady.seen == ["workflow:created"]
    assert flaky.seen == ["workflow:created", "workflow:created"]
    (row,) = env.persistence.get_outbox_events(run_id)
    assert row.published_at is not None


def test_events_claimed_by_another_flusher_are_skipped_until_the_claim_expires(env):
    env.create()
    env.persistence.claim_outbox_events(100, now=env.clock.now(), lease_ms=60_000)

    assert _flush(env) == 0
    env.clock.advance(timedelta(seconds=61))
    assert _flush(env) == 1
    assert len(env.sink.events) == 1
