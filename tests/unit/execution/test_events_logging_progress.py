"""Events (order and fields), stage:progress delivered with the completion, and log rows."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from workflow_engine import LogLevel, Status, define_stage
from workflow_engine.testing import FakeClock


class Doc(BaseModel):
    text: str


class Count(BaseModel):
    words: int


@define_stage(id="split", name="Split text", input=Doc, output=Doc)
def split(ctx):
    ctx.log("info", "splitting", chars=len(ctx.input.text))
    ctx.progress(25, "started")
    ctx.progress(75, "nearly", done=3, total=4)
    return ctx.input


@define_stage(id="count", name="Count words", input=Doc, output=Count)
def count(ctx):
    ctx.log("debug", "counting")
    ctx.log("warning", "text is short", length=len(ctx.input.text))
    return Count(words=len(ctx.input.text.split()))


def test_events_of_a_successful_run_come_in_order(make_harness, build_workflow):
    h = make_harness(build_workflow(Doc, split, count))

    run = h.run("wf", {"text": "a b"})

    assert [(e["type"], e.get("stage_id")) for e in h.run_events(run.id)] == [
        ("workflow:created", None),
        ("workflow:started", None),
        ("stage:started", "split"),
        ("stage:progress", "split"),
        ("stage:progress", "split"),
        ("stage:completed", "split"),
        ("stage:started", "count"),
        ("stage:completed", "count"),
        ("workflow:completed", None),
    ]


def test_every_event_has_type_utc_timestamp_and_run_id(make_harness, build_workflow):
    clock = FakeClock()
    h = make_harness(build_workflow(Doc, split, count), clock=clock)

    run = h.run("wf", {"text": "a"})

    for event in h.run_events(run.id):
        assert event["workflow_run_id"] == run.id
        stamp = datetime.fromisoformat(event["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert stamp == clock.now()


def test_stage_and_workflow_events_carry_their_fields(make_harness, build_workflow):
    clock = FakeClock()

    @define_stage(id="slow", name="Slow stage", input=Doc, output=Count)
    def slow(ctx):
        clock.advance(timedelta(milliseconds=1500))
        return Count(words=7)

    h = make_harness(build_workflow(Doc, split, slow), clock=clock)

    run = h.run("wf", {"text": "x"})

    events = {(e["type"], e.get("stage_id")): e for e in h.run_events(run.id)}
    assert events[("workflow:created", None)]["workflow_id"] == "wf"
    started = events[("stage:started", "slow")]
    assert (started["stage_name"], started["stage_number"]) == ("Slow stage", 2)
    completed = events[("stage:completed", "slow")]
    assert (completed["stage_name"], completed["duration"]) == ("Slow stage", 1500)
    done = events[("workflow:completed", None)]
    assert done["output"] == {"words": 7}
    assert done["duration"] == 1500
    assert (done["total_cost"], done["total_tokens"]) == (0.0, 0)


def test_progress_events_arrive_just_before_the_stage_completion(make_harness, build_workflow):
    h = make_harness(build_workflow(Doc, split))

    run = h.run("wf", {"text": "x"})

    split_events = [e for e in h.run_events(run.id) if e.get("stage_id") == "split"]
    assert [e["type"] for e in split_events] == [
        "stage:started",
        "stage:progress",
        "stage:progress",
        "stage:completed",
    ]
    first, second = split_events[1], split_events[2]
    assert (first["progress"], first["message"], first["details"]) == (25.0, "started", None)
    assert (second["progress"], second["message"], second["details"]) == (
        75.0,
        "nearly",
        {"done": 3, "total": 4},
    )
    assert first["stage_name"] == "Split text"


def test_a_failed_stage_emits_stage_failed_and_workflow_failed_with_the_error(
    make_harness, build_workflow
):
    def explode(ctx):
        raise RuntimeError("disk full")

    broken = define_stage(
        id="broken", name="Broken", input=Doc, output=Doc, execute=explode, max_attempts=1
    )
    h = make_harness(build_workflow(Doc, broken))

    run = h.run("wf", {"text": "x"})

    events = h.run_events(run.id)
    assert [e["type"] for e in events][-3:] == ["stage:started", "stage:failed", "workflow:failed"]
    failed = events[-2]
    assert (failed["stage_id"], failed["stage_name"]) == ("broken", "Broken")
    assert failed["error"] == "RuntimeError: disk full"
    assert events[-1]["error"] == "RuntimeError: disk full"


def test_events_of_two_runs_never_mix(make_harness, build_workflow):
    h = make_harness(build_workflow(Doc, split, count))

    first = h.run("wf", {"text": "a"})
    second = h.run("wf", {"text": "b"})

    assert h.event_types(first.id) == h.event_types(second.id)
    assert len(h.events.events) == 2 * len(h.event_types(first.id))
    assert [s.sequence for s in h.persistence.get_outbox_events(second.id)] == list(
        range(1, len(h.event_types(second.id)) + 1)
    )


def test_stage_logs_are_stored_with_level_metadata_run_and_stage_row(make_harness, build_workflow):
    h = make_harness(build_workflow(Doc, split, count))

    run = h.run("wf", {"text": "a bc"})

    rows = h.stages_by_id(run.id)
    logs = [
        (log.level, log.message, log.metadata, log.workflow_stage_id, log.workflow_run_id)
        for log in h.persistence.get_logs_by_run(run.id)
    ]
    assert logs == [
        (LogLevel.INFO, "splitting", {"chars": 4}, rows["split"].id, run.id),
        (LogLevel.DEBUG, "counting", None, rows["count"].id, run.id),
        (LogLevel.WARN, "text is short", {"length": 4}, rows["count"].id, run.id),
    ]


def test_an_unknown_log_level_fails_the_stage_with_a_clear_message(make_harness, build_workflow):
    noisy = define_stage(
        id="noisy",
        name="Noisy",
        input=Doc,
        output=Doc,
        execute=lambda ctx: ctx.log("loud", "hey") or ctx.input,
        max_attempts=1,
    )
    h = make_harness(build_workflow(Doc, noisy))

    run = h.run("wf", {"text": "x"})

    assert run.status == Status.FAILED
    assert run.error_message == (
        "ValueError: unknown log level 'loud'; use one of DEBUG, INFO, WARN, ERROR"
    )
