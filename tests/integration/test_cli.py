"""The ``workflow-engine`` command against real Postgres (and, for runs that must finish, a
real Celery worker): each command's output and exit code, and one-line errors with a non-zero
exit for bad arguments.

Every command runs at least once as a subprocess (``workflow-engine ...``, exactly as a user
types it). Starting an interpreter that loads Celery and SQLAlchemy costs about a second, so
the variations of a command (``--json``, other filters, more bad arguments) run in-process
through click's ``CliRunner``, on the same settings and database.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from tests.e2e.harness import Process
from tests.integration.webapps import Stack, engine_env, fresh_database, poll, stack
from workflow_engine.cli.main import cli as engine_cli

__all__ = ["stack"]  # fixtures

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

WORKFLOW_ENGINE = str(Path(sys.executable).with_name("workflow-engine"))
SLOW_DOCUMENT = [
    "--input",
    '{"title": "t", "text": "Our system runs every worker."}',
    "--config",
    '{"classify": {"batch_seconds": 600}}',  # the classify stage waits ten minutes
]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """``workflow-engine`` with the engine's settings: as a subprocess (``run``, ``many``) or
    in-process (``call``)."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def run(self, *args: str, timeout: float = 60) -> Result:
        done = subprocess.run(
            [WORKFLOW_ENGINE, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def many(self, commands: Sequence[Sequence[str]]) -> list[Result]:
        """Independent subprocesses at once."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda args: self.run(*args), commands))

    def call(self, *args: str) -> Result:
        settings = {key: value for key, value in self.env.items() if key.startswith("WORKFLOW_")}
        result = CliRunner().invoke(engine_cli, list(args), env=settings, catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    def json(self, *args: str) -> Any:
        return json.loads(ok(self.call(*args, "--json")))


def ok(result: Result) -> str:
    """The output of a command that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def one_line_error(result: Result) -> str:
    """The error of a failed command, checked to be a single ``Error: ...`` line."""
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


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


def test_db_upgrade_makes_the_schema_and_the_read_commands_work(blank_cli: Cli) -> None:
    missing = one_line_error(blank_cli.run("runs", "list"))
    assert "tables are missing" in missing and "workflow-engine db upgrade" in missing

    upgraded = ok(blank_cli.run("db", "upgrade"))

    assert upgraded.startswith("schema is up to date on postgresql+psycopg://")
    assert ok(blank_cli.call("db", "upgrade")) == upgraded  # safe to run again
    listing, dlq, replay, tick = blank_cli.many(
        [["runs", "list"], ["dlq", "list"], ["dlq", "replay"], ["tick"]]
    )
    assert ok(listing) == "no runs\n"
    assert ok(dlq) == "the DLQ is empty\n"
    assert ok(replay) == "replayed 0 event(s)\n"
    assert ok(tick).split()[:2] == ["claimed", "0"]
    assert blank_cli.json("runs", "list") == []
    assert blank_cli.json("dlq", "list") == []
    assert blank_cli.json("tick")["claimed"] == 0


def test_a_run_created_from_the_cli_is_watched_until_it_completes(cli: Cli) -> None:
    run_id = ok(cli.run("runs", "create", "noop-chain", "--input", '{"n": 1}')).strip()

    watched = ok(cli.run("runs", "watch", run_id, "--timeout", "30", "--interval", "0.1"))

    lines = watched.splitlines()
    assert lines[-1] == f"run {run_id} COMPLETED"
    assert {"one", "two", "three"} <= {line.split()[2] for line in lines[:-1]}
    human = ok(cli.run("runs", "show", run_id))
    assert "status    COMPLETED" in human
    assert [row.split()[1:3] for row in human.splitlines() if row[:1].isdigit()] == [
        ["one", "COMPLETED"],
        ["two", "COMPLETED"],
        ["three", "COMPLETED"],
    ]
    shown = cli.json("runs", "show", run_id)
    assert shown["status"] == "COMPLETED" and shown["output"] == {"n": 4}
    assert run_id in {run["id"] for run in cli.json("runs", "list", "--status", "completed")}
    assert run_id in ok(cli.call("runs", "list", "--workflow", "noop-chain")).split()
    streamed = ok(cli.call("runs", "watch", run_id, "--json")).splitlines()
    assert json.loads(streamed[-1])["status"] == "COMPLETED"
    assert {json.loads(line)["stage_id"] for line in streamed[:-1]} == {"one", "two", "three"}

    rerun = ok(cli.run("runs", "rerun", run_id, "--from", "two"))

    assert rerun.strip() == f"rerunning {run_id} from two (reset: two, three)"
    again = ok(cli.call("runs", "watch", run_id, "--timeout", "30", "--interval", "0.1"))
    assert again.splitlines()[-1] == f"run {run_id} COMPLETED"


def test_a_run_is_cancelled_from_the_cli(cli: Cli) -> None:
    run_id = cli.json("runs", "create", "document-processing", *SLOW_DOCUMENT)["workflow_run_id"]

    cancelled = ok(cli.run("runs", "cancel", run_id, "--reason", "not needed"))

    assert cancelled.strip() == f"cancelled {run_id}"
    assert cli.json("runs", "show", run_id)["status"] == "CANCELLED"
    assert "already finished" in one_line_error(cli.call("runs", "cancel", run_id))
    watched = cli.call("runs", "watch", run_id)
    assert watched.returncode == 1 and watched.stdout.splitlines()[-1].endswith("CANCELLED")


def test_bad_arguments_get_a_one_line_error_and_a_non_zero_exit(cli: Cli) -> None:
    finished = ok(cli.call("runs", "create", "noop-chain")).strip()
    ok(cli.call("runs", "watch", finished, "--timeout", "30", "--interval", "0.1"))
    unknown_run, unknown_stage = cli.many(
        [["runs", "show", "nope"], ["runs", "rerun", finished, "--from", "nope"]]
    )
    assert one_line_error(unknown_run) == "Error: WorkflowRun nope not found"
    assert one_line_error(unknown_stage) == "Error: Stage nope not found in workflow noop-chain"
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/x"
    commands = [
        ("WorkflowRun nope not found", ["runs", "show", "nope", "--json"]),
        ("WorkflowRun nope not found", ["runs", "cancel", "nope"]),
        ("WorkflowRun nope not found", ["runs", "rerun", "nope", "--from", "one"]),
        ("WorkflowRun nope not found", ["runs", "watch", "nope"]),
        ("Workflow nope not found in registry", ["runs", "create", "nope"]),
        ("Invalid workflow input: n:", ["runs", "create", "noop-chain", "--input", '{"n": "x"}']),
        (f"cannot use the database {unreachable}", ["--database-url", unreachable, "runs", "list"]),
        ("invalid settings: database_url", ["--database-url", "mysql://x/y", "runs", "list"]),
    ]
    for expected, args in commands:
        assert expected in one_line_error(cli.call(*args)), args
    for args in (
        ["runs", "create", "noop-chain", "--input", "not json"],
        ["runs", "list", "--status", "NOPE"],
        ["runs", "rerun", finished],
    ):  # click's usage errors: exit 2 and a hint
        usage = cli.call(*args)
        assert usage.returncode == 2 and "Error:" in usage.stderr, args


def test_the_process_host_worker_runs_runs_and_stops_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    with fresh_database(database_url) as db:
        env = engine_env(db, "", broker_dir=tmp_path / "broker")
        del env["WORKFLOW_ENGINE_BROKER_URL"]
        cli = Cli(env, tmp_path)
        run_id = ok(cli.call("runs", "create", "noop-chain", "--input", '{"n": 5}')).strip()
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
    top = ok(cli.run("--help"))
    for name in ("db", "runs", "dlq", "tick", "worker", "demo"):
        assert f"  {name} " in top, name
    runs = ok(cli.call("runs", "--help"))
    for name in ("list", "show", "create", "cancel", "rerun", "watch"):
        assert f"  {name} " in runs, name


def run_status(database_url: str, run_id: str) -> str | None:
    """The run's status, read straight from the database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = text("SELECT status FROM workflow_runs WHERE id = :id")
            status: str | None = conn.execute(query, {"id": run_id}).scalar()
            return status
    finally:
        engine.dispose()
