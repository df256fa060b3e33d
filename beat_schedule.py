"""Celery beat's schedule: the engine's maintenance tick (claim pending runs, poll suspended
stages, reap stale leases and stuck runs, re-send lost wake-ups, flush the outbox, expire old
keys). Add your own periodic tasks here.
"""

from workflow_engine.celery import maintenance_schedule
from workflow_engine.settings import EngineSettings

beat_schedule = maintenance_schedule(EngineSettings.from_env())
