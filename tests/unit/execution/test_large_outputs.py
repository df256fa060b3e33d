"""Where outputs live: small ones inline on the stage row, large ones and artifacts in blobs."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from workflow_engine import (
    CompletionCheck,
    StageResult,
    Status,
    Suspend,
    define_async_batch_stage,
    define_stage,
)

LIMIT = 200
OVERHEAD = len('{"text":""}')


class Size(BaseModel):
    size: int


class Blob(BaseModel):
    text: str


def json_bytes(value) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


@define_stage(id="make", name="Make", input=Size, output=Blob)
def make(ctx):
    return Blob(text="x" * ctx.input.size)


@define_stage(id="measure", name="Measure", input=Blob, output=Size)
def measure(ctx):
    via_require = ctx.require("make", Blob)
    assert via_require.text == ctx.input.text
    return Size(size=len(ctx.input.text))


@pytest.fixture
def harness(make_harness, build_workflow):
    return make_harness(build_workflow(Size, make, measure), inline_output_max_bytes=LIMIT)


def test_a_small_output_stays_inline_on_the_stage_row(harness):
    run = harness.run("wf", {"size": 10})

    row = harness.stages_by_id(run.id)["make"]
    assert (row.output, row.output_ref) == ({"text": "x" * 10}, None)
    assert harness.blobs.list("") == []


def test_a_large_output_goes_to_the_blob_store_and_is_still_read_downstream(harness):
    run = harness.run("wf", {"size": 1000})

    row = harness.stages_by_id(run.id)["make"]
    assert row.output is None
    assert row.output_ref == f"workflow-v2/wf/{run.id}/make/output.json"
    assert harness.blobs.get(row.output_ref) == {"text": "x" * 1000}
    assert run.status == Status.COMPLETED
    assert run.output == {"size": 1000}


@pytest.mark.parametrize(("extra", "inline"), [(0, True), (1, False)])
def test_the_inline_limit_is_inclusive(harness, extra, inline):
    size = LIMIT - OVERHEAD + extra
    assert json_bytes({"text": "x" * size}) == LIMIT + extra

    run = harness.run("wf", {"size": size})

    row = harness.stages_by_id(run.id)["make"]
    assert (row.output_ref is None) is inline
    assert run.output == {"size": size}


def test_a_large_final_output_becomes_the_run_output(make_harness, build_workflow):
    h = make_harness(build_workflow(Size, make), inline_output_max_bytes=LIMIT)

    run = h.run("wf", {"size": 5000})

    assert h.stages_by_id(run.id)["make"].output_ref is not None
    assert run.output == {"text": "x" * 5000}


@define_stage(id="measure-batch", name="Measure batch", input=Blob, output=Size)
def measure_batch(ctx):
    return Size(size=len(ctx.require("batch")["text"]))


def test_a_large_output_from_a_resumed_batch_goes_to_the_blob_store(make_harness, build_workflow):
    batch = define_async_batch_stage(
        id="batch",
        name="Batch",
        input=Size,
        output=Blob,
        execute=lambda ctx: Suspend(state={"n": ctx.input.size}, poll_interval=1),
        check_completion=lambda state, ctx: CompletionCheck(
            ready=True, output=Blob(text="y" * state["n"])
        ),
    )
    h = make_harness(build_workflow(Size, batch, measure_batch), inline_output_max_bytes=LIMIT)

    run = h.run("wf", {"size": 800})

    row = h.stages_by_id(run.id)["batch"]
    assert row.output is None
    assert h.blobs.get(row.output_ref) == {"text": "y" * 800}
    assert run.output == {"size": 800}


def test_artifacts_are_written_to_their_own_blobs(make_harness, build_workflow):
    report = define_stage(
        id="report",
        name="Report",
        input=Size,
        output=Size,
        execute=lambda ctx: StageResult(
            output=ctx.input,
            artifacts={"raw rows": [1, 2, 3], "summary": {"ok": True}},
        ),
    )
    h = make_harness(build_workflow(Size, report))

    run = h.run("wf", {"size": 1})

    row = h.stages_by_id(run.id)["report"]
    assert set(row.artifact_keys) == {"raw rows", "summary"}
    prefix = f"workflow-v2/wf/{run.id}/report/artifacts/"
    assert all(key.startswith(prefix) for key in row.artifact_keys.values())
    assert h.blobs.get(row.artifact_keys["raw rows"]) == [1, 2, 3]
    assert h.blobs.get(row.artifact_keys["summary"]) == {"ok": True}
    assert row.output == {"size": 1}


def test_an_output_over_the_payload_limit_fails_the_stage(make_harness, build_workflow):
    h = make_harness(build_workflow(Size, make), inline_output_max_bytes=100, max_payload_bytes=500)

    run = h.run("wf", {"size": 1000})

    assert run.status == Status.FAILED
    assert "The output of stage make is" in run.error_message
    assert "more than the limit of 500 bytes" in run.error_message
    assert h.blobs.list("") == []
    assert h.jobs.get_jobs_by_workflow_run(run.id)[0].attempt == 1
