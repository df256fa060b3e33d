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


def test_a_commit_inside_keeping_one_leases_the_first_job_of_the_queue_and_wakes_the_rest(
    transport: CeleryJobTransport, persistence: SqlPersistence, redis_url: str, queue: str
) -> None:
    jobs = [
        NewJob(workflow_run_id="r", workflow_id="w", stage_id="routed", queue=f"routed-{queue}"),
        NewJob(workflow_run_id="r", workflow_id="w", stage_id="a"),
        NewJob(workflow_run_id="r", workflow_id="w", stage_id="b"),
    ]
    with transport.keeping_one(None, "worker-1") as kept:
        ids = persistence.with_transaction(lambda tx: transport.enqueue_parallel(jobs, tx=tx))
    other, first, second = ids

    # the first job on the default queue, not the routed one, leased in the same commit
    assert [job.id for job in kept] == [first]
    assert published_job_ids(redis_url, queue) == [second]
    assert published_job_ids(redis_url, f"routed-{queue}") == [other]
    stored = transport.get_job(first)
    assert stored is not None and stored.status == Status.RUNNING
    assert (stored.worker_id, stored.attempt) == ("worker-1", 1)
    assert stored.lease_token is not None and stored.lease_token == kept[0].lease_token
    assert transport.claim(first) is None  # a wake-up for it would find nothing to lease
    # the lease is a real one: it completes with its token, and it is reaped when it expires
    assert transport.complete(first, lease_token=kept[0].lease_token)


def test_a_leased_job_whose_worker_died_is_reaped_and_woken(
    transport: CeleryJobTransport, persistence: SqlPersistence, redis_url: str, queue: str
) -> None:
    job = NewJob(workflow_run_id="r", workflow_id="w", stage_id="a")
    with transport.keeping_one(None, "worker-1") as kept:
        persistence.with_transaction(lambda tx: transport.enqueue(job, tx=tx))
    assert published_job_ids(redis_url, queue) == []

    released = transport.reap_stale_jobs(threshold_ms=0).released
    assert [stale.id for stale in released] == [kept[0].id]
    assert published_job_ids(redis_url, queue) == [kept[0].id]


def test_a_rolled_back_transaction_keeps_nothing(
    transport: CeleryJobTransport, persistence: SqlPersistence, redis_url: str, queue: str
) -> None:

    def enqueue_then_fail(tx: SqlPersistence) -> None:
        transport.enqueue(NewJob(workflow_run_id="r", workflow_id="w", stage_id="a"), tx=tx)
        raise RuntimeError("rolled back")

    with transport.keeping_one(None, "worker-1") as kept, pytest.raises(RuntimeError):
        persistence.with_transaction(enqueue_then_fail)  # type: ignore[arg-type]
    assert kept == []
    assert published_job_ids(redis_url, queue) == []
    assert transport.get_jobs_by_workflow_run("r") == []
