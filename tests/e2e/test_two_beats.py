"""Two beat processes: maintenance ticks never overlap (contract §4, Celery pitfall 7).

Both beats send a tick every 0.25 s to two workers with two pool slots each, and every tick
holds the lock 0.1 s longer than it needs, so ticks are delivered concurrently all the time;
the Postgres advisory lock must let one run at a time.

What ran when is read from two places:
- ``maintenance_ticks`` (worker_id, started_at, finished_at, result), which every executed tick
  writes, when the schema has it;
- the tick probe (``tests.e2e.tick_probe``), which records in a file the interval of every
  ``run_maintenance_tick`` call — the body ``run_tick`` runs only while holding the lock.
"""

from __future__ import annotations

import itertools
import time

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.tick_probe import read_ticks

pytestmark = pytest.mark.e2e

TICK = 0.25
HOLD = 0.1  # each tick holds the lock 0.1 s longer: 8 ticks/s cannot all run one by one


def skipped_ticks(workers) -> int:
    return sum(w.log().count("maintenance tick skipped: another tick is running") for w in workers)


def overlapping(intervals: list[tuple]) -> list[tuple]:
    """Neighbours (by start) where the later one starts before the earlier one ended."""
    return [(a, b) for a, b in itertools.pairwise(intervals) if b[0] < a[1]]


def test_two_beats_never_run_overlapping_ticks(cluster, workers, db, tmp_path):
    tick_log = tmp_path / "ticks.log"
    pool = workers(
        2,
        concurrency=2,
        registry="tests.e2e.tick_probe:registry",
        extra_env={"E2E_TICK_LOG": str(tick_log), "E2E_TICK_HOLD": str(HOLD)},
    )
    beats = [cluster.start_beat(tick_interval_seconds=TICK, wait=False) for _ in range(2)]
    for beat in beats:
        cluster.wait_beat(beat)
    began = time.monotonic()
    wait_until(
        lambda: all(b.log().count("Sending due task") >= 12 for b in beats),
        timeout=60,
        what="both beats to send 12 ticks",
    )
    for beat in beats:
        beat.stop()
    sent = sum(b.log().count("Sending due task") for b in beats)

    ticks = read_ticks(tick_log)  # a tick still running is not in it yet: nothing to hide
    skipped = skipped_ticks(pool)
    print(
        f"\n{sent} ticks sent by 2 beats in {time.monotonic() - began:.1f} s: "
        f"{len(ticks)} ran, {skipped} skipped on the lock"
    )
    assert len(ticks) >= 5
    assert not overlapping(ticks), f"overlapping ticks: {overlapping(ticks)[:3]}"
    # A pool process runs one task at a time, so every skip was a tick refused while another
    # process held the lock: the exclusion is across processes (whichever ran the ticks).
    assert skipped > 0, "the two beats' ticks never met: the lock was not exercised"

    # The same, from the engine's own record of every tick that ran.
    rows = db.rows(
        "SELECT started_at, finished_at, worker_id FROM maintenance_ticks ORDER BY started_at"
    )
    recorded = [(r.started_at, r.finished_at, r.worker_id) for r in rows]
    assert len(recorded) >= len(ticks)
    assert all(start <= end for start, end, _ in recorded)
    assert not overlapping(recorded), f"overlapping ticks: {overlapping(recorded)[:3]}"
