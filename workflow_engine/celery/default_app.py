"""The Celery app built from the environment: ``celery -A workflow_engine.celery.default_app``."""

from workflow_engine.celery.app import create_celery_app

app = create_celery_app()
