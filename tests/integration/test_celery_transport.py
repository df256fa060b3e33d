"""CeleryJobTransport on Postgres and Redis: which wake-ups a commit publishes."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from sqlalchemy.engine import Engine

from workflow_engine.celery.publisher import EXECUTE_JOB
from workflow_engine.celery.transport import CeleryJobTransport
from workflow_engine.persistence.sql import SqlPersistence
from workflow_engine.records import NewJob
from workflow_engine.status import Status


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    name = f"transport-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for pattern in (f"{name}*", f"routed-{name}*"):
        for key in client.scan_iter(pattern):
            client.delete(key)


def published_job_ids(redis_url: str, queue: str) -> list[str]:
    """The job ids of the ``execute_job`` messages waiting in ``queue`` (every priority list)."""
    client = redis.Redis.from_url(redis_url)
    ids = []
    for key in client.scan_iter(f"{queue}*"):
        for raw in client.lrange(key, 0, -1):
            envelope = json.loads(raw)
            assert envelope["headers"]["task"] == EXECUTE_JOB
            args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
            ids.append(args[0])
    return ids


@pytest.fixture
def transport(migrated_pg: Engine, redis_url: str, queue: str) -> CeleryJobTransport:
    return CeleryJobTransport(migrated_pg, Celery(broker=redis_url), queue=queue)


@pytest.fixture
def persistence(migrated_pg: Engine) -> SqlPersistence:
    return SqlPersistence(migrated_pg)


def test_a_commit_wakes_each_job_on_its_queue_but_the_one_enqueued_leased(
    transport: CeleryJobTransport, persistence: SqlPersistence, redis_url: str, queue: str
) -> None:
    jobs = [
        NewJob(workflow_run_id="r", workflow_id="w", stage_id="routed", queue=f"routed-{queue}"),
        NewJob(workflow_run_id="r", workflow_id="w", stage_id="a", worker_id="w1", lease_token="t"),
        NewJob(workflow_run_id="r", workflow_id="w", stage_id="b"),
    ]
    other, first, second = persistence.with_transaction(
        lambda tx: transport.enqueue_parallel(jobs, tx=tx)
    )

    # the leased job's worker runs it: a wake-up would only find nothing to lease
    assert published_job_ids(redis_url, queue) == [second]
    assert published_job_ids(redis_url, f"routed-{queue}") == [other]
    stored = transport.get_job(first)
    assert stored is not None and (stored.status, stored.lease_token) == (Status.RUNNING, "t")


def test_a_leased_job_whose_worker_died_is_reaped_and_woken(
    transport: CeleryJobTransport, persistence: SqlPersistence, redis_url: str, queue: str
) -> None:
    job = NewJob(
        workflow_run_id="r", workflow_id="w", stage_id="a", worker_id="w1", lease_token="t"
    )
    job_id = persistence.with_transaction(lambda tx: transport.enqueue(job, tx=tx))
    assert published_job_ids(redis_url, queue) == []

    released = transport.reap_stale_jobs(threshold_ms=0).released
    assert [stale.id for stale in released] == [job_id]
    assert published_job_ids(redis_url, queue) == [job_id]


def test_a_rolled_back_transaction_wakes_nothing(
    transport: CeleryJobTransport, persistence: SqlPersistence, redis_url: str, queue: str
) -> None:

    def enqueue_then_fail(tx: SqlPersistence) -> None:
        transport.enqueue(NewJob(workflow_run_id="r", workflow_id="w", stage_id="a"), tx=tx)
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        persistence.with_transaction(enqueue_then_fail)  # type: ignore[arg-type]
    assert published_job_ids(redis_url, queue) == []
    assert transport.get_jobs_by_workflow_run("r") == []
