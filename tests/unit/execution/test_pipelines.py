"""Realistic pipelines end to end: ETL, document processing, diamond, and a long chain."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from workflow_engine import CompletionCheck, NonRetryableError, StageResult, Status, Suspend
from workflow_engine import define_async_batch_stage as batch_stage
from workflow_engine import define_stage as stage
from workflow_engine.testing import FakeClock


# -- ETL ---------------------------------------------------------------------------------------
class Source(BaseModel):
    csv: str


class Rows(BaseModel):
    rows: list[dict[str, str]]


class Typed(BaseModel):
    records: list[dict[str, int | str]]
    rejected: int = 0


class Loaded(BaseModel):
    table: str
    inserted: int
    rejected: int


class LoadConfig(BaseModel):
    table: str = "events"


def extract(ctx):
    header, *lines = ctx.input.csv.strip().splitlines()
    names = header.split(",")
    return Rows(rows=[dict(zip(names, line.split(","), strict=True)) for line in lines])


def transform(ctx):
    records, rejected = [], 0
    for row in ctx.input.rows:
        if row["count"].isdigit():
            records.append({"name": row["name"], "count": int(row["count"])})
        else:
            rejected += 1
            ctx.log("warn", "rejected row", row=row)
    return Typed(records=records, rejected=rejected)


def load(ctx):
    ctx.storage.save("table.json", ctx.input.records)
    return StageResult(
        output=Loaded(
            table=ctx.config.table, inserted=len(ctx.input.records), rejected=ctx.input.rejected
        ),
        metrics={"rows_written": len(ctx.input.records)},
    )


def test_an_etl_pipeline_extracts_transforms_and_loads(make_harness, build_workflow):
    wf = build_workflow(
        Source,
        stage(id="extract", name="Extract", input=Source, output=Rows, execute=extract),
        stage(id="transform", name="Transform", input=Rows, output=Typed, execute=transform),
        stage(id="load", name="Load", input=Typed, output=Loaded, config=LoadConfig, execute=load),
        id="etl",
    )
    h = make_harness(wf)

    run = h.run("etl", {"csv": "name,count\na,1\nb,x\nc,3\n"}, config={"load": {"table": "clicks"}})

    assert run.status == Status.COMPLETED
    assert run.output == {"table": "clicks", "inserted": 2, "rejected": 1}
    assert h.blobs.get(f"workflow-v2/etl/{run.id}/load/table.json") == [
        {"name": "a", "count": 1},
        {"name": "c", "count": 3},
    ]
    assert h.stages_by_id(run.id)["load"].metrics == {"rows_written": 2}
    [log] = h.persistence.get_logs_by_run(run.id)
    assert log.metadata == {"row": {"name": "b", "count": "x"}}


# -- document processing -----------------------------------------------------------------------
class Document(BaseModel):
    title: str
    body: str


class Sentences(BaseModel):
    sentences: list[str]


class Keywords(BaseModel):
    keywords: list[str]


class Sentiment(BaseModel):
    score: float


class Analyses(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    keywords: Keywords
    sentiment: Sentiment
    summary: Sentences


class Report(BaseModel):
    title: str
    keywords: list[str]
    score: float
    summary: str


def test_document_processing_fans_out_to_analyses_and_merges_them(make_harness, build_workflow):
    clock = FakeClock()

    def summarise_submit(ctx):
        return Suspend(state={"first": ctx.input.sentences[0]}, poll_interval=45)

    wf = build_workflow(
        Document,
        stage(
            id="split",
            name="Split",
            input=Document,
            output=Sentences,
            execute=lambda ctx: Sentences(
                sentences=[s.strip() for s in ctx.input.body.split(".") if s.strip()]
            ),
        ),
        [
            stage(
                id="keywords",
                name="Keywords",
                input=Sentences,
                output=Keywords,
                execute=lambda ctx: Keywords(
                    keywords=sorted(
                        {w.lower() for s in ctx.input.sentences for w in s.split() if len(w) > 4}
                    )
                ),
            ),
            stage(
                id="sentiment",
                name="Sentiment",
                input=Sentences,
                output=Sentiment,
                execute=lambda ctx: Sentiment(
                    score=sum("good" in s for s in ctx.input.sentences) / len(ctx.input.sentences)
                ),
            ),
            batch_stage(
                id="summary",
                name="Summary",
                input=Sentences,
                output=Sentences,
                execute=summarise_submit,
                check_completion=lambda state, ctx: CompletionCheck(
                    ready=True, output=Sentences(sentences=[state["first"]])
                ),
            ),
        ],
        stage(
            id="report",
            name="Report",
            input=Analyses,
            output=Report,
            execute=lambda ctx: Report(
                title=ctx.require("split")["sentences"][0],
                keywords=ctx.input.keywords.keywords,
                score=ctx.input.sentiment.score,
                summary=ctx.input.summary.sentences[0],
            ),
        ),
        id="docs",
    )
    h = make_harness(wf, clock=clock)
    start = clock.now()

    run = h.run("docs", {"title": "T", "body": "Quick start. Really good results. Short"})

    assert run.status == Status.COMPLETED
    assert run.output == {
        "title": "Quick start",
        "keywords": ["quick", "really", "results", "short", "start"],
        "score": 1 / 3,
        "summary": "Quick start",
    }
    rows = h.stages_by_id(run.id)
    assert rows["report"].started_at == start + timedelta(seconds=45)
    assert [r.execution_group for r in rows.values()] == [1, 2, 2, 2, 3]


# -- diamond -----------------------------------------------------------------------------------
class Num(BaseModel):
    n: int


class Branches(BaseModel):
    left: Num = Field(alias="double")
    right: Num = Field(alias="square")


def test_a_diamond_joins_two_branches_of_one_source(make_harness, build_workflow):
    calls: list[str] = []

    def step(stage_id, fn, input_model=Num):
        def execute(ctx):
            calls.append(stage_id)
            return fn(ctx)

        return stage(id=stage_id, name=stage_id, input=input_model, output=Num, execute=execute)

    wf = build_workflow(
        Num,
        step("source", lambda ctx: Num(n=ctx.input.n + 1)),
        [
            step(
                "double",
                lambda ctx: Num(n=ctx.input.n * 2),
            ),
            step("square", lambda ctx: Num(n=ctx.input.n**2)),
        ],
        step(
            "join",
            lambda ctx: Num(n=ctx.input.left.n + ctx.input.right.n + ctx.require("source")["n"]),
            Branches,
        ),
    )
    h = make_harness(wf)

    run = h.run("wf", {"n": 2})

    assert run.output == {"n": 6 + 9 + 3}
    assert calls[0] == "source"
    assert sorted(calls[1:3]) == ["double", "square"]
    assert calls[3] == "join"


# -- a long chain ------------------------------------------------------------------------------
class Trace(BaseModel):
    path: list[str]


def test_a_seven_stage_pipeline_records_durations_and_completion_times(
    make_harness, build_workflow
):
    clock = FakeClock()
    start = clock.now()

    def timed(index):
        def execute(ctx):
            clock.advance(timedelta(seconds=index))
            return Trace(path=[*ctx.input.path, ctx.stage_id])

        return stage(
            id=f"s{index}", name=f"Step {index}", input=Trace, output=Trace, execute=execute
        )

    h = make_harness(build_workflow(Trace, *(timed(i) for i in range(1, 8))), clock=clock)

    run = h.run("wf", {"path": []})

    assert run.output == {"path": [f"s{i}" for i in range(1, 8)]}
    rows = h.get_stages(run.id)
    assert [r.stage_id for r in rows] == [f"s{i}" for i in range(1, 8)]
    assert [r.duration for r in rows] == [i * 1000 for i in range(1, 8)]
    elapsed = 0
    for index, row in enumerate(rows, start=1):
        assert row.started_at == start + timedelta(seconds=elapsed)
        elapsed += index
        assert row.completed_at == start + timedelta(seconds=elapsed)
    assert run.completed_at == start + timedelta(seconds=28)
    assert run.duration == 28_000
    assert h.event_types(run.id).count("stage:completed") == 7


def test_parallel_validations_fail_the_run_when_one_rejects(make_harness, build_workflow):
    class Order(BaseModel):
        amount: int
        country: str

    class Ok(BaseModel):
        ok: bool

    def check(stage_id, predicate, message):
        def execute(ctx):
            if not predicate(ctx.input):
                raise NonRetryableError(message)
            return Ok(ok=True)

        return stage(id=stage_id, name=stage_id, input=Order, output=Ok, execute=execute)

    shipped: list[str] = []
    wf = build_workflow(
        Order,
        [
            check("amount", lambda o: o.amount > 0, "amount must be positive"),
            check("country", lambda o: o.country in {"GR", "DE"}, "cannot ship to XX"),
            check("fraud", lambda o: o.amount < 10_000, "looks fraudulent"),
        ],
        stage(
            id="ship",
            name="Ship",
            input=None,
            output=Ok,
            execute=lambda ctx: shipped.append("yes") or Ok(ok=True),
        ),
    )
    h = make_harness(wf)

    good = h.run("wf", {"amount": 5, "country": "GR"})
    bad = h.run("wf", {"amount": 5, "country": "XX"})

    assert good.status == Status.COMPLETED
    assert bad.status == Status.FAILED
    assert bad.error_message == "cannot ship to XX"
    statuses = {s.stage_id: s.status for s in h.get_stages(bad.id)}
    assert statuses == {
        "amount": Status.COMPLETED,
        "country": Status.FAILED,
        "fraud": Status.COMPLETED,
    }
    assert shipped == ["yes"]
