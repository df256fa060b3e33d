"""Printing for people (tables) and for scripts (``--json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from workflow_engine.client import RunView

STATUS_COLOURS = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "RUNNING": "cyan",
    "SUSPENDED": "magenta",
}


STATUS_MARKS = {
    "PENDING": "·",
    "RUNNING": "▶",
    "SUSPENDED": "⏸",
    "COMPLETED": "✔",
    "FAILED": "✘",
    "CANCELLED": "⊘",
}


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def print_json_line(value: Any) -> None:
    """One compact JSON document on one line (JSON Lines, for streaming to scripts)."""
    click.echo(json.dumps(value, default=str))


def status_text(status: str) -> str:
    return click.style(status, fg=STATUS_COLOURS.get(status))


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def millis(value: int | None) -> str:
    return f"{value / 1000:.2f}s" if value is not None else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain aligned table (colour codes do not count towards widths)."""
    widths = [
        max([len(header), *(len(click.unstyle(row[i])) for row in rows)])
        for i, header in enumerate(headers)
    ]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    click.echo("  ".join("-" * w for w in widths))
    for row in rows:
        cells = [
            cell + " " * (w - len(click.unstyle(cell))) for cell, w in zip(row, widths, strict=True)
        ]
        click.echo("  ".join(cells).rstrip())


def runs_table(runs: Sequence[RunView]) -> None:
    if not runs:
        click.echo("no runs")
        return
    table(
        ["RUN", "WORKFLOW", "STATUS", "STAGES", "CREATED", "DURATION"],
        [
            [
                run.id,
                run.workflow_id,
                status_text(run.status.value),
                f"{sum(s.status == 'COMPLETED' for s in run.stages)}/{len(run.stages)}",
                when(run.created_at),
                millis(run.duration_ms),
            ]
            for run in runs
        ],
    )


def run_details(run: RunView) -> None:
    click.echo(f"run       {run.id}")
    click.echo(f"workflow  {run.workflow_id}")
    click.echo(f"status    {status_text(run.status.value)}")
    click.echo(f"created   {when(run.created_at)}   started {when(run.started_at)}")
    click.echo(f"finished  {when(run.completed_at)}   duration {millis(run.duration_ms)}")
    if run.error:
        click.echo(f"error     {run.error}")
    click.echo("")
    stages_table(run)
    if run.output is not None:
        click.echo("\noutput")
        click.echo(json.dumps(run.output, indent=2, default=str))


def stages_table(run: RunView) -> None:
    table(
        ["GROUP", "STAGE", "STATUS", "ATTEMPT", "DURATION", "ERROR"],
        [
            [
                str(stage.execution_group),
                stage.stage_id,
                status_text(stage.status.value),
                str(stage.attempt),
                millis(stage.duration_ms),
                (stage.error or "")[:60],
            ]
            for stage in run.stages
        ],
    )


def progress_lines(run: RunView) -> list[str]:
    """The live view of a run: a header, then one line per stage with its mark and timing."""
    elapsed = millis(run.duration_ms)
    if run.duration_ms is None and run.started_at is not None:
        elapsed = f"{(datetime.now(UTC) - run.started_at).total_seconds():.1f}s"
    lines = [f"run {run.id}  {run.workflow_id}  {status_text(run.status.value)}  {elapsed}"]
    for stage in run.stages:
        mark = STATUS_MARKS.get(stage.status.value, "?")
        error = f"  {stage.error[:60]}" if stage.error else ""
        lines.append(
            f"  {mark} group {stage.execution_group}  {stage.stage_id:24s} "
            f"{status_text(stage.status.value.ljust(9))} attempt {stage.attempt}  "
            f"{millis(stage.duration_ms)}{error}"
        )
    if not run.stages:
        lines.append("  (waiting for a worker to start the run)")
    return lines


def redraw(lines: Sequence[str], previous: int) -> int:
    """Replace the ``previous`` lines printed by the last call with ``lines``; return how many
    were printed (for the next call).
    """
    if previous:
        click.echo(f"\x1b[{previous}F\x1b[J", nl=False)  # up to the first line, clear below
    for line in lines:
        click.echo(line)
    return len(lines)
