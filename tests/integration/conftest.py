"""Fixtures for tests/integration (shared ones live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.sql_databases import PostgresDatabase


@pytest.fixture(scope="module")
def pg_database(database_url: str) -> Iterator[PostgresDatabase]:
    """A migrated database on the test server, shared by a module's tests."""
    database = PostgresDatabase(database_url)
    yield database
    database.close()


@pytest.fixture
def migrated_pg(pg_database: PostgresDatabase) -> Iterator[Engine]:
    """An engine on ``pg_database``, emptied for this test."""
    with pg_database.fresh() as engine:
        yield engine
