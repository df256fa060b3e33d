"""Classify documents with a provider batch: submit, suspend, resume when the batch is done.

Not in the default registry: it calls a real provider, so it needs an API key
(``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY`` or ``GEMINI_API_KEY``) and the SDK extra
(``pip install 'workflow-engine[ai]'``). Run it on a worker with::

    export WORKFLOW_ENGINE_REGISTRY=workflow_engine.examples.ai_classification:registry
    export OPENAI_API_KEY=sk-...
    workflow-engine db upgrade
    celery -A celery_app worker &     # and `celery -A celery_app beat` for the polls
    workflow-engine runs create ai-classification \
        --input '{"documents": [{"id": "a", "text": "I was charged twice"}]}'
    workflow-engine runs watch <run-id>

(or ``workflow-engine worker`` instead of Celery). Pick the model per run with the stage
config: ``--config '{"classify": {"model": "claude-sonnet-4"}}'``. Batches cost half the
price of single calls; the run's ``total_cost`` adds up every AI call, and the ``report``
stage shows the cost per stage.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from workflow_engine import (
    CompletionCheck,
    StageContext,
    Suspend,
    WorkflowBuilder,
    WorkflowRegistry,
    define_async_batch_stage,
    define_stage,
)

Label = Literal["billing", "technical", "account", "other"]

SYSTEM_PROMPT = (
    "You classify customer messages. Answer with JSON: "
    '{"label": one of "billing", "technical", "account", "other"; "reason": a short phrase}.'
)


class Document(BaseModel):
    """One document to classify."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    text: str


class Documents(BaseModel):
    """The workflow's input."""

    documents: list[Document] = Field(min_length=1)


class Verdict(BaseModel):
    """What the model answers for one document."""

    label: Label
    reason: str


class ClassifyConfig(BaseModel):
    """Which model runs the batch, and how often to poll it."""

    model: str = "gpt-4o-mini"
    provider: str | None = None
    poll_seconds: float = 60.0


class Classified(BaseModel):
    """The batch's outcome: a verdict per document, and the documents that failed."""

    verdicts: dict[str, Verdict]
    failed: dict[str, str]
    batch_id: str
    cost: float


class Report(BaseModel):
    """Counts per label and the AI cost of each stage."""

    counts: dict[str, int]
    failed: int
    cost_per_stage: dict[str, float]


_SUBMITTED = "ai-batch.json"


def submit(ctx: StageContext[Documents, ClassifyConfig]) -> Suspend:
    """Submit one batch request per document, once per attempt, and suspend."""
    if ctx.storage.exists(_SUBMITTED):  # a retry after the batch was submitted: reuse it
        batch_id = ctx.storage.load(_SUBMITTED)["batch_id"]
    else:
        batch = ctx.ai.batch(ctx.config.model, ctx.config.provider)
        requests = [
            {"id": doc.id, "prompt": doc.text, "system": SYSTEM_PROMPT, "schema": Verdict}
            for doc in ctx.input.documents
        ]
        batch_id = batch.submit(requests).id
        ctx.storage.save(_SUBMITTED, {"batch_id": batch_id})
    ctx.log("INFO", "classification batch submitted", batch_id=batch_id)
    return Suspend(
        state={"batch_id": batch_id},
        poll_interval=ctx.config.poll_seconds,
        max_wait=timedelta(hours=24),
    )


def collect(state: dict[str, Any], ctx: StageContext[None, ClassifyConfig]) -> CompletionCheck[Any]:
    """Poll the batch; when it is done, validate and record its results."""
    batch = ctx.ai.batch(ctx.config.model, ctx.config.provider)
    status = batch.get_status(state["batch_id"]).status
    if status == "failed":
        return CompletionCheck(ready=False, error=f"batch {state['batch_id']} failed")
    if status != "completed":
        return CompletionCheck(ready=False)
    results = batch.get_results(state["batch_id"], schema=Verdict)
    verdicts = {r.id: r.result for r in results if r.status == "succeeded"}
    failed = {r.id: r.error or "failed" for r in results if r.status == "failed"}
    output = Classified(
        verdicts=verdicts,
        failed=failed,
        batch_id=state["batch_id"],
        cost=ctx.ai.get_stats()["total_cost"],
    )
    return CompletionCheck(ready=True, output=output)


classify = define_async_batch_stage(
    id="classify",
    name="Classify (provider batch)",
    input=Documents,
    output=Classified,
    config=ClassifyConfig,
    execute=submit,
    check_completion=collect,
)


@define_stage(id="report", name="Report", input=None, output=Report, dependencies=["classify"])
def report(ctx: StageContext[Any, Any]) -> Report:
    """Count the labels and show what each stage's AI calls cost."""
    classified = ctx.require("classify", Classified)
    run_topic = f"workflow.{ctx.workflow_run_id}"
    per_stage = {
        stage_id: ctx.ai.logger.get_stats(f"{run_topic}.stage.{stage_id}")["total_cost"]
        for stage_id in ("classify", "report")
    }
    return Report(
        counts=dict(Counter(v.label for v in classified.verdicts.values())),
        failed=len(classified.failed),
        cost_per_stage=per_stage,
    )


ai_classification = (
    WorkflowBuilder(
        "ai-classification",
        "AI classification",
        "Classify documents with a discounted provider batch, then report.",
        input=Documents,
        output=Report,
    )
    .pipe(classify)
    .pipe(report)
    .build()
)

registry = WorkflowRegistry([ai_classification])
