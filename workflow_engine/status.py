"""The one status vocabulary shared by runs, stages and jobs."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Lifecycle state of a run, a stage or a job.

    A ``str`` enum, so ``Status.RUNNING == "RUNNING"`` and values store and serialise as plain
    strings. ``SKIPPED`` exists for compatibility with the original engine and is never set.
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"

    @property
    def is_terminal_for_run(self) -> bool:
        """True for the states a run never leaves on its own (COMPLETED, FAILED, CANCELLED)."""
        return self in TERMINAL_RUN_STATUSES


TERMINAL_RUN_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
ACTIVE_STAGE_STATUSES = frozenset({Status.PENDING, Status.RUNNING, Status.SUSPENDED})
