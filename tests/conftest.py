"""Shared test settings. Every Trio test runs under pytest-trio (trio_mode in pyproject.toml)."""
