"""Migrated databases for the SQL adapter tests, made cheaply.

The schema is made once by the real migrations; Postgres tests then share that database,
emptied before each test, and SQLite tests each get a copy of a migrated file.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url

from workflow_engine.persistence.sql import create_engine, metadata, upgrade


class PostgresDatabase:
    """A migrated database on the test server, wiped clean for each test.

    Emptying ten small tables with ``DELETE`` costs ~15 ms; cloning a template database costs
    20-300 ms on this machine (it waits for a checkpoint), so the tests share one database.
    """

    def __init__(self, database_url: str) -> None:
        self.url = make_url(database_url).set(drivername="postgresql+psycopg")
        self.name = f"wfe_sql_{uuid.uuid4().hex[:12]}"
        admin_statement(self.url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.database_url = self.url.set(database=self.name).render_as_string(hide_password=False)
        engine = create_engine(self.database_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    @contextmanager
    def fresh(self) -> Iterator[Engine]:
        """An engine on the database, emptied first; disposed afterwards."""
        engine = create_engine(self.database_url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(_WIPE)
            yield engine
        finally:
            engine.dispose()

    def close(self) -> None:
        """Drop the database (closing whatever still uses it)."""
        admin_statement(
            self.url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)),
        )


def admin_statement(url: URL, statement: sql.Composed) -> None:
    """Run one statement on the server's maintenance database, outside a transaction."""
    dsn = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(dsn.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute(statement)


_WIPE = "; ".join(f"DELETE FROM {table.name}" for table in reversed(metadata.sorted_tables))


class SqliteTemplate:
    """A migrated SQLite file, copied for each test."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "template.db"
        engine = create_engine(f"sqlite:///{self.path}")
        try:
            upgrade(engine)
        finally:
            engine.dispose()  # checkpoints the WAL into the file

    def copy_to(self, directory: Path) -> str:
        """Copy the migrated database into ``directory``; return its URL."""
        target = directory / "state.db"
        shutil.copyfile(self.path, target)
        return f"sqlite:///{target}"

    @contextmanager
    def clone(self, directory: Path) -> Iterator[Engine]:
        """An engine on a fresh migrated copy in ``directory``."""
        engine = create_engine(self.copy_to(directory))
        try:
            yield engine
        finally:
            engine.dispose()
