"""The AICallLogger conformance suite on Postgres, and run totals from real SQL-logged calls."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from workflow_engine.ai import AICallLogger
from workflow_engine.persistence.sql import SqlAICallLogger
from workflow_engine.testing import FakeClock
from workflow_engine.testing.conformance import AICallLoggerConformance

pytestmark = pytest.mark.integration


class TestPostgresAICallLogger(AICallLoggerConformance):
    @pytest.fixture
    def ai_logger(self, migrated_pg: Engine) -> AICallLogger:
        return SqlAICallLogger(migrated_pg, clock=FakeClock())


def test_stats_are_one_grouped_query_inside_an_open_transaction(migrated_pg: Engine) -> None:
    """complete_run reads the totals inside its transaction: the logger joins it."""
    from workflow_engine.persistence.sql.dialect import transaction

    logger = SqlAICallLogger(migrated_pg, clock=FakeClock())
    with transaction(migrated_pg):
        logger.log_call({"topic": "workflow.r.stage.a", "model_key": "m", "cost": 0.5})
        assert logger.get_stats("workflow.r")["total_cost"] == 0.5
    assert logger.get_stats("workflow.r")["total_calls"] == 1
