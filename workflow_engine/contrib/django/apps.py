"""The app config of ``workflow_engine.contrib.django`` (app label ``workflow_engine``)."""

from __future__ import annotations

from django.apps import AppConfig


class WorkflowEngineConfig(AppConfig):
    """Runs and stages in the admin, and the engine's management commands."""

    name = "workflow_engine.contrib.django"
    label = "workflow_engine"
    verbose_name = "Workflow engine"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Forget the cached client when tests override the settings it was built from."""
        from django.test.signals import setting_changed

        from workflow_engine.contrib.django.runs import on_setting_changed

        setting_changed.connect(on_setting_changed, dispatch_uid="workflow_engine.settings")
