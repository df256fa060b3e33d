"""The test servers answer: if these fail, every other integration test will too."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import Engine, text

pytestmark = pytest.mark.integration


def test_postgres_answers_select_1(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar_one() == 1


def test_redis_answers_ping(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
    finally:
        client.close()
