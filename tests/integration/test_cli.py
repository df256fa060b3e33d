"""The ``workflow-engine`` command, run as a subprocess against real Postgres (and, for runs
that must finish, a real Celery worker): each command's output and exit code, and one-line
errors with a non-zero exit for bad arguments.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.harness import Process
from tests.integration.webapps import Stack, engine_env, fresh_database, poll, stack

__all__ = ["stack"]  # fixtures

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

WORKFLOW_ENGINE = str(Path(sys.executable).with_name("workflow-engine"))
SLOW_DOCUMENT = [
    "--input",
    '{"title": "t", "text": "Our system runs every worker."}',
    "--config",
    '{"classify": {"batch_seconds": 600}}',  # the classify stage waits ten minutes
]


class Cli:
    """Runs ``workflow-engine`` with the engine's settings in a clean environment."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WORKFLOW_ENGINE, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, timeout: float = 60) -> str:
        """Run a command that must succeed; return its output."""
        done = self(*args, timeout=timeout)
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def many(self, commands: Sequence[Sequence[str]]) -> list[subprocess.CompletedProcess[str]]:
        """Run independent commands at once (each is a new interpreter: ~1 s)."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda args: self(*args), commands))


@pytest.fixture(scope="module")
def cli(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """The CLI on the module's migrated database, broker and worker."""
    return Cli(engine_env(stack.database_url, stack.broker_url), tmp_path_factory.mktemp("cli"))


@pytest.fixture
def blank_cli(database_url: str, tmp_path: Path) -> Iterator[Cli]:
    """The CLI on a database with no schema and the embedded broker (no servers but Postgres)."""
    with fresh_database(database_url, migrate=False) as db:
        env = engine_env(db, "", broker_dir=tmp_path / "broker")
        del env["WORKFLOW_ENGINE_BROKER_URL"]
        yield Cli(env, tmp_path)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The error of a failed command, checked to be a single ``Error: ...`` line."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0]


def test_db_upgrade_makes_the_schema_and_the_read_commands_work(blank_cli: Cli) -> None:
    missing = one_line_error(blank_cli("runs", "list"))
    assert "tables are missing" in missing and "workflow-engine db upgrade" in missing

    first = blank_cli.ok("db", "upgrade")
    again = blank_cli.ok("db", "upgrade")  # safe to run again

    assert first.startswith("schema is up to date on postgresql+psycopg://")
    assert again == first
    listing, as_json, dlq, dlq_json, replay, tick = blank_cli.many(
        [
            ["runs", "list"],
            ["runs", "list", "--json"],
            ["dlq", "list"],
            ["dlq", "list", "--json"],
            ["dlq", "replay"],
            ["tick", "--json"],
        ]
    )
    assert (listing.returncode, listing.stdout) == (0, "no runs\n")
    assert json.loads(as_json.stdout) == []
    assert dlq.stdout == "the DLQ is empty\n"
    assert json.loads(dlq_json.stdout) == []
    assert replay.stdout == "replayed 0 event(s)\n"
    assert json.loads(tick.stdout)["claimed"] == 0


def test_a_run_created_from_the_cli_is_watched_until_it_completes(cli: Cli) -> None:
    run_id = cli.ok("runs", "create", "noop-chain", "--input", '{"n": 1}').strip()

    watched = cli.ok("runs", "watch", run_id, "--timeout", "30", "--interval", "0.1")

    lines = watched.splitlines()
    assert lines[-1] == f"run {run_id} COMPLETED"
    assert {"one", "two", "three"} <= {line.split()[2] for line in lines[:-1]}
    shown = cli.json("runs", "show", run_id)
    assert shown["status"] == "COMPLETED" and shown["output"] == {"n": 4}
    human, completed, by_workflow, streamed = cli.many(
        [
            ["runs", "show", run_id],
            ["runs", "list", "--status", "completed", "--json"],
            ["runs", "list", "--workflow", "noop-chain"],
            ["runs", "watch", run_id, "--json"],
        ]
    )
    assert "status    COMPLETED" in human.stdout
    assert [row.split()[1:3] for row in human.stdout.splitlines() if row[:1].isdigit()] == [
        ["one", "COMPLETED"],
        ["two", "COMPLETED"],
        ["three", "COMPLETED"],
    ]
    assert run_id in {run["id"] for run in json.loads(completed.stdout)}
    assert run_id in by_workflow.stdout.split()
    events = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert events[-1]["id"] == run_id and events[-1]["status"] == "COMPLETED"

    rerun = cli.ok("runs", "rerun", run_id, "--from", "two")

    assert rerun.strip() == f"rerunning {run_id} from two (reset: two, three)"
    assert cli.ok("runs", "watch", run_id, "--timeout", "30").splitlines()[-1].endswith("COMPLETED")


def test_a_run_is_cancelled_from_the_cli(cli: Cli) -> None:
    created = cli.json("runs", "create", "document-processing", *SLOW_DOCUMENT)
    run_id = created["workflow_run_id"]

    cancelled = cli.ok("runs", "cancel", run_id, "--reason", "not needed")

    assert cancelled.strip() == f"cancelled {run_id}"
    assert cli.json("runs", "show", run_id)["status"] == "CANCELLED"
    again, watched = cli.many([["runs", "cancel", run_id], ["runs", "watch", run_id]])
    assert "already finished" in one_line_error(again)
    assert watched.returncode == 1 and watched.stdout.splitlines()[-1].endswith("CANCELLED")


def test_bad_arguments_get_a_one_line_error_and_a_non_zero_exit(cli: Cli) -> None:
    finished = cli.ok("runs", "create", "noop-chain").strip()
    cli.ok("runs", "watch", finished, "--timeout", "30")
    commands = [
        ("WorkflowRun nope not found", ["runs", "show", "nope", "--json"]),
        ("WorkflowRun nope not found", ["runs", "cancel", "nope"]),
        ("WorkflowRun nope not found", ["runs", "rerun", "nope", "--from", "one"]),
        ("WorkflowRun nope not found", ["runs", "watch", "nope"]),
        (
            "Stage nope not found in workflow noop-chain",
            ["runs", "rerun", finished, "--from", "nope"],
        ),
        ("Workflow nope not found in registry", ["runs", "create", "nope"]),
        ("Invalid workflow input: n:", ["runs", "create", "noop-chain", "--input", '{"n": "x"}']),
        (
            "cannot use the database postgresql+psycopg://postgres@127.0.0.1:1/x",
            ["--database-url", "postgresql+psycopg://postgres@127.0.0.1:1/x", "runs", "list"],
        ),
        ("invalid settings: database_url", ["--database-url", "mysql://x/y", "runs", "list"]),
    ]
    results = cli.many([args for _, args in commands])
    for (expected, args), done in zip(commands, results, strict=True):
        assert expected in one_line_error(done), args
    usage = cli.many(
        [
            ["runs", "create", "noop-chain", "--input", "not json"],
            ["runs", "list", "--status", "NOPE"],
        ]
    )
    for done in usage:  # click's usage errors: exit 2, a hint, no traceback
        assert done.returncode == 2, done.stderr
        assert "Error:" in done.stderr and "Traceback" not in done.stderr


def test_the_process_host_worker_runs_runs_and_stops_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    with fresh_database(database_url) as db:
        env = engine_env(db, "", broker_dir=tmp_path / "broker")
        del env["WORKFLOW_ENGINE_BROKER_URL"]
        cli = Cli(env, tmp_path)
        run_id = cli.ok("runs", "create", "noop-chain", "--input", '{"n": 5}').strip()
        worker = Process(
            "process-host",
            [WORKFLOW_ENGINE, "worker", "--tick-interval", "0.2"],
            env=env,
            log=tmp_path / "worker.log",
            cwd=tmp_path,
        )
        try:
            poll(lambda: "started" in worker.log(), timeout=30, what="the worker to start")
            poll(
                lambda: run_status(db, run_id) == "COMPLETED", timeout=30, what="the run to finish"
            )
            assert cli.json("runs", "show", run_id)["output"] == {"n": 8}
            worker.popen.send_signal(signal.SIGTERM)
            assert worker.popen.wait(timeout=30) == 0, worker.tail()
            assert "worker stopped after" in worker.log()
        finally:
            worker.stop()


def test_help_lists_every_command(cli: Cli) -> None:
    top, runs = cli.many([["--help"], ["runs", "--help"]])
    for name in ("db", "runs", "dlq", "tick", "worker", "demo"):
        assert f"  {name} " in top.stdout, name
    for name in ("list", "show", "create", "cancel", "rerun", "watch"):
        assert f"  {name} " in runs.stdout, name


def run_status(database_url: str, run_id: str) -> str | None:
    """The run's status, read straight from the database (cheaper than a CLI call)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = text("SELECT status FROM workflow_runs WHERE id = :id")
            status: str | None = conn.execute(query, {"id": run_id}).scalar()
            return status
    finally:
        engine.dispose()
