"""Shared fixtures. Sandbox tests (integration, e2e) run in their own pytest process:
moto's in-process mock, used by the unit tests, resets the same backends the sandbox serves."""

pytest_plugins = ["tests.sandbox_fixtures"]
