"""Example apps: ``flask_app`` and ``django_project`` (see the README)."""
