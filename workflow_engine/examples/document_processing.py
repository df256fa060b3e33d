"""An example document-processing workflow: extract, then summarise, pick keywords and
classify in parallel (classification goes through a simulated provider batch that suspends
the stage until the batch is done), then assemble a report.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from workflow_engine import (
    CompletionCheck,
    StageContext,
    Suspend,
    WorkflowBuilder,
    define_async_batch_stage,
    define_stage,
)

STOP_WORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "we",
        "you",
        "they",
        "their",
        "our",
        "not",
        "but",
        "can",
    }
)
CATEGORIES = {
    "finance": {"revenue", "profit", "market", "invoice", "budget", "cost", "price"},
    "science": {"research", "experiment", "data", "model", "study", "results"},
    "engineering": {"system", "software", "deploy", "worker", "database", "queue", "latency"},
}


class DocumentInput(BaseModel):
    title: str = Field(min_length=1)
    text: str = Field(min_length=1)


class ExtractedDocument(BaseModel):
    title: str
    paragraphs: list[str]
    words: list[str]


class Summary(BaseModel):
    summary: str
    sentence_count: int


class Keywords(BaseModel):
    keywords: list[str]


class KeywordsConfig(BaseModel):
    top_n: int = Field(default=5, ge=1, le=50)


class Classification(BaseModel):
    category: str
    confidence: float


class ClassifyConfig(BaseModel):
    batch_seconds: float = Field(default=2.0, ge=0, description="How long the batch takes.")


class Report(BaseModel):
    title: str
    word_count: int
    summary: str
    keywords: list[str]
    category: str
    confidence: float


@define_stage(id="extract", name="Extract text", input=DocumentInput, output=ExtractedDocument)
def extract(ctx: StageContext[DocumentInput, Any]) -> ExtractedDocument:
    paragraphs = [p.strip() for p in ctx.input.text.split("\n\n") if p.strip()]
    words = re.findall(r"[a-zA-Z']+", ctx.input.text.lower())
    ctx.log("INFO", "extracted", paragraphs=len(paragraphs), words=len(words))
    return ExtractedDocument(title=ctx.input.title, paragraphs=paragraphs, words=words)


@define_stage(id="summarize", name="Summarise", input=ExtractedDocument, output=Summary)
def summarize(ctx: StageContext[ExtractedDocument, Any]) -> Summary:
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(ctx.input.paragraphs))
    ctx.progress(100, "summarised")
    return Summary(summary=" ".join(sentences[:2]), sentence_count=len(sentences))


@define_stage(
    id="keywords",
    name="Pick keywords",
    input=ExtractedDocument,
    output=Keywords,
    config=KeywordsConfig,
)
def keywords(ctx: StageContext[ExtractedDocument, KeywordsConfig]) -> Keywords:
    counts = Counter(w for w in ctx.input.words if w not in STOP_WORDS and len(w) > 2)
    return Keywords(keywords=[word for word, _ in counts.most_common(ctx.config.top_n)])


def _submit_classification(ctx: StageContext[ExtractedDocument, ClassifyConfig]) -> Suspend:
    """Submit the document to a (simulated) provider batch and wait for it."""
    scores = {name: sum(w in vocab for w in ctx.input.words) for name, vocab in CATEGORIES.items()}
    ready_at = datetime.now(UTC) + timedelta(seconds=ctx.config.batch_seconds)
    # What a real provider would compute; saved where check_completion will find it.
    ctx.storage.save("batch.json", {"scores": scores, "ready_at": ready_at.isoformat()})
    ctx.log("INFO", "classification batch submitted", ready_at=ready_at.isoformat())
    return Suspend(
        state={"batch_id": f"batch-{ctx.workflow_run_id}"},
        poll_interval=max(ctx.config.batch_seconds / 2, 0.2),
        max_wait=timedelta(minutes=10),
    )


def _check_classification(
    state: dict[str, Any], ctx: StageContext[None, ClassifyConfig]
) -> CompletionCheck[Classification]:
    batch = ctx.storage.load("batch.json")
    if datetime.now(UTC) < datetime.fromisoformat(batch["ready_at"]):
        return CompletionCheck(ready=False)
    scores: dict[str, int] = batch["scores"]
    best = max(scores, key=lambda name: scores[name])
    total = sum(scores.values())
    category = best if scores[best] else "general"
    confidence = round(scores[best] / total, 2) if total else 0.0
    return CompletionCheck(
        ready=True,
        output=Classification(category=category, confidence=confidence),
        metrics={"batch_id": state["batch_id"]},
    )


classify = define_async_batch_stage(
    id="classify",
    name="Classify (provider batch)",
    input=ExtractedDocument,
    output=Classification,
    config=ClassifyConfig,
    execute=_submit_classification,
    check_completion=_check_classification,
)


@define_stage(
    id="report",
    name="Assemble report",
    input=None,
    output=Report,
    dependencies=["extract", "summarize", "keywords", "classify"],
)
def report(ctx: StageContext[Any, Any]) -> Report:
    classification = ctx.require("classify", Classification)
    return Report(
        title=ctx.require("extract")["title"],
        word_count=len(ctx.require("extract")["words"]),
        summary=ctx.require("summarize")["summary"],
        keywords=ctx.require("keywords")["keywords"],
        category=classification.category,
        confidence=classification.confidence,
    )


document_processing = (
    WorkflowBuilder(
        "document-processing",
        "Document processing",
        "Extract a document, analyse it three ways in parallel, and report.",
        input=DocumentInput,
        output=Report,
    )
    .pipe(extract)
    .parallel([summarize, keywords, classify])
    .pipe(report)
    .build()
)
