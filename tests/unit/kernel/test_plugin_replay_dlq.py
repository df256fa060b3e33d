"""``plugin.replayDLQ``: give dead-lettered events another round of delivery attempts."""

from __future__ import annotations

from workflow_engine import create_plugin_runner, define_plugin
from workflow_engine.kernel.commands import OutboxFlush, PluginReplayDLQ


class Switch:
    """A plugin handler that fails while ``broken`` is set."""

    def __init__(self):
        self.broken = True
        self.delivered = []

    def __call__(self, event):
        if self.broken:
            raise RuntimeError("plugin down")
        self.delivered.append(event["workflow_run_id"])


def _env(env_factory, handler, max_retries=1):
    plugin = define_plugin(id="p", name="P", on=["workflow:created"], handle=handler)
    return env_factory(event_sink=create_plugin_runner(plugins=[plugin], max_retries=max_retries))


def _flush(env):
    return env.kernel.dispatch(OutboxFlush()).published


def _replay(env, max_events=100):
    return env.kernel.dispatch(PluginReplayDLQ(max_events=max_events)).replayed


def _dead_lettered(env, count):
    run_ids = [env.create() for _ in range(count)]
    _flush(env)
    assert len(env.persistence.get_dlq_events()) == count
    return run_ids


def test_replayed_events_are_delivered_by_the_next_flush(env_factory):
    plugin = Switch()
    env = _env(env_factory, plugin)
    (run_id,) = _dead_lettered(env, 1)
    plugin.broken = False

    assert _replay(env) == 1
    assert _flush(env) == 1

    assert plugin.delivered == [run_id]
    (row,) = env.persistence.get_outbox_events(run_id)
    assert (row.dlq_at, row.published_at) == (None, env.clock.now())


def test_nothing_is_replayed_when_the_dlq_is_empty(env_factory):
    plugin = Switch()
    plugin.broken = False
    env = _env(env_factory, plugin)
    run_id = env.create()
    _flush(env)

    assert _replay(env) == 0
    assert env.persistence.get_outbox_events(run_id)[0].published_at is not None


def test_max_events_limits_one_replay(env_factory):
    env = _env(env_factory, Switch())
    _dead_lettered(env, 3)

    assert _replay(env, max_events=2) == 2
    assert len(env.persistence.get_dlq_events()) == 1
    assert len(env.persistence.get_unpublished_outbox_events()) == 2


def test_a_replayed_event_gets_a_fresh_retry_budget(env_factory):
    plugin = Switch()
    env = _env(env_factory, plugin, max_retries=2)
    run_id = env.create()
    _flush(env)
    _flush(env)
    assert env.persistence.get_outbox_events(run_id)[0].retry_count == 2

    _replay(env)

    (row,) = env.persistence.get_outbox_events(run_id)
    assert (row.retry_count, row.dlq_at) == (0, None)
    _flush(env)
    assert env.persistence.get_dlq_events() == []  # one failure is within the new budget
