"""Behaviour of the in-memory adapters beyond the shared conformance suites."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel

from workflow_engine.clock import SystemClock
from workflow_engine.errors import RecordNotFoundError
from workflow_engine.ports import BlobStore, EventSink, JobTransport, Persistence, Scheduler
from workflow_engine.records import LogLevel, NewJob, NewOutboxEvent, NewRun, NewStage
from workflow_engine.status import Status
from workflow_engine.testing import (
    CollectingEventSink,
    FakeClock,
    InMemoryAICallLogger,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
    NoopScheduler,
)
from workflow_engine.testing.ai_logger import topic_matches

START = datetime(2025, 1, 1, tzinfo=UTC)


def _run(**overrides: object) -> NewRun:
    return NewRun.model_validate(
        {"workflow_id": "wf", "workflow_name": "W", "workflow_type": "wf", **overrides}
    )


def _stage(run_id: str, stage_id: str, number: int = 1) -> NewStage:
    return NewStage(
        workflow_run_id=run_id,
        stage_id=stage_id,
        stage_name=stage_id,
        stage_number=number,
        execution_group=1,
    )


def _job(**overrides: object) -> NewJob:
    return NewJob.model_validate(
        {"workflow_run_id": "r", "workflow_id": "wf", "stage_id": "s", **overrides}
    )


# -- protocols ------------------------------------------------------------------------------------
def test_adapters_satisfy_their_ports() -> None:
    assert isinstance(InMemoryWorkflowPersistence(), Persistence)
    assert isinstance(InMemoryJobQueue(), JobTransport)
    assert isinstance(InMemoryBlobStore(), BlobStore)
    assert isinstance(CollectingEventSink(), EventSink)
    assert isinstance(NoopScheduler(), Scheduler)


def test_adapters_default_to_the_system_clock() -> None:
    for adapter in (InMemoryWorkflowPersistence(), InMemoryJobQueue(), InMemoryBlobStore()):
        assert isinstance(adapter.clock, SystemClock)


# -- FakeClock ------------------------------------------------------------------------------------
def test_fake_clock_starts_at_2025_utc() -> None:
    now = FakeClock().now()
    assert now == START and now.tzinfo is not None and now.utcoffset() == timedelta(0)


def test_fake_clock_advance_by_seconds_and_timedelta() -> None:
    clock = FakeClock()
    assert clock.advance(1.5) == START + timedelta(seconds=1.5)
    assert clock.advance(timedelta(minutes=1)) == START + timedelta(seconds=61.5)
    assert clock.now() == START + timedelta(seconds=61.5)


def test_fake_clock_set_and_start_convert_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    clock = FakeClock(datetime(2030, 6, 1, 12, tzinfo=plus_two))
    assert clock.now() == datetime(2030, 6, 1, 10, tzinfo=UTC) and clock.now().tzinfo is UTC
    clock.set(datetime(2031, 1, 1, tzinfo=UTC))
    assert clock.now() == datetime(2031, 1, 1, tzinfo=UTC)


def test_fake_clock_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError):
        FakeClock(datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        FakeClock().set(datetime(2025, 1, 1))


# -- CollectingEventSink and NoopScheduler --------------------------------------------------------
def test_collecting_sink_keeps_copies_in_order() -> None:
    sink = CollectingEventSink()
    first = {"type": "workflow:created", "n": 1}
    sink.emit(first)
    sink.emit({"type": "stage:completed", "n": 2})
    sink.emit({"type": "workflow:created", "n": 3})
    first["n"] = 99
    assert len(sink) == 3 and [e["n"] for e in sink.events] == [1, 2, 3]
    assert [e["n"] for e in sink.get_by_type("workflow:created")] == [1, 3]
    sink.clear()
    assert len(sink) == 0 and sink.events == []


def test_noop_scheduler_records_calls() -> None:
    scheduler = NoopScheduler()
    scheduler.schedule("stage.pollSuspended", {"run": "r"}, START, "corr-1")
    scheduler.cancel("stage.pollSuspended", "corr-1")
    assert scheduler.scheduled == [
        {
            "command_type": "stage.pollSuspended",
            "payload": {"run": "r"},
            "run_at": START,
            "correlation_id": "corr-1",
        }
    ]
    assert scheduler.cancelled == [
        {"command_type": "stage.pollSuspended", "correlation_id": "corr-1"}
    ]


# -- InMemoryJobQueue -----------------------------------------------------------------------------
def test_job_queue_default_worker_and_max_attempts() -> None:
    queue = InMemoryJobQueue("w-default", clock=FakeClock(), default_max_attempts=7)
    queue.enqueue(_job())
    job = queue.dequeue()
    assert job is not None and (job.worker_id, job.max_attempts) == ("w-default", 7)
    assert InMemoryJobQueue().worker_id.startswith("worker-")


def test_job_queue_fifo_by_insertion_at_equal_timestamps() -> None:
    queue = InMemoryJobQueue(clock=FakeClock())
    ids = [queue.enqueue(_job(stage_id=f"s{i}")) for i in range(5)]
    dequeued = [queue.dequeue() for _ in ids]
    assert [j.id for j in dequeued if j is not None] == ids


def test_job_queue_helpers() -> None:
    clock = FakeClock()
    queue = InMemoryJobQueue(clock=clock)
    first, second = queue.enqueue_parallel([_job(), _job()])
    queue.claim(first)
    assert [j.id for j in queue.get_all_jobs()] == [first, second]
    assert [j.id for j in queue.get_jobs_by_status(Status.RUNNING)] == [first]
    queue.set_job_next_poll_at(second, clock.now() + timedelta(hours=1))
    assert queue.dequeue() is None
    queue.clear()
    assert queue.get_all_jobs() == []


def test_backdated_lock_makes_a_job_stale() -> None:
    clock = FakeClock()
    queue = InMemoryJobQueue(clock=clock)
    job_id = queue.enqueue(_job())
    queue.dequeue()
    assert queue.release_stale_jobs(60_000) == 0
    queue.set_job_locked_at(job_id, clock.now() - timedelta(minutes=2))
    assert queue.release_stale_jobs(60_000) == 1
    with pytest.raises(RecordNotFoundError):
        queue.set_job_locked_at("nope", clock.now())


def test_duplicate_job_id_is_rejected() -> None:
    queue = InMemoryJobQueue()
    queue.enqueue(_job(id="j"))
    with pytest.raises(ValueError):
        queue.enqueue(_job(id="j"))


def test_exhausted_lease_message_names_the_attempts() -> None:
    clock = FakeClock()
    queue = InMemoryJobQueue(clock=clock)
    job_id = queue.enqueue(_job(max_attempts=1))
    queue.dequeue()
    clock.advance(600)
    [failed] = queue.reap_stale_jobs(60_000).exhausted
    assert failed.id == job_id
    assert failed.last_error == "Lease expired after 1 attempts: the worker was lost"


# -- InMemoryWorkflowPersistence ------------------------------------------------------------------
def test_persistence_helpers_and_clear() -> None:
    store = InMemoryWorkflowPersistence(clock=FakeClock())
    run = store.create_run(_run())
    store.create_stage(_stage(run.id, "a"))
    store.create_log(level=LogLevel.INFO, message="m", workflow_run_id=run.id)
    store.append_outbox_events(
        [
            NewOutboxEvent(
                workflow_run_id=run.id,
                event_type="t",
                payload={},
                causation_id="c",
                occurred_at=START,
            )
        ]
    )
    assert [len(store.get_all_runs()), len(store.get_all_stages())] == [1, 1]
    assert [len(store.get_all_logs()), len(store.get_all_outbox_events())] == [1, 1]
    store.clear()
    assert store.get_all_runs() == [] and store.get_all_outbox_events() == []
    assert store.get_all_stages() == [] and store.get_all_logs() == []


def test_claim_breaks_timestamp_ties_by_insertion_order() -> None:
    store = InMemoryWorkflowPersistence(clock=FakeClock())
    ids = [store.create_run(_run()).id for _ in range(5)]
    claimed = [store.claim_next_pending_run() for _ in ids]
    assert [r.id for r in claimed if r is not None] == ids


def test_ids_are_uuid4_hex() -> None:
    run = InMemoryWorkflowPersistence().create_run(_run())
    assert len(run.id) == 32 and int(run.id, 16) >= 0


def test_managed_fields_cannot_be_updated() -> None:
    store = InMemoryWorkflowPersistence()
    run = store.create_run(_run())
    with pytest.raises(ValueError, match="version"):
        store.update_run(run.id, version=10)
    stage = store.create_stage(_stage(run.id, "a"))
    with pytest.raises(ValueError):
        store.update_stage(stage.id, stage_id="b")


def test_duplicate_stage_and_mismatched_upsert_are_rejected() -> None:
    store = InMemoryWorkflowPersistence()
    store.create_stage(_stage("r", "a"))
    with pytest.raises(ValueError):
        store.create_stage(_stage("r", "a"))
    with pytest.raises(ValueError):
        store.upsert_stage("r", "b", create=_stage("r", "a"), update={})


def test_unknown_outbox_event_raises() -> None:
    store = InMemoryWorkflowPersistence()
    with pytest.raises(RecordNotFoundError):
        store.increment_outbox_retry_count("nope")
    with pytest.raises(RecordNotFoundError):
        store.move_outbox_event_to_dlq("nope")


def test_rollback_restores_insertion_order() -> None:
    store = InMemoryWorkflowPersistence(clock=FakeClock())
    first = store.create_run(_run())
    second = store.create_run(_run())

    def body(tx: Persistence) -> None:
        tx.update_run(first.id, status=Status.RUNNING)
        raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        store.with_transaction(body)
    assert [r.id for r in store.get_all_runs()] == [first.id, second.id]
    assert store.claim_next_pending_run() == store.get_run(first.id)


def test_failing_after_commit_callback_does_not_stop_the_others() -> None:
    store = InMemoryWorkflowPersistence()
    calls: list[str] = []

    def explode() -> None:
        raise RuntimeError("callback failed")

    def body(tx: Persistence) -> None:
        tx.create_run(_run(id="r1"))
        tx.after_commit(explode)
        tx.after_commit(lambda: calls.append("second"))

    with pytest.raises(RuntimeError, match="callback failed"):
        store.with_transaction(body)
    assert calls == ["second"] and store.get_run("r1") is not None


def test_transaction_is_invisible_to_other_threads_until_commit() -> None:
    store = InMemoryWorkflowPersistence()
    seen_inside: list[int] = []
    other_started = threading.Event()

    def other_thread() -> None:
        other_started.set()
        store.create_run(_run(id="other"))

    worker = threading.Thread(target=other_thread)

    def body(tx: Persistence) -> None:
        tx.create_run(_run(id="mine"))
        worker.start()
        other_started.wait(timeout=10)
        seen_inside.append(len(store.get_all_runs()))
        raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        store.with_transaction(body)
    worker.join(timeout=10)
    assert seen_inside == [1]
    assert [r.id for r in store.get_all_runs()] == ["other"]


def test_job_enqueued_with_tx_appears_only_at_commit() -> None:
    store = InMemoryWorkflowPersistence()
    queue = InMemoryJobQueue()
    seen: list[object] = []

    def body(tx: Persistence) -> str:
        job_id = queue.enqueue(_job(), tx=tx)
        seen.append(queue.get_job(job_id))
        return job_id

    job_id = store.with_transaction(body)
    assert seen == [None] and queue.get_job(job_id) is not None


# -- InMemoryBlobStore ----------------------------------------------------------------------------
def test_blob_store_size_clear_and_json_form() -> None:
    blobs = InMemoryBlobStore()
    blobs.put("a", {"when": START, "pair": (1, 2)})
    blobs.put("b", 1)
    assert blobs.size == 2
    assert blobs.get("a") == {"when": "2025-01-01T00:00:00Z", "pair": [1, 2]}
    blobs.clear()
    assert blobs.size == 0 and blobs.list("") == []


# -- InMemoryAICallLogger -------------------------------------------------------------------------
class _Call(BaseModel):
    topic: str
    model_key: str
    input_tokens: int
    output_tokens: int
    cost: float


def test_topic_matching_respects_segments() -> None:
    assert topic_matches("workflow.run1", "workflow.run1")
    assert topic_matches("workflow.run1.stage.a", "workflow.run1")
    assert not topic_matches("workflow.run10", "workflow.run1")
    assert topic_matches("workflow.run10", "workflow.")
    assert topic_matches("anything", "")


def test_ai_logger_stats_per_run_and_model() -> None:
    logger = InMemoryAICallLogger(clock=FakeClock())
    logger.log_call(
        _Call(
            topic="workflow.run1.stage.a",
            model_key="m1",
            input_tokens=10,
            output_tokens=5,
            cost=0.5,
        )
    )
    logger.log_call(
        {
            "topic": "workflow.run1.stage.b",
            "model_key": "m2",
            "input_tokens": 1,
            "output_tokens": 2,
            "cost": 0.25,
        }
    )
    logger.log_call(
        {
            "topic": "workflow.run10.stage.a",
            "model_key": "m1",
            "input_tokens": 100,
            "output_tokens": 100,
            "cost": 9.0,
        }
    )
    stats = logger.get_stats("workflow.run1")
    assert (stats["total_calls"], stats["total_input_tokens"]) == (2, 11)
    assert (stats["total_output_tokens"], stats["total_cost"]) == (7, 0.75)
    assert stats["per_model"]["m1"] == {
        "calls": 1,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": 0.5,
    }
    assert logger.get_stats("workflow")["total_calls"] == 3


def test_ai_logger_stores_copies_and_clears() -> None:
    logger = InMemoryAICallLogger(clock=FakeClock())
    call = {"topic": "t", "metadata": {"k": 1}}
    stored = logger.log_call(call)
    call["metadata"] = {"k": 2}
    assert stored["id"] and stored["created_at"] == START
    assert logger.get_all_calls()[0]["metadata"] == {"k": 1}
    logger.clear()
    assert logger.get_all_calls() == [] and logger.get_stats("t")["total_calls"] == 0


def test_ai_logger_requires_a_topic() -> None:
    with pytest.raises(ValueError):
        InMemoryAICallLogger().log_call({"cost": 1.0})
