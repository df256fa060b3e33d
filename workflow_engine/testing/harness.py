"""A whole engine in memory, for testing workflows: kernel, adapters, host and a fake clock."""

from __future__ import annotations

from typing import Any

from workflow_engine.ai.logger import AICallLogger
from workflow_engine.definitions.registry import WorkflowRegistry
from workflow_engine.definitions.workflow import Workflow
from workflow_engine.hosts.serverless import ServerlessHost, create_serverless_host
from workflow_engine.kernel import Kernel, create_kernel
from workflow_engine.kernel.commands import OutboxFlush, RunCreate
from workflow_engine.ports import EventSink
from workflow_engine.records import WorkflowRunRecord, WorkflowStageRecord
from workflow_engine.status import TERMINAL_RUN_STATUSES, Status
from workflow_engine.testing.ai_logger import InMemoryAICallLogger
from workflow_engine.testing.clock import FakeClock
from workflow_engine.testing.memory_blobs import InMemoryBlobStore
from workflow_engine.testing.memory_jobs import InMemoryJobQueue
from workflow_engine.testing.memory_persistence import InMemoryWorkflowPersistence
from workflow_engine.testing.sinks import CollectingEventSink, NoopScheduler


class WorkflowTestHarness:
    """Runs workflows end to end in memory, with time under the test's control.

    >>> harness = WorkflowTestHarness(my_workflow)
    >>> run = harness.run("my-workflow", {"text": "a b"})
    >>> run.status, run.output

    ``run`` drives a run to a terminal state: it claims, executes jobs, and when only
    suspended stages remain it advances the fake clock to their next poll. ``events`` holds
    the flushed outbox events (when no ``event_sink`` is given). ``ai_logger`` is where
    ``ctx.ai`` logs (an :class:`InMemoryAICallLogger` unless ``ai_call_logger=`` is given).
    """

    def __init__(
        self,
        *workflows: Workflow[Any, Any],
        clock: FakeClock | None = None,
        event_sink: EventSink | None = None,
        worker_id: str = "test-worker",
        host_options: dict[str, Any] | None = None,
        **kernel_options: Any,
    ) -> None:
        self.clock = clock or FakeClock()
        self.registry = WorkflowRegistry(workflows)
        self.persistence = InMemoryWorkflowPersistence(clock=self.clock)
        self.jobs = InMemoryJobQueue(worker_id, clock=self.clock)
        self.blobs = InMemoryBlobStore()
        self.events = CollectingEventSink()
        self.scheduler = NoopScheduler()
        kernel_options.setdefault("ai_call_logger", InMemoryAICallLogger(clock=self.clock))
        self.ai_logger: AICallLogger = kernel_options["ai_call_logger"]
        self.kernel: Kernel = create_kernel(
            persistence=self.persistence,
            blob_store=self.blobs,
            job_transport=self.jobs,
            event_sink=event_sink or self.events,
            scheduler=self.scheduler,
            clock=self.clock,
            registry=self.registry,
            **kernel_options,
        )
        self.host: ServerlessHost = create_serverless_host(
            kernel=self.kernel,
            job_transport=self.jobs,
            worker_id=worker_id,
            **(host_options or {}),
        )

    def create_run(
        self,
        workflow_id: str,
        input: Any,
        *,
        config: dict[str, Any] | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Create a PENDING run and return its id."""
        result = self.kernel.dispatch(
            RunCreate(
                idempotency_key=idempotency_key
                or f"harness-{len(self.persistence.get_all_runs())}",
                workflow_id=workflow_id,
                input=input,
                config=config,
                priority=priority,
            )
        )
        return result.workflow_run_id

    def drive(self, run_id: str, *, max_rounds: int = 1000) -> WorkflowRunRecord:
        """Work on the run until it is COMPLETED, FAILED or CANCELLED; return it."""
        for _ in range(max_rounds):
            run = self.get_run(run_id)
            if run.status in TERMINAL_RUN_STATUSES:
                self.flush()
                return run
            if self.step():
                continue
            if not self._advance_to_next_due(run_id):
                raise RuntimeError(f"run {run_id} is {run.status} and nothing can move it")
        raise RuntimeError(f"run {run_id} did not finish in {max_rounds} rounds")

    def run(self, workflow_id: str, input: Any, **options: Any) -> WorkflowRunRecord:
        """Create a run and drive it to a terminal state."""
        return self.drive(self.create_run(workflow_id, input, **options))

    def step(self) -> bool:
        """One maintenance tick plus every ready job; return whether anything happened."""
        tick = self.host.run_maintenance_tick()
        processed = self.host.process_available_jobs(max_jobs=10_000).processed
        return bool(processed or tick.claimed or tick.suspended_checked or tick.stale_released)

    def flush(self) -> int:
        """Deliver outbox events to the event sink; return how many."""
        return self.kernel.dispatch(OutboxFlush(max_events=10_000)).published

    def get_run(self, run_id: str) -> WorkflowRunRecord:
        run = self.persistence.get_run(run_id)
        if run is None:
            raise KeyError(f"no run {run_id}")
        return run

    def get_stages(self, run_id: str) -> list[WorkflowStageRecord]:
        return self.persistence.get_stages_by_run(run_id)

    def _advance_to_next_due(self, run_id: str) -> bool:
        due_times = [
            stage.next_poll_at
            for stage in self.get_stages(run_id)
            if stage.status == Status.SUSPENDED and stage.next_poll_at is not None
        ]
        due_times += [
            job.next_poll_at
            for job in self.jobs.get_jobs_by_workflow_run(run_id)
            if job.status == Status.PENDING and job.next_poll_at is not None
        ]
        if not due_times:
            return False
        self.clock.set(max(self.clock.now(), min(due_times)))
        return True
