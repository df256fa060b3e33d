"""``manage.py workflow_engine_runs list|show``: the engine's runs, from Django's settings."""

from __future__ import annotations

from contextlib import redirect_stdout
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflow_engine.cli import output
from workflow_engine.contrib.django.runs import get_client
from workflow_engine.errors import RunNotFoundError
from workflow_engine.status import Status


class Command(BaseCommand):
    """List recent runs, or show one with its stages (``--json`` for scripts)."""

    help = "List the workflow engine's runs, or show one with its stages."

    def add_arguments(self, parser: CommandParser) -> None:
        """``list [--status S] [--workflow W] [--limit N] [--json]`` and ``show RUN_ID``."""
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,show}")
        listing = actions.add_parser("list", help="recent runs, newest first")
        listing.add_argument("--status", choices=[status.value for status in Status])
        listing.add_argument("--workflow", dest="workflow_id")
        listing.add_argument("--limit", type=int, default=20)
        listing.add_argument("--json", action="store_true", dest="as_json")
        show = actions.add_parser("show", help="one run with its stages, output and error")
        show.add_argument("run_id")
        show.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the runs (a table, or JSON with ``--json``)."""
        client = get_client()
        with redirect_stdout(self.stdout):
            if options["action"] == "list":
                runs = client.list_runs(
                    status=options["status"],
                    workflow_id=options["workflow_id"],
                    limit=options["limit"],
                )
                if options["as_json"]:
                    output.print_json([run.model_dump(mode="json") for run in runs])
                else:
                    output.runs_table(runs)
                return
            try:
                run = client.get_run(options["run_id"])
            except RunNotFoundError as error:
                raise CommandError(str(error)) from None
            if options["as_json"]:
                output.print_json(run.model_dump(mode="json"))
            else:
                output.run_details(run)
