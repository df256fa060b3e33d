"""Helpers shared by the benchmarks: the machine, servers, throwaway databases, worker
subprocesses and percentiles. Not part of the package.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: The servers of ``scripts/services.sh`` (override with these variables).
PG_ADMIN_URL = os.environ.get(
    "BENCH_PG_URL",
    os.environ.get(
        "WORKFLOW_ENGINE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5439/postgres"
    ),
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6390")


# -- numbers ------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def say(message: str = "") -> None:
    print(message, flush=True)


# -- the machine --------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "?"


def postgres_facts(admin_url: str = PG_ADMIN_URL) -> dict[str, str]:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            facts = {"version": conn.scalar(sa.text("SHOW server_version"))}
            for name in ("fsync", "synchronous_commit", "shared_buffers"):
                facts[name] = conn.scalar(sa.text(f"SHOW {name}"))
        return facts
    finally:
        engine.dispose()


def redis_version(url: str = REDIS_URL) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def describe_machine(*, postgres: bool = True, redis_server: bool = True) -> list[str]:
    """Lines describing the machine and the versions that matter for the figures."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"machine: {cpu_model()}, {os.cpu_count()} cores, load {load}, "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()} ({platform.python_implementation()}); "
        f"celery {_version('celery')}, kombu {_version('kombu')}, redis-py {_version('redis')}, "
        f"SQLAlchemy {_version('sqlalchemy')}, psycopg {_version('psycopg')}",
    ]
    servers = []
    if postgres:
        pg = postgres_facts()
        servers.append(
            f"PostgreSQL {pg['version']} (fsync={pg['fsync']}, "
            f"synchronous_commit={pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']})"
        )
    if redis_server:
        servers.append(f"Redis {redis_version()}")
    if servers:
        lines.append("servers: " + "; ".join(servers) + " (loopback)")
    return lines


# -- throwaway databases ------------------------------------------------------------------------
def database_url(name: str, admin_url: str = PG_ADMIN_URL) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_database(prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """Create a database (schema applied by the package's migrations), yield its URL, drop it."""
    import sqlalchemy as sa

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = database_url(name)
        try:
            if migrate:
                from workflow_engine.persistence.sql import upgrade

                upgrade(url)
            yield url
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# -- subprocesses -------------------------------------------------------------------------------
def celery_worker_command(app: str, concurrency: int, *extra: str) -> list[str]:
    return [
        PYTHON,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
        *extra,
    ]


@contextlib.contextmanager
def subprocess_running(
    command: list[str], *, env: dict[str, str], log_path: Path, cwd: Path = REPO
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (its own process group) for the block; SIGTERM it, then SIGKILL."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Stop a process and its group (its pool children): SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # Pool children that outlived their parent share its process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def flush_redis_db(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# -- CPU accounting -----------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from the 3rd ("state") on


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of these processes so far (gone ones count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def process_group(pgid: int) -> list[int]:
    """Pids of the live processes in a process group (a worker and its pool children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def postgres_backends(engine: Any, database: str) -> list[int]:
    """Pids of the server processes connected to ``database``."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return list(
            conn.scalars(
                sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :db"), {"db": database}
            )
        )
