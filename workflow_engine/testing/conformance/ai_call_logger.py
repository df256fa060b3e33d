"""The conformance suite of the :class:`~workflow_engine.ai.AICallLogger` port.

Subclass :class:`AICallLoggerConformance` and provide an ``ai_logger`` fixture (an empty
logger).
"""

from __future__ import annotations

from typing import Any

import pytest

from workflow_engine.ai.logger import AICall, AICallLogger, batch_call_id


def _call(topic: str, model_key: str = "m1", cost: float = 1.0, **fields: Any) -> AICall:
    values: dict[str, Any] = {
        "topic": topic,
        "call_type": "text",
        "model_key": model_key,
        "model_id": f"{model_key}-id",
        "prompt": "p",
        "response": "r",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": cost,
        **fields,
    }
    return AICall(**values)


class AICallLoggerConformance:
    """Cases every AICallLogger must pass (fixture: ``ai_logger``)."""

    def test_stats_of_nothing_are_zero(self, ai_logger: AICallLogger) -> None:
        assert ai_logger.get_stats("workflow.none") == {
            "total_calls": 0,
            "total_input_tokens": 0,
            "total_output_tokens": 0,
            "total_cost": 0.0,
            "per_model": {},
        }

    def test_stats_add_up_per_model(self, ai_logger: AICallLogger) -> None:
        ai_logger.log_call(_call("workflow.r1.stage.a", "m1", 0.5))
        ai_logger.log_call(_call("workflow.r1.stage.b", "m2", 0.25, input_tokens=1))
        ai_logger.log_call(_call("workflow.r1.stage.b", "m1", 0.125))
        stats = ai_logger.get_stats("workflow.r1")
        assert stats["total_calls"] == 3
        assert (stats["total_input_tokens"], stats["total_output_tokens"]) == (21, 15)
        assert stats["total_cost"] == pytest.approx(0.875)
        assert stats["per_model"]["m1"] == {
            "calls": 2,
            "input_tokens": 20,
            "output_tokens": 10,
            "cost": pytest.approx(0.625),
        }
        assert stats["per_model"]["m2"]["calls"] == 1

    def test_prefixes_match_whole_segments(self, ai_logger: AICallLogger) -> None:
        for topic in ("workflow.run1", "workflow.run1.stage.a", "workflow.run10.stage.a"):
            ai_logger.log_call(_call(topic))
        ai_logger.log_call(_call("workflow.run1x"))
        assert ai_logger.get_stats("workflow.run1")["total_calls"] == 2
        assert ai_logger.get_stats("workflow.run10")["total_calls"] == 1
        assert ai_logger.get_stats("workflow.run1.stage.a")["total_calls"] == 1
        assert ai_logger.get_stats("workflow.run1.stage")["total_calls"] == 1
        assert ai_logger.get_stats("workflow")["total_calls"] == 4
        assert ai_logger.get_stats("workflow.")["total_calls"] == 4
        assert ai_logger.get_stats("")["total_calls"] == 4

    def test_prefixes_are_case_sensitive_and_literal(self, ai_logger: AICallLogger) -> None:
        ai_logger.log_call(_call("Workflow.R1.stage.a"))
        ai_logger.log_call(_call("workflow.r_1.stage.a"))
        ai_logger.log_call(_call("workflow.r%1.stage.a"))
        ai_logger.log_call(_call("workflow.r*1.stage.a"))
        assert ai_logger.get_stats("workflow.r1")["total_calls"] == 0
        assert ai_logger.get_stats("workflow.r_1")["total_calls"] == 1
        assert ai_logger.get_stats("workflow.r%1")["total_calls"] == 1
        assert ai_logger.get_stats("workflow.r*1")["total_calls"] == 1
        assert ai_logger.get_stats("workflow.r?1")["total_calls"] == 0
        assert ai_logger.get_stats("Workflow.R1")["total_calls"] == 1

    def test_mappings_are_accepted_too(self, ai_logger: AICallLogger) -> None:
        ai_logger.log_call(
            {
                "topic": "t.a",
                "call_type": "text",
                "model_key": "m",
                "model_id": "m",
                "prompt": "p",
                "response": "r",
                "input_tokens": 2,
                "output_tokens": 3,
                "cost": 0.5,
                "metadata": {"status": "success", "duration_ms": 4},
            }
        )
        assert ai_logger.get_stats("t")["total_output_tokens"] == 3

    def test_a_call_without_a_topic_is_refused(self, ai_logger: AICallLogger) -> None:
        with pytest.raises(ValueError):
            ai_logger.log_call({"model_key": "m", "cost": 1.0})

    def test_batch_results_are_recorded_once(self, ai_logger: AICallLogger) -> None:
        calls = [
            _call(
                "workflow.r.stage.s", cost=0.5, id=batch_call_id("b1", request), call_type="batch"
            )
            for request in ("x", "y")
        ]
        assert not ai_logger.is_recorded("b1")
        ai_logger.log_batch_results("b1", calls)
        ai_logger.log_batch_results("b1", calls)
        assert ai_logger.is_recorded("b1") and not ai_logger.is_recorded("b2")
        stats = ai_logger.get_stats("workflow.r")
        assert stats["total_calls"] == 2
        assert stats["total_cost"] == pytest.approx(1.0)

    def test_an_empty_batch_logs_nothing(self, ai_logger: AICallLogger) -> None:
        ai_logger.log_batch_results("b-empty", [])
        assert ai_logger.get_stats("")["total_calls"] == 0

    def test_a_known_id_is_not_logged_twice(self, ai_logger: AICallLogger) -> None:
        ai_logger.log_call(_call("t", id="call-1"))
        ai_logger.log_call(_call("t", id="call-1"))
        assert ai_logger.get_stats("t")["total_calls"] == 1
