"""``ctx.ai`` inside workflow runs, and AI cost in run totals (in-memory adapters)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from tests.unit.ai.conftest import TEST_MODELS, openai_provider
from tests.unit.ai.fakes import FakeOpenAI
from workflow_engine import StageContext, StageResult, Status, WorkflowBuilder, define_stage
from workflow_engine.ai import AIHelper, ModelRegistry
from workflow_engine.examples.ai_classification import ai_classification
from workflow_engine.testing import InMemoryAICallLogger, WorkflowTestHarness


class Text(BaseModel):
    text: str


class Answer(BaseModel):
    answer: str


def _models() -> ModelRegistry:
    return ModelRegistry({**TEST_MODELS, "gpt-4o-mini": TEST_MODELS["gpt"]}, include_builtins=False)


def _harness(fake: FakeOpenAI, *workflows: Any, **options: Any) -> WorkflowTestHarness:
    provider = openai_provider(fake)
    return WorkflowTestHarness(
        *workflows, ai_provider_resolver=lambda model: provider, ai_models=_models(), **options
    )


def _single_stage(execute: Any) -> Any:
    stage = define_stage(id="ask", name="Ask", input=Text, output=Answer, execute=execute)
    return WorkflowBuilder("ask-wf", "Ask", input=Text, output=Answer).pipe(stage).build()


def test_the_batch_example_submits_suspends_and_completes_with_the_discounted_cost(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.answer = lambda body: '{"label": "billing", "reason": "charge"}'
    harness = _harness(fake_openai, ai_classification)
    documents = [{"id": "a", "text": "I was charged twice"}, {"id": "b", "text": "Refund?"}]
    run_id = harness.create_run("ai-classification", {"documents": documents})

    while harness.step():  # claim, execute: the batch is submitted and the stage suspends
        if harness.get_stages(run_id) and harness.get_stages(run_id)[0].status == Status.SUSPENDED:
            break
    [classify] = harness.get_stages(run_id)
    assert classify.status == Status.SUSPENDED
    [batch_id] = fake_openai.batches
    assert classify.suspended_state == {"batch_id": batch_id}
    assert [line["custom_id"] for line in fake_openai.batch_lines(batch_id)] == ["a", "b"]

    harness.clock.advance(61)  # polled while the provider is still working: stays suspended
    harness.step()
    assert harness.get_stages(run_id)[0].status == Status.SUSPENDED
    assert harness.get_run(run_id).status == Status.RUNNING

    fake_openai.finish_batch(batch_id)
    run = harness.drive(run_id)

    assert run.status == Status.COMPLETED
    discounted_per_request = (12 * 1.0 + 5 * 2.0) / 1e6 * 0.5
    assert run.total_cost == pytest.approx(2 * discounted_per_request)
    assert run.total_tokens == 2 * (12 + 5)
    assert run.output is not None
    assert run.output["counts"] == {"billing": 2}
    assert run.output["cost_per_stage"]["classify"] == pytest.approx(2 * discounted_per_request)
    assert run.output["cost_per_stage"]["report"] == 0
    logger = harness.ai_logger
    assert isinstance(logger, InMemoryAICallLogger)
    assert logger.get_recorded_batch_ids() == [batch_id]
    [completed] = [e for e in harness.events.events if e["type"] == "workflow:completed"]
    assert completed["total_cost"] == pytest.approx(run.total_cost)


def test_ctx_ai_logs_under_the_stage_topic_and_run_totals_add_stage_metrics(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.answer = lambda body: "forty-two"

    def execute(ctx: StageContext[Text, Any]) -> StageResult[Answer]:
        result = ctx.ai.generate_text("gpt", ctx.input.text)
        ctx.ai.create_child("tool", "search").record_call("gpt", "tool", "q", "r", 100, 0)
        # A run whose id extends this one's is another run: not counted here.
        ctx.ai.logger.log_call(
            {"topic": f"workflow.{ctx.workflow_run_id}0.stage.x", "model_key": "gpt", "cost": 9.0}
        )
        return StageResult(
            output=Answer(answer=result.text), metrics={"total_cost": 1.0, "total_tokens": 3}
        )

    harness = _harness(fake_openai, _single_stage(execute))
    run = harness.run("ask-wf", {"text": "meaning of life?"})

    assert run.status == Status.COMPLETED and run.output == {"answer": "forty-two"}
    logger = harness.ai_logger
    assert isinstance(logger, InMemoryAICallLogger)
    stage_topic = f"workflow.{run.id}.stage.ask"
    [text_call] = logger.get_calls_by_topic(stage_topic)
    assert text_call["metadata"]["workflow_run_id"] == run.id
    assert text_call["metadata"]["stage_id"] == "ask"
    [tool_call] = logger.get_calls_by_topic(f"{stage_topic}.tool.search")
    ai_cost = text_call["cost"] + tool_call["cost"]
    assert run.total_cost == pytest.approx(1.0 + ai_cost)
    assert run.total_tokens == 3 + 12 + 5 + 100


def test_async_stages_use_the_async_twins(fake_openai: FakeOpenAI) -> None:
    fake_openai.answer = lambda body: "async answer"

    async def execute(ctx: StageContext[Text, Any]) -> Answer:
        result = await ctx.ai.agenerate_text("gpt", ctx.input.text)
        return Answer(answer=result.text)

    run = _harness(fake_openai, _single_stage(execute)).run("ask-wf", {"text": "hi"})
    assert run.status == Status.COMPLETED and run.output == {"answer": "async answer"}
    assert run.total_tokens == 17


def test_stages_that_do_not_use_ai_make_no_helper(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    import workflow_engine.kernel.stage_context as stage_context

    real = stage_context.create_ai_helper

    def spy(topic: str, *args: Any, **kwargs: Any) -> AIHelper:
        made.append(topic)
        return real(topic, *args, **kwargs)

    monkeypatch.setattr(stage_context, "create_ai_helper", spy)
    workflow = _single_stage(lambda ctx: Answer(answer=ctx.input.text))

    run = _harness(fake_openai, workflow).run("ask-wf", {"text": "no ai"})

    assert run.status == Status.COMPLETED and made == [] and fake_openai.requests == []
    assert (run.total_cost, run.total_tokens) == (0.0, 0)


def test_without_an_ai_logger_ctx_ai_fails_the_stage_with_a_clear_message() -> None:
    from workflow_engine.kernel import create_kernel
    from workflow_engine.testing import (
        CollectingEventSink,
        InMemoryBlobStore,
        InMemoryJobQueue,
        InMemoryWorkflowPersistence,
    )

    workflow = _single_stage(lambda ctx: Answer(answer=ctx.ai.topic))
    harness = WorkflowTestHarness(workflow, ai_call_logger=None)
    run = harness.run("ask-wf", {"text": "x"})
    assert run.status == Status.FAILED
    assert "ctx.ai needs an AI call logger" in (run.error_message or "")
    kernel = create_kernel(
        persistence=InMemoryWorkflowPersistence(),
        blob_store=InMemoryBlobStore(),
        job_transport=InMemoryJobQueue(),
        event_sink=CollectingEventSink(),
        registry=harness.registry,
    )
    assert kernel.runtime.ai_call_logger is None


class _BrokenLogger(InMemoryAICallLogger):
    def get_stats(self, topic_prefix: str) -> Any:
        raise RuntimeError("stats store down")


def test_a_logger_that_cannot_total_does_not_block_completion(fake_openai: FakeOpenAI) -> None:
    workflow = _single_stage(
        lambda ctx: StageResult(output=Answer(answer="x"), metrics={"total_cost": 0.5})
    )
    harness = _harness(fake_openai, workflow, ai_call_logger=_BrokenLogger())

    run = harness.run("ask-wf", {"text": "x"})

    assert run.status == Status.COMPLETED and run.total_cost == 0.5
    messages = [log.message for log in harness.persistence.get_all_logs()]
    assert any("AI call totals unavailable" in m and "stats store down" in m for m in messages)
