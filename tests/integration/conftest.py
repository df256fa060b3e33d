"""Fixtures for tests/integration (shared ones live in tests/conftest.py)."""
