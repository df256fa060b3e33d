"""Fixtures for tests/e2e (shared ones live in tests/conftest.py)."""
