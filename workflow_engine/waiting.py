"""Waiting for a run to end: woken by Postgres ``NOTIFY`` within milliseconds, polling on SQLite."""

from __future__ import annotations

import threading
import time

import psycopg
from sqlalchemy.engine import Engine

from workflow_engine.errors import RunNotFoundError
from workflow_engine.persistence.sql.persistence import RUN_FINISHED_CHANNEL
from workflow_engine.ports import Persistence
from workflow_engine.status import TERMINAL_RUN_STATUSES, Status

# Even with notifications, look again now and then: a notification is lost if the listening
# connection dropped, and the run may have ended before the first LISTEN.
RECHECK_SECONDS = 1.0
MAX_POLL_SECONDS = 0.05


class RunWaiter:
    """Blocks until runs reach COMPLETED, FAILED or CANCELLED."""

    def __init__(self, engine: Engine, persistence: Persistence) -> None:
        self._engine = engine
        self._persistence = persistence
        self._listeners = threading.local()

    def wait(self, run_id: str, timeout: float) -> Status:
        """The run's terminal status; ``TimeoutError`` if it has none within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        listener = self._listener()
        delay = 0.002
        while True:
            status = self._persistence.get_run_status(run_id)
            if status is None:
                raise RunNotFoundError(run_id)
            if status in TERMINAL_RUN_STATUSES:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"run {run_id} is still {status.value} after {timeout} s")
            if listener is not None:
                self._await_notification(listener, run_id, min(remaining, RECHECK_SECONDS))
            else:
                time.sleep(min(delay, remaining))
                delay = min(delay * 1.5, MAX_POLL_SECONDS)

    def close(self) -> None:
        listener = getattr(self._listeners, "connection", None)
        if listener is not None:
            listener.close()
            self._listeners.connection = None

    def _listener(self) -> psycopg.Connection[object] | None:
        if self._engine.dialect.name != "postgresql":
            return None
        connection: psycopg.Connection[object] | None = getattr(self._listeners, "connection", None)
        if connection is None or connection.closed:
            dsn = self._engine.url.set(drivername="postgresql")
            connection = psycopg.connect(dsn.render_as_string(hide_password=False), autocommit=True)
            connection.execute(f"LISTEN {RUN_FINISHED_CHANNEL}")
            self._listeners.connection = connection
        return connection

    def _await_notification(
        self, listener: psycopg.Connection[object], run_id: str, seconds: float
    ) -> None:
        """Return when ``run_id``'s notification arrives, or after ``seconds``.

        Other runs' notifications are passed over: reading the status again for each would
        cost every waiter a query per finished run. (One that ends while nobody waits for it
        is found by the read each wait starts with.)
        """
        try:
            for notification in listener.notifies(timeout=seconds):
                if notification.payload == run_id:
                    return
        except psycopg.OperationalError:  # the connection dropped: listen again next time
            self.close()
            time.sleep(min(seconds, MAX_POLL_SECONDS))
