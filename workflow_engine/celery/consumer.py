"""``ReconnectingConsumer``: Celery's worker consumer, kept alive through a Redis restart."""

from __future__ import annotations

import logging

from celery.worker.consumer import Consumer

logger = logging.getLogger("workflow_engine.celery")


class ReconnectingConsumer(Consumer):  # type: ignore[misc]  # (Celery is untyped)
    """Celery's consumer, which reconnects after every broker connection loss.

    When Redis goes away, Celery first collects the lost connection (which detaches its
    transport) and then closes it. If Redis is back in between, closing the connection's
    default channel asks the detached transport for its address and raises
    ``AttributeError`` (kombu issue #582); Celery only expects connection errors there, so
    the worker process exits. The connection is dead either way: this consumer logs the
    error and reconnects, as it does after any other connection loss. The engine needs
    nothing else from that close (no task acks late).
    """

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError:
            logger.warning(
                "closing the lost broker connection failed; reconnecting anyway", exc_info=True
            )
