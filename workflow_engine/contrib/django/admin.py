"""A read-only admin for runs and their stages (view permission only; nothing editable)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from workflow_engine.contrib.django.models import WorkflowRun, WorkflowStage

RUN_FIELDS = (
    "id",
    "workflow_id",
    "workflow_name",
    "status",
    "priority",
    "created_at",
    "started_at",
    "completed_at",
    "duration",
    "input",
    "config",
    "output",
    "error_message",
    "total_cost",
    "total_tokens",
    "metadata",
)
STAGE_FIELDS = (
    "id",
    "run",
    "stage_id",
    "stage_name",
    "execution_group",
    "stage_number",
    "status",
    "attempt",
    "created_at",
    "started_at",
    "completed_at",
    "duration",
    "next_poll_at",
    "max_wait_until",
    "output",
    "output_ref",
    "config",
    "suspended_state",
    "metrics",
    "error_message",
)


class ReadOnlyAdminMixin:
    """No add, change or delete: the engine owns the rows."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Runs are created by the client, never in the admin."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Rows change only through kernel commands (view permission still shows them)."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The engine's retention deletes old rows."""
        return False


class StageInline(ReadOnlyAdminMixin, admin.TabularInline):
    """A run's stages, in execution order, on the run's page."""

    model = WorkflowStage
    fields = (
        "stage_id",
        "execution_group",
        "status",
        "attempt",
        "started_at",
        "duration",
        "error_message",
    )
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(WorkflowRun)
class WorkflowRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Runs, newest first, filterable by status and workflow."""

    list_display = (
        "id",
        "workflow_id",
        "status",
        "priority",
        "created_at",
        "completed_at",
        "duration",
    )
    list_filter = ("status", "workflow_id")
    search_fields = ("id", "workflow_id")
    date_hierarchy = "created_at"
    fields = RUN_FIELDS
    readonly_fields = RUN_FIELDS
    inlines = (StageInline,)


@admin.register(WorkflowStage)
class WorkflowStageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every stage of every run, filterable by status and stage id."""

    list_display = ("stage_id", "run", "execution_group", "status", "attempt", "duration")
    list_filter = ("status", "stage_id")
    search_fields = ("run__id", "stage_id")
    list_select_related = ("run",)
    fields = STAGE_FIELDS
    readonly_fields = STAGE_FIELDS
