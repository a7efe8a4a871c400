"""Logging, tracing and metrics (Powertools), and the adapter every handler is made with.

Service name and metrics namespace come from POWERTOOLS_* variables in the template's
Globals, so no function names itself here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from deployer.tooling import Tooling

logger = Logger()
tracer = Tracer()
metrics = Metrics()

Step = Callable[[dict[str, Any], Tooling], dict[str, Any]]
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

# The execution's name is the deployment id: every log line carries it.
CORRELATION_PATH = "deployment.deploymentId || deploymentId"


@cache
def tooling() -> Tooling:
    """Built once per container, on the first invocation rather than at import."""
    return Tooling.from_environment()


def step_handler(step: Step) -> Handler:
    """A Lambda handler that runs one pipeline step; exceptions propagate to Step Functions."""

    @logger.inject_lambda_context(correlation_id_path=CORRELATION_PATH, clear_state=True)
    @metrics.log_metrics(capture_cold_start_metric=True)
    @tracer.capture_lambda_handler
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:  # noqa: ARG001 - Lambda's signature
        return step(event, tooling())

    handler: Handler = lambda_handler
    return handler
