"""The AICallLogger conformance suite on the in-memory and SQLite loggers, and the test helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.sql_databases import SqliteTemplate
from workflow_engine.ai import AICall, AICallLogger
from workflow_engine.persistence.sql import SqlAICallLogger
from workflow_engine.persistence.sql.ai_calls import topic_condition
from workflow_engine.testing import FakeClock, InMemoryAICallLogger
from workflow_engine.testing.conformance import AICallLoggerConformance


class TestInMemoryAICallLogger(AICallLoggerConformance):
    @pytest.fixture
    def ai_logger(self) -> AICallLogger:
        return InMemoryAICallLogger(clock=FakeClock())


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("ai-sqlite-template"))


@pytest.fixture
def sqlite_engine(sqlite_template: SqliteTemplate, tmp_path: Path) -> Iterator[Engine]:
    with sqlite_template.clone(tmp_path) as engine:
        yield engine


class TestSqliteAICallLogger(AICallLoggerConformance):
    @pytest.fixture
    def ai_logger(self, sqlite_engine: Engine) -> AICallLogger:
        return SqlAICallLogger(sqlite_engine, clock=FakeClock())


def test_sql_logger_stores_every_column(sqlite_engine: Engine) -> None:
    logger = SqlAICallLogger(sqlite_engine, clock=FakeClock())
    row = logger.log_call(
        AICall(
            topic="t",
            call_type="embed",
            model_key="k",
            model_id="id",
            prompt="p\x00",
            response="r",
            input_tokens=1,
            output_tokens=0,
            cost=0.5,
            metadata={"status": "success"},
        )
    )
    assert row["prompt"] == "p" and row["created_at"] == FakeClock().now()
    with sqlite_engine.connect() as conn:
        [stored] = conn.exec_driver_sql("SELECT topic, call_type, metadata FROM ai_calls").all()
    assert stored[0] == "t" and stored[1] == "embed" and "success" in stored[2]


def test_sqlite_prefix_search_is_a_glob_and_postgres_a_like() -> None:
    sqlite = str(topic_condition("sqlite", "workflow.r1").compile())
    postgres = str(topic_condition("postgresql", "workflow.r1").compile())
    assert "GLOB" in sqlite and "LIKE" in postgres
    assert topic_condition("sqlite", "") is None


def test_in_memory_helpers() -> None:
    logger = InMemoryAICallLogger(clock=FakeClock())
    logger.log_call(
        {
            "topic": "w.r.stage.a",
            "model_key": "m1",
            "call_type": "text",
            "cost": 1.0,
            "input_tokens": 3,
            "output_tokens": 4,
            "metadata": {"status": "success"},
        }
    )
    logger.log_call(
        {
            "topic": "w.r.stage.b",
            "model_key": "m2",
            "call_type": "embed",
            "cost": 2.0,
            "input_tokens": 5,
        }
    )
    logger.log_batch_results("b1", [{"topic": "w.r.stage.b", "model_key": "m2", "id": "x"}])

    assert [c["topic"] for c in logger.get_calls_by_topic("w.r.stage.a")] == ["w.r.stage.a"]
    assert len(logger.get_calls_by_topic_prefix("w.r")) == 3
    assert len(logger.get_calls_by_model("m2")) == 2
    assert len(logger.get_calls_by_type("embed")) == 1
    assert logger.get_total_cost("w.r") == 3.0 and logger.get_total_tokens() == 12
    assert logger.get_call_count("w.r.stage.b") == 2
    assert logger.get_recorded_batch_ids() == ["b1"] and logger.is_recorded("b1")
    last = logger.get_last_call()
    assert last is not None and last["metadata"] == {"batch_id": "b1"}
    assert logger.has_call_matching(model_key="m1", metadata={"status": "success"})
    assert not logger.has_call_matching(model_key="m1", metadata={"status": "error"})
    logger.clear()
    assert logger.get_call_count() == 0 and logger.get_recorded_batch_ids() == []
    assert logger.get_last_call() is None
