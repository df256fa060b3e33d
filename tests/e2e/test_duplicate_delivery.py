"""The same job message delivered several times: the stage runs once (guarantee 2)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.workflows import FANOUT_STAGES, executions, fanout_output, release
from workflow_engine.celery.publisher import EXECUTE_JOB
from workflow_engine.kernel.commands import RunClaimPending

pytestmark = pytest.mark.e2e


def skipped_messages(cluster) -> int:
    """Wake-ups that found nothing to lease, as the workers logged them."""
    return sum(
        1
        for process in cluster.processes
        if process.name.startswith("worker")
        for line in process.log().splitlines()
        if EXECUTE_JOB in line and line.endswith(": 'skipped'")
    )


def stage_completed_events(db, run_id: str) -> Counter[str]:
    return Counter(e.stage_id for e in db.events(run_id) if e.event_type == "stage:completed")


def test_duplicates_of_a_running_jobs_message_are_dropped(cluster, workers, client, db, probe_dir):
    workers(2, concurrency=2)
    config = {stage: {"dir": str(probe_dir)} for stage in ("hold", "finish")}
    run_id = client.create_run("held", {"n": 1}, config=config)
    wait_until(
        lambda: [e for e in executions(probe_dir) if e.stage == "hold"],
        timeout=30,
        what="the hold stage to start",
    )
    (job,) = db.jobs(run_id)
    assert (job.status, job.attempt) == ("RUNNING", 1)

    # Three more deliveries of the running job's wake-up, to the workers' queue.
    for _ in range(3):
        client.app.send_task(EXECUTE_JOB, args=[job.id], queue=cluster.queue)
    wait_until(
        lambda: skipped_messages(cluster) >= 3,
        timeout=30,
        what="the three duplicates to be consumed",
        diagnose=cluster.logs,
    )
    release(probe_dir, "hold")
    release(probe_dir, "finish")
    view = client.wait(run_id, timeout=30)

    assert view.status == "COMPLETED"
    assert view.output == {"n": 102}
    assert [(e.stage, e.event) for e in executions(probe_dir)] == [
        ("hold", "start"),
        ("hold", "end"),
        ("finish", "start"),
        ("finish", "end"),
    ]
    assert stage_completed_events(db, run_id) == {"hold": 1, "finish": 1}
    jobs = db.jobs(run_id)
    assert [(j.stage_id, j.status, j.attempt) for j in jobs] == [
        ("hold", "COMPLETED", 1),
        ("finish", "COMPLETED", 1),
    ]
    assert skipped_messages(cluster) == 3


def test_a_message_queued_three_times_before_any_worker_runs_its_stage_once(
    cluster, client, db, probe_dir
):
    config = {stage: {"dir": str(probe_dir)} for stage in FANOUT_STAGES}
    run_ids = [client.create_run("fanout", {"n": i}, config=config) for i in range(3)]
    # Claim here, before any worker exists: the transport publishes one wake-up per first job.
    claimed = client.context.kernel.dispatch(RunClaimPending(worker_id="test", max_claims=10))
    assert sorted(c.workflow_run_id for c in claimed.claimed) == sorted(run_ids)
    first_jobs = [job for run_id in run_ids for job in db.jobs(run_id)]
    assert [(j.stage_id, j.status) for j in first_jobs] == [("start", "PENDING")] * 3
    for job in first_jobs:  # two more copies each: three deliveries of every message
        for _ in range(2):
            client.app.send_task(EXECUTE_JOB, args=[job.id], queue=cluster.queue)

    cluster.start_workers(2, concurrency=2)
    statuses = db.wait_terminal(run_ids, timeout=60, diagnose=cluster.logs)

    assert set(statuses.values()) == {"COMPLETED"}
    for i, run_id in enumerate(run_ids):
        assert client.get_run(run_id).output == fanout_output(i)
        assert stage_completed_events(db, run_id) == dict.fromkeys(FANOUT_STAGES, 1)
        assert {(j.status, j.attempt) for j in db.jobs(run_id)} == {("COMPLETED", 1)}
    ran = Counter((e.run_id, e.stage) for e in executions(probe_dir))
    assert ran == {(run_id, stage): 1 for run_id in run_ids for stage in FANOUT_STAGES}
    assert skipped_messages(cluster) == 2 * len(run_ids)
