"""The ``workflow-engine`` command line: schema, runs, DLQ, tick, worker host and demo."""

from workflow_engine.cli.main import cli, main

__all__ = ["cli", "main"]
