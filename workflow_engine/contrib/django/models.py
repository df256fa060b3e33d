"""Read-only Django models over the engine's tables (``managed = False``: no migrations).

The engine writes these rows; read them with the ORM (``WorkflowRun.objects.filter(...)``) or
the admin, and change them only through the client (``create_run``, ``cancel``, ...).
"""

from __future__ import annotations

from typing import Any

from django.db import models

from workflow_engine.status import Status

STATUS_CHOICES = [(status.value, status.value.title()) for status in Status]


class ReadOnlyModel(models.Model):
    """Refuses ``save()`` and ``delete()``: the engine owns these rows."""

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Refused: create and change runs through the client."""
        raise TypeError(f"{type(self).__name__} is read-only: use the WorkflowClient")

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Refused: the engine's retention deletes old rows."""
        raise TypeError(f"{type(self).__name__} is read-only: use the WorkflowClient")


class WorkflowRun(ReadOnlyModel):
    """One run of a workflow (table ``workflow_runs``)."""

    id = models.CharField(primary_key=True, max_length=64)
    workflow_id = models.CharField(max_length=255)
    workflow_name = models.CharField(max_length=255)
    workflow_type = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES)
    priority = models.IntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    completed_at = models.DateTimeField(null=True)
    duration = models.BigIntegerField(null=True, help_text="milliseconds")
    input = models.JSONField(null=True)
    output = models.JSONField(null=True)
    config = models.JSONField()
    metadata = models.JSONField(null=True)
    error_message = models.TextField(null=True)
    total_cost = models.FloatField()
    total_tokens = models.BigIntegerField()
    version = models.IntegerField()

    class Meta:
        managed = False
        db_table = "workflow_runs"
        ordering = ("-created_at", "-id")
        default_permissions = ("view",)
        verbose_name = "workflow run"

    def __str__(self) -> str:
        return f"{self.workflow_id} {self.id} ({self.status})"


class WorkflowStage(ReadOnlyModel):
    """One stage of a run (table ``workflow_stages``)."""

    id = models.CharField(primary_key=True, max_length=64)
    run = models.ForeignKey(
        WorkflowRun,
        on_delete=models.DO_NOTHING,
        db_column="workflow_run_id",
        db_constraint=False,
        related_name="stages",
    )
    stage_id = models.CharField(max_length=255)
    stage_name = models.CharField(max_length=255)
    stage_number = models.IntegerField()
    execution_group = models.IntegerField()
    attempt = models.IntegerField()
    status = models.CharField(max_length=16, choices=STATUS_CHOICES)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    completed_at = models.DateTimeField(null=True)
    duration = models.BigIntegerField(null=True, help_text="milliseconds")
    output = models.JSONField(null=True)
    output_ref = models.TextField(null=True)
    config = models.JSONField(null=True)
    suspended_state = models.JSONField(null=True)
    next_poll_at = models.DateTimeField(null=True)
    max_wait_until = models.DateTimeField(null=True)
    metrics = models.JSONField(null=True)
    error_message = models.TextField(null=True)
    version = models.IntegerField()

    class Meta:
        managed = False
        db_table = "workflow_stages"
        ordering = ("run", "execution_group", "stage_number")
        default_permissions = ("view",)
        verbose_name = "workflow stage"

    def __str__(self) -> str:
        return f"{self.stage_id} of {self.run_id} ({self.status})"
