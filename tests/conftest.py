"""Shared fixtures. Sandbox tests (integration, e2e) run in their own pytest process:
moto's in-process mock, used by the unit tests, resets the same backends the sandbox serves.
Each test module gets a fresh sandbox, so a module can rely on what its own tests did."""

pytest_plugins = ["tests.sandbox_fixtures"]
