"""``retention.expire``: forget completed idempotency keys and published events after a while."""

from __future__ import annotations

from datetime import timedelta

from workflow_engine.kernel.commands import RetentionExpire, RetentionExpireResult
from workflow_engine.kernel.runtime import Idempotency, Runtime


def handle_retention_expire(
    command: RetentionExpire, runtime: Runtime, idempotency: Idempotency | None
) -> RetentionExpireResult:
    now = runtime.now()
    persistence = runtime.persistence
    keys = persistence.delete_idempotency_keys(
        now - timedelta(milliseconds=command.idempotency_key_retention_ms)
    )
    events = persistence.delete_published_outbox_events(
        now - timedelta(milliseconds=command.outbox_retention_ms)
    )
    return RetentionExpireResult(idempotency_keys_deleted=keys, outbox_events_deleted=events)
