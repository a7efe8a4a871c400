"""Logging, tracing and metrics (Powertools), and the adapter every handler is made with.

Service name and metrics namespace come from POWERTOOLS_* variables in the template's
Globals, so no function names itself here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from deployer.tooling import Tooling

if TYPE_CHECKING:
    from deployer.checks import CheckResult

logger = Logger()
# What the functions call out through: AWS (botocore) and Slack (slack_sdk, over http.client).
# Tracer's default, patch_all, also imports and patches every other library the X-Ray SDK
# knows that happens to be installed (requests, sqlite3, ...): cold-start time, nothing traced.
tracer = Tracer(patch_modules=("botocore", "httplib"))
metrics = Metrics()

Step = Callable[[dict[str, Any], Tooling], dict[str, Any]]
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

# The execution's name is the deployment id: every log line carries it. Every Task passes
# either `deployment` or `deploymentId`; the Slack endpoint gets an API Gateway event, so its
# request id stands in until the clicked approval names the deployment (see interactions).
# NotifyFunction gets EventBridge envelopes: ours carry detail.deploymentId, Step Functions'
# status changes the execution's name (= the deployment id) as detail.name.
CORRELATION_PATH = (
    "deployment.deploymentId || deploymentId || requestContext.requestId || detail.deploymentId || detail.name"
)


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


# Pipeline health metrics, read by the template's Dashboard (namespace and service from
# Globals). An invocation works on one deployment, so `environment` joins the invocation's
# metric set, which log_metrics flushes; a metric with a further dimension gets its own EMF
# blob (single_metric) so that dimension reaches no other metric. Detail worth keeping per data
# point goes in as metadata: searchable in the logs, but not a dimension (each dimension value
# is one more billed metric).


def record_deployment_metrics(environment: str, outcome: str, duration_seconds: float) -> None:
    """One finished deployment: ``Deployments`` by environment and outcome, and its ``DeploymentDuration``."""
    with single_metric(
        name="Deployments", unit=MetricUnit.Count, value=1, default_dimensions={"environment": environment}
    ) as metric:
        metric.add_dimension(name="outcome", value=outcome)
    _add_metric("DeploymentDuration", MetricUnit.Seconds, max(0.0, duration_seconds), environment)


def record_approval_wait(environment: str, wait_seconds: float, decision: str) -> None:
    """An approval became final (approved, rejected or expired) ``wait_seconds`` after it was opened."""
    _add_metric("ApprovalWait", MetricUnit.Seconds, max(0.0, wait_seconds), environment, decision=decision)


def record_rollback(environment: str, criterion: str | None) -> None:
    """A rollback was decided and starts now; the deciding runbook criterion is metadata."""
    _add_metric("Rollbacks", MetricUnit.Count, 1, environment, criterion=criterion)


def record_failed_checks(environment: str, stage: str, results: Iterable[CheckResult]) -> None:
    """Count the checks of ``stage`` (preflight, validation, replication) that failed; none, no metric."""
    failed = [r for r in results if not r.passed]
    if failed:
        names = [f"{r.name} {r.region}/{r.resource}" for r in failed]
        _add_metric("FailedChecks", MetricUnit.Count, len(failed), environment, stage=stage, checks=names)


def record_mutating_calls(count: int) -> None:
    """AWS calls that changed something in the target account (dimension: service only)."""
    metrics.add_metric(name="MutatingCalls", unit=MetricUnit.Count, value=count)


def _add_metric(name: str, unit: MetricUnit, value: float, environment: str, **metadata: Any) -> None:
    metrics.add_dimension(name="environment", value=environment)
    metrics.add_metric(name=name, unit=unit, value=value)
    for key, item in metadata.items():
        if item is not None:
            metrics.add_metadata(key=key, value=item)
