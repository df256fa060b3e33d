"""The conformance suite of the :class:`~workflow_engine.ports.Persistence` port.

Subclass :class:`PersistenceConformance` and provide a ``persistence`` fixture built with the
suite's ``clock`` (a :class:`~workflow_engine.testing.FakeClock`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import pytest

from workflow_engine.errors import RecordNotFoundError, StaleVersionError
from workflow_engine.ports import Persistence
from workflow_engine.records import (
    IdempotencyAcquire,
    LogLevel,
    NewOutboxEvent,
    NewRun,
    NewStage,
    OutboxEventRecord,
    WorkflowRunRecord,
)
from workflow_engine.status import Status
from workflow_engine.testing.clock import FakeClock

OCCURRED_AT = datetime(2025, 1, 1, tzinfo=UTC)
LEASE_MS = 60_000


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


def new_run(**overrides: Any) -> NewRun:
    """A valid :class:`NewRun`, with ``overrides`` applied."""
    fields: dict[str, Any] = {
        "workflow_id": "wf",
        "workflow_name": "Workflow",
        "workflow_type": "wf",
        "input": {"text": "a b c"},
    }
    return NewRun(**{**fields, **overrides})


def new_stage(run_id: str, stage_id: str = "s1", group: int = 1, number: int = 1) -> NewStage:
    """A valid :class:`NewStage` of run ``run_id``."""
    return NewStage(
        workflow_run_id=run_id,
        stage_id=stage_id,
        stage_name=f"Stage {stage_id}",
        stage_number=number,
        execution_group=group,
    )


def new_event(run_id: str, event_type: str = "stage:completed", n: int = 0) -> NewOutboxEvent:
    """An outbox event of run ``run_id`` whose payload carries ``n``."""
    return NewOutboxEvent(
        workflow_run_id=run_id,
        event_type=event_type,
        payload={"type": event_type, "n": n},
        causation_id="cmd-1",
        occurred_at=OCCURRED_AT,
    )


def fail_with(fn: Callable[[Persistence], object]) -> Callable[[Persistence], NoReturn]:
    """A transaction body that runs ``fn`` and then raises :class:`Boom`."""

    def body(tx: Persistence) -> NoReturn:
        fn(tx)
        raise Boom

    return body


def running_run(persistence: Persistence, **overrides: Any) -> WorkflowRunRecord:
    """Create a run and move it to RUNNING."""
    run = persistence.create_run(new_run(**overrides))
    return persistence.update_run(run.id, status=Status.RUNNING)


def append_events(persistence: Persistence, run_id: str, count: int) -> list[OutboxEventRecord]:
    """Append ``count`` events to run ``run_id``."""
    return persistence.append_outbox_events([new_event(run_id, n=i) for i in range(count)])


class PersistenceConformance:
    """Cases every Persistence adapter must pass (fixtures: ``persistence``, ``clock``)."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The clock the adapter under test must use."""
        return FakeClock()

    # -- runs -------------------------------------------------------------------------------------
    def test_create_run_applies_defaults(self, persistence: Persistence, clock: FakeClock) -> None:
        run = persistence.create_run(new_run())
        assert run.id
        assert (run.status, run.version, run.priority) == (Status.PENDING, 1, 5)
        assert (run.config, run.total_cost, run.total_tokens) == ({}, 0.0, 0)
        assert run.created_at == clock.now() and run.updated_at == clock.now()
        assert run.input == {"text": "a b c"}
        assert run.started_at is None and run.output is None

    def test_create_run_honours_given_id_and_fields(self, persistence: Persistence) -> None:
        run = persistence.create_run(
            new_run(id="run-1", priority=9, config={"s": {"x": 1}}, metadata={"m": True})
        )
        stored = persistence.get_run("run-1")
        assert run.id == "run-1" and stored is not None
        assert (stored.priority, stored.config, stored.metadata) == (
            9,
            {"s": {"x": 1}},
            {"m": True},
        )

    def test_get_run_and_status_of_unknown_run_are_none(self, persistence: Persistence) -> None:
        assert persistence.get_run("nope") is None
        assert persistence.get_run_status("nope") is None

    def test_lock_run_reads_the_run_and_its_stages_in_a_transaction(
        self, persistence: Persistence
    ) -> None:
        run = persistence.create_run(new_run())
        bare = persistence.with_transaction(lambda tx: tx.lock_run(run.id))
        assert bare is not None and bare.run == persistence.get_run(run.id) and bare.stages == []
        for group, stage_id in ((2, "c"), (1, "b"), (1, "a")):
            persistence.create_stage(
                new_stage(run.id, stage_id=stage_id, group=group, number=group)
            )
        locked = persistence.with_transaction(lambda tx: tx.lock_run(run.id))
        assert locked is not None and locked.run == persistence.get_run(run.id)
        assert locked.stages == persistence.get_stages_by_run(run.id)
        assert [stage.execution_group for stage in locked.stages] == [1, 1, 2]
        assert persistence.with_transaction(lambda tx: tx.lock_run("nope")) is None

    def test_get_run_status(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        persistence.update_run(run.id, status=Status.FAILED)
        assert persistence.get_run_status(run.id) == Status.FAILED

    def test_update_run_changes_fields_and_bumps_version(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        run = persistence.create_run(new_run())
        clock.advance(5)
        updated = persistence.update_run(run.id, status=Status.RUNNING, started_at=clock.now())
        assert (updated.status, updated.version) == (Status.RUNNING, 2)
        assert updated.updated_at == clock.now() and updated.created_at == run.created_at
        assert persistence.get_run(run.id) == updated

    def test_update_run_accepts_mapping_and_keywords(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        updated = persistence.update_run(run.id, {"total_tokens": 7}, total_cost=1.5)
        assert (updated.total_tokens, updated.total_cost) == (7, 1.5)

    def test_update_run_leaves_unnamed_fields_alone(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        persistence.update_run(run.id, output={"words": 3}, duration=12)
        updated = persistence.update_run(run.id, status=Status.COMPLETED)
        assert updated.output == {"words": 3} and updated.duration == 12
        assert updated.input == {"text": "a b c"} and updated.version == 3

    def test_update_run_with_none_clears_a_field(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        persistence.update_run(run.id, completed_at=OCCURRED_AT, error_message="bad")
        updated = persistence.update_run(run.id, completed_at=None, error_message=None)
        assert updated.completed_at is None and updated.error_message is None

    def test_update_run_with_no_fields_still_bumps_version(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        assert persistence.update_run(run.id).version == 2

    def test_update_run_with_matching_expected_version(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        updated = persistence.update_run(run.id, expected_version=1, status=Status.RUNNING)
        assert updated.version == 2

    def test_update_run_with_stale_version_raises_and_writes_nothing(
        self, persistence: Persistence
    ) -> None:
        run = persistence.create_run(new_run())
        persistence.update_run(run.id, status=Status.RUNNING)
        with pytest.raises(StaleVersionError):
            persistence.update_run(run.id, expected_version=1, status=Status.FAILED)
        stored = persistence.get_run(run.id)
        assert stored is not None and (stored.status, stored.version) == (Status.RUNNING, 2)

    def test_update_unknown_run_raises(self, persistence: Persistence) -> None:
        with pytest.raises(RecordNotFoundError):
            persistence.update_run("nope", status=Status.RUNNING)

    def test_update_run_rejects_unknown_field(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        with pytest.raises(ValueError):
            persistence.update_run(run.id, no_such_field=1)

    def test_update_run_stores_status_strings_as_status(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        persistence.update_run(run.id, status="COMPLETED")
        stored = persistence.get_run(run.id)
        assert stored is not None and stored.status is Status.COMPLETED

    def test_run_json_is_copied_in_and_out(self, persistence: Persistence) -> None:
        given: dict[str, Any] = {"text": "a", "tags": ["x"]}
        run = persistence.create_run(new_run(input=given))
        given["tags"].append("mutated")
        run.input["tags"].append("mutated too")
        stored = persistence.get_run(run.id)
        assert stored is not None and stored.input == {"text": "a", "tags": ["x"]}

    def test_list_runs_newest_first_with_filters(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        first = persistence.create_run(new_run(workflow_id="a"))
        clock.advance(1)
        second = persistence.create_run(new_run(workflow_id="b"))
        clock.advance(1)
        third = persistence.create_run(new_run(workflow_id="a"))
        persistence.update_run(third.id, status=Status.RUNNING)
        assert [r.id for r in persistence.list_runs()] == [third.id, second.id, first.id]
        assert [r.id for r in persistence.list_runs(workflow_id="a")] == [third.id, first.id]
        assert [r.id for r in persistence.list_runs(status=Status.PENDING)] == [
            second.id,
            first.id,
        ]

    def test_list_runs_limit_and_offset(self, persistence: Persistence, clock: FakeClock) -> None:
        ids = []
        for _ in range(5):
            ids.append(persistence.create_run(new_run()).id)
            clock.advance(1)
        page = persistence.list_runs(limit=2, offset=1)
        assert [r.id for r in page] == [ids[3], ids[2]]

    # -- stuck runs and claiming ------------------------------------------------------------------
    def test_get_stuck_runs(self, persistence: Persistence, clock: FakeClock) -> None:
        stuck = running_run(persistence)
        busy = running_run(persistence)
        busy_stage = persistence.create_stage(new_stage(busy.id))
        persistence.create_run(new_run())  # PENDING: never stuck
        clock.advance(600)
        persistence.update_stage(busy_stage.id, status=Status.RUNNING)
        fresh = running_run(persistence)
        since = clock.now() - timedelta(seconds=300)
        ids = [r.id for r in persistence.get_stuck_runs(since)]
        assert ids == [stuck.id]
        assert fresh.id not in ids

    def test_get_stuck_runs_includes_run_updated_exactly_at_since(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        run = running_run(persistence)
        assert [r.id for r in persistence.get_stuck_runs(clock.now())] == [run.id]
        assert persistence.get_stuck_runs(clock.now() - timedelta(seconds=1)) == []

    def test_claim_next_pending_run_sets_running(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        run = persistence.create_run(new_run())
        clock.advance(3)
        claimed = persistence.claim_next_pending_run()
        assert claimed is not None and claimed.id == run.id
        assert (claimed.status, claimed.version) == (Status.RUNNING, 2)
        assert claimed.started_at == clock.now() and claimed.updated_at == clock.now()
        assert persistence.get_run_status(run.id) == Status.RUNNING

    def test_claim_of_a_named_run_takes_that_run_only_while_pending(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        older = persistence.create_run(new_run(priority=9))
        named = persistence.create_run(new_run())
        claimed = persistence.claim_next_pending_run(named.id)
        assert claimed is not None and claimed.id == named.id
        assert (claimed.status, claimed.version) == (Status.RUNNING, 2)
        assert persistence.get_run_status(older.id) == Status.PENDING
        assert persistence.claim_next_pending_run(named.id) is None  # no longer PENDING
        assert persistence.claim_next_pending_run("nope") is None
        assert persistence.get_run_status(older.id) == Status.PENDING

    def test_claim_returns_none_without_pending_runs(self, persistence: Persistence) -> None:
        running_run(persistence)
        assert persistence.claim_next_pending_run() is None

    def test_claim_takes_highest_priority_first(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        low = persistence.create_run(new_run(priority=1))
        clock.advance(1)
        high = persistence.create_run(new_run(priority=10))
        clock.advance(1)
        mid = persistence.create_run(new_run(priority=5))
        order = [persistence.claim_next_pending_run() for _ in range(3)]
        assert [r.id for r in order if r is not None] == [high.id, mid.id, low.id]

    def test_claim_is_fifo_within_a_priority(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        ids = []
        for _ in range(4):
            ids.append(persistence.create_run(new_run()).id)
            clock.advance(1)
        claimed = [persistence.claim_next_pending_run() for _ in range(4)]
        assert [r.id for r in claimed if r is not None] == ids

    def test_concurrent_claims_take_each_run_once(self, persistence: Persistence) -> None:
        ids = {persistence.create_run(new_run()).id for _ in range(200)}
        claimed = run_in_threads(4, persistence.claim_next_pending_run)
        assert len(claimed) == 200 and {r.id for r in claimed} == ids

    # -- stages -----------------------------------------------------------------------------------
    def test_create_stage_applies_defaults(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.create_stage(new_stage(run.id, "extract", group=2, number=3))
        assert (stage.stage_id, stage.execution_group, stage.stage_number) == ("extract", 2, 3)
        assert (stage.status, stage.attempt, stage.version) == (Status.PENDING, 0, 1)
        assert stage.created_at == clock.now() and not stage.has_output

    def test_get_stage_by_key_and_by_id(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.create_stage(new_stage(run.id, "a"))
        assert persistence.get_stage(run.id, "a") == stage
        assert persistence.get_stage_by_id(stage.id) == stage
        assert persistence.get_stage(run.id, "b") is None
        assert persistence.get_stage_by_id("nope") is None

    def test_stages_ordered_by_group_then_number(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        for stage_id, group, number in [("c", 2, 3), ("a", 1, 1), ("d", 3, 4), ("b", 2, 2)]:
            persistence.create_stage(new_stage(run.id, stage_id, group, number))
        stages = persistence.get_stages_by_run(run.id)
        assert [s.stage_id for s in stages] == ["a", "b", "c", "d"]
        descending = persistence.get_stages_by_run(run.id, descending=True)
        assert [s.stage_id for s in descending] == ["d", "c", "b", "a"]

    def test_stages_filtered_by_status_and_run(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        other = persistence.create_run(new_run())
        a = persistence.create_stage(new_stage(run.id, "a"))
        persistence.create_stage(new_stage(run.id, "b", number=2))
        persistence.create_stage(new_stage(other.id, "a"))
        persistence.update_stage(a.id, status=Status.COMPLETED)
        completed = persistence.get_stages_by_run(run.id, status=Status.COMPLETED)
        assert [s.stage_id for s in completed] == ["a"]
        assert len(persistence.get_stages_by_run(run.id)) == 2

    def test_upsert_stage_creates_when_missing(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.upsert_stage(
            run.id, "a", create=new_stage(run.id, "a"), update={"status": Status.RUNNING}
        )
        assert (stage.status, stage.version) == (Status.PENDING, 1)
        assert persistence.get_stage(run.id, "a") == stage

    def test_upsert_stage_updates_when_present(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        created = persistence.create_stage(new_stage(run.id, "a"))
        stage = persistence.upsert_stage(
            run.id, "a", create=new_stage(run.id, "a"), update={"status": Status.RUNNING}
        )
        assert (stage.id, stage.status, stage.version) == (created.id, Status.RUNNING, 2)
        assert len(persistence.get_stages_by_run(run.id)) == 1

    def test_upsert_stage_with_empty_update_returns_existing(
        self, persistence: Persistence
    ) -> None:
        run = persistence.create_run(new_run())
        created = persistence.create_stage(new_stage(run.id, "a"))
        stage = persistence.upsert_stage(run.id, "a", create=new_stage(run.id, "a"), update={})
        assert stage.id == created.id and stage.status == Status.PENDING

    def test_update_stage_changes_fields_and_bumps_version(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.create_stage(new_stage(run.id))
        clock.advance(2)
        updated = persistence.update_stage(
            stage.id, status=Status.COMPLETED, output={"words": 3}, metrics={"ms": 5}
        )
        assert (updated.status, updated.output, updated.version) == (
            Status.COMPLETED,
            {"words": 3},
            2,
        )
        assert updated.updated_at == clock.now() and updated.has_output
        assert persistence.get_stage_by_id(stage.id) == updated

    def test_update_stage_leaves_unnamed_fields_alone(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.create_stage(new_stage(run.id))
        persistence.update_stage(stage.id, {"suspended_state": {"batch": "b1"}, "poll_interval": 9})
        updated = persistence.update_stage(stage.id, status=Status.SUSPENDED)
        assert updated.suspended_state == {"batch": "b1"} and updated.poll_interval == 9

    def test_update_stage_with_stale_version_raises(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.create_stage(new_stage(run.id))
        persistence.update_stage(stage.id, expected_version=1, status=Status.RUNNING)
        with pytest.raises(StaleVersionError):
            persistence.update_stage(stage.id, expected_version=1, status=Status.FAILED)
        stored = persistence.get_stage_by_id(stage.id)
        assert stored is not None and (stored.status, stored.version) == (Status.RUNNING, 2)

    def test_update_unknown_stage_raises(self, persistence: Persistence) -> None:
        with pytest.raises(RecordNotFoundError):
            persistence.update_stage("nope", status=Status.RUNNING)

    def test_update_stage_rejects_unknown_field(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.create_stage(new_stage(run.id))
        with pytest.raises(ValueError):
            persistence.update_stage(stage.id, output_data={"x": 1})

    def test_stage_json_is_copied(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.create_stage(new_stage(run.id))
        output = {"items": [1, 2]}
        persistence.update_stage(stage.id, output=output)
        output["items"].append(3)
        stored = persistence.get_stage_by_id(stage.id)
        assert stored is not None and stored.output == {"items": [1, 2]}

    def test_get_suspended_stages_due_earliest_first(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        run = persistence.create_run(new_run())
        now = clock.now()
        polls = {
            "late": now + timedelta(seconds=30),
            "early": now - timedelta(seconds=30),
            "due": now,
            "future": now + timedelta(hours=1),
        }
        for number, (stage_id, poll_at) in enumerate(polls.items(), start=1):
            stage = persistence.create_stage(new_stage(run.id, stage_id, number=number))
            persistence.update_stage(stage.id, status=Status.SUSPENDED, next_poll_at=poll_at)
        due = persistence.get_suspended_stages(now + timedelta(seconds=30))
        assert [s.stage_id for s in due] == ["early", "due", "late"]
        assert [s.stage_id for s in persistence.get_suspended_stages(now, limit=1)] == ["early"]

    def test_get_suspended_stages_ignores_other_statuses_and_unset_poll(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        run = persistence.create_run(new_run())
        running = persistence.create_stage(new_stage(run.id, "running"))
        persistence.update_stage(running.id, status=Status.RUNNING, next_poll_at=clock.now())
        unset = persistence.create_stage(new_stage(run.id, "unset", number=2))
        persistence.update_stage(unset.id, status=Status.SUSPENDED)
        assert persistence.get_suspended_stages(clock.now() + timedelta(days=1)) == []

    def test_delete_stage_removes_it_and_its_logs(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        doomed = persistence.create_stage(new_stage(run.id, "a"))
        kept = persistence.create_stage(new_stage(run.id, "b", number=2))
        persistence.create_log(
            level=LogLevel.INFO,
            message="doomed",
            workflow_run_id=run.id,
            workflow_stage_id=doomed.id,
        )
        persistence.create_log(
            level=LogLevel.INFO, message="kept", workflow_run_id=run.id, workflow_stage_id=kept.id
        )
        persistence.delete_stage(doomed.id)
        assert persistence.get_stage(run.id, "a") is None
        assert [s.stage_id for s in persistence.get_stages_by_run(run.id)] == ["b"]
        assert [log.message for log in persistence.get_logs_by_run(run.id)] == ["kept"]

    def test_deleted_stage_can_be_created_again(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        first = persistence.create_stage(new_stage(run.id, "a"))
        persistence.delete_stage(first.id)
        again = persistence.create_stage(new_stage(run.id, "a"))
        assert again.id != first.id and persistence.get_stage(run.id, "a") == again

    # -- logs -------------------------------------------------------------------------------------
    def test_logs_by_run_in_order_with_fields(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        run = persistence.create_run(new_run())
        other = persistence.create_run(new_run())
        persistence.create_log(level=LogLevel.INFO, message="one", workflow_run_id=run.id)
        clock.advance(1)
        persistence.create_log(
            level=LogLevel.ERROR, message="two", workflow_run_id=run.id, metadata={"k": [1]}
        )
        persistence.create_log(level=LogLevel.WARN, message="other", workflow_run_id=other.id)
        logs = persistence.get_logs_by_run(run.id)
        assert [(log.level, log.message) for log in logs] == [
            (LogLevel.INFO, "one"),
            (LogLevel.ERROR, "two"),
        ]
        assert logs[1].metadata == {"k": [1]} and logs[1].created_at == clock.now()

    def test_log_without_run(self, persistence: Persistence) -> None:
        log = persistence.create_log(level=LogLevel.DEBUG, message="engine")
        assert log.workflow_run_id is None and log.id

    # -- outbox -----------------------------------------------------------------------------------
    def test_outbox_sequences_per_run(self, persistence: Persistence) -> None:
        a = persistence.append_outbox_events([new_event("ra"), new_event("rb"), new_event("ra")])
        b = persistence.append_outbox_events([new_event("ra"), new_event("rb")])
        assert [(e.workflow_run_id, e.sequence) for e in a + b] == [
            ("ra", 1),
            ("rb", 1),
            ("ra", 2),
            ("ra", 3),
            ("rb", 2),
        ]

    def test_concurrent_appenders_number_each_run_consecutively(
        self, persistence: Persistence
    ) -> None:
        appends = iter(range(40))

        def append_once() -> list[OutboxEventRecord] | None:
            if next(appends, None) is None:
                return None
            batch = [new_event("rb"), new_event("ra"), new_event("rb")]
            return persistence.append_outbox_events(batch)

        batches = run_in_threads(4, append_once)
        assert len(batches) == 40
        for batch in batches:  # each append got a run's numbers in one consecutive block
            assert batch[2].sequence == batch[0].sequence + 1
        for run_id, count in (("ra", 40), ("rb", 80)):
            stored = [e.sequence for e in persistence.get_outbox_events(run_id)]
            assert stored == list(range(1, count + 1))

    def test_outbox_numbering_continues_after_retention(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        events = append_events(persistence, "r", 2)
        persistence.mark_outbox_events_published([e.id for e in events])
        clock.advance(60)
        assert persistence.delete_published_outbox_events(clock.now()) == 2
        assert persistence.get_outbox_events("r") == []
        assert [e.sequence for e in append_events(persistence, "r", 2)] == [3, 4]

    def test_outbox_event_fields(self, persistence: Persistence, clock: FakeClock) -> None:
        [event] = persistence.append_outbox_events([new_event("r", "workflow:created", 4)])
        assert event.payload == {"type": "workflow:created", "n": 4}
        assert (event.event_type, event.causation_id) == ("workflow:created", "cmd-1")
        assert event.occurred_at == OCCURRED_AT and event.created_at == clock.now()
        assert (event.retry_count, event.published_at, event.dlq_at) == (0, None, None)
        assert event.delivered_plugins == []

    def test_unpublished_ordered_by_run_then_sequence(self, persistence: Persistence) -> None:
        persistence.append_outbox_events([new_event("r2", n=0), new_event("r1", n=1)])
        persistence.append_outbox_events([new_event("r2", n=2), new_event("r1", n=3)])
        events = persistence.get_unpublished_outbox_events()
        assert [(e.workflow_run_id, e.sequence) for e in events] == [
            ("r1", 1),
            ("r1", 2),
            ("r2", 1),
            ("r2", 2),
        ]
        assert len(persistence.get_unpublished_outbox_events(limit=3)) == 3

    def test_mark_published(self, persistence: Persistence, clock: FakeClock) -> None:
        first, second = append_events(persistence, "r", 2)
        persistence.mark_outbox_events_published([first.id])
        assert [e.id for e in persistence.get_unpublished_outbox_events()] == [second.id]
        stored = persistence.get_outbox_events("r")[0]
        assert stored.published_at == clock.now()

    def test_get_outbox_events_lists_every_state(self, persistence: Persistence) -> None:
        a, b, _ = append_events(persistence, "r", 3)
        persistence.mark_outbox_events_published([a.id])
        persistence.move_outbox_event_to_dlq(b.id)
        append_events(persistence, "other", 1)
        assert [e.sequence for e in persistence.get_outbox_events("r")] == [1, 2, 3]

    def test_claim_sets_claimed_until(self, persistence: Persistence, clock: FakeClock) -> None:
        append_events(persistence, "r", 2)
        claimed = persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        assert [e.sequence for e in claimed] == [1, 2]
        expected = clock.now() + timedelta(milliseconds=LEASE_MS)
        assert all(e.claimed_until == expected for e in claimed)

    def test_claimed_events_are_not_claimed_again_while_live(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        append_events(persistence, "r", 2)
        persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        clock.advance(59)
        assert persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS) == []

    def test_expired_claims_can_be_taken_again(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        append_events(persistence, "r", 2)
        persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        clock.advance(61)
        again = persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        assert [e.sequence for e in again] == [1, 2]

    def test_claim_limit_keeps_per_run_order(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        append_events(persistence, "r", 3)
        first = persistence.claim_outbox_events(1, now=clock.now(), lease_ms=LEASE_MS)
        assert [e.sequence for e in first] == [1]
        # Event 2 must wait for event 1, whose claim is still live.
        assert persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS) == []
        persistence.mark_outbox_events_published([first[0].id])
        rest = persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        assert [e.sequence for e in rest] == [2, 3]

    def test_two_claimers_get_disjoint_events(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        for run_id in ("r1", "r2", "r3"):
            append_events(persistence, run_id, 2)
        first = persistence.claim_outbox_events(3, now=clock.now(), lease_ms=LEASE_MS)
        second = persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        assert [(e.workflow_run_id, e.sequence) for e in first] == [
            ("r1", 1),
            ("r1", 2),
            ("r2", 1),
        ]
        assert [(e.workflow_run_id, e.sequence) for e in second] == [("r3", 1), ("r3", 2)]

    def test_concurrent_claimers_deliver_each_event_once_in_order(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        for run_number in range(10):
            append_events(persistence, f"run-{run_number}", 10)
        delivered: list[tuple[str, int]] = []
        lock = threading.Lock()

        def flush_once() -> OutboxEventRecord | None:
            claimed = persistence.claim_outbox_events(3, now=clock.now(), lease_ms=LEASE_MS)
            with lock:
                delivered.extend((e.workflow_run_id, e.sequence) for e in claimed)
            persistence.mark_outbox_events_published([e.id for e in claimed])
            return claimed[0] if claimed else None

        run_in_threads(4, flush_once)
        assert len(delivered) == 100 and len(set(delivered)) == 100
        for run_number in range(10):
            sequences = [seq for run_id, seq in delivered if run_id == f"run-{run_number}"]
            assert sequences == list(range(1, 11))

    def test_release_outbox_claims(self, persistence: Persistence, clock: FakeClock) -> None:
        events = append_events(persistence, "r", 2)
        persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        persistence.release_outbox_claims([e.id for e in events])
        assert all(e.claimed_until is None for e in persistence.get_outbox_events("r"))
        again = persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        assert len(again) == 2

    def test_published_events_are_not_claimed(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        first, second = append_events(persistence, "r", 2)
        persistence.mark_outbox_events_published([first.id])
        claimed = persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        assert [e.id for e in claimed] == [second.id]

    def test_publishing_releases_the_claim(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        [event] = append_events(persistence, "r", 1)
        persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        persistence.mark_outbox_events_published([event.id])
        stored = persistence.get_outbox_events("r")[0]
        assert stored.claimed_until is None and stored.published_at is not None

    def test_increment_retry_count_releases_the_claim(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        [event] = append_events(persistence, "r", 1)
        persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        assert persistence.increment_outbox_retry_count(event.id) == 1
        stored = persistence.get_outbox_events("r")[0]
        assert stored.claimed_until is None and stored.retry_count == 1
        persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        assert persistence.increment_outbox_retry_count(event.id) == 2

    def test_dlq_event_leaves_the_outbox(self, persistence: Persistence, clock: FakeClock) -> None:
        first, second = append_events(persistence, "r", 2)
        persistence.move_outbox_event_to_dlq(first.id)
        assert [e.id for e in persistence.get_unpublished_outbox_events()] == [second.id]
        dlq = persistence.get_dlq_events()
        assert [e.id for e in dlq] == [first.id] and dlq[0].dlq_at == clock.now()

    def test_dlq_event_does_not_block_later_events(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        first, second = append_events(persistence, "r", 2)
        persistence.move_outbox_event_to_dlq(first.id)
        claimed = persistence.claim_outbox_events(10, now=clock.now(), lease_ms=LEASE_MS)
        assert [e.id for e in claimed] == [second.id]

    def test_replay_dlq_resets_retry_count(self, persistence: Persistence) -> None:
        events = append_events(persistence, "r", 3)
        for event in events:
            persistence.increment_outbox_retry_count(event.id)
            persistence.move_outbox_event_to_dlq(event.id)
        assert persistence.replay_dlq_events(max_events=2) == 2
        assert len(persistence.get_dlq_events()) == 1
        replayed = persistence.get_unpublished_outbox_events()
        assert len(replayed) == 2 and all(e.retry_count == 0 and e.dlq_at is None for e in replayed)
        assert persistence.replay_dlq_events() == 1 and persistence.replay_dlq_events() == 0

    def test_plugin_delivery_is_remembered_once(self, persistence: Persistence) -> None:
        [event] = append_events(persistence, "r", 1)
        persistence.mark_outbox_plugin_delivered(event.id, "audit")
        persistence.mark_outbox_plugin_delivered(event.id, "metrics")
        persistence.mark_outbox_plugin_delivered(event.id, "audit")
        persistence.increment_outbox_retry_count(event.id)
        stored = persistence.get_outbox_events("r")[0]
        assert stored.delivered_plugins == ["audit", "metrics"]

    def test_delete_published_events_before(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        old, newer, pending = append_events(persistence, "r", 3)
        persistence.mark_outbox_events_published([old.id])
        clock.advance(3600)
        persistence.mark_outbox_events_published([newer.id])
        cutoff = clock.now() - timedelta(seconds=60)
        assert persistence.delete_published_outbox_events(cutoff) == 1
        assert [e.id for e in persistence.get_outbox_events("r")] == [newer.id, pending.id]
        assert persistence.delete_published_outbox_events(cutoff) == 0

    def test_outbox_payload_is_copied(self, persistence: Persistence) -> None:
        payload: dict[str, Any] = {"items": [1]}
        event = NewOutboxEvent(
            workflow_run_id="r",
            event_type="t",
            payload=payload,
            causation_id="c",
            occurred_at=OCCURRED_AT,
        )
        persistence.append_outbox_events([event])
        payload["items"].append(2)
        assert persistence.get_outbox_events("r")[0].payload == {"items": [1]}

    # -- idempotency ------------------------------------------------------------------------------
    def test_acquire_new_key(self, persistence: Persistence, clock: FakeClock) -> None:
        outcome = persistence.acquire_idempotency_key(
            "k", "run.create", now=clock.now(), stale_in_progress_after_ms=600_000
        )
        assert outcome.status == "acquired"

    def test_acquire_held_key_is_in_progress(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        _acquire(persistence, clock, "k")
        assert _acquire(persistence, clock, "k").status == "in_progress"

    def test_completed_key_replays_result(self, persistence: Persistence, clock: FakeClock) -> None:
        _acquire(persistence, clock, "k")
        persistence.complete_idempotency_key("k", "run.create", {"workflow_run_id": "r1"})
        outcome = _acquire(persistence, clock, "k")
        assert (outcome.status, outcome.result) == ("replay", {"workflow_run_id": "r1"})

    def test_stale_in_progress_key_is_reclaimed(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        _acquire(persistence, clock, "k", stale_ms=1000)
        clock.advance(0.999)
        assert _acquire(persistence, clock, "k", stale_ms=1000).status == "in_progress"
        clock.advance(0.001)
        assert _acquire(persistence, clock, "k", stale_ms=1000).status == "acquired"
        assert _acquire(persistence, clock, "k", stale_ms=1000).status == "in_progress"

    def test_in_progress_key_never_stale_without_threshold(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        _acquire(persistence, clock, "k", stale_ms=None)
        clock.advance(timedelta(days=30))
        assert _acquire(persistence, clock, "k", stale_ms=None).status == "in_progress"

    def test_completed_key_is_never_reclaimed(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        _acquire(persistence, clock, "k", stale_ms=1000)
        persistence.complete_idempotency_key("k", "run.create", 42)
        clock.advance(3600)
        outcome = _acquire(persistence, clock, "k", stale_ms=1000)
        assert (outcome.status, outcome.result) == ("replay", 42)

    def test_released_key_can_be_acquired_again(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        _acquire(persistence, clock, "k")
        persistence.release_idempotency_key("k", "run.create")
        assert _acquire(persistence, clock, "k").status == "acquired"

    def test_keys_are_scoped_by_command_type(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        _acquire(persistence, clock, "k", command_type="run.create")
        persistence.complete_idempotency_key("k", "run.create", "first")
        assert _acquire(persistence, clock, "k", command_type="job.execute").status == "acquired"
        assert _acquire(persistence, clock, "k", command_type="run.create").result == "first"

    def test_delete_old_completed_keys(self, persistence: Persistence, clock: FakeClock) -> None:
        _acquire(persistence, clock, "old")
        persistence.complete_idempotency_key("old", "run.create", 1)
        _acquire(persistence, clock, "old-in-progress")
        clock.advance(3600)
        _acquire(persistence, clock, "new")
        persistence.complete_idempotency_key("new", "run.create", 2)
        assert persistence.delete_idempotency_keys(clock.now() - timedelta(seconds=60)) == 1
        assert _acquire(persistence, clock, "old").status == "acquired"
        in_progress = _acquire(persistence, clock, "old-in-progress", stale_ms=None)
        assert in_progress.status == "in_progress"
        assert _acquire(persistence, clock, "new").status == "replay"

    def test_replayed_result_is_a_copy(self, persistence: Persistence, clock: FakeClock) -> None:
        _acquire(persistence, clock, "k")
        persistence.complete_idempotency_key("k", "run.create", {"ids": [1]})
        _acquire(persistence, clock, "k").result["ids"].append(2)
        assert _acquire(persistence, clock, "k").result == {"ids": [1]}

    # -- transactions -----------------------------------------------------------------------------
    def test_transaction_commits_and_returns_value(self, persistence: Persistence) -> None:
        def body(tx: Persistence) -> str:
            return tx.create_run(new_run(id="r1")).id

        assert persistence.with_transaction(body) == "r1"
        assert persistence.get_run("r1") is not None

    def test_rollback_reraises_the_error(self, persistence: Persistence) -> None:
        error = Boom("the one")

        def body(tx: Persistence) -> None:
            raise error

        with pytest.raises(Boom) as raised:
            persistence.with_transaction(body)
        assert raised.value is error

    def test_rollback_discards_new_runs_and_stages(self, persistence: Persistence) -> None:
        def work(tx: Persistence) -> None:
            run = tx.create_run(new_run(id="r1"))
            tx.create_stage(new_stage(run.id))
            tx.create_log(level=LogLevel.INFO, message="x", workflow_run_id=run.id)

        with pytest.raises(Boom):
            persistence.with_transaction(fail_with(work))
        assert persistence.get_run("r1") is None and persistence.list_runs() == []
        assert persistence.get_stages_by_run("r1") == []
        assert persistence.get_logs_by_run("r1") == []

    def test_rollback_restores_updated_rows(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.create_stage(new_stage(run.id))

        def work(tx: Persistence) -> None:
            tx.update_run(run.id, status=Status.RUNNING, output={"x": 1})
            tx.update_run(run.id, status=Status.FAILED)
            tx.upsert_stage(run.id, "s1", create=new_stage(run.id), update={"attempt": 4})

        with pytest.raises(Boom):
            persistence.with_transaction(fail_with(work))
        assert persistence.get_run(run.id) == run
        assert persistence.get_stage_by_id(stage.id) == stage

    def test_rollback_restores_deleted_stage(self, persistence: Persistence) -> None:
        run = persistence.create_run(new_run())
        stage = persistence.create_stage(new_stage(run.id, "a"))
        later = persistence.create_stage(new_stage(run.id, "b", number=2))
        with pytest.raises(Boom):
            persistence.with_transaction(fail_with(lambda tx: tx.delete_stage(stage.id)))
        assert persistence.get_stage(run.id, "a") == stage
        assert persistence.get_stages_by_run(run.id) == [stage, later]

    def test_rollback_discards_outbox_events_and_sequences(self, persistence: Persistence) -> None:
        append_events(persistence, "r", 1)
        with pytest.raises(Boom):
            persistence.with_transaction(fail_with(lambda tx: append_events(tx, "r", 2)))
        assert [e.sequence for e in persistence.get_outbox_events("r")] == [1]
        assert [e.sequence for e in append_events(persistence, "r", 1)] == [2]

    def test_rollback_discards_outbox_state_changes(self, persistence: Persistence) -> None:
        [event] = append_events(persistence, "r", 1)

        def work(tx: Persistence) -> None:
            tx.mark_outbox_plugin_delivered(event.id, "audit")
            tx.mark_outbox_events_published([event.id])

        with pytest.raises(Boom):
            persistence.with_transaction(fail_with(work))
        assert persistence.get_outbox_events("r") == [event]

    def test_rollback_discards_idempotency_keys(
        self, persistence: Persistence, clock: FakeClock
    ) -> None:
        def work(tx: Persistence) -> None:
            _acquire(tx, clock, "k")
            tx.complete_idempotency_key("k", "run.create", "result")

        with pytest.raises(Boom):
            persistence.with_transaction(fail_with(work))
        assert _acquire(persistence, clock, "k").status == "acquired"

    def test_after_commit_runs_after_the_body_in_order(self, persistence: Persistence) -> None:
        calls: list[str] = []

        def body(tx: Persistence) -> None:
            tx.create_run(new_run(id="r1"))
            tx.after_commit(lambda: calls.append(f"first:{persistence.get_run_status('r1')}"))
            tx.after_commit(lambda: calls.append("second"))
            calls.append("body")

        persistence.with_transaction(body)
        assert calls == ["body", "first:PENDING", "second"]

    def test_after_commit_outside_a_transaction_runs_at_once(
        self, persistence: Persistence
    ) -> None:
        calls: list[str] = []
        persistence.after_commit(lambda: calls.append("now"))
        assert calls == ["now"]

    def test_after_commit_is_dropped_on_rollback(self, persistence: Persistence) -> None:
        calls: list[str] = []
        with pytest.raises(Boom):
            persistence.with_transaction(
                fail_with(lambda tx: tx.after_commit(lambda: calls.append("never")))
            )
        assert calls == []
        persistence.with_transaction(lambda tx: tx.create_run(new_run()))
        assert calls == []

    def test_nested_transaction_joins_the_outer_one(self, persistence: Persistence) -> None:
        calls: list[str] = []

        def inner(tx: Persistence) -> None:
            tx.create_run(new_run(id="inner"))
            tx.after_commit(lambda: calls.append("inner"))

        def outer(tx: Persistence) -> None:
            tx.create_run(new_run(id="outer"))
            tx.with_transaction(inner)
            calls.append(f"inner returned, callbacks so far: {len(calls)}")

        persistence.with_transaction(outer)
        assert calls == ["inner returned, callbacks so far: 0", "inner"]
        assert persistence.get_run("inner") is not None

    def test_failure_in_nested_transaction_rolls_back_everything(
        self, persistence: Persistence
    ) -> None:
        calls: list[str] = []

        def inner(tx: Persistence) -> None:
            tx.create_run(new_run(id="inner"))
            tx.after_commit(lambda: calls.append("inner"))
            raise Boom

        def outer(tx: Persistence) -> None:
            tx.create_run(new_run(id="outer"))
            tx.with_transaction(inner)

        with pytest.raises(Boom):
            persistence.with_transaction(outer)
        assert persistence.list_runs() == [] and calls == []

    def test_work_after_a_rollback_commits_normally(self, persistence: Persistence) -> None:
        with pytest.raises(Boom):
            persistence.with_transaction(fail_with(lambda tx: tx.create_run(new_run(id="a"))))
        persistence.with_transaction(lambda tx: tx.create_run(new_run(id="b")))
        assert [r.id for r in persistence.list_runs()] == ["b"]


def _acquire(
    persistence: Persistence,
    clock: FakeClock,
    key: str,
    *,
    command_type: str = "run.create",
    stale_ms: float | None = 600_000,
) -> IdempotencyAcquire:
    return persistence.acquire_idempotency_key(
        key, command_type, now=clock.now(), stale_in_progress_after_ms=stale_ms
    )


def run_in_threads(count: int, step: Callable[[], Any]) -> list[Any]:
    """Call ``step`` from ``count`` threads until it returns ``None``; collect what it returned."""
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def worker() -> None:
        barrier.wait()
        try:
            while (item := step()) is not None:
                with lock:
                    results.append(item)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return results
