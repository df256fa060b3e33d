"""A worker lost mid-stage (SIGKILL, or frozen with SIGSTOP past its lease): another worker
finishes the run, the stage's result is recorded once, and the lost attempt's late result is
discarded (guarantees 2 and 3)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.workflows import executions, release
from workflow_engine.kernel.commands import JobExecute

pytestmark = pytest.mark.chaos

HELD = ("hold", "finish")


def starts(probe_dir, stage: str) -> list:
    return [e for e in executions(probe_dir) if (e.stage, e.event) == (stage, "start")]


def owner_first(pair, pid: int) -> tuple:
    """``(worker running the pool process pid, the other worker)``."""
    group = os.getpgid(pid)
    (owner,) = [w for w in pair if w.pid == group]
    (other,) = [w for w in pair if w is not owner]
    return owner, other


def completions(db, run_id: str) -> Counter[str]:
    return Counter(e.stage_id for e in db.events(run_id) if e.event_type == "stage:completed")


def test_worker_sigkilled_mid_stage_another_finishes_and_the_late_result_is_discarded(
    cluster, workers, beat, client, db, probe_dir
):
    pair = workers(2, concurrency=1)
    beat()
    config = {stage: {"dir": str(probe_dir)} for stage in HELD}
    run_id = client.create_run("held", {"n": 1}, config=config)
    (attempt1,) = wait_until(lambda: starts(probe_dir, "hold"), timeout=30, what="hold to start")
    first, second = owner_first(pair, attempt1.pid)
    (job,) = db.jobs(run_id)
    assert (job.status, job.attempt) == ("RUNNING", 1)
    old_token = job.lease_token
    assert db.stages(run_id)[0].lease_token == old_token

    first.kill()  # SIGKILL the worker and its pool child, mid-stage
    killed_at = time.time()
    attempt2 = wait_until(
        lambda: starts(probe_dir, "hold")[1:],
        timeout=30,
        what="another worker to take the stage over",
        diagnose=cluster.logs,
    )[0]
    print(f"\nstage restarted {attempt2.at - killed_at:.1f} s after the SIGKILL (lease 3 s)")
    assert attempt2.at - killed_at < 15
    assert os.getpgid(attempt2.pid) == second.pid
    (job,) = db.jobs(run_id)
    assert (job.status, job.attempt) == ("RUNNING", 2)
    assert job.lease_token != old_token

    release(probe_dir, "hold")
    wait_until(lambda: starts(probe_dir, "finish"), timeout=30, what="the next stage to start")
    assert completions(db, run_id) == {"hold": 1}
    hold_row = db.stages(run_id)[0]
    assert hold_row.status == "COMPLETED"

    # The killed attempt's late result, simulated: its lease token no longer fences anything.
    transport = client.context.transport
    assert transport.complete(job.id, lease_token=old_token) is False
    assert transport.fail(job.id, "late failure", should_retry=True, lease_token=old_token) is False
    assert transport.touch_job(job.id, lease_token=old_token) is False
    late = JobExecute(
        workflow_run_id=run_id,
        workflow_id="held",
        stage_id="hold",
        config=config,
        job_id=job.id,
        lease_token=old_token,
    )
    # While the run goes on, the stage's one stored result is returned, nothing is re-run.
    replay = client.context.kernel.dispatch(late)
    assert (replay.outcome, replay.ghost, replay.output) == ("completed", False, {"n": 101})
    assert db.stages(run_id)[0] == hold_row
    assert len(starts(probe_dir, "hold")) == 2

    release(probe_dir, "finish")
    view = client.wait(run_id, timeout=30)
    assert view.status == "COMPLETED"
    assert view.output == {"n": 102}
    # Once the run is over, the late result is a ghost.
    ghost = client.context.kernel.dispatch(late)
    assert ghost.ghost is True and ghost.outcome == "failed"

    assert completions(db, run_id) == {"hold": 1, "finish": 1}
    assert [(j.stage_id, j.status, j.attempt) for j in db.jobs(run_id)] == [
        ("hold", "COMPLETED", 2),
        ("finish", "COMPLETED", 1),
    ]
    assert [(e.stage, e.event) for e in executions(probe_dir)] == [
        ("hold", "start"),  # killed
        ("hold", "start"),
        ("hold", "end"),
        ("finish", "start"),
        ("finish", "end"),
    ]


def test_a_frozen_worker_waking_after_its_lease_was_taken_over_has_its_result_discarded(
    cluster, workers, beat, client, db, probe_dir
):
    """The real late result: the first worker is frozen (SIGSTOP, heartbeat included) until
    another finished the stage, then thawed; its stage returns and its write is fenced off."""
    pair = workers(2, concurrency=1)
    beat()
    config = {stage: {"dir": str(probe_dir)} for stage in HELD}
    run_id = client.create_run("held", {"n": 1}, config=config)
    (attempt1,) = wait_until(lambda: starts(probe_dir, "hold"), timeout=30, what="hold to start")
    first, second = owner_first(pair, attempt1.pid)

    first.signal_group(signal.SIGSTOP)
    frozen_at = time.time()
    try:
        attempt2 = wait_until(
            lambda: starts(probe_dir, "hold")[1:],
            timeout=30,
            what="another worker to take the stage over",
            diagnose=cluster.logs,
        )[0]
        assert os.getpgid(attempt2.pid) == second.pid
        print(f"\nstage taken over {attempt2.at - frozen_at:.1f} s after the SIGSTOP")
        release(probe_dir, "hold")
        wait_until(lambda: starts(probe_dir, "finish"), timeout=30, what="the next stage")
        assert completions(db, run_id) == {"hold": 1}
    finally:
        first.signal_group(signal.SIGCONT)

    # The thawed attempt finishes its stage body and tries to record its result.
    wait_until(
        lambda: [e for e in executions(probe_dir) if e.event == "end" and e.pid == attempt1.pid],
        timeout=30,
        what="the thawed attempt to finish its stage",
        diagnose=cluster.logs,
    )
    wait_until(
        lambda: "result discarded" in first.log(),
        timeout=30,
        what="the thawed attempt's job to settle (as a discarded ghost)",
        diagnose=first.tail,
    )
    release(probe_dir, "finish")
    view = client.wait(run_id, timeout=30)

    assert view.status == "COMPLETED"
    assert view.output == {"n": 102}
    assert completions(db, run_id) == {"hold": 1, "finish": 1}
    hold_events = [e.event_type for e in db.events(run_id) if e.stage_id == "hold"]
    assert hold_events == ["stage:started", "stage:started", "stage:completed"]
    assert [(j.stage_id, j.status, j.attempt) for j in db.jobs(run_id)] == [
        ("hold", "COMPLETED", 2),
        ("finish", "COMPLETED", 1),
    ]
    hold_runs = [(e.event, e.pid) for e in executions(probe_dir) if e.stage == "hold"]
    assert sorted(hold_runs) == sorted(
        [
            ("start", attempt1.pid),
            ("start", attempt2.pid),
            ("end", attempt2.pid),
            ("end", attempt1.pid),
        ]
    )
