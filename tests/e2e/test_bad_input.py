"""Bad input through Celery: typed errors for the caller, nothing half-written, and malformed
messages are logged while the worker keeps serving (guarantee 7)."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection

from tests.e2e.harness import wait_until
from workflow_engine import InvalidConfigError, InvalidInputError, WorkflowNotFoundError
from workflow_engine.celery.publisher import DISPATCH_COMMAND, EXECUTE_JOB

pytestmark = pytest.mark.e2e

TABLES = ("workflow_runs", "workflow_stages", "job_queue", "outbox_events", "idempotency_keys")


def row_counts(db) -> dict[str, int]:
    return {table: db.scalar(f"SELECT count(*) FROM {table}") for table in TABLES}


def test_bad_input_raises_typed_errors_and_writes_nothing(client, db):
    with pytest.raises(WorkflowNotFoundError, match="no-such-workflow"):
        client.create_run("no-such-workflow", {"order_id": "o-1", "quantity": 1})
    with pytest.raises(InvalidInputError) as invalid:
        client.create_run("typed", {"order_id": "", "quantity": 0}, idempotency_key="k-1")
    message = str(invalid.value)
    assert "order_id" in message and "quantity" in message, message
    with pytest.raises(InvalidConfigError, match="start"):
        client.create_run("fanout", {"n": 1}, config={"start": {"dir": ["not", "a", "str"]}})

    assert row_counts(db) == dict.fromkeys(TABLES, 0)
    # The failed key was not burnt: the same key with good input creates the run.
    run_id = client.create_run("typed", {"order_id": "o-1", "quantity": 2}, idempotency_key="k-1")
    assert client.get_run(run_id).status == "PENDING"


def publish_raw(broker_url: str, queue: str, body: bytes, headers: dict) -> None:
    """Put a message on the workers' queue by hand, bypassing Celery's serialisation."""
    with Connection(broker_url) as connection:
        producer = connection.Producer()
        producer.publish(
            body,
            exchange="",
            routing_key=queue,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            retry=True,
        )


def test_malformed_messages_are_logged_and_the_worker_keeps_serving(cluster, workers, client, db):
    (worker,) = workers(1, concurrency=2)
    send = client.app.send_task
    send(EXECUTE_JOB, args=[123], queue=cluster.queue)  # not a job id
    send(EXECUTE_JOB, args=[], queue=cluster.queue)  # missing argument
    send(EXECUTE_JOB, args=["no-such-job"], queue=cluster.queue)  # unknown job
    send(DISPATCH_COMMAND, args=[{"type": "run.explode"}], queue=cluster.queue)
    send(DISPATCH_COMMAND, args=["garbage"], queue=cluster.queue)
    send(DISPATCH_COMMAND, args=[{"type": "run.create", "workflow_id": 5}], queue=cluster.queue)
    send("workflow_engine.no_such_task", args=[1], queue=cluster.queue)
    task_id = str(uuid.uuid4())
    publish_raw(  # a body that is not JSON at all
        cluster.broker_url,
        cluster.queue,
        b"{this is not json",
        {"task": EXECUTE_JOB, "id": task_id, "lang": "py", "argsrepr": "", "kwargsrepr": ""},
    )

    # A good run behind them completes: the worker kept consuming.
    run_id = client.create_run("typed", {"order_id": "o-9", "quantity": 3})
    view = client.wait(run_id, timeout=60)
    assert view.status == "COMPLETED"
    assert view.output == {"order_id": "o-9", "total": 21}
    assert worker.alive()

    log = wait_until(
        lambda: (text := worker.log()).count("InvalidCommandError") >= 3 and text,
        timeout=30,
        what="the malformed commands to be logged",
        diagnose=worker.tail,
    )
    assert "execute_job needs a job id, got 123" in log
    assert "missing 1 required positional argument: 'job_id'" in log
    assert "Received unregistered task of type 'workflow_engine.no_such_task'" in log
    assert "Can't decode message body" in log and task_id in log
    assert log.count(": 'skipped'") == 1  # the unknown job id: nothing to lease
    # Nothing was written by the garbage: only the good run and its own rows.
    assert db.scalar("SELECT count(*) FROM workflow_runs") == 1
    assert db.scalar("SELECT count(*) FROM job_queue") == 1
    assert db.scalar("SELECT count(DISTINCT workflow_run_id) FROM outbox_events") == 1
