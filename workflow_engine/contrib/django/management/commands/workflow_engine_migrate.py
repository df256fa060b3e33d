"""``manage.py workflow_engine_migrate``: create or upgrade the engine's tables."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from workflow_engine.contrib.django.runs import engine_settings
from workflow_engine.persistence.sql import create_engine, upgrade


class Command(BaseCommand):
    """Apply every engine schema migration to its database (safe to run again)."""

    help = "Create or upgrade the workflow engine's tables (its own Alembic migrations)."

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the migrations, then say where."""
        engine = create_engine(engine_settings().database_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        self.stdout.write(self.style.SUCCESS(f"workflow engine schema is up to date on {where}"))
