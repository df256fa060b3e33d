"""The engine's Celery app, built from Django's settings.

    DJANGO_SETTINGS_MODULE=mysite.settings celery -A workflow_engine.contrib.django worker
    DJANGO_SETTINGS_MODULE=mysite.settings celery -A workflow_engine.contrib.django beat

Workers and beat then read ``settings.WORKFLOW_ENGINE`` (and Django's database) exactly like the
web processes do; ``celery -A celery_app`` with ``WORKFLOW_ENGINE_*`` environment variables
works as well.
"""

from __future__ import annotations

import django

from workflow_engine.celery.app import create_celery_app
from workflow_engine.contrib.django.runs import engine_settings

django.setup()

#: What ``celery -A workflow_engine.contrib.django`` finds.
app = create_celery_app(engine_settings())
