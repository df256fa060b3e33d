"""``python -m workflow_engine.demo``: the example document workflow through real Celery
worker and beat processes, with live progress per stage.

With no settings it needs no server: SQLite for state and the embedded (file-based) broker,
both under ``.workflow_engine/demo/``. Set ``WORKFLOW_ENGINE_DATABASE_URL`` and
``WORKFLOW_ENGINE_BROKER_URL`` to run the same demo on Postgres and Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from workflow_engine.client import RunView, WorkflowClient
from workflow_engine.persistence.sql import create_engine, upgrade
from workflow_engine.settings import EngineSettings

APP = "workflow_engine.celery.default_app"
DEMO_DIR = Path(".workflow_engine/demo")
DOCUMENT = {
    "title": "Queue latency report",
    "text": (
        "Our system runs every worker against one database queue. Deploying the new "
        "software cut latency by half.\n\nThe queue now drains at a steady rate, and the "
        "database load stays flat while workers scale out."
    ),
}
STATUS_MARK = {
    "PENDING": "·",
    "RUNNING": "▶",
    "SUSPENDED": "⏸",
    "COMPLETED": "✔",
    "FAILED": "✘",
    "CANCELLED": "⊘",
}


def main() -> int:
    embedded = "WORKFLOW_ENGINE_DATABASE_URL" not in os.environ
    env = demo_environment(embedded)
    os.environ.update(env)
    settings = EngineSettings.from_env()
    say(f"state:  {settings.database_url}")
    embedded_broker = f"embedded (files under {settings.broker_dir})"
    say(f"broker: {settings.broker_url or embedded_broker}")
    upgrade(create_engine(settings.database_url))
    with ExitStack() as processes:
        processes.enter_context(
            celery_process(
                "worker",
                env,
                "-c",
                "2",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            )
        )
        processes.enter_context(celery_process("beat", env, "-s", str(DEMO_DIR / "beat-schedule")))
        client = WorkflowClient(settings)
        run_id = client.create_run(
            "document-processing", DOCUMENT, config={"classify": {"batch_seconds": 2}}
        )
        say(f"run {run_id} created; following its stages:\n")
        view = follow(client, run_id, timeout=120)
        client.close()
    say("")
    if view.status != "COMPLETED":
        say(f"run ended {view.status.value}: {view.error}")
        return 1
    say("final output:")
    for key, value in (view.output or {}).items():
        say(f"  {key:12s} {value}")
    say(f"\ndone in {view.duration_ms} ms; workers and beat stopped.")
    return 0


def demo_environment(embedded: bool) -> dict[str, str]:
    """Settings for the child processes: a fresh embedded setup unless URLs are given."""
    env = {"WORKFLOW_ENGINE_TICK_INTERVAL_SECONDS": "1"}
    if embedded:
        shutil.rmtree(DEMO_DIR, ignore_errors=True)
        DEMO_DIR.mkdir(parents=True)
        env["WORKFLOW_ENGINE_DATABASE_URL"] = f"sqlite:///{(DEMO_DIR / 'state.db').resolve()}"
        env["WORKFLOW_ENGINE_BROKER_DIR"] = str((DEMO_DIR / "broker").resolve())
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    return env


@contextmanager
def celery_process(kind: str, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``celery worker`` or ``celery beat`` for the duration of the block."""
    log_path = DEMO_DIR / f"{kind}.log"
    command = [sys.executable, "-m", "celery", "-A", APP, kind, "--loglevel=INFO", *args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        say(f"started celery {kind} (pid {process.pid}, log {log_path})")
        try:
            yield process
        finally:
            stop(process, kind, log)


def stop(process: subprocess.Popen[bytes], kind: str, log: IO[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        say(f"celery {kind} did not stop in 30 s and was killed")


def follow(client: WorkflowClient, run_id: str, timeout: float) -> RunView:
    """Print each stage's status as it changes until the run ends."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    started = time.monotonic()
    while True:
        view = client.get_run(run_id)
        for stage in view.stages:
            if seen.get(stage.stage_id) != stage.status.value:
                seen[stage.stage_id] = stage.status.value
                elapsed = time.monotonic() - started
                mark = STATUS_MARK.get(stage.status.value, "?")
                say(f"  {elapsed:6.2f}s  {mark} {stage.stage_name:28s} {stage.status.value}")
        if view.is_terminal:
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not finish in {timeout} s")
        time.sleep(0.05)


def say(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
