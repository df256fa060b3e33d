"""Celery apps that ``bench/celery_vs_chain.py`` runs in its worker subprocesses.

- ``chain_app``: the baseline, a raw Celery app with one no-op task (Redis broker and Redis
  result backend, so the caller can wait on a chain's result). ``BENCH_CHAIN_REDIS_URL``.
- ``engine_app`` (looked up lazily): ``workflow_engine.celery.default_app.app`` with a cProfile
  hook in each pool child when ``BENCH_PROFILE_DIR`` is set (one ``.prof`` file per child,
  written when the child shuts down; ``BENCH_PROFILE_TIMER=cpu`` counts CPU time instead of
  wall time). Without the variable it is exactly the default app.

Started by the benchmark as ``celery -A _worker_apps:chain_app worker`` with ``bench/`` on
``PYTHONPATH``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

CHAIN_REDIS_URL = os.environ.get("BENCH_CHAIN_REDIS_URL", "redis://127.0.0.1:6390/12")
CHAIN_QUEUE = "bench_chain"

chain_app = Celery("bench_chain", broker=CHAIN_REDIS_URL, backend=CHAIN_REDIS_URL)
chain_app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=CHAIN_QUEUE,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    # Celery's defaults otherwise: prefetch multiplier 4, acks_late False (as in the
    # environment's §4 baseline).
)


@chain_app.task(name="bench.noop")
def noop(n: int) -> int:
    return n + 1


_profiler: Any = None


def _profile_dir() -> str | None:
    return os.environ.get("BENCH_PROFILE_DIR") or None


@worker_process_init.connect
def _start_profile(**_: Any) -> None:
    global _profiler
    if _profile_dir() is None:
        return
    import cProfile
    import time

    # BENCH_PROFILE_TIMER=cpu: count CPU time only (where the worker burns CPU, not waits).
    timer = time.process_time if os.environ.get("BENCH_PROFILE_TIMER") == "cpu" else None
    _profiler = cProfile.Profile(timer) if timer else cProfile.Profile()
    _profiler.enable()


@worker_process_shutdown.connect
def _stop_profile(**_: Any) -> None:
    directory = _profile_dir()
    if _profiler is None or directory is None:
        return
    _profiler.disable()
    _profiler.dump_stats(os.path.join(directory, f"worker-{os.getpid()}.prof"))


def __getattr__(name: str) -> Any:
    if name == "engine_app":
        from workflow_engine.celery.default_app import app

        return app
    raise AttributeError(name)
