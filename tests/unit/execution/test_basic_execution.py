"""Running workflows end to end: stages run once, in order, and their results are stored."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from workflow_engine import (
    InvalidInputError,
    StageResult,
    Status,
    WorkflowNotFoundError,
    define_stage,
)
from workflow_engine.testing import FakeClock


class Text(BaseModel):
    text: str


class Count(BaseModel):
    words: int


class Doubled(BaseModel):
    value: int


@define_stage(id="count", name="Count words", input=Text, output=Count)
def count(ctx):
    return Count(words=len(ctx.input.text.split()))


@define_stage(id="double", name="Double", input=Count, output=Doubled)
async def double(ctx):
    return {"value": ctx.input.words * 2}


def test_a_single_stage_workflow_completes_with_the_stage_output(make_harness, build_workflow):
    h = make_harness(build_workflow(Text, count))

    run = h.run("wf", {"text": "a b c"})

    assert run.status == Status.COMPLETED
    assert run.output == {"words": 3}
    assert run.error_message is None
    [row] = h.get_stages(run.id)
    assert (row.stage_id, row.status, row.output) == ("count", Status.COMPLETED, {"words": 3})


def test_an_async_def_stage_returning_a_dict_runs_like_a_sync_one(make_harness, build_workflow):
    h = make_harness(build_workflow(Text, count, double))

    run = h.run("wf", {"text": "one two"})

    assert run.status == Status.COMPLETED
    assert run.output == {"value": 4}


def test_sequential_stages_each_run_once_in_order(make_harness, build_workflow):
    calls: list[str] = []

    def stage(stage_id):
        def execute(ctx):
            calls.append(stage_id)
            return Count(words=ctx.input.words + 1)

        return define_stage(id=stage_id, name=stage_id, input=Count, output=Count, execute=execute)

    h = make_harness(build_workflow(Count, stage("s1"), stage("s2"), stage("s3")))

    run = h.run("wf", {"words": 0})

    assert calls == ["s1", "s2", "s3"]
    assert run.output == {"words": 3}


def test_stage_rows_record_number_group_name_and_timestamps(make_harness, build_workflow):
    clock = FakeClock()
    h = make_harness(build_workflow(Text, count, double), clock=clock)

    run = h.run("wf", {"text": "x"})

    rows = h.get_stages(run.id)
    assert [(r.stage_id, r.stage_name, r.stage_number, r.execution_group) for r in rows] == [
        ("count", "Count words", 1, 1),
        ("double", "Double", 2, 2),
    ]
    assert all(r.started_at == clock.now() and r.completed_at == clock.now() for r in rows)
    assert all(r.attempt == 0 and r.error_message is None for r in rows)


def test_run_records_start_completion_and_duration(make_harness, build_workflow):
    clock = FakeClock()
    created = clock.now()

    @define_stage(id="slow", name="Slow", input=Text, output=Count)
    def slow(ctx):
        clock.advance(timedelta(seconds=2.5))
        return Count(words=0)

    h = make_harness(build_workflow(Text, slow), clock=clock)

    run = h.run("wf", {"text": ""})

    assert run.created_at == created
    assert run.started_at == created
    assert run.completed_at == created + timedelta(seconds=2.5)
    assert run.duration == 2500
    assert h.get_stages(run.id)[0].duration == 2500


def test_every_job_is_completed_once_the_run_is(make_harness, build_workflow):
    h = make_harness(build_workflow(Text, count, double))

    run = h.run("wf", {"text": "x"})

    jobs = h.jobs.get_jobs_by_workflow_run(run.id)
    assert sorted(j.stage_id for j in jobs) == ["count", "double"]
    assert {(j.status, j.attempt) for j in jobs} == {(Status.COMPLETED, 1)}


def test_stage_result_metrics_are_stored_and_costs_totalled_on_the_run(
    make_harness, build_workflow
):
    def costly(stage_id, cost, tokens):
        return define_stage(
            id=stage_id,
            name=stage_id,
            input=Text,
            output=Text,
            execute=lambda ctx: StageResult(
                output=ctx.input,
                metrics={"total_cost": cost, "total_tokens": tokens, "model": "m"},
            ),
        )

    h = make_harness(build_workflow(Text, costly("a", 0.25, 100), costly("b", 0.5, 50)))

    run = h.run("wf", {"text": "x"})

    assert h.stages_by_id(run.id)["a"].metrics == {
        "total_cost": 0.25,
        "total_tokens": 100,
        "model": "m",
    }
    assert run.total_cost == pytest.approx(0.75)
    assert run.total_tokens == 150


def test_the_run_input_is_validated_and_stored_in_json_mode(make_harness, build_workflow):
    class Job(BaseModel):
        text: str
        retries: int = 2

    h = make_harness(
        build_workflow(
            Job,
            define_stage(
                id="echo", name="Echo", input=Job, output=Job, execute=lambda ctx: ctx.input
            ),
        )
    )

    run = h.run("wf", {"text": "x"})
    assert run.input == {"text": "x", "retries": 2}

    with pytest.raises(InvalidInputError, match=r"^Invalid workflow input: text: "):
        h.create_run("wf", {"retries": "many"})
    assert len(h.persistence.get_all_runs()) == 1


def test_an_unknown_workflow_is_rejected_and_nothing_is_stored(make_harness, build_workflow):
    h = make_harness(build_workflow(Text, count))

    with pytest.raises(WorkflowNotFoundError, match="Workflow nope not found"):
        h.create_run("nope", {"text": "x"})
    assert h.persistence.get_all_runs() == []
    assert h.persistence.get_all_outbox_events() == []


def test_runs_of_one_workflow_are_isolated(make_harness, build_workflow):
    h = make_harness(build_workflow(Text, count, double))

    first = h.run("wf", {"text": "a"})
    second = h.run("wf", {"text": "a b c"})

    assert (first.output, second.output) == ({"value": 2}, {"value": 6})
    assert {s.workflow_run_id for s in h.get_stages(first.id)} == {first.id}
