"""Real processes for the end-to-end and chaos tests: celery workers and beat, a dedicated
redis-server, a throwaway Postgres cluster, and polling helpers with deadlines.

Every process is started in its own session (process group) and stopped as a group (SIGTERM,
then SIGKILL), so a prefork worker never leaves pool children behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from workflow_engine.client import WorkflowClient
from workflow_engine.settings import EngineSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "tests.e2e.workflows:registry"
APP = "workflow_engine.celery.default_app"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")

#: Short tunables, so leases expire and lost messages come back within seconds.
FAST_TUNABLES: dict[str, Any] = {
    "stale_lease_threshold_ms": 3000,
    "job_heartbeat_interval_ms": 500,
    "tick_interval_seconds": 1,
    "republish_after_seconds": 2,
}

T = TypeVar("T")


# -- waiting ------------------------------------------------------------------------------------
def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy (returned); fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{diagnose()}" if diagnose is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- processes ----------------------------------------------------------------------------------
class Process:
    """A child process in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        log: Path,
        cwd: Path | str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        text = self.log().splitlines()[-lines:]
        return f"--- {self.name} (pid {self.pid}) {self.log_path} ---\n" + "\n".join(text)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group (the worker and its pool children) and reap it."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (warm shutdown), SIGKILL whatever is left after ``timeout``."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        # Pool children or stragglers of the group: never leave one behind.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._log.close()


def _env_name(key: str) -> str:
    return "WORKFLOW_ENGINE_" + key.upper()


def clean_environment() -> dict[str, str]:
    """This process's environment without any engine or Celery setting."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WORKFLOW_ENGINE_", "CELERY_"))
    }


class Cluster:
    """Celery workers and beat for one test, on one database and one broker.

    Every process and client gets the same settings: ``database_url``, ``broker_url``, the
    test registry, a queue of its own and the tunables (``FAST_TUNABLES`` unless overridden).
    """

    def __init__(
        self, *, database_url: str, broker_url: str, workdir: Path, **tunables: Any
    ) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.workdir = workdir
        self.queue = f"e2e-{uuid.uuid4().hex[:8]}"
        self.tunables = {**FAST_TUNABLES, **tunables}
        self.processes: list[Process] = []
        self.clients: list[WorkflowClient] = []
        self._count = 0
        workdir.mkdir(parents=True, exist_ok=True)

    # settings
    def settings_values(self, **overrides: Any) -> dict[str, Any]:
        return {
            "database_url": self.database_url,
            "broker_url": self.broker_url,
            "registry": REGISTRY,
            "queue": self.queue,
            **self.tunables,
            **overrides,
        }

    def settings(self, **overrides: Any) -> EngineSettings:
        return EngineSettings(**self.settings_values(**overrides))

    def env(self, extra_env: dict[str, str] | None = None, **overrides: Any) -> dict[str, str]:
        env = clean_environment()
        env.update(extra_env or {})
        env.update({_env_name(k): str(v) for k, v in self.settings_values(**overrides).items()})
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        return env

    # processes
    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}{self._count}"

    def start_workers(
        self,
        n: int = 1,
        concurrency: int = 2,
        *,
        wait: bool = True,
        extra_env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> list[Process]:
        """Start ``n`` ``celery worker`` processes (prefork, ``concurrency`` children each);
        ``overrides`` are settings (``tick_interval_seconds=60``), ``extra_env`` raw variables."""
        started = []
        for _ in range(n):
            name = self._name("worker")
            argv = [
                sys.executable, "-m", "celery", "-A", APP, "worker",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-l", "INFO", "-c", str(concurrency), "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h",
            ]  # fmt: skip
            process = Process(
                name,
                argv,
                env=self.env(extra_env, **overrides),
                log=self.workdir / f"{name}.log",
                cwd=self.workdir,
            )
            self.processes.append(process)
            started.append(process)
        if wait:
            self.wait_ready(started)
        return started

    def wait_ready(self, processes: Iterable[Process], timeout: float = 60.0) -> None:
        """Wait until every worker logged ``ready.`` (its consumer is connected)."""
        for process in processes:

            def ready(process: Process = process) -> bool:
                if not process.alive():
                    raise AssertionError(f"{process.name} exited early\n{process.tail()}")
                return " ready." in process.log()

            wait_until(
                ready, timeout=timeout, what=f"{process.name} to be ready", diagnose=process.tail
            )

    def start_beat(self, *, wait: bool = True, **overrides: Any) -> Process:
        """Start ``celery beat`` with its own schedule file."""
        name = self._name("beat")
        argv = [
            sys.executable, "-m", "celery", "-A", APP, "beat", "-l", "INFO",
            "-s", str(self.workdir / f"{name}-schedule"),
        ]  # fmt: skip
        process = Process(
            name,
            argv,
            env=self.env(**overrides),
            log=self.workdir / f"{name}.log",
            cwd=self.workdir,
        )
        self.processes.append(process)
        if wait:
            self.wait_beat(process)
        return process

    def wait_beat(self, process: Process, timeout: float = 60.0) -> None:
        wait_until(
            lambda: "beat: Starting" in process.log() or not process.alive(),
            timeout=timeout,
            what=f"{process.name} to start",
            diagnose=process.tail,
        )
        assert process.alive(), process.tail()

    def client(self, **overrides: Any) -> WorkflowClient:
        client = WorkflowClient(self.settings(**overrides))
        self.clients.append(client)
        return client

    def logs(self) -> str:
        return "\n".join(process.tail(80) for process in self.processes)

    def stop(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.close()
            with contextlib.suppress(Exception):
                client.app.close()
        # SIGTERM every process at once; the test is over, so whatever has not exited after
        # a short grace period (Celery takes ~3 s here; a stage may still be blocked) is
        # SIGKILLed with its whole process group by stop().
        for process in self.processes:
            if process.alive():
                process.signal_group(signal.SIGTERM)
        grace = time.monotonic() + 2.0
        for process in self.processes:
            process.stop(timeout=max(0.0, grace - time.monotonic()))


# -- the database, as the tests read it ---------------------------------------------------------
class Db:
    """Reads the state database directly: the tests count from it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def rows(self, query: str, **params: Any) -> list[sa.Row[Any]]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(query), params))

    def scalar(self, query: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(query), params).scalar()

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        rows = self.rows(
            "SELECT id, status FROM workflow_runs WHERE id = ANY(:ids)", ids=list(run_ids)
        )
        return {row.id: row.status for row in rows}

    def terminal_count(self, run_ids: Sequence[str]) -> int:
        return int(
            self.scalar(
                "SELECT count(*) FROM workflow_runs WHERE id = ANY(:ids) AND status = ANY(:t)",
                ids=list(run_ids),
                t=list(TERMINAL),
            )
        )

    def wait_terminal(
        self, run_ids: Sequence[str], timeout: float, diagnose: Callable[[], str] | None = None
    ) -> dict[str, str]:
        """Wait until every run is COMPLETED, FAILED or CANCELLED; return their statuses."""

        def describe() -> str:
            statuses = self.run_statuses(run_ids)
            summary: dict[str, int] = {}
            for status in statuses.values():
                summary[status] = summary.get(status, 0) + 1
            jobs = self.rows(
                "SELECT status, count(*) AS n FROM job_queue GROUP BY status ORDER BY status"
            )
            text = f"runs: {summary}; jobs: {[(r.status, r.n) for r in jobs]}"
            return text + ("\n" + diagnose() if diagnose is not None else "")

        wait_until(
            lambda: self.terminal_count(run_ids) == len(run_ids),
            timeout=timeout,
            interval=0.1,
            what=f"{len(run_ids)} runs to finish",
            diagnose=describe,
        )
        return self.run_statuses(run_ids)

    def stages(self, run_id: str) -> list[sa.Row[Any]]:
        return self.rows(
            "SELECT stage_id, status, output, lease_token FROM workflow_stages "
            "WHERE workflow_run_id = :r ORDER BY execution_group, stage_number",
            r=run_id,
        )

    def jobs(self, run_id: str) -> list[sa.Row[Any]]:
        return self.rows(
            "SELECT id, stage_id, status, attempt, max_attempts, lease_token, last_error, "
            "next_poll_at, updated_at FROM job_queue WHERE workflow_run_id = :r "
            "ORDER BY created_at",
            r=run_id,
        )

    def events(self, run_id: str) -> list[sa.Row[Any]]:
        return self.rows(
            "SELECT sequence, event_type, payload->>'stage_id' AS stage_id FROM outbox_events "
            "WHERE workflow_run_id = :r ORDER BY sequence",
            r=run_id,
        )


# -- Redis ----------------------------------------------------------------------------------------
#: The shared test Redis' databases the e2e tests may use (0-7 are left to other suites).
E2E_REDIS_DBS = range(8, 16)


@contextlib.contextmanager
def redis_database(redis_url: str) -> Iterator[str]:
    """A database of the shared test Redis held for this test alone (a lock file per database,
    so parallel test processes never share one), flushed before and after; yield its URL.
    """
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    port = base.rsplit(":", 1)[-1]
    lock_dir = Path(tempfile.gettempdir())
    deadline = time.monotonic() + 120
    while True:
        for number in E2E_REDIS_DBS:
            fd = os.open(lock_dir / f"wfe-e2e-redis-{port}-db{number}.lock", os.O_CREAT | os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            url = f"{base}/{number}"
            try:
                client = redis.Redis.from_url(url)
                client.flushdb()
                yield url
                client.flushdb()
                client.close()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        if time.monotonic() > deadline:
            raise AssertionError("no free e2e Redis database (8-15) after 120 s")
        time.sleep(0.2)


class RedisServer:
    """A redis-server of the test's own, on a free port, to flush or restart at will."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.process: Process | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def ping(self) -> bool:
        try:
            with contextlib.closing(self.client()) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        self.starts += 1
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
        ]  # fmt: skip
        self.process = Process(
            f"redis-{self.starts}",
            argv,
            env=dict(os.environ),
            log=self.workdir / f"redis-{self.port}.log",
        )
        wait_until(self.ping, timeout=20, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def restart(self) -> float:
        """Stop the server (its data is lost: no persistence) and start it again; return how
        long it was down."""
        began = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - began


# -- Postgres -------------------------------------------------------------------------------------
def _pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)
    for candidate in reversed(candidates):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise AssertionError("initdb not found: install postgresql (scripts/services.sh start)")


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parent.name.split(".")
    return tuple(int(p) for p in parts if p.isdigit())


class PostgresServer:
    """A throwaway Postgres cluster (initdb + pg_ctl) on a free port, for restarting mid-test.

    As root, the server binaries run as the ``postgres`` user through ``runuser``, like
    ``scripts/services.sh`` does.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bindir = _pg_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="wfe-chaos-pg-"))
        self.base.chmod(0o755)
        self.data = self.base / "data"
        self.logfile = self.base / "server.log"
        self._root = os.geteuid() == 0
        if self._root:
            shutil.chown(self.base, user="postgres")

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = list(argv)
        if self._root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, cwd="/", capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()[-lines:]
        except (FileNotFoundError, PermissionError):
            return ""
        return "--- postgres log ---\n" + "\n".join(text)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
            "-w", "-t", "30", "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        import psycopg

        dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


# -- shared checks --------------------------------------------------------------------------------
def tick_results(cluster: Cluster) -> list[dict[str, int]]:
    """The maintenance ticks' results, as the workers logged them (skipped ticks left out)."""
    import ast

    results = []
    for process in cluster.processes:
        for line in process.log().splitlines():
            if "maintenance_tick[" in line and "succeeded in" in line and ": {" in line:
                results.append(
                    ast.literal_eval(line.split("succeeded in ", 1)[1].split("s: ", 1)[1])
                )
    return results


def assert_every_worker_serves(
    client: WorkflowClient,
    probe_dir: Path,
    workers: Sequence[Process],
    concurrency: int,
    timeout: float = 60,
) -> float:
    """Hold one stage per pool slot at once: every slot of every worker must start one (a
    wedged worker, or one that stopped consuming, cannot). Return how long it took."""
    from tests.e2e.workflows import executions, release

    began = time.monotonic()
    folder = probe_dir / f"slots-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    config = {"hold": {"dir": str(folder)}, "finish": {"dir": str(folder)}}
    slots = len(workers) * concurrency
    run_ids = [client.create_run("held", {"n": i}, config=config) for i in range(slots)]
    rows = wait_until(
        lambda: len(found := executions(folder)) >= slots and found,
        timeout=timeout,
        what=f"{slots} stages to run at once, one per pool slot",
        diagnose=lambda: "\n".join(w.tail(30) for w in workers),
    )
    took = time.monotonic() - began
    per_worker: dict[int, int] = {}
    for row in rows:
        group = os.getpgid(row.pid)
        per_worker[group] = per_worker.get(group, 0) + 1
    assert per_worker == {w.pid: concurrency for w in workers}, per_worker
    release(folder, "hold")
    release(folder, "finish")
    wait_until(
        lambda: all(client.get_run(r).status == "COMPLETED" for r in run_ids),
        timeout=timeout,
        what="the slot-probing runs to complete",
    )
    return took
