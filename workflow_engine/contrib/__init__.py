"""Integrations with web frameworks, each in its own module and imported only when used.

- :mod:`workflow_engine.contrib.flask`: the ``WorkflowEngine`` Flask extension.
- :mod:`workflow_engine.contrib.django`: a Django app (settings, ``create_run`` inside
  ``transaction.atomic``, management commands, a read-only admin).
"""
