"""Durable adapters of the persistence ports.

:mod:`workflow_engine.persistence.sql` holds the SQL adapters (Postgres and SQLite). Nothing is
imported here, so ``import workflow_engine`` never pulls in SQLAlchemy.
"""
