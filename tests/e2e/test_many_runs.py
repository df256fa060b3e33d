"""200 runs of a workflow with a parallel group, on real workers: every stage once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.e2e.workflows import FANOUT_STAGES, executions, fanout_output

pytestmark = pytest.mark.e2e

RUNS = 200

EXPECTED_EVENTS = Counter(
    {
        "workflow:created": 1,
        "workflow:started": 1,
        "stage:started": len(FANOUT_STAGES),
        "stage:completed": len(FANOUT_STAGES),
        "workflow:completed": 1,
    }
)


def test_200_runs_with_a_parallel_group_complete_every_stage_exactly_once(
    workers, client, db, probe_dir
):
    # No beat: the normal path must never wait for the maintenance tick.
    workers(2, concurrency=2)
    config = {stage: {"dir": str(probe_dir)} for stage in FANOUT_STAGES}

    began = time.monotonic()
    run_ids = [client.create_run("fanout", {"n": i}, config=config) for i in range(RUNS)]
    statuses = db.wait_terminal(run_ids, timeout=120)
    elapsed = time.monotonic() - began
    print(f"\n{RUNS} runs ({RUNS * len(FANOUT_STAGES)} stages) finished in {elapsed:.1f} s")

    assert Counter(statuses.values()) == {"COMPLETED": RUNS}
    outputs = dict(db.rows("SELECT id, output FROM workflow_runs WHERE id = ANY(:i)", i=run_ids))
    assert outputs == {run_id: fanout_output(i) for i, run_id in enumerate(run_ids)}

    # Stage rows: one per (run, stage), all COMPLETED.
    stage_rows = db.rows(
        "SELECT workflow_run_id, stage_id, status, count(*) OVER "
        "(PARTITION BY workflow_run_id, stage_id) AS copies FROM workflow_stages "
        "WHERE workflow_run_id = ANY(:i)",
        i=run_ids,
    )
    assert len(stage_rows) == RUNS * len(FANOUT_STAGES)
    assert {(row.status, row.copies) for row in stage_rows} == {("COMPLETED", 1)}
    assert Counter(row.stage_id for row in stage_rows) == dict.fromkeys(FANOUT_STAGES, RUNS)

    # Outbox: exactly the expected event types per run, one stage:completed per stage.
    events = db.rows(
        "SELECT workflow_run_id, event_type, payload->>'stage_id' AS stage_id "
        "FROM outbox_events WHERE workflow_run_id = ANY(:i)",
        i=run_ids,
    )
    per_run: dict[str, Counter[str]] = {run_id: Counter() for run_id in run_ids}
    completed: Counter[tuple[str, str]] = Counter()
    for event in events:
        per_run[event.workflow_run_id][event.event_type] += 1
        if event.event_type == "stage:completed":
            completed[(event.workflow_run_id, event.stage_id)] += 1
    wrong = {run_id: dict(c) for run_id, c in per_run.items() if c != EXPECTED_EVENTS}
    assert not wrong, f"{len(wrong)} runs with unexpected events, e.g. {next(iter(wrong.items()))}"
    assert set(completed.values()) == {1}
    assert len(completed) == RUNS * len(FANOUT_STAGES)

    # Job rows: one per stage, COMPLETED on its first attempt.
    jobs = db.rows(
        "SELECT status, attempt, count(*) AS n FROM job_queue WHERE workflow_run_id = ANY(:i) "
        "GROUP BY status, attempt",
        i=run_ids,
    )
    assert [(j.status, j.attempt, j.n) for j in jobs] == [
        ("COMPLETED", 1, RUNS * len(FANOUT_STAGES))
    ]
    assert (
        db.scalar(
            "SELECT count(*) FROM (SELECT 1 FROM job_queue WHERE workflow_run_id = ANY(:i) "
            "GROUP BY workflow_run_id, stage_id HAVING count(*) > 1) AS dup",
            i=run_ids,
        )
        == 0
    )

    # The stages' own side effects: each stage body ran once per run.
    ran = Counter((row.run_id, row.stage) for row in executions(probe_dir))
    assert len(ran) == RUNS * len(FANOUT_STAGES)
    assert set(ran.values()) == {1}
