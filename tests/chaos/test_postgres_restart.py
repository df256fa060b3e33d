"""Postgres restarted mid-run (a throwaway cluster of the test's own): every run completes,
each stage's result is recorded once, and no worker stays wedged (guarantee 4)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.e2e.harness import assert_every_worker_serves, wait_until
from tests.e2e.workflows import FANOUT_STAGES

pytestmark = pytest.mark.chaos

RUNS = 40
CONCURRENCY = 2


def test_postgres_restarted_mid_run_every_run_completes_and_no_worker_is_wedged(
    postgres_server, postgres_cluster, postgres_db, probe_dir
):
    cluster, db = postgres_cluster, postgres_db
    workers = cluster.start_workers(2, concurrency=CONCURRENCY)
    cluster.start_beat()
    client = cluster.client()
    config = {stage: {"dir": str(probe_dir)} for stage in FANOUT_STAGES}
    run_ids = [client.create_run("fanout", {"n": i}, config=config) for i in range(RUNS)]
    wait_until(
        lambda: db.scalar("SELECT count(*) FROM workflow_runs WHERE status = 'COMPLETED'") >= 3,
        timeout=60,
        what="the first runs to complete",
    )

    before = {w.name: len(w.log()) for w in workers}
    postgres_server.stop("fast")  # every connection is cut
    stopped = time.monotonic()
    try:
        # Down until a job and a maintenance tick have both failed on it, so the outage hits
        # work in flight and the safety net too.
        def felt(*markers: str) -> bool:
            return any(
                all(marker in line for marker in markers)
                for w in workers
                for line in w.log()[before[w.name] :].splitlines()
            )

        wait_until(
            lambda: felt("execute_job", "OperationalError") and felt("maintenance", "rror"),
            timeout=20,
            what="a job and a tick to hit the outage",
            diagnose=cluster.logs,
        )
    finally:
        postgres_server.start()
    downtime = time.monotonic() - stopped
    unfinished = RUNS - db.terminal_count(run_ids)
    restarted = time.monotonic()
    statuses = db.wait_terminal(run_ids, timeout=120, diagnose=cluster.logs)
    recovery = time.monotonic() - restarted
    print(
        f"\nPostgres down {downtime:.1f} s with {unfinished} runs unfinished; all done "
        f"{recovery:.1f} s after the restart"
    )

    assert Counter(statuses.values()) == {"COMPLETED": RUNS}
    completed = db.rows(
        "SELECT workflow_run_id, payload->>'stage_id' AS stage_id, count(*) AS n "
        "FROM outbox_events WHERE event_type = 'stage:completed' GROUP BY 1, 2"
    )
    assert len(completed) == RUNS * len(FANOUT_STAGES)
    assert {row.n for row in completed} == {1}, "a stage's result was recorded twice"
    assert db.scalar("SELECT count(*) FROM workflow_stages WHERE status <> 'COMPLETED'") == 0
    assert all(w.alive() for w in workers)
    took = assert_every_worker_serves(client, probe_dir, workers, CONCURRENCY)
    print(f"every pool slot of both workers served new work {took:.1f} s after asking")
