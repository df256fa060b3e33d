"""The app's own data, written in the same transaction as the run it starts."""

from django.db import models

from workflow_engine.contrib.django.models import WorkflowRun


class Submission(models.Model):
    """Who asked for which run; ``reference`` is unique (an order number, say)."""

    reference = models.CharField(max_length=100, unique=True)
    run_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    @property
    def run(self) -> WorkflowRun | None:
        """The run, read through the engine's (read-only) model."""
        return WorkflowRun.objects.filter(pk=self.run_id).first()

    def __str__(self) -> str:
        return f"{self.reference} -> {self.run_id}"
