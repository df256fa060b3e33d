"""The Celery application: ``celery -A celery_app worker`` / ``celery -A celery_app beat``.

Settings come from ``WORKFLOW_ENGINE_*`` environment variables (see the README); the beat
schedule (the maintenance tick) is in ``beat_schedule.py``.
"""

from beat_schedule import beat_schedule
from workflow_engine.celery import create_celery_app

app = create_celery_app()
app.conf.beat_schedule = beat_schedule
