"""Redis loses every message mid-run (FLUSHALL) or is restarted: every run still completes,
each stage's result is recorded once, and the workers keep consuming (guarantee 4)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.e2e.harness import assert_every_worker_serves, tick_results, wait_until
from tests.e2e.workflows import FANOUT_STAGES, executions

pytestmark = pytest.mark.chaos

RUNS = 40
CONCURRENCY = 2
RESTARTS = 5


def queued_messages(redis_server, queue: str) -> int:
    client = redis_server.client()
    keys = [k for k in client.keys(f"{queue}*") if client.type(k) == b"list"]
    return sum(client.llen(k) for k in keys) + client.hlen("unacked")


def start_runs(client, probe_dir) -> list[str]:
    config = {stage: {"dir": str(probe_dir)} for stage in FANOUT_STAGES}
    return [client.create_run("fanout", {"n": i}, config=config) for i in range(RUNS)]


def assert_each_stage_completed_once(db, probe_dir, run_ids) -> None:
    statuses = db.run_statuses(run_ids)
    assert Counter(statuses.values()) == {"COMPLETED": len(run_ids)}
    events = db.rows(
        "SELECT workflow_run_id, payload->>'stage_id' AS stage_id, count(*) AS n "
        "FROM outbox_events WHERE event_type = 'stage:completed' AND workflow_run_id = ANY(:i) "
        "GROUP BY 1, 2",
        i=list(run_ids),
    )
    assert len(events) == len(run_ids) * len(FANOUT_STAGES)
    assert {e.n for e in events} == {1}
    ran = Counter((e.run_id, e.stage) for e in executions(probe_dir) if e.run_id in run_ids)
    assert len(ran) == len(run_ids) * len(FANOUT_STAGES)
    assert set(ran.values()) == {1}, "a stage body ran twice"


def wait_some_completed(db, run_ids, at_least: int) -> None:
    wait_until(
        lambda: (
            db.scalar(
                "SELECT count(*) FROM workflow_runs WHERE id = ANY(:i) AND status = 'COMPLETED'",
                i=run_ids,
            )
            >= at_least
        ),
        timeout=60,
        what=f"{at_least} runs to complete",
    )


def test_redis_flushall_mid_run_loses_every_message_and_every_run_still_completes(
    redis_cluster, redis_server, db, probe_dir
):
    cluster = redis_cluster
    workers = cluster.start_workers(2, concurrency=CONCURRENCY)
    cluster.start_beat()
    client = cluster.client()
    run_ids = start_runs(client, probe_dir)
    wait_some_completed(db, run_ids, 3)

    lost = queued_messages(redis_server, cluster.queue)
    unfinished = len(run_ids) - db.terminal_count(run_ids)
    redis_server.client().flushall()
    flushed = time.monotonic()
    db.wait_terminal(run_ids, timeout=90, diagnose=cluster.logs)
    recovery = time.monotonic() - flushed
    ticks = tick_results(cluster)
    republished = sum(t.get("republished", 0) for t in ticks)
    print(
        f"\nFLUSHALL dropped {lost} messages with {unfinished} runs unfinished; all done "
        f"{recovery:.1f} s later; ticks re-sent {republished} wake-ups, claimed "
        f"{sum(t.get('claimed', 0) for t in ticks)} runs"
    )
    assert lost > 0 and unfinished > 0, "the flush should have hit queued work"
    assert republished > 0
    assert_each_stage_completed_once(db, probe_dir, run_ids)
    assert_every_worker_serves(client, probe_dir, workers, CONCURRENCY)


def test_redis_restarted_mid_run_every_run_completes_and_workers_keep_consuming(
    redis_cluster, redis_server, db, probe_dir
):
    # Several restarts, each with work in flight: a worker must survive every reconnect
    # (kombu can fail while closing the lost connection, which used to stop the worker).
    cluster = redis_cluster
    workers = cluster.start_workers(2, concurrency=CONCURRENCY)
    beat = cluster.start_beat()
    client = cluster.client()
    all_runs: list[str] = []
    for restart in range(1, RESTARTS + 1):
        run_ids = start_runs(client, probe_dir)
        all_runs += run_ids
        wait_some_completed(db, run_ids, 3)

        lost = queued_messages(redis_server, cluster.queue)
        downtime = redis_server.restart()  # no persistence: the queue is gone
        restarted = time.monotonic()
        db.wait_terminal(run_ids, timeout=90, diagnose=cluster.logs)
        recovery = time.monotonic() - restarted
        print(
            f"\nrestart {restart}: Redis down {downtime:.2f} s, {lost} messages lost; all runs "
            f"done {recovery:.1f} s after it came back"
        )
        assert [w.alive() for w in workers] == [True] * len(workers), "a worker exited"
        assert beat.alive(), "beat exited"
    assert_each_stage_completed_once(db, probe_dir, all_runs)
    took = assert_every_worker_serves(client, probe_dir, workers, CONCURRENCY)
    print(f"every pool slot of both workers served new work {took:.1f} s after asking")
