"""Retry back-off is woken by an ETA message, not the tick; the attempt limit is honoured."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.e2e.workflows import executions

pytestmark = pytest.mark.e2e

TICK_SECONDS = 60  # and no beat: nothing but the retry's own wake-up can start attempt 2


def test_retry_fires_on_time_without_the_tick_and_the_attempt_limit_holds(
    workers, client, db, probe_dir
):
    workers(1, concurrency=2, tick_interval_seconds=TICK_SECONDS, max_attempts=3)
    began = time.monotonic()
    flaky = client.create_run("retry-once", {"n": 1}, config={"flaky": {"dir": str(probe_dir)}})
    doomed = client.create_run("always-fails", {"n": 1}, config={"doomed": {"dir": str(probe_dir)}})
    statuses = db.wait_terminal([flaky, doomed], timeout=30)
    elapsed = time.monotonic() - began
    assert elapsed < TICK_SECONDS / 2, "finished through the tick, not the back-off wake-up"

    # retry-once: fails once, the retry starts >= 2 s (2**1) after the failure, then succeeds.
    assert statuses[flaky] == "COMPLETED"
    assert client.get_run(flaky).output == {"n": 2}
    runs = [e for e in executions(probe_dir) if e.run_id == flaky]
    assert [e.event for e in runs] == ["start", "fail", "start"]
    retry_delay = runs[2].at - runs[1].at
    print(
        f"\nretry started {retry_delay:.2f} s after the failure; both runs done in {elapsed:.1f} s"
    )
    assert 2.0 <= retry_delay < 6.0
    (job,) = db.jobs(flaky)
    assert (job.status, job.attempt) == ("COMPLETED", 2)
    kinds = [e.event_type for e in db.events(flaky)]
    assert kinds.count("stage:failed") == 1
    assert kinds.count("stage:completed") == 1
    assert kinds[-1] == "workflow:completed"

    # always-fails: exactly max_attempts executions, back-offs of 2 s then 4 s, then FAILED.
    assert statuses[doomed] == "FAILED"
    starts = [e.at for e in executions(probe_dir) if e.run_id == doomed]
    assert len(starts) == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 2.0 and gaps[1] >= 4.0, gaps
    assert all(gap < 10.0 for gap in gaps), gaps
    (job,) = db.jobs(doomed)
    assert (job.status, job.attempt, job.max_attempts) == ("FAILED", 3, 3)
    view = client.get_run(doomed)
    assert "always fails" in (view.error or "")
    assert [(s.stage_id, s.status) for s in view.stages] == [("doomed", "FAILED")]
    kinds = [e.event_type for e in db.events(doomed)]
    assert kinds.count("stage:started") == 3
    assert kinds.count("stage:failed") == 3
    assert kinds.count("workflow:failed") == 1
