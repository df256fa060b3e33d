"""The Django app: add ``"workflow_engine.contrib.django"`` to ``INSTALLED_APPS``.

Settings live in ``settings.WORKFLOW_ENGINE`` (the environment variables' names without the
prefix, any case; unset ones fall back to the ``WORKFLOW_ENGINE_*`` environment, and the
database falls back to Django's own, so the engine's tables sit next to the app's)::

    WORKFLOW_ENGINE = {
        "BROKER_URL": "redis://localhost:6379/0",
        "REGISTRY": "myapp.workflows:registry",
        # "DATABASE": "default",  # the Django database whose transactions runs join
    }

Then, in a view::

    from django.db import transaction
    from workflow_engine.contrib.django import create_run

    with transaction.atomic():
        order = Order.objects.create(...)
        run_id = create_run("fulfil-order", {"order": order.number})
    # committed: the run exists and a worker was woken; rolled back: neither happened

``manage.py workflow_engine_migrate`` makes the engine's schema, ``manage.py
workflow_engine_runs list|show`` inspects runs, and the admin shows runs and stages read-only.
"""

from workflow_engine.contrib.django.runs import (
    create_run,
    engine_settings,
    get_client,
    reset_client,
)

__all__ = ["create_run", "engine_settings", "get_client", "reset_client"]
