"""Cancel during a running stage: the run ends CANCELLED and the stage's result is discarded."""

from __future__ import annotations

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.workflows import executions, release

pytestmark = pytest.mark.e2e


def test_cancel_while_a_stage_runs_discards_its_result(workers, client, db, probe_dir):
    workers(1, concurrency=2)
    config = {stage: {"dir": str(probe_dir)} for stage in ("hold", "finish")}
    run_id = client.create_run("held", {"n": 1}, config=config)
    wait_until(
        lambda: [e for e in executions(probe_dir) if e.stage == "hold"],
        timeout=30,
        what="the hold stage to start",
    )
    assert db.stages(run_id)[0].status == "RUNNING"

    assert client.cancel(run_id, reason="user asked") is True
    assert client.get_run(run_id).status == "CANCELLED"
    # Let the stage finish its work: its result comes back to a cancelled run.
    release(probe_dir, "hold")
    (job,) = wait_until(
        lambda: [j for j in db.jobs(run_id) if j.status != "RUNNING"],
        timeout=30,
        what="the held job to settle",
    )

    assert [(e.stage, e.event) for e in executions(probe_dir)] == [
        ("hold", "start"),
        ("hold", "end"),
    ], "the stage body ran to its end exactly once"
    view = client.get_run(run_id)
    assert view.status == "CANCELLED"
    assert view.output is None
    assert db.scalar("SELECT output FROM workflow_runs WHERE id = :r", r=run_id) is None
    stages = db.stages(run_id)
    assert [(s.stage_id, s.status, s.output) for s in stages] == [("hold", "CANCELLED", None)]
    event_types = [e.event_type for e in db.events(run_id)]
    assert "stage:completed" not in event_types
    assert event_types.count("workflow:cancelled") == 1
    assert "workflow:completed" not in event_types
    # The job's result was fenced off as a ghost, not recorded, and never retried.
    assert job.status != "COMPLETED"
    assert job.attempt == 1
    assert "ghost" in (job.last_error or "")
    assert client.cancel(run_id) is False
