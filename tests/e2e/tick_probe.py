"""The test registry, plus a probe that records when each maintenance tick runs.

Workers started with ``WORKFLOW_ENGINE_REGISTRY=tests.e2e.tick_probe:registry`` and
``E2E_TICK_LOG=<file>`` append ``<pid> <start> <end>`` to that file for every tick that took the
tick lock: the probe wraps ``run_maintenance_tick``, which ``run_tick`` calls only while it holds
the lock, so the recorded intervals are inside the locked region. ``E2E_TICK_HOLD=<seconds>``
makes each tick hold the lock that much longer.
"""

from __future__ import annotations

import os
import time
from typing import Any

import workflow_engine.celery.tick as tick
from tests.e2e.workflows import registry

__all__ = ["read_ticks", "registry"]

_run_maintenance_tick = tick.run_maintenance_tick


def _recorded(*args: Any, **kwargs: Any) -> Any:
    start = time.time()
    try:
        # Optionally hold the lock a little longer, so concurrent ticks surely meet.
        time.sleep(float(os.environ.get("E2E_TICK_HOLD", "0")))
        return _run_maintenance_tick(*args, **kwargs)
    finally:
        line = f"{os.getpid()} {start:.6f} {time.time():.6f}\n"
        fd = os.open(os.environ["E2E_TICK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


if os.environ.get("E2E_TICK_LOG"):
    tick.run_maintenance_tick = _recorded


def read_ticks(path: str | os.PathLike[str]) -> list[tuple[float, float, int]]:
    """``(start, end, pid)`` of every recorded tick, by start time."""
    try:
        with open(path) as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return []
    ticks = []
    for line in lines:
        pid, start, end = line.split()
        ticks.append((float(start), float(end), int(pid)))
    return sorted(ticks)
