"""URLs: the admin (runs and stages, read-only) and the JSON API of ``submissions``."""

from django.contrib import admin
from django.urls import path
from submissions import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("runs", views.start_run, name="start-run"),
    path("runs/<str:run_id>", views.show_run, name="show-run"),
    path("runs/<str:run_id>/cancel", views.cancel_run, name="cancel-run"),
    path("health", views.health, name="health"),
]
