"""Shared fixtures for the kernel command tests.

``env`` is a kernel over in-memory adapters with a ``FakeClock``, a ``CollectingEventSink`` and a
``NoopScheduler``, plus a few workflows whose stages report to a ``Probe``:

* ``one-stage``: ``count`` (``{"text"}`` -> ``{"words"}``)
* ``two-stage``: ``count`` then ``double`` (``{"words"}`` -> ``{"value"}``)
* ``parallel``: ``left`` and ``right`` in one group, then ``join``
* ``fan-out``: ``left`` and ``right`` in one group, and nothing after
* ``async-batch``: ``batch`` (suspends; see ``Probe.check``) then ``double``
* ``failing``: ``explode`` (raises ``ValueError("boom")``) then ``double``

A test steers a stage through ``env.probe.hooks[stage_id] = fn(ctx)`` (run before the stage
returns) and watches it through ``env.probe.calls``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from tests.unit.kernel.sql_backend import SqlBackend
from workflow_engine import (
    CompletionCheck,
    StageContext,
    Suspend,
    Workflow,
    WorkflowBuilder,
    WorkflowRegistry,
    define_async_batch_stage,
    define_stage,
)
from workflow_engine.kernel import Kernel, create_kernel
from workflow_engine.kernel.commands import (
    JobExecute,
    JobExecuteResult,
    RunClaimPending,
    RunClaimPendingResult,
    RunCreate,
    RunTransition,
    RunTransitionResult,
    StagePollSuspended,
    StagePollSuspendedResult,
)
from workflow_engine.ports import EventSink
from workflow_engine.records import JobRecord, WorkflowRunRecord, WorkflowStageRecord
from workflow_engine.status import TERMINAL_RUN_STATUSES, Status
from workflow_engine.testing import (
    CollectingEventSink,
    FakeClock,
    InMemoryBlobStore,
    InMemoryJobQueue,
    InMemoryWorkflowPersistence,
    NoopScheduler,
)

TEXT = {"text": "a b c"}


# -- models ---------------------------------------------------------------------------------------
class TextIn(BaseModel):
    text: str


class WordCount(BaseModel):
    words: int


class Letters(BaseModel):
    letters: int


class Doubled(BaseModel):
    value: int


class Joined(BaseModel):
    left: WordCount
    right: Letters


class Summary(BaseModel):
    total: int


class CountConfig(BaseModel):
    multiplier: int = 1
    label: str = "count"


# -- the probe ------------------------------------------------------------------------------------
@dataclass
class Call:
    stage_id: str
    input: Any
    config: Any
    attempt: int
    idempotency_key: str
    workflow_context: dict[str, Any]


@dataclass
class Probe:
    """Records every stage call and lets a test hook into it."""

    calls: list[Call] = field(default_factory=list)
    hooks: dict[str, Callable[[StageContext[Any, Any]], Any]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    check: Callable[[dict[str, Any], StageContext[Any, Any]], CompletionCheck[Any]] = field(
        default=lambda state, ctx: CompletionCheck(ready=True, output={"words": 7})
    )
    suspend: Suspend = field(
        default_factory=lambda: Suspend(
            state={"batch_id": "b-1"}, poll_interval=timedelta(seconds=30), max_wait=3600
        )
    )

    def enter(self, ctx: StageContext[Any, Any]) -> Any:
        self.calls.append(
            Call(
                stage_id=ctx.stage_id,
                input=ctx.input,
                config=ctx.config,
                attempt=ctx.attempt,
                idempotency_key=ctx.idempotency_key,
                workflow_context=dict(ctx.workflow_context),
            )
        )
        hook = self.hooks.get(ctx.stage_id)
        return hook(ctx) if hook is not None else None

    def called(self, stage_id: str) -> int:
        return sum(1 for call in self.calls if call.stage_id == stage_id)


def build_workflows(probe: Probe) -> list[Workflow[Any, Any]]:
    """The shared workflows, wired to ``probe``."""

    def count_words(ctx: StageContext[TextIn, CountConfig]) -> Any:
        override = probe.enter(ctx)
        if override is not None:
            return override
        return WordCount(words=len(ctx.input.text.split()) * ctx.config.multiplier)

    count = define_stage(
        id="count",
        name="Count words",
        input=TextIn,
        output=WordCount,
        config=CountConfig,
        execute=count_words,
    )

    def double_words(ctx: StageContext[WordCount, Any]) -> Any:
        override = probe.enter(ctx)
        return override if override is not None else Doubled(value=ctx.input.words * 2)

    double = define_stage(
        id="double", name="Double", input=WordCount, output=Doubled, execute=double_words
    )

    def count_left(ctx: StageContext[TextIn, Any]) -> Any:
        override = probe.enter(ctx)
        return override if override is not None else WordCount(words=len(ctx.input.text.split()))

    def count_right(ctx: StageContext[TextIn, Any]) -> Any:
        override = probe.enter(ctx)
        letters = len(ctx.input.text.replace(" ", ""))
        return override if override is not None else Letters(letters=letters)

    def join_both(ctx: StageContext[Joined, Any]) -> Any:
        override = probe.enter(ctx)
        total = ctx.input.left.words + ctx.input.right.letters
        return override if override is not None else Summary(total=total)

    left = define_stage(id="left", name="Left", input=TextIn, output=WordCount, execute=count_left)
    right = define_stage(
        id="right", name="Right", input=TextIn, output=Letters, execute=count_right
    )
    join = define_stage(id="join", name="Join", input=Joined, output=Summary, execute=join_both)

    def submit_batch(ctx: StageContext[TextIn, Any]) -> Any:
        override = probe.enter(ctx)
        return override if override is not None else probe.suspend

    def check_batch(state: dict[str, Any], ctx: StageContext[Any, Any]) -> Any:
        probe.checks.append({"state": state, "stage_id": ctx.stage_id, "attempt": ctx.attempt})
        return probe.check(state, ctx)

    batch = define_async_batch_stage(
        id="batch",
        name="Batch",
        input=TextIn,
        output=WordCount,
        execute=submit_batch,
        check_completion=check_batch,
    )

    def explode_now(ctx: StageContext[TextIn, Any]) -> Any:
        override = probe.enter(ctx)
        if override is not None:
            return override
        raise ValueError("boom")

    explode = define_stage(
        id="explode", name="Explode", input=TextIn, output=WordCount, execute=explode_now
    )

    def workflow(workflow_id: str) -> WorkflowBuilder[TextIn, Any]:
        return WorkflowBuilder(workflow_id, workflow_id.title(), input=TextIn)

    return [
        workflow("one-stage").pipe(count).build(),
        workflow("two-stage").pipe(count).pipe(double).build(),
        workflow("parallel").parallel([left, right]).pipe(join).build(),
        workflow("fan-out").parallel([left, right]).build(),
        workflow("async-batch").pipe(batch).pipe(double).build(),
        workflow("failing").pipe(explode).pipe(double).build(),
    ]


# -- the kernel environment -----------------------------------------------------------------------
@dataclass
class KernelEnv:
    """A kernel over in-memory adapters, with helpers that keep tests short."""

    clock: FakeClock
    persistence: InMemoryWorkflowPersistence
    jobs: InMemoryJobQueue
    blobs: InMemoryBlobStore
    sink: CollectingEventSink
    scheduler: NoopScheduler
    registry: WorkflowRegistry
    probe: Probe
    kernel: Kernel

    # commands
    def create(
        self,
        workflow_id: str = "one-stage",
        input: Any = None,
        *,
        key: str | None = None,
        **kw: Any,
    ) -> str:
        key = key or f"create-{len(self.persistence.get_all_runs())}"
        result = self.kernel.dispatch(
            RunCreate(
                idempotency_key=key,
                workflow_id=workflow_id,
                input=TEXT if input is None else input,
                **kw,
            )
        )
        return result.workflow_run_id

    def claim(self, max_claims: int = 10, worker_id: str = "worker-1") -> RunClaimPendingResult:
        return self.kernel.dispatch(RunClaimPending(worker_id=worker_id, max_claims=max_claims))

    def start(self, workflow_id: str = "one-stage", input: Any = None, **kw: Any) -> str:
        """Create a run and claim it (group 1 stages PENDING, their jobs queued)."""
        run_id = self.create(workflow_id, input, **kw)
        claimed = self.claim()
        assert [c.workflow_run_id for c in claimed.claimed] == [run_id]
        return run_id

    def execute(self, run_id: str, stage_id: str, **kw: Any) -> JobExecuteResult:
        run = self.run(run_id)
        kw.setdefault("config", run.config)
        return self.kernel.dispatch(
            JobExecute(workflow_run_id=run_id, workflow_id=run.workflow_id, stage_id=stage_id, **kw)
        )

    def transition(self, run_id: str) -> RunTransitionResult:
        return self.kernel.dispatch(RunTransition(workflow_run_id=run_id))

    def poll(self, **kw: Any) -> StagePollSuspendedResult:
        return self.kernel.dispatch(StagePollSuspended(**kw))

    # a minimal host: lease, execute, settle the job row, transition
    def process(self, job: JobRecord) -> JobExecuteResult:
        result = self.kernel.dispatch(
            JobExecute(
                workflow_run_id=job.workflow_run_id,
                workflow_id=job.workflow_id,
                stage_id=job.stage_id,
                config=job.payload.get("config") or {},
                idempotency_key=f"job:{job.id}:attempt:{job.attempt}",
                job_id=job.id,
                lease_token=job.lease_token,
            )
        )
        if result.outcome == "completed":
            self.jobs.complete(job.id, lease_token=job.lease_token)
        elif result.outcome == "suspended":
            assert result.next_poll_at is not None
            self.jobs.suspend(job.id, result.next_poll_at, lease_token=job.lease_token)
        else:
            retry = not result.ghost and result.retryable is not False
            self.jobs.fail(
                job.id, result.error or "", should_retry=retry, lease_token=job.lease_token
            )
        return result

    def drain(self) -> list[JobExecuteResult]:
        """Execute every due job (without transitioning)."""
        results = []
        while (job := self.jobs.dequeue("worker-1")) is not None:
            results.append(self.process(job))
        return results

    def finish(self, run_id: str, rounds: int = 20) -> WorkflowRunRecord:
        """Execute, poll and transition until the run is terminal, moving the clock on to the
        next retry or poll when nothing is due."""
        for _ in range(rounds):
            self.drain()
            self.transition(run_id)
            run = self.run(run_id)
            if run.status in TERMINAL_RUN_STATUSES:
                return run
            due = [s.next_poll_at for s in self.stages(run_id) if s.status == Status.SUSPENDED]
            due += [j.next_poll_at for j in self.jobs_of(run_id) if j.status == Status.PENDING]
            later = [at for at in due if at is not None and at > self.clock.now()]
            if later:
                self.clock.set(min(later))
            if self.poll(workflow_run_id=run_id).resumed:
                self.transition(run_id)
        raise AssertionError(f"run {run_id} did not finish: {self.run(run_id).status}")

    def unregister(self, workflow_id: str) -> None:
        """Make the registry forget a workflow (as after a deploy that removed it)."""
        self.registry._workflows.pop(workflow_id)

    # reads
    def run(self, run_id: str) -> WorkflowRunRecord:
        run = self.persistence.get_run(run_id)
        assert run is not None, f"no run {run_id}"
        return run

    def stage(self, run_id: str, stage_id: str) -> WorkflowStageRecord:
        stage = self.persistence.get_stage(run_id, stage_id)
        assert stage is not None, f"no stage {stage_id} in run {run_id}"
        return stage

    def stages(self, run_id: str) -> list[WorkflowStageRecord]:
        return self.persistence.get_stages_by_run(run_id)

    def stage_statuses(self, run_id: str) -> dict[str, Status]:
        return {s.stage_id: s.status for s in self.stages(run_id)}

    def jobs_of(self, run_id: str) -> list[JobRecord]:
        return self.jobs.get_jobs_by_workflow_run(run_id)

    def job_of(self, run_id: str, stage_id: str) -> JobRecord:
        (job,) = [j for j in self.jobs_of(run_id) if j.stage_id == stage_id]
        return job

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """Payloads of the run's outbox events, in sequence order."""
        return [event.payload for event in self.persistence.get_outbox_events(run_id)]

    def event_types(self, run_id: str) -> list[str]:
        return [event["type"] for event in self.events(run_id)]

    def last_event(self, run_id: str, event_type: str) -> dict[str, Any]:
        matching = [e for e in self.events(run_id) if e["type"] == event_type]
        assert matching, f"no {event_type} event for run {run_id}"
        return matching[-1]


_GET_BACKEND = pytest.StashKey[Callable[[str], SqlBackend]]()


def make_env(
    *,
    backend: SqlBackend | None = None,
    event_sink: EventSink | None = None,
    **kernel_options: Any,
) -> KernelEnv:
    """A fresh environment on the in-memory adapters, or on SQL ones with ``backend``;
    ``event_sink`` replaces the collecting sink as the kernel's sink.
    """
    clock = FakeClock()
    probe = Probe()
    registry = WorkflowRegistry(build_workflows(probe))
    persistence: Any
    jobs: Any
    if backend is None:
        persistence = InMemoryWorkflowPersistence(clock=clock)
        jobs = InMemoryJobQueue("worker-1", clock=clock)
    else:
        persistence, jobs = backend.adapters(clock, "worker-1")
    blobs = InMemoryBlobStore(clock=clock)
    sink = CollectingEventSink()
    scheduler = NoopScheduler()
    kernel = create_kernel(
        persistence=persistence,
        blob_store=blobs,
        job_transport=jobs,
        event_sink=event_sink or sink,
        scheduler=scheduler,
        clock=clock,
        registry=registry,
        **kernel_options,
    )
    return KernelEnv(
        clock=clock,
        persistence=persistence,
        jobs=jobs,
        blobs=blobs,
        sink=sink,
        scheduler=scheduler,
        registry=registry,
        probe=probe,
        kernel=kernel,
    )


@pytest.fixture(scope="session")
def sql_backends(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, SqlBackend]]:
    """One SQL backend per ``--kernel-backends`` entry other than ``memory``, made lazily."""
    backends: dict[str, SqlBackend] = {}

    def get(kind: str) -> SqlBackend:
        if kind not in backends:
            url = request.getfixturevalue("database_url") if kind == "postgres" else None
            backends[kind] = SqlBackend(kind, url, tmp_path_factory.mktemp(f"kernel-{kind}"))
        return backends[kind]

    request.config.stash[_GET_BACKEND] = get
    yield backends
    for backend in backends.values():
        backend.close()


@pytest.fixture
def kernel_backend(
    request: pytest.FixtureRequest, sql_backends: dict[str, SqlBackend]
) -> Iterator[SqlBackend | None]:
    """The backend this test runs on (``None``: the in-memory adapters)."""
    kind = getattr(request, "param", "memory")
    if kind == "memory":
        yield None
        return
    backend = request.config.stash[_GET_BACKEND](kind)
    yield backend
    backend.release()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_backend" in metafunc.fixturenames:
        kinds = metafunc.config.getoption("kernel_backends").split(",")
        metafunc.parametrize("kernel_backend", kinds, indirect=True)


@pytest.fixture
def env(kernel_backend: SqlBackend | None) -> KernelEnv:
    """A fresh kernel environment with default options."""
    return make_env(backend=kernel_backend)


@pytest.fixture
def env_factory(kernel_backend: SqlBackend | None) -> Iterator[Callable[..., KernelEnv]]:
    """Build an environment with custom ``create_kernel`` options or another event sink."""
    yield functools.partial(make_env, backend=kernel_backend)


@pytest.fixture
def kernel(env: KernelEnv) -> Kernel:
    """The kernel of ``env``."""
    return env.kernel
