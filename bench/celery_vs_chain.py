"""Our 3-stage no-op workflow on Celery versus a raw Celery chain of 3 no-op tasks.

In one run, on the same Redis and Postgres (``scripts/services.sh start``):

(a) a raw Celery chain of three no-op tasks (``bench/_worker_apps.py:chain_app``: Redis broker
    and Redis result backend, prefork worker ``-c 2`` without gossip, mingle and heartbeat);
(b) the ``noop-chain`` workflow through ``celery -A workflow_engine.celery.default_app worker
    -c 2`` on a fresh, migrated benchmark database and its own Redis db number.

For each: end-to-end latency p50/p99 over ``--runs`` sequential runs (chain: ``apply_async``
then ``.get()``; ours: ``WorkflowClient.create_run`` then ``WorkflowClient.wait`` returns
COMPLETED), and sustained throughput over ``--concurrent`` runs (start all, then wait for all)
with 2 worker processes. Both sides run ``--rounds`` times (default 3), alternating which
goes first, so that the machine's drift between runs falls on both; prints each round's
ratios and their medians against the targets (p50 ≤ 3x the chain's, throughput ≥ 0.5x). The
processes, the database and the Redis dbs are cleaned up.

    python bench/celery_vs_chain.py [--runs 200] [--concurrent 1000] [--rounds 3] [--quick]
    BENCH_PROFILE=1 ...   # also cProfile our worker's pool children (top functions printed)
    BENCH_PROFILE=1 BENCH_PROFILE_TIMER=cpu ...   # the same, counting CPU time only

Environment: BENCH_PG_URL (admin URL, default the services' Postgres on 5439),
BENCH_REDIS_URL (default redis://127.0.0.1:6390), BENCH_CHAIN_DB / BENCH_ENGINE_DB (Redis db
numbers, default 12 and 13).
"""

from __future__ import annotations

import argparse
import os
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REDIS_URL,
    REPO,
    celery_worker_command,
    cpu_seconds,
    describe_machine,
    flush_redis_db,
    fresh_database,
    percentile,
    postgres_backends,
    process_group,
    say,
    subprocess_running,
)

BENCH_DIR = Path(__file__).resolve().parent
LOG_DIR = REPO / ".run" / "bench"
CHAIN_DB = int(os.environ.get("BENCH_CHAIN_DB", "12"))
ENGINE_DB = int(os.environ.get("BENCH_ENGINE_DB", "13"))
CHAIN_REDIS = f"{REDIS_URL}/{CHAIN_DB}"
ENGINE_REDIS = f"{REDIS_URL}/{ENGINE_DB}"

WORKFLOW = "noop-chain"


@dataclass
class Figures:
    latencies_ms: list[float]
    throughput: float
    concurrent: int
    elapsed_s: float
    extra: dict[str, Any]

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)


def worker_env(**extra: str) -> dict[str, str]:
    python_path = os.pathsep.join(
        [str(BENCH_DIR), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return {"PYTHONPATH": python_path, **extra}


# -- (a) the raw Celery chain -------------------------------------------------------------------
def bench_chain(runs: int, concurrent: int, warmup: int) -> Figures:
    os.environ["BENCH_CHAIN_REDIS_URL"] = CHAIN_REDIS
    import _worker_apps
    from celery import chain

    app = _worker_apps.chain_app
    noop = _worker_apps.noop
    flush_redis_db(CHAIN_REDIS)
    command = celery_worker_command("_worker_apps:chain_app", 2, "-Q", _worker_apps.CHAIN_QUEUE)
    env = worker_env(BENCH_CHAIN_REDIS_URL=CHAIN_REDIS)

    def one_chain() -> Any:
        return chain(noop.s(0), noop.s(), noop.s()).apply_async()

    try:
        with subprocess_running(command, env=env, log_path=LOG_DIR / "chain-worker.log") as worker:
            first = one_chain()
            assert first.get(timeout=60) == 3, "the chain worker did not answer"
            for _ in range(warmup):
                one_chain().get(timeout=30)

            latencies = []
            for _ in range(runs):
                started = time.perf_counter()
                result = one_chain().get(timeout=30)
                latencies.append((time.perf_counter() - started) * 1000)
                assert result == 3

            worker_pids = process_group(worker.pid)
            cpu_before = cpu_seconds(worker_pids), time.process_time()
            started = time.perf_counter()
            results = [one_chain() for _ in range(concurrent)]
            published = time.perf_counter() - started
            values = [r.get(timeout=300) for r in results]
            elapsed = time.perf_counter() - started
            worker_cpu = cpu_seconds(worker_pids) - cpu_before[0]
            client_cpu = time.process_time() - cpu_before[1]
            assert values == [3] * concurrent
            for r in results:
                r.forget()
    finally:
        app.close()
        flush_redis_db(CHAIN_REDIS)
    return Figures(
        latencies,
        concurrent / elapsed,
        concurrent,
        elapsed,
        {
            "publish_s": published,
            "cpu": {"worker": worker_cpu / concurrent, "client": client_cpu / concurrent},
        },
    )


# -- (b) our workflow on Celery -----------------------------------------------------------------
def bench_engine(runs: int, concurrent: int, warmup: int, profile_dir: str | None) -> Figures:
    from workflow_engine.client import WorkflowClient
    from workflow_engine.persistence.sql.tables import job_queue, workflow_runs, workflow_stages
    from workflow_engine.settings import EngineSettings

    flush_redis_db(ENGINE_REDIS)
    with fresh_database("bench_celery") as db_url:
        env = worker_env(
            WORKFLOW_ENGINE_DATABASE_URL=db_url,
            WORKFLOW_ENGINE_BROKER_URL=ENGINE_REDIS,
            WORKFLOW_ENGINE_REGISTRY="workflow_engine.examples:registry",
        )
        if profile_dir:
            env["BENCH_PROFILE_DIR"] = profile_dir
            env["BENCH_PROFILE_TIMER"] = os.environ.get("BENCH_PROFILE_TIMER", "")
            app_name = "_worker_apps:engine_app"
        else:
            app_name = "workflow_engine.celery.default_app"
        command = celery_worker_command(app_name, 2)
        settings = EngineSettings(
            database_url=db_url,
            broker_url=ENGINE_REDIS,
            registry="workflow_engine.examples:registry",
        )
        client = WorkflowClient(settings)
        try:
            with subprocess_running(
                command, env=env, log_path=LOG_DIR / "engine-worker.log"
            ) as worker:
                run_id = client.create_run(WORKFLOW, {"n": 0})
                view = client.wait(run_id, timeout=60)
                assert view.status == "COMPLETED", view
                assert view.output == {"n": 3}, view.output
                for _ in range(warmup):
                    client.wait(client.create_run(WORKFLOW, {"n": 0}), timeout=30)

                latencies, run_ids = [], []
                for _ in range(runs):
                    started = time.perf_counter()
                    run_id = client.create_run(WORKFLOW, {"n": 0})
                    view = client.wait(run_id, timeout=30)
                    latencies.append((time.perf_counter() - started) * 1000)
                    assert view.status == "COMPLETED", view
                    run_ids.append(run_id)

                worker_pids = process_group(worker.pid)
                database = sa.engine.make_url(db_url).database or ""
                backends = postgres_backends(client.context.engine, database)
                pg_before = {pid: cpu_seconds([pid]) for pid in backends}
                cpu_before = cpu_seconds(worker_pids), time.process_time()
                started = time.perf_counter()
                batch = [client.create_run(WORKFLOW, {"n": 0}) for _ in range(concurrent)]
                created = time.perf_counter() - started
                for run_id in batch:
                    view = client.wait(run_id, timeout=600)
                    assert view.status == "COMPLETED", view
                elapsed = time.perf_counter() - started
                worker_cpu = cpu_seconds(worker_pids) - cpu_before[0]
                client_cpu = time.process_time() - cpu_before[1]
                backends = postgres_backends(client.context.engine, database)
                pg_cpu = sum(cpu_seconds([pid]) - pg_before.get(pid, 0) for pid in backends)

            engine = client.context.engine
            with engine.connect() as conn:
                # What the database itself recorded for the sequential runs: created → completed.
                db_ms = [
                    float(ms)
                    for ms in conn.scalars(
                        sa.select(workflow_runs.c.duration).where(workflow_runs.c.id.in_(run_ids))
                    )
                ]
                total_runs = 1 + warmup + runs + concurrent
                counts = {
                    "runs completed": conn.scalar(
                        sa.select(sa.func.count()).where(workflow_runs.c.status == "COMPLETED")
                    ),
                    "stages completed": conn.scalar(
                        sa.select(sa.func.count()).where(workflow_stages.c.status == "COMPLETED")
                    ),
                    "jobs completed": conn.scalar(
                        sa.select(sa.func.count()).where(job_queue.c.status == "COMPLETED")
                    ),
                    "jobs attempted twice": conn.scalar(
                        sa.select(sa.func.count()).where(job_queue.c.attempt > 1)
                    ),
                }
            expected = {
                "runs completed": total_runs,
                "stages completed": 3 * total_runs,
                "jobs completed": 3 * total_runs,
                "jobs attempted twice": 0,
            }
            if counts != expected:
                say(f"WARNING: database counts {counts} differ from {expected}")
        finally:
            client.close()
            flush_redis_db(ENGINE_REDIS)
    return Figures(
        latencies,
        concurrent / elapsed,
        concurrent,
        elapsed,
        {
            "create_s": created,
            "cpu": {
                "worker": worker_cpu / concurrent,
                "client": client_cpu / concurrent,
                "postgres": pg_cpu / concurrent,
            },
            "db_p50": percentile(db_ms, 50),
            "db_p99": percentile(db_ms, 99),
        },
    )


def cpu_line(figures: Figures) -> str:
    parts = [f"{name} {seconds * 1000:.1f} ms" for name, seconds in figures.extra["cpu"].items()]
    return ", ".join(parts) + " (Redis not counted)"


def print_profile(profile_dir: str, top: int = 25) -> None:
    files = sorted(Path(profile_dir).glob("*.prof"))
    if not files:
        say("(no profile written: did the pool children shut down cleanly?)")
        return
    stats = pstats.Stats(*map(str, files))
    say(f"\ncProfile of our worker's {len(files)} pool children, top {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)
    say(f"\ntop {top} by cumulative time:")
    stats.sort_stats("cumulative").print_stats(top)


def report_chain(figures: Figures, concurrent: int) -> None:
    say("\n(a) raw Celery chain of 3 no-op tasks (Redis broker + Redis result backend)")
    say(f"  latency  p50 {figures.p50:7.2f} ms   p99 {figures.p99:7.2f} ms")
    say(
        f"  throughput {figures.throughput:7.1f} chains/s ({concurrent} in "
        f"{figures.elapsed_s:.2f} s; publishing took {figures.extra['publish_s']:.2f} s)"
    )
    say(f"  CPU per chain during the throughput run: {cpu_line(figures)}")


def report_engine(figures: Figures, concurrent: int) -> None:
    say("\n(b) workflow_engine `noop-chain` (3 stages) on celery worker -c 2, Postgres state")
    say(
        f"  latency  p50 {figures.p50:7.2f} ms   p99 {figures.p99:7.2f} ms"
        "   (create_run → wait() returns COMPLETED)"
    )
    say(
        f"  run duration recorded in the database (created_at → completed_at): "
        f"p50 {figures.extra['db_p50']:.0f} ms, p99 {figures.extra['db_p99']:.0f} ms"
    )
    say(
        f"  throughput {figures.throughput:7.1f} runs/s ({concurrent} in "
        f"{figures.elapsed_s:.2f} s; creating them took {figures.extra['create_s']:.2f} s)"
    )
    say(f"  CPU per run during the throughput run: {cpu_line(figures)}")


def report_ratios(rounds: list[tuple[Figures, Figures]]) -> None:
    """Each round's ratios, and their medians against the targets."""
    latency = [engine.p50 / chain.p50 for chain, engine in rounds]
    tail = [engine.p99 / chain.p99 for chain, engine in rounds]
    throughput = [engine.throughput / chain.throughput for chain, engine in rounds]

    def listed(values: list[float]) -> str:
        return " ".join(f"{value:.2f}" for value in values)

    say("\nratios, round by round (noise on this machine is about ±30 %), and their medians:")
    p50, p99, rate = (statistics.median(values) for values in (latency, tail, throughput))
    say(
        f"  our p50 / chain p50        {listed(latency):>16}   median {p50:5.2f}   "
        f"(target ≤ 3)    {'MET' if p50 <= 3 else 'MISSED'}"
    )
    say(f"  our p99 / chain p99        {listed(tail):>16}   median {p99:5.2f}")
    say(
        f"  our throughput / chain's   {listed(throughput):>16}   median {rate:5.2f}   "
        f"(target ≥ 0.5)  {'MET' if rate >= 0.5 else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="sequential runs for latency")
    parser.add_argument("--concurrent", type=int, default=1000, help="runs for throughput")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of both sides (which goes first alternates)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="50 sequential, 200 concurrent, 1 round"
    )
    parser.add_argument("--only", choices=["chain", "engine"], help="run one side only")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.concurrent = min(args.runs, 50), min(args.concurrent, 200)
        args.rounds = 1
    warmup = 10 if args.quick else 20

    for line in describe_machine():
        say(line)
    say(
        f"workload: {args.runs} sequential runs, {args.concurrent} concurrent runs, "
        f"{warmup} warm-up runs; prefork worker -c 2 for each side; {args.rounds} round(s)"
    )
    rounds = []
    for index in range(args.rounds):
        say(f"\n--- round {index + 1} of {args.rounds}")
        sides = ["chain", "engine"] if index % 2 == 0 else ["engine", "chain"]
        figures: dict[str, Figures] = {}
        for side in sides:
            if args.only not in (None, side):
                continue
            if side == "chain":
                figures[side] = bench_chain(args.runs, args.concurrent, warmup)
                report_chain(figures[side], args.concurrent)
                continue
            profile_dir = (
                tempfile.mkdtemp(prefix="bench-prof-") if os.environ.get("BENCH_PROFILE") else None
            )
            figures[side] = bench_engine(args.runs, args.concurrent, warmup, profile_dir)
            report_engine(figures[side], args.concurrent)
            if profile_dir:
                print_profile(profile_dir)
        if len(figures) == 2:
            rounds.append((figures["chain"], figures["engine"]))
    if rounds:
        report_ratios(rounds)


if __name__ == "__main__":
    main()
