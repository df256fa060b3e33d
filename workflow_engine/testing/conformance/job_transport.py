"""The conformance suite of the :class:`~workflow_engine.ports.JobTransport` port.

Subclass :class:`JobTransportConformance` and provide ``job_transport`` and ``persistence``
fixtures built with the suite's ``clock`` (the persistence is used for the ``tx=`` cases; a SQL
queue should share its database).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NoReturn

import pytest

from workflow_engine.errors import RecordNotFoundError
from workflow_engine.ports import JobTransport, Persistence
from workflow_engine.records import JobRecord, NewJob
from workflow_engine.status import Status
from workflow_engine.testing.clock import FakeClock
from workflow_engine.testing.conformance.persistence import Boom, run_in_threads

STALE_MS = 60_000


def new_job(run_id: str = "run-1", stage_id: str = "s1", **overrides: Any) -> NewJob:
    """A valid :class:`NewJob`, with ``overrides`` applied."""
    return NewJob(workflow_run_id=run_id, workflow_id="wf", stage_id=stage_id, **overrides)


def leased(job_transport: JobTransport, worker_id: str | None = None) -> JobRecord:
    """Dequeue a job, failing the test if there is none."""
    job = job_transport.dequeue(worker_id)
    assert job is not None, "expected a job to dequeue"
    return job


def stored(job_transport: JobTransport, job_id: str) -> JobRecord:
    """The job's current row, failing the test if it is gone."""
    job = job_transport.get_job(job_id)
    assert job is not None, f"job {job_id} is missing"
    return job


class JobTransportConformance:
    """Cases every JobTransport must pass (``job_transport``, ``persistence``, ``clock``)."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The clock the adapters under test must use."""
        return FakeClock()

    # -- enqueue ----------------------------------------------------------------------------------
    def test_enqueue_creates_a_pending_job(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_id = job_transport.enqueue(new_job(payload={"k": [1]}, priority=7))
        job = stored(job_transport, job_id)
        assert (job.status, job.attempt, job.max_attempts, job.priority) == (
            Status.PENDING,
            0,
            3,
            7,
        )
        assert (job.workflow_run_id, job.workflow_id, job.stage_id) == ("run-1", "wf", "s1")
        assert job.payload == {"k": [1]} and job.created_at == clock.now()
        assert job.lease_token is None and job.worker_id is None

    def test_enqueue_defaults_priority_to_five(self, job_transport: JobTransport) -> None:
        assert stored(job_transport, job_transport.enqueue(new_job())).priority == 5

    def test_enqueue_honours_given_id_and_max_attempts(self, job_transport: JobTransport) -> None:
        job_id = job_transport.enqueue(new_job(id="job-1", max_attempts=5, queue="gpu"))
        job = stored(job_transport, "job-1")
        assert job_id == "job-1" and (job.max_attempts, job.queue) == (5, "gpu")

    def test_enqueue_parallel_returns_ids_in_order(self, job_transport: JobTransport) -> None:
        ids = job_transport.enqueue_parallel([new_job(stage_id=s) for s in ("a", "b", "c")])
        assert len(set(ids)) == 3
        assert [stored(job_transport, i).stage_id for i in ids] == ["a", "b", "c"]
        jobs = job_transport.get_jobs_by_workflow_run("run-1")
        assert sorted(j.id for j in jobs) == sorted(ids)

    def test_get_job_of_unknown_id_is_none(self, job_transport: JobTransport) -> None:
        assert job_transport.get_job("nope") is None

    def test_jobs_by_run_include_every_status(self, job_transport: JobTransport) -> None:
        done, _ = job_transport.enqueue_parallel([new_job(stage_id="a"), new_job(stage_id="b")])
        job_transport.enqueue(new_job(run_id="other"))
        job_transport.claim(done)
        job_transport.complete(done)
        jobs = job_transport.get_jobs_by_workflow_run("run-1")
        assert sorted(j.status for j in jobs) == [Status.COMPLETED, Status.PENDING]

    def test_enqueue_with_committed_transaction(
        self, job_transport: JobTransport, persistence: Persistence
    ) -> None:
        ids = persistence.with_transaction(
            lambda tx: job_transport.enqueue_parallel([new_job(), new_job()], tx=tx)
        )
        assert all(stored(job_transport, i).status == Status.PENDING for i in ids)

    def test_enqueue_with_rolled_back_transaction_leaves_no_job(
        self, job_transport: JobTransport, persistence: Persistence
    ) -> None:
        ids: list[str] = []

        def body(tx: Persistence) -> NoReturn:
            ids.extend(job_transport.enqueue_parallel([new_job(), new_job()], tx=tx))
            ids.append(job_transport.enqueue(new_job(), tx=tx))
            raise Boom

        with pytest.raises(Boom):
            persistence.with_transaction(body)
        assert len(ids) == 3 and all(job_transport.get_job(i) is None for i in ids)
        assert job_transport.get_jobs_by_workflow_run("run-1") == []
        assert job_transport.dequeue() is None

    # -- dequeue ----------------------------------------------------------------------------------
    def test_dequeue_leases_the_job(self, job_transport: JobTransport, clock: FakeClock) -> None:
        job_id = job_transport.enqueue(new_job())
        job = leased(job_transport, "w1")
        assert job.id == job_id and (job.status, job.attempt) == (Status.RUNNING, 1)
        assert job.worker_id == "w1" and job.lease_token
        assert job.locked_at == clock.now() and job.started_at == clock.now()
        assert stored(job_transport, job_id).lease_token == job.lease_token

    def test_dequeue_empty_queue_returns_none(self, job_transport: JobTransport) -> None:
        assert job_transport.dequeue() is None

    def test_running_job_is_not_dequeued_again(self, job_transport: JobTransport) -> None:
        job_transport.enqueue(new_job())
        leased(job_transport)
        assert job_transport.dequeue() is None

    def test_dequeue_prefers_higher_priority(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        for priority in (1, 10, 5, 0):
            job_transport.enqueue(new_job(stage_id=f"p{priority}", priority=priority))
            clock.advance(1)
        order = [leased(job_transport).stage_id for _ in range(4)]
        assert order == ["p10", "p5", "p1", "p0"]

    def test_dequeue_is_fifo_within_a_priority(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        for stage_id in ("a", "b", "c"):
            job_transport.enqueue(new_job(stage_id=stage_id))
            clock.advance(1)
        assert [leased(job_transport).stage_id for _ in range(3)] == ["a", "b", "c"]

    def test_scheduled_job_is_hidden_until_due(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_id = job_transport.enqueue(
            new_job(priority=10, scheduled_for=clock.now() + timedelta(seconds=30))
        )
        now_id = job_transport.enqueue(new_job(stage_id="now", priority=1))
        assert leased(job_transport).id == now_id
        assert job_transport.dequeue() is None
        clock.advance(30)
        assert leased(job_transport).id == job_id

    def test_attempt_counts_every_lease(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_id = job_transport.enqueue(new_job(max_attempts=5))
        first = leased(job_transport)
        job_transport.fail(job_id, "boom", should_retry=True)
        clock.advance(60)
        second = leased(job_transport)
        assert (first.attempt, second.attempt) == (1, 2)
        assert first.lease_token != second.lease_token
        assert second.started_at == first.started_at

    def test_dequeue_uses_the_given_worker_id(self, job_transport: JobTransport) -> None:
        job_transport.enqueue_parallel([new_job(), new_job()])
        assert leased(job_transport, "w-a").worker_id == "w-a"
        assert leased(job_transport, "w-b").worker_id == "w-b"

    # -- claim ------------------------------------------------------------------------------------
    def test_claim_leases_that_job(self, job_transport: JobTransport) -> None:
        first, second = job_transport.enqueue_parallel([new_job(), new_job(priority=9)])
        job = job_transport.claim(first, "w1")
        assert job is not None and job.id == first
        assert (job.status, job.attempt, job.worker_id) == (Status.RUNNING, 1, "w1")
        assert stored(job_transport, second).status == Status.PENDING

    def test_claim_twice_returns_none(self, job_transport: JobTransport) -> None:
        job_id = job_transport.enqueue(new_job())
        assert job_transport.claim(job_id) is not None
        assert job_transport.claim(job_id) is None
        assert stored(job_transport, job_id).attempt == 1

    def test_claim_of_unknown_or_not_due_job_returns_none(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_id = job_transport.enqueue(new_job(scheduled_for=clock.now() + timedelta(seconds=5)))
        assert job_transport.claim("nope") is None
        assert job_transport.claim(job_id) is None
        clock.advance(5)
        assert job_transport.claim(job_id) is not None

    def test_a_job_enqueued_leased_is_running_under_its_token(
        self, job_transport: JobTransport, persistence: Persistence, clock: FakeClock
    ) -> None:
        job = new_job(id="leased-1", worker_id="w-1", lease_token="t-1")
        persistence.with_transaction(lambda tx: job_transport.enqueue(job, tx=tx))
        row = stored(job_transport, "leased-1")
        assert (row.status, row.attempt, row.worker_id, row.lease_token) == (
            Status.RUNNING,
            1,
            "w-1",
            "t-1",
        )
        assert row.locked_at == row.started_at == clock.now()
        assert job_transport.claim("leased-1") is None
        assert job_transport.dequeue() is None
        assert job_transport.complete("leased-1", lease_token="t-1") is True

    def test_a_job_enqueued_leased_is_reaped_when_its_lease_expires(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_transport.enqueue(new_job(id="leased-1", worker_id="w-1", lease_token="t-1"))
        clock.advance(61)
        assert [j.id for j in job_transport.reap_stale_jobs(STALE_MS).released] == ["leased-1"]
        again = leased(job_transport, "rescuer")
        assert (again.id, again.attempt, again.worker_id) == ("leased-1", 2, "rescuer")

    # -- complete / suspend / fail ----------------------------------------------------------------
    def test_complete_with_current_lease(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_transport.enqueue(new_job())
        job = leased(job_transport)
        clock.advance(3)
        assert job_transport.complete(job.id, lease_token=job.lease_token) is True
        done = stored(job_transport, job.id)
        assert done.status == Status.COMPLETED and done.completed_at == clock.now()
        assert done.lease_token is None

    def test_complete_in_a_transaction_takes_effect_only_if_it_commits(
        self, job_transport: JobTransport, persistence: Persistence
    ) -> None:
        job_transport.enqueue(new_job())
        job = leased(job_transport)

        def body(tx: Persistence) -> NoReturn:
            assert job_transport.complete(job.id, lease_token=job.lease_token, tx=tx) is True
            raise Boom

        with pytest.raises(Boom):
            persistence.with_transaction(body)
        assert stored(job_transport, job.id).status == Status.RUNNING
        persistence.with_transaction(
            lambda tx: job_transport.complete(job.id, lease_token=job.lease_token, tx=tx)
        )
        assert stored(job_transport, job.id).status == Status.COMPLETED

    def test_complete_with_wrong_lease_changes_nothing(self, job_transport: JobTransport) -> None:
        job_transport.enqueue(new_job())
        job = leased(job_transport)
        assert job_transport.complete(job.id, lease_token="not-the-lease") is False
        assert stored(job_transport, job.id) == job

    def test_complete_accepts_a_suspended_job_without_lease(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_transport.enqueue(new_job())
        job = leased(job_transport)
        job_transport.suspend(job.id, clock.now() + timedelta(minutes=1))
        assert job_transport.complete(job.id, lease_token=job.lease_token) is False
        assert job_transport.complete(job.id) is True
        assert stored(job_transport, job.id).status == Status.COMPLETED

    def test_stale_worker_cannot_finish_a_job_leased_again(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_transport.enqueue(new_job())
        lost = leased(job_transport, "lost")
        clock.advance(120)
        job_transport.reap_stale_jobs(STALE_MS)
        current = leased(job_transport, "current")
        assert job_transport.complete(lost.id, lease_token=lost.lease_token) is False
        assert job_transport.fail(lost.id, "late", lease_token=lost.lease_token) is False
        assert job_transport.touch_job(lost.id, lease_token=lost.lease_token) is False
        assert job_transport.complete(current.id, lease_token=current.lease_token) is True

    def test_suspend_parks_the_job(self, job_transport: JobTransport, clock: FakeClock) -> None:
        job_transport.enqueue(new_job())
        job = leased(job_transport)
        poll_at = clock.now() + timedelta(minutes=1)
        assert job_transport.suspend(job.id, poll_at, lease_token=job.lease_token) is True
        parked = stored(job_transport, job.id)
        assert (parked.status, parked.next_poll_at) == (Status.SUSPENDED, poll_at)
        assert parked.lease_token is None and parked.locked_at is None
        clock.advance(3600)
        assert job_transport.dequeue() is None

    def test_suspend_needs_the_current_lease(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_id = job_transport.enqueue(new_job())
        assert job_transport.suspend(job_id, clock.now()) is False
        job = leased(job_transport)
        assert job_transport.suspend(job.id, clock.now(), lease_token="stale") is False
        assert stored(job_transport, job.id).status == Status.RUNNING

    def test_fail_with_retry_backs_off_two_to_the_attempt(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_id = job_transport.enqueue(new_job(max_attempts=5))
        job = leased(job_transport)
        assert job_transport.fail(job_id, "boom", True, lease_token=job.lease_token) is True
        retry = stored(job_transport, job_id)
        assert (retry.status, retry.last_error, retry.attempt) == (Status.PENDING, "boom", 1)
        assert retry.next_poll_at == clock.now() + timedelta(seconds=2)
        assert retry.lease_token is None and retry.locked_at is None
        clock.advance(1.999)
        assert job_transport.dequeue() is None
        clock.advance(0.001)
        leased(job_transport)
        job_transport.fail(job_id, "again", should_retry=True)
        assert stored(job_transport, job_id).next_poll_at == clock.now() + timedelta(seconds=4)

    def test_fail_without_retry_is_final(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_id = job_transport.enqueue(new_job())
        leased(job_transport)
        assert job_transport.fail(job_id, "fatal") is True
        failed = stored(job_transport, job_id)
        assert (failed.status, failed.last_error) == (Status.FAILED, "fatal")
        assert failed.completed_at == clock.now()

    def test_fail_with_retry_stops_at_max_attempts(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_id = job_transport.enqueue(new_job(max_attempts=2))
        for _ in range(2):
            clock.advance(3600)
            leased(job_transport)
            job_transport.fail(job_id, "boom", should_retry=True)
        failed = stored(job_transport, job_id)
        assert (failed.status, failed.attempt) == (Status.FAILED, 2)
        clock.advance(3600)
        assert job_transport.dequeue() is None

    def test_fail_of_a_job_not_running_does_nothing(self, job_transport: JobTransport) -> None:
        job_id = job_transport.enqueue(new_job())
        assert job_transport.fail(job_id, "boom") is False
        assert stored(job_transport, job_id).status == Status.PENDING

    def test_unknown_job_raises(self, job_transport: JobTransport, clock: FakeClock) -> None:
        with pytest.raises(RecordNotFoundError):
            job_transport.complete("nope")
        with pytest.raises(RecordNotFoundError):
            job_transport.suspend("nope", clock.now())
        with pytest.raises(RecordNotFoundError):
            job_transport.fail("nope", "boom")

    # -- leases, heartbeats and stale jobs --------------------------------------------------------
    def test_touch_job_keeps_the_lease_alive(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_transport.enqueue(new_job())
        job = leased(job_transport)
        for _ in range(5):
            clock.advance(50)
            assert job_transport.touch_job(job.id, lease_token=job.lease_token) is True
        assert stored(job_transport, job.id).locked_at == clock.now()
        assert job_transport.release_stale_jobs(STALE_MS) == 0
        assert stored(job_transport, job.id).status == Status.RUNNING

    def test_touch_job_needs_a_running_job(self, job_transport: JobTransport) -> None:
        job_id = job_transport.enqueue(new_job())
        assert job_transport.touch_job(job_id) is False
        assert job_transport.touch_job("nope") is False

    def test_reap_releases_expired_leases(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_transport.enqueue_parallel([new_job(), new_job(stage_id="b")])
        old = leased(job_transport)
        clock.advance(61)
        fresh = leased(job_transport)
        stale = job_transport.reap_stale_jobs(STALE_MS)
        assert [j.id for j in stale.released] == [old.id] and stale.exhausted == []
        released = stored(job_transport, old.id)
        assert (released.status, released.attempt) == (Status.PENDING, 1)
        assert released.lease_token is None and released.locked_at is None
        assert stored(job_transport, fresh.id).status == Status.RUNNING

    def test_released_job_is_leased_again_with_next_attempt(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_transport.enqueue(new_job(payload={"keep": True}))
        first = leased(job_transport, "crashed")
        clock.advance(61)
        assert job_transport.release_stale_jobs(STALE_MS) == 1
        second = leased(job_transport, "rescuer")
        assert (second.id, second.attempt, second.worker_id) == (first.id, 2, "rescuer")
        assert second.payload == {"keep": True}

    def test_reap_fails_jobs_out_of_attempts(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_id = job_transport.enqueue(new_job(max_attempts=1))
        leased(job_transport)
        clock.advance(61)
        stale = job_transport.reap_stale_jobs(STALE_MS)
        assert stale.released == [] and [j.id for j in stale.exhausted] == [job_id]
        failed = stored(job_transport, job_id)
        assert failed.status == Status.FAILED and failed.completed_at == clock.now()
        assert failed.last_error and "Lease expired" in failed.last_error

    def test_release_stale_jobs_counts_both_outcomes_and_defaults_to_five_minutes(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        job_transport.enqueue_parallel([new_job(max_attempts=1), new_job(max_attempts=3)])
        leased(job_transport)
        leased(job_transport)
        clock.advance(299)
        assert job_transport.release_stale_jobs() == 0
        clock.advance(2)
        assert job_transport.release_stale_jobs() == 2
        statuses = sorted(j.status for j in job_transport.get_jobs_by_workflow_run("run-1"))
        assert statuses == [Status.FAILED, Status.PENDING]

    def test_reap_ignores_jobs_not_running(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        pending, suspended, done = job_transport.enqueue_parallel([new_job() for _ in range(3)])
        job_transport.claim(suspended)
        job_transport.suspend(suspended, clock.now())
        job_transport.claim(done)
        job_transport.complete(done)
        clock.advance(3600)
        stale = job_transport.reap_stale_jobs(STALE_MS)
        assert stale.released == [] and stale.exhausted == []
        assert [stored(job_transport, i).status for i in (pending, suspended, done)] == [
            Status.PENDING,
            Status.SUSPENDED,
            Status.COMPLETED,
        ]

    # -- cancel and close -------------------------------------------------------------------------
    def test_cancel_by_run(self, job_transport: JobTransport, clock: FakeClock) -> None:
        pending, suspended, running, done = job_transport.enqueue_parallel(
            [new_job(stage_id=s) for s in ("p", "s", "r", "d")]
        )
        other = job_transport.enqueue(new_job(run_id="other"))
        for job_id in (suspended, running, done):
            job_transport.claim(job_id)
        job_transport.suspend(suspended, clock.now())
        job_transport.complete(done)
        assert job_transport.cancel_by_run("run-1") == 2
        statuses = [stored(job_transport, i).status for i in (pending, suspended, running, done)]
        assert statuses == [Status.CANCELLED, Status.CANCELLED, Status.RUNNING, Status.COMPLETED]
        assert stored(job_transport, other).status == Status.PENDING

    def test_close_suspended_ends_one_stage(
        self, job_transport: JobTransport, clock: FakeClock
    ) -> None:
        target, sibling, pending = job_transport.enqueue_parallel(
            [new_job(stage_id="a"), new_job(stage_id="b"), new_job(stage_id="a")]
        )
        for job_id in (target, sibling):
            job_transport.claim(job_id)
            job_transport.suspend(job_id, clock.now())
        assert job_transport.close_suspended("run-1", "a", Status.FAILED) == 1
        assert stored(job_transport, target).status == Status.FAILED
        assert stored(job_transport, sibling).status == Status.SUSPENDED
        assert stored(job_transport, pending).status == Status.PENDING
        assert job_transport.close_suspended("run-1", "a", Status.COMPLETED) == 0

    # -- due jobs and concurrency -----------------------------------------------------------------
    def test_get_due_pending_jobs(self, job_transport: JobTransport, clock: FakeClock) -> None:
        low, high, _later, running = job_transport.enqueue_parallel(
            [
                new_job(priority=1),
                new_job(priority=9),
                new_job(priority=10, scheduled_for=clock.now() + timedelta(seconds=10)),
                new_job(priority=10),
            ]
        )
        job_transport.claim(running)
        assert [j.id for j in job_transport.get_due_pending_jobs()] == [high, low]
        assert [j.id for j in job_transport.get_due_pending_jobs(limit=1)] == [high]
        assert stored(job_transport, high).status == Status.PENDING

    def test_payload_is_copied(self, job_transport: JobTransport) -> None:
        payload: dict[str, Any] = {"items": [1]}
        job_id = job_transport.enqueue(new_job(payload=payload))
        payload["items"].append(2)
        assert stored(job_transport, job_id).payload == {"items": [1]}

    def test_concurrent_dequeues_lease_each_job_once(self, job_transport: JobTransport) -> None:
        ids = job_transport.enqueue_parallel([new_job(stage_id=f"s{i}") for i in range(500)])
        jobs = run_in_threads(4, job_transport.dequeue)
        assert len(jobs) == 500 and {j.id for j in jobs} == set(ids)
        assert all(j.attempt == 1 for j in jobs)
