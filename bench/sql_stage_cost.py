"""What a stage costs on Postgres: transactions, statements and round trips, stages per second
with one and two worker processes, and claim/dequeue latency with 200,000 finished runs.

The kernel runs in-process on ``SqlPersistence`` + ``SqlJobQueue`` (Postgres over loopback)
and the serverless host; the workload is the ``noop-chain`` example (three sequential no-op
stages). Three parts:

1. **Counts.** SQLAlchemy event listeners on the engine (``begin``/``commit``/``rollback``,
   ``before_cursor_execute``, the pool's ``checkout``) attribute every statement, transaction
   and connection checkout to the operation that caused it (``job.dequeue``, ``job.execute``,
   ``job.complete``, ``run.transition``, the tick's commands, ``run.create``). Round trips are
   counted exactly from psycopg's libpq protocol trace (``ReadyForQuery`` messages). Measured in
   the steady state: ``--count-runs`` runs in flight after a warm-up.
2. **Stages per second** with one and with two worker processes (multiprocessing, each with its
   own engine, looping ``process_available_jobs`` + ``run_maintenance_tick``) over
   ``--runs`` runs created beforehand.
3. **Claim and dequeue latency**: ``claim_next_pending_run`` and ``dequeue`` p50/p99 on an empty
   database and on one holding ``--finished`` finished runs (with their stages, jobs, outbox
   events and idempotency keys, cloned server-side with ``INSERT ... SELECT generate_series``),
   and the ratio (target ≤ 1.5x).

    python bench/sql_stage_cost.py [--runs 1000] [--count-runs 200] [--finished 200000] [--quick]

Every database it creates is dropped at the end. BENCH_PG_URL overrides the admin URL.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, fresh_database, percentile, say

from workflow_engine.examples import registry
from workflow_engine.hosts.serverless import ServerlessHost, create_serverless_host
from workflow_engine.kernel import Kernel, create_kernel
from workflow_engine.kernel.commands import RunCreate
from workflow_engine.persistence.sql import (
    SqlBlobStore,
    SqlJobQueue,
    SqlPersistence,
    create_engine,
)
from workflow_engine.persistence.sql.tables import job_queue, workflow_runs
from workflow_engine.plugins import create_plugin_runner
from workflow_engine.records import NewJob
from workflow_engine.status import TERMINAL_RUN_STATUSES

WORKFLOW = "noop-chain"
STAGES_PER_RUN = 3
HOT_PATH = ("job.dequeue", "job.execute", "job.complete", "run.transition")


# -- attribution --------------------------------------------------------------------------------
class Phases:
    """A stack of operation names; statements are charged to the innermost one."""

    def __init__(self) -> None:
        self.stack: list[str] = ["(the bench's own checks)"]

    @property
    def current(self) -> str:
        return self.stack[-1]

    @contextlib.contextmanager
    def enter(self, name: str) -> Iterator[None]:
        self.stack.append(name)
        try:
            yield
        finally:
            self.stack.pop()


class CountingKernel(Kernel):
    phases: Phases

    def dispatch(self, command: Any) -> Any:  # type: ignore[override]
        kind = command["type"] if isinstance(command, dict) else command.type
        with self.phases.enter(kind):
            return super().dispatch(command)


class CountingQueue(SqlJobQueue):
    phases: Phases

    def dequeue(self, worker_id: str | None = None) -> Any:
        with self.phases.enter("job.dequeue"):
            return super().dequeue(worker_id)

    def complete(self, job_id: str, *, lease_token: str | None = None, tx: Any = None) -> bool:
        with self.phases.enter("job.complete"):
            return super().complete(job_id, lease_token=lease_token, tx=tx)


_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+\"?(\w+)", re.IGNORECASE)
_FUNCTION = re.compile(r"\b(pg_\w+)\s*\(", re.IGNORECASE)


def summarise(statement: str) -> str:
    """``UPDATE job_queue``, ``SELECT workflow_runs``, ``SELECT pg_advisory_xact_lock``..."""
    text = statement.strip()
    verb = text.split(None, 1)[0].upper() if text else "?"
    if verb == "WITH":  # a CTE: name the statement after its main verb
        for word in ("UPDATE", "DELETE", "INSERT"):
            if re.search(rf"\b{word}\b", text[text.rfind(")") :], re.IGNORECASE):
                verb = word
                break
    function = _FUNCTION.search(text)
    if function and verb == "SELECT" and "FROM" not in text[: function.start()].upper():
        return f"SELECT {function.group(1)}"
    match = _TABLE.search(text)
    return f"{verb} {match.group(1) if match else ''}".strip()


@dataclass
class Tally:
    statements: Counter[str] = field(default_factory=Counter)
    autocommit: int = 0  # statements run in autocommit: each is its own transaction
    explicit_txns: int = 0  # BEGIN ... COMMIT blocks
    rollbacks: int = 0
    checkouts: int = 0  # each one of an already-open connection is a pre-ping round trip
    connects: int = 0

    @property
    def n_statements(self) -> int:
        return sum(self.statements.values())

    @property
    def transactions(self) -> int:
        return self.explicit_txns + self.rollbacks + self.autocommit

    @property
    def round_trips(self) -> int:
        """Statements + BEGIN and COMMIT/ROLLBACK of each block + one ping per checkout."""
        pings = self.checkouts - self.connects
        return self.n_statements + 2 * (self.explicit_txns + self.rollbacks) + pings


def merge(tallies: Any) -> Tally:
    total = Tally()
    for tally in tallies:
        total.statements.update(tally.statements)
        total.autocommit += tally.autocommit
        total.explicit_txns += tally.explicit_txns
        total.rollbacks += tally.rollbacks
        total.checkouts += tally.checkouts
        total.connects += tally.connects
    return total


class Recorder:
    """Engine and pool listeners that charge everything to the current phase."""

    def __init__(self, engine: Engine, phases: Phases) -> None:
        self.phases = phases
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        self.enabled = False
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)
        event.listen(engine.pool, "checkout", self._checkout)
        event.listen(engine.pool, "connect", self._connect)

    def reset(self) -> None:
        self.tallies.clear()

    def _tally(self) -> Tally | None:
        return self.tallies[self.phases.current] if self.enabled else None

    @staticmethod
    def _is_autocommit(conn: Any) -> bool:
        return conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"

    def _statement(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        tally = self._tally()
        if tally is None:
            return
        tally.statements[summarise(statement)] += 1
        if self._is_autocommit(conn):
            tally.autocommit += 1

    def _commit(self, conn: Any) -> None:
        tally = self._tally()
        if tally is not None and not self._is_autocommit(conn):
            tally.explicit_txns += 1

    def _rollback(self, conn: Any) -> None:
        tally = self._tally()
        if tally is not None and not self._is_autocommit(conn):
            tally.rollbacks += 1

    def _checkout(self, *_: Any) -> None:
        tally = self._tally()
        if tally is not None:
            tally.checkouts += 1

    def _connect(self, *_: Any) -> None:
        tally = self._tally()
        if tally is not None:
            tally.connects += 1


class ProtocolTrace:
    """psycopg's libpq trace on every connection: ReadyForQuery messages are round trips."""

    def __init__(self, engine: Engine) -> None:
        self.path = Path(tempfile.mkstemp(prefix="bench-pqtrace-", suffix=".txt")[1])
        self.file = open(self.path, "w")  # noqa: SIM115
        self.connections: list[Any] = []
        self.on = False
        event.listen(engine.pool, "connect", self._connect)

    def _connect(self, dbapi_connection: Any, _: Any) -> None:
        self.connections.append(dbapi_connection)
        if self.on:
            self._trace(dbapi_connection)

    def _trace(self, dbapi_connection: Any) -> None:
        import psycopg

        dbapi_connection.pgconn.trace(self.file.fileno())
        dbapi_connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)

    def start(self) -> None:
        self.on = True
        for connection in self.connections:
            if not connection.closed:
                self._trace(connection)

    def stop(self) -> dict[str, int]:
        self.on = False
        for connection in self.connections:
            with contextlib.suppress(Exception):
                connection.pgconn.untrace()
        self.file.close()
        counts: Counter[str] = Counter()
        for line in self.path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[0] == "B" and parts[2] == "ReadyForQuery":
                counts["round_trips"] += 1
                counts["ended_idle"] += parts[-1].strip() == "I"
            elif len(parts) >= 3 and parts[0] == "F" and parts[2] == "Query":
                text = parts[-1].strip().strip('"')
                if text.startswith("BEGIN"):
                    counts["BEGIN"] += 1
                elif text in ("COMMIT", "ROLLBACK"):
                    counts[text] += 1
                elif text == ";":
                    counts["ping"] += 1
        self.path.unlink(missing_ok=True)
        return dict(counts)


# -- the kernel on Postgres ---------------------------------------------------------------------
@dataclass
class Stack:
    engine: Engine
    persistence: SqlPersistence
    queue: SqlJobQueue
    kernel: Kernel
    host: ServerlessHost
    phases: Phases


def build_stack(url: str, worker_id: str, **host_tunables: Any) -> Stack:
    engine = create_engine(url, pool_size=5, max_overflow=5)
    phases = Phases()
    persistence = SqlPersistence(engine)
    queue = CountingQueue(engine, worker_id=worker_id)
    queue.phases = phases
    base = create_kernel(
        persistence=persistence,
        blob_store=SqlBlobStore(engine),
        job_transport=queue,
        event_sink=create_plugin_runner(plugins=[]),
        registry=registry,
    )
    kernel = CountingKernel(base.runtime)
    kernel.phases = phases
    host = create_serverless_host(
        kernel=kernel, job_transport=queue, worker_id=worker_id, **host_tunables
    )
    return Stack(engine, persistence, queue, kernel, host, phases)


def create_runs(stack: Stack, n: int, tag: str) -> None:
    for i in range(n):
        stack.kernel.dispatch(
            RunCreate(idempotency_key=f"{tag}-{i}", workflow_id=WORKFLOW, input={"n": 0})
        )


def unfinished_runs(engine: Engine) -> int:
    terminal = [status.value for status in TERMINAL_RUN_STATUSES]
    with engine.connect() as conn:
        return int(
            conn.scalar(sa.select(sa.func.count()).where(workflow_runs.c.status.not_in(terminal)))
        )


def drain(stack: Stack, batch: int = 50, stall_s: float = 120) -> tuple[int, int]:
    """Tick and process jobs until every run is finished; return (stages, ticks).

    Raises if nothing progressed for ``stall_s`` seconds while runs are unfinished.
    """
    host, stages, ticks = stack.host, 0, 0
    last_progress = time.monotonic()
    while True:
        with stack.phases.enter("tick"):
            tick = host.run_maintenance_tick()
        ticks += 1
        processed = 0
        while True:
            done = host.process_available_jobs(max_jobs=batch).processed
            processed += done
            if done < batch:
                break
        stages += processed
        if processed or tick.claimed:
            last_progress = time.monotonic()
            continue
        left = unfinished_runs(stack.engine)
        if not left:
            # a last tick so the outbox is flushed as well
            with stack.phases.enter("tick"):
                host.run_maintenance_tick()
            return stages, ticks + 1
        if time.monotonic() - last_progress > stall_s:
            raise RuntimeError(f"no progress for {stall_s} s with {left} runs unfinished")
        time.sleep(0.001)


# -- part 1: counts -----------------------------------------------------------------------------
def count_costs(url: str, runs: int) -> None:
    stack = build_stack(url, "counter", max_claims_per_tick=10)
    recorder = Recorder(stack.engine, stack.phases)
    trace = ProtocolTrace(stack.engine)
    try:
        create_runs(stack, 20, "warm")
        drain(stack)
        recorder.enabled = True
        create_runs(stack, runs, "count")
        creates = merge(recorder.tallies.values())
        recorder.reset()
        trace.start()
        stages, _ = drain(stack)
        protocol = trace.stop()
        recorder.enabled = False
    finally:
        stack.engine.dispose()
    assert stages == runs * STAGES_PER_RUN, (stages, runs)
    tallies = dict(recorder.tallies)
    tallies["run.create (client)"] = creates

    say(
        f"\n1. Cost per stage, steady state ({runs} runs = {stages} stages, ticks claiming 10 "
        "runs each; autocommit statements count as one transaction each)"
    )
    say(
        f"   {'operation':34s} {'txns':>6s} {'BEGIN…COMMIT':>12s} {'stmts':>6s} "
        f"{'round trips':>11s}   per stage"
    )
    total = merge(tallies.values())
    hot = merge(tallies[name] for name in HOT_PATH if name in tallies)
    order = [*HOT_PATH, "run.claimPending", "run.create (client)"]
    order += sorted(k for k in tallies if k not in order)
    for name in order:
        tally = tallies.get(name)
        if tally is None:
            continue
        say(
            f"   {name:34s} {tally.transactions / stages:6.2f} "
            f"{(tally.explicit_txns + tally.rollbacks) / stages:12.2f} "
            f"{tally.n_statements / stages:6.2f} {tally.round_trips / stages:11.2f}"
        )
    for label, tally in (("hot path (dequeue→transition)", hot), ("everything", total)):
        say(
            f"   {'= ' + label:34s} {tally.transactions / stages:6.2f} "
            f"{(tally.explicit_txns + tally.rollbacks) / stages:12.2f} "
            f"{tally.n_statements / stages:6.2f} {tally.round_trips / stages:11.2f}"
        )
    traced = protocol.get("round_trips", 0)
    say(
        f"   libpq trace of the drain (all but run.create): {traced / stages:.2f} round trips "
        f"per stage ({protocol.get('ping', 0) / stages:.2f} pre-ping, "
        f"{protocol.get('BEGIN', 0) / stages:.2f} BEGIN, "
        f"{protocol.get('COMMIT', 0) / stages:.2f} COMMIT, "
        f"{(protocol.get('ended_idle', 0) - protocol.get('ping', 0)) / stages:.2f} "
        "server transactions)"
    )
    say("   statements per stage on the hot path, by kind:")
    for name in HOT_PATH:
        tally = tallies.get(name)
        if tally is None:
            continue
        kinds = ", ".join(
            f"{kind} {count / stages:.2g}" for kind, count in tally.statements.most_common()
        )
        say(f"     {name}: {kinds}")


# -- part 2: stages per second ------------------------------------------------------------------
def _worker(url: str, index: int, ready: Any, start: Any, results: Any) -> None:
    stack = build_stack(url, f"bench-w{index}", max_claims_per_tick=10)
    try:
        with stack.engine.connect() as conn:  # open a connection before the clock starts
            conn.execute(sa.text("SELECT 1"))
        ready.put(index)
        start.wait()
        started, cpu = time.perf_counter(), time.process_time()
        stages, ticks = drain(stack)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        results.put((index, stages, ticks, elapsed, cpu))
    finally:
        stack.engine.dispose()


def stages_per_second(
    url: str, runs: int, processes: int, tag: str
) -> tuple[float, list[int], float]:
    setup = build_stack(url, "setup")
    try:
        create_runs(setup, runs, tag)
    finally:
        setup.engine.dispose()
    ctx = mp.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [
        ctx.Process(target=_worker, args=(url, i, ready, start, results), daemon=True)
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=120)
        started = time.perf_counter()
        start.set()
        done = [results.get(timeout=1800) for _ in workers]
        elapsed = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()
    stages = sum(item[1] for item in done)
    assert stages == runs * STAGES_PER_RUN, (stages, runs)
    check = create_engine(url)
    try:
        assert unfinished_runs(check) == 0
    finally:
        check.dispose()
    cpu_ms_per_stage = sum(item[4] for item in done) / stages * 1000
    return stages / elapsed, [item[1] for item in sorted(done)], cpu_ms_per_stage


# -- part 3: claim/dequeue latency --------------------------------------------------------------
CLONE_TABLES = (
    "workflow_runs",
    "workflow_stages",
    "job_queue",
    "outbox_events",
    "idempotency_keys",
    "workflow_logs",
)


def clone_finished(url: str, finished: int) -> float:
    """Fill the tables with ``finished`` copies of one finished run (server-side bulk insert)."""
    stack = build_stack(url, "loader")
    started = time.perf_counter()
    try:
        create_runs(stack, 1, "template")
        drain(stack)
        engine = stack.engine
        inspector = sa.inspect(engine)
        with engine.begin() as conn:
            for table in CLONE_TABLES:
                columns = [column["name"] for column in inspector.get_columns(table)]
                exprs = []
                for column in columns:
                    info = next(c for c in inspector.get_columns(table) if c["name"] == column)
                    if column in ("id", "workflow_run_id", "workflow_stage_id", "key"):
                        exprs.append(f"t.{column} || '-' || g")
                    elif isinstance(info["type"], sa.DateTime):
                        exprs.append(f"t.{column} - make_interval(secs => g)")
                    else:
                        exprs.append(f"t.{column}")
                cols = ", ".join(f'"{c}"' for c in columns)
                conn.execute(
                    sa.text(
                        f"INSERT INTO {table} ({cols}) SELECT {', '.join(exprs)} "
                        f"FROM {table} t, generate_series(1, :n) g"
                    ),
                    {"n": finished},
                )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in CLONE_TABLES:
                conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
    finally:
        stack.engine.dispose()
    return time.perf_counter() - started


def table_sizes(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            parts = []
            for table in CLONE_TABLES[:5]:
                n = conn.scalar(sa.text(f"SELECT count(*) FROM {table}"))
                parts.append(f"{table} {n:,}")
        return ", ".join(parts)
    finally:
        engine.dispose()


PICK_QUERIES = {
    "claim": "SELECT id FROM workflow_runs WHERE status = 'PENDING' "
    "ORDER BY priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    "dequeue": "SELECT id FROM job_queue WHERE status = 'PENDING' AND "
    "(next_poll_at IS NULL OR next_poll_at <= now()) "
    "ORDER BY priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
}


class LatencyProbe:
    """Pending runs and jobs in one database, and timed claims/dequeues on them."""

    def __init__(self, url: str, samples: int) -> None:
        self.stack = build_stack(url, "latency")
        self.times: dict[str, list[float]] = {"claim": [], "dequeue": []}
        self.server: dict[str, list[float]] = {"claim": [], "dequeue": []}
        create_runs(self.stack, samples, f"lat-{time.time_ns()}")
        jobs = [
            NewJob(
                workflow_run_id=f"lat-run-{i}",
                workflow_id=WORKFLOW,
                stage_id="one",
                payload={"config": {}},
            )
            for i in range(samples)
        ]
        for i in range(0, samples, 500):
            self.stack.queue.enqueue_parallel(jobs[i : i + 500])
        with self.stack.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(sa.text("ANALYZE workflow_runs"))
            c.execute(sa.text("ANALYZE job_queue"))
        for _ in range(20):  # warm the pool
            self.stack.persistence.get_run("none")

    def measure(self, n: int) -> None:
        """``n`` claims and dequeues as the adapters run them (client-side time)."""
        for _ in range(n):
            t0 = time.perf_counter()
            run = self.stack.persistence.claim_next_pending_run()
            t1 = time.perf_counter()
            job = self.stack.queue.dequeue("latency")
            t2 = time.perf_counter()
            assert run is not None and job is not None
            self.times["claim"].append((t1 - t0) * 1000)
            self.times["dequeue"].append((t2 - t1) * 1000)

    def measure_server(self, n: int) -> None:
        """Server-side execution time of the pick queries (EXPLAIN ANALYZE, rolled back)."""
        with self.stack.engine.connect() as conn:
            for _ in range(n):
                for name, query in PICK_QUERIES.items():
                    plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}").scalar()
                    self.server[name].append(float(plan[0]["Execution Time"]))
                conn.rollback()

    def plans(self) -> dict[str, str]:
        plans = {}
        with self.stack.engine.connect() as conn:
            for name, query in PICK_QUERIES.items():
                plan = list(conn.exec_driver_sql(f"EXPLAIN {query}").scalars())
                index = next((line for line in plan if "Index" in line), None)
                plans[name] = (
                    "uses " + index.split(" using ")[1].split()[0]
                    if index and " using " in index
                    else "NO INDEX: " + plan[0]
                )
        return plans

    def close(self) -> None:
        try:
            with self.stack.engine.begin() as conn:  # leave no half-done work behind
                conn.execute(
                    sa.delete(job_queue).where(job_queue.c.workflow_run_id.like("lat-run-%"))
                )
                conn.execute(
                    sa.delete(workflow_runs).where(
                        workflow_runs.c.status == sa.literal_column("'RUNNING'")
                    )
                )
        finally:
            self.stack.engine.dispose()


def claim_dequeue_latency(empty_url: str, full_url: str, samples: int, finished: int) -> None:
    """Interleave blocks of measurements on both databases, so drift hits both alike."""
    empty, full = LatencyProbe(empty_url, samples), LatencyProbe(full_url, samples)
    try:
        block = 50
        for _ in range(0, samples, block):
            empty.measure(block)
            full.measure(block)
        server_samples = 100
        for _ in range(server_samples // 10):
            empty.measure_server(10)
            full.measure_server(10)
        plans = full.plans()
    finally:
        empty.close()
        full.close()
    for op in ("claim", "dequeue"):
        e, f = empty.times[op], full.times[op]
        ratio = percentile(f, 50) / percentile(e, 50)
        se, sf = percentile(empty.server[op], 50), percentile(full.server[op], 50)
        say(
            f"   {op:8s} empty p50 {percentile(e, 50):5.2f} ms p99 {percentile(e, 99):5.2f} | "
            f"{finished:,} finished p50 {percentile(f, 50):5.2f} ms p99 "
            f"{percentile(f, 99):5.2f} | ratio p50 {ratio:4.2f}x (target ≤ 1.5x) "
            f"{'MET' if ratio <= 1.5 else 'MISSED'}"
        )
        say(
            f"   {'':8s} server-side pick query p50: empty {se * 1000:5.0f} µs, finished "
            f"{sf * 1000:5.0f} µs ({sf / se:4.2f}x); plan {plans[op]}"
        )


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs for stages/s")
    parser.add_argument("--count-runs", type=int, default=200, help="runs for the counts")
    parser.add_argument("--finished", type=int, default=200_000, help="finished runs (part 3)")
    parser.add_argument("--samples", type=int, default=1000, help="claims/dequeues timed")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--parts", default="123", help="which parts to run, e.g. 13")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.count_runs = min(args.runs, 200), min(args.count_runs, 50)
        args.finished, args.samples = min(args.finished, 20_000), min(args.samples, 300)

    for line in describe_machine(redis_server=False):
        say(line)
    say(
        "workload: workflow `noop-chain` (3 sequential no-op stages), kernel in-process, "
        "SqlPersistence + SqlJobQueue, serverless host, no plugins"
    )

    if "1" in args.parts:
        with fresh_database("bench_stage_count") as url:
            count_costs(url, args.count_runs)

    if "2" in args.parts:
        say(
            f"\n2. Stages per second ({args.runs} runs = {args.runs * STAGES_PER_RUN} stages, "
            "each process: tick (claims ≤ 10 runs) then process_available_jobs until idle)"
        )
        for processes in (1, 2):
            with fresh_database("bench_stage_rate") as url:
                rate, split, cpu = stages_per_second(url, args.runs, processes, f"r{processes}")
            say(
                f"   {processes} process{'es' if processes > 1 else '  '}: {rate:7.1f} stages/s "
                f"({rate / STAGES_PER_RUN:6.1f} runs/s; stages per process {split}; "
                f"worker CPU {cpu:.2f} ms per stage)"
            )

    if "3" in args.parts:
        say(
            f"\n3. Claim and dequeue latency ({args.samples} of each, one statement each, "
            "incl. the pool's pre-ping; the two databases measured in alternating blocks)"
        )
        with (
            fresh_database("bench_stage_empty") as empty_url,
            fresh_database("bench_stage_full") as url,
        ):
            seconds = clone_finished(url, args.finished)
            say(f"   loaded {args.finished:,} finished runs in {seconds:.0f} s: {table_sizes(url)}")
            if "2" in args.parts:
                rate, _, _ = stages_per_second(url, min(args.runs, 500), 1, "full")
                say(f"   stages/s, 1 process, with the finished runs present: {rate:.1f}")
            claim_dequeue_latency(empty_url, url, args.samples, args.finished)


if __name__ == "__main__":
    main()
