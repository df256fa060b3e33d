"""Commands. Every command reads the same ``WORKFLOW_ENGINE_*`` settings as the workers."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

import click

from workflow_engine.cli import output
from workflow_engine.errors import WorkflowEngineError
from workflow_engine.settings import EngineSettings


class EngineGroup(click.Group):
    """Turns the engine's typed errors, and a database that is missing or not migrated, into a
    one-line message and exit code 1.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WorkflowEngineError as error:
            raise click.ClickException(str(error)) from error
        except TimeoutError as error:
            raise click.ClickException(str(error)) from error
        except Exception as error:
            message = explain(error, ctx.find_object(EngineSettings))
            if message is None:
                raise
            raise click.ClickException(message) from error


def explain(error: Exception, settings: EngineSettings | None) -> str | None:
    """A one-line explanation of an error the user can fix (a bad setting, a database that
    is unreachable or not migrated), or ``None``.
    """
    from pydantic import ValidationError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError, ProgrammingError

    if isinstance(error, ValidationError) and error.title == EngineSettings.__name__:
        return "invalid settings: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors()
        )
    url = settings.database_url if settings is not None else "the database"
    with contextlib.suppress(Exception):
        url = make_url(url).render_as_string(hide_password=True)
    if isinstance(error, ProgrammingError) and "does not exist" in str(error.orig):
        return f"the engine's tables are missing in {url}: run `workflow-engine db upgrade`"
    if isinstance(error, OperationalError):
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        return f"cannot use the database {url}: {reason}"
    return None


def _client(ctx: click.Context) -> Any:
    """A client on the settings, closed (its connections released) when the command ends."""
    from workflow_engine.client import WorkflowClient

    settings: EngineSettings = ctx.obj
    client = WorkflowClient(settings)
    ctx.call_on_close(client.close)
    return client


def _json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


@click.group(cls=EngineGroup)
@click.option("--database-url", envvar="WORKFLOW_ENGINE_DATABASE_URL", help="State database.")
@click.option(
    "--broker-url", envvar="WORKFLOW_ENGINE_BROKER_URL", help="Celery broker that wakes workers."
)
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, broker_url: str | None) -> None:
    """Durable multi-stage workflows on Celery: manage the schema, runs and workers.

    Settings come from WORKFLOW_ENGINE_* environment variables (the options override them).
    """
    settings = EngineSettings.from_env()
    overrides = {"database_url": database_url, "broker_url": broker_url}
    updates = {key: value for key, value in overrides.items() if value}
    if updates:
        settings = EngineSettings(**{**settings.model_dump(), **updates})
    ctx.obj = settings


# -- db -------------------------------------------------------------------------------------------
@cli.group(cls=EngineGroup)
def db() -> None:
    """The engine's database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every schema migration (safe to run again)."""
    from workflow_engine.persistence.sql import create_engine, upgrade

    settings: EngineSettings = ctx.obj
    engine = create_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    click.echo(f"schema is up to date on {engine.url.render_as_string(hide_password=True)}")


# -- runs -----------------------------------------------------------------------------------------
@cli.group(cls=EngineGroup)
def runs() -> None:
    """Create, inspect, watch, cancel and rerun runs."""


@runs.command("list")
@click.option(
    "--status",
    type=click.Choice(
        ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"], case_sensitive=False
    ),
)
@click.option("--workflow", "workflow_id", help="Only runs of this workflow.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@_json_option
@click.pass_context
def runs_list(
    ctx: click.Context, status: str | None, workflow_id: str | None, limit: int, as_json: bool
) -> None:
    """Recent runs, newest first."""
    found = _client(ctx).list_runs(
        status=status.upper() if status else None, workflow_id=workflow_id, limit=limit
    )
    if as_json:
        output.print_json([run.model_dump(mode="json") for run in found])
    else:
        output.runs_table(found)


@runs.command("show")
@click.argument("run_id")
@_json_option
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """A run with its stages, output and error."""
    run = _client(ctx).get_run(run_id)
    if as_json:
        output.print_json(run.model_dump(mode="json"))
    else:
        output.run_details(run)


@runs.command("create")
@click.argument("workflow_id")
@click.option("--input", "input_json", default="{}", help="Workflow input as JSON.")
@click.option("--config", "config_json", default=None, help="Run config as JSON.")
@click.option("--priority", type=int, default=None)
@click.option("--idempotency-key", default=None)
@_json_option
@click.pass_context
def runs_create(
    ctx: click.Context,
    workflow_id: str,
    input_json: str,
    config_json: str | None,
    priority: int | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Start a run of WORKFLOW_ID."""
    run_id = _client(ctx).create_run(
        workflow_id,
        _parse_json("--input", input_json),
        config=_parse_json("--config", config_json) if config_json else None,
        priority=priority,
        idempotency_key=idempotency_key,
    )
    if as_json:
        output.print_json({"workflow_run_id": run_id})
    else:
        click.echo(run_id)


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", default=None)
@click.pass_context
def runs_cancel(ctx: click.Context, run_id: str, reason: str | None) -> None:
    """Cancel a pending or running run."""
    if _client(ctx).cancel(run_id, reason):
        click.echo(f"cancelled {run_id}")
    else:
        raise click.ClickException(f"run {run_id} has already finished; nothing to cancel")


@runs.command("rerun")
@click.argument("run_id")
@click.option("--from", "stage_id", required=True, help="Stage to run again from.")
@click.pass_context
def runs_rerun(ctx: click.Context, run_id: str, stage_id: str) -> None:
    """Run a finished run again from a stage."""
    reset = _client(ctx).rerun_from(run_id, stage_id)
    click.echo(f"rerunning {run_id} from {stage_id} (reset: {', '.join(reset)})")


@runs.command("watch")
@click.argument("run_id")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait.")
@click.option("--interval", default=0.5, show_default=True, help="Seconds between refreshes.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: each change, then the run.")
@click.pass_context
def runs_watch(
    ctx: click.Context, run_id: str, timeout: float, interval: float, as_json: bool
) -> None:
    """Follow a run's stages live until it finishes (exit 1 unless it COMPLETED).

    On a terminal the per-stage view is redrawn in place; otherwise each change is one line.
    """
    client = _client(ctx)
    live = not as_json and sys.stdout.isatty()
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    drawn = 0
    while True:
        run = client.get_run(run_id)
        if live:
            drawn = output.redraw(output.progress_lines(run), drawn)
        for stage in run.stages:
            if seen.get(stage.stage_id) == stage.status.value:
                continue
            seen[stage.stage_id] = stage.status.value
            if as_json:
                output.print_json_line(
                    {"run_id": run_id, "stage_id": stage.stage_id, "status": stage.status.value}
                )
            elif not live:
                click.echo(
                    f"{output.when(stage.started_at):19s}  "
                    f"{stage.stage_id:24s} {output.status_text(stage.status.value)}"
                )
        if run.is_terminal:
            if as_json:
                output.print_json_line(run.model_dump(mode="json"))
            else:
                click.echo(f"run {run_id} {output.status_text(run.status.value)}")
            if run.status != "COMPLETED":
                sys.exit(1)
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is still {run.status.value} after {timeout} s")
        time.sleep(interval)


# -- dlq ------------------------------------------------------------------------------------------
@cli.group(cls=EngineGroup)
def dlq() -> None:
    """Events whose delivery to plugins kept failing."""


@dlq.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@_json_option
@click.pass_context
def dlq_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Dead-lettered events, oldest first."""
    events = _client(ctx).context.persistence.get_dlq_events(limit)
    if as_json:
        output.print_json([event.model_dump(mode="json") for event in events])
        return
    if not events:
        click.echo("the DLQ is empty")
        return
    output.table(
        ["EVENT", "RUN", "SEQ", "TYPE", "RETRIES", "DLQ AT"],
        [
            [
                e.id,
                e.workflow_run_id,
                str(e.sequence),
                e.event_type,
                str(e.retry_count),
                output.when(e.dlq_at),
            ]
            for e in events
        ],
    )


@dlq.command("replay")
@click.option("--max", "max_events", default=100, show_default=True, type=click.IntRange(1))
@click.pass_context
def dlq_replay(ctx: click.Context, max_events: int) -> None:
    """Give dead-lettered events another round of delivery attempts."""
    from workflow_engine.kernel.commands import PluginReplayDLQ

    result = _client(ctx).context.kernel.dispatch(PluginReplayDLQ(max_events=max_events))
    click.echo(f"replayed {result.replayed} event(s)")


# -- tick, worker, demo ---------------------------------------------------------------------------
@cli.command("tick")
@_json_option
@click.pass_context
def tick(ctx: click.Context, as_json: bool) -> None:
    """Run one maintenance tick now (skipped if another process is running one)."""
    from workflow_engine.celery.tick import run_tick

    result = run_tick(_client(ctx).context)
    if result is None:
        click.echo("skipped: another maintenance tick is running")
        return
    if as_json:
        output.print_json(result.model_dump())
    else:
        for name, count in result.model_dump().items():
            click.echo(f"{name:18s} {count}")


@cli.command("worker")
@click.option("--worker-id", default=None, help="Defaults to host-pid.")
@click.option("--tick-interval", default=None, type=float, help="Seconds between ticks.")
@click.pass_context
def worker(ctx: click.Context, worker_id: str | None, tick_interval: float | None) -> None:
    """Run the process host (no Celery): jobs and ticks in this process until SIGTERM."""
    from workflow_engine.clock import SystemClock
    from workflow_engine.hosts.worker import create_worker_host
    from workflow_engine.persistence.sql import SqlJobQueue, SqlPersistence
    from workflow_engine.wiring import build_kernel, database_engine, host_config

    settings: EngineSettings = ctx.obj
    clock = SystemClock()
    engine = database_engine(settings)
    queue = SqlJobQueue(engine, clock=clock, default_max_attempts=settings.max_attempts)
    kernel = build_kernel(
        settings,
        engine=engine,
        persistence=SqlPersistence(engine, clock=clock),
        job_transport=queue,
        clock=clock,
    )
    interval = tick_interval or settings.tick_interval_seconds
    host = create_worker_host(
        kernel=kernel,
        job_transport=queue,
        worker_id=worker_id or queue.worker_id,
        orchestration_interval_ms=int(interval * 1000),
        **host_config(settings).model_dump(),
    )
    click.echo(f"worker {host.worker_id} started; Ctrl-C or SIGTERM stops it")
    host.start()
    host.wait()
    click.echo(f"worker stopped after {host.get_stats().jobs_processed} job(s)")


@cli.command("demo")
def demo() -> None:
    """Run the example document workflow through real Celery worker and beat processes."""
    from workflow_engine.demo import main as run_demo

    sys.exit(run_demo())


def _parse_json(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not valid JSON: {error}", param_hint=option) from None


def main() -> None:
    """Entry point of the ``workflow-engine`` command."""
    cli(prog_name="workflow-engine")
