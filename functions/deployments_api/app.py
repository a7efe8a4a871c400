"""POST /deployments, GET /deployments and GET /deployments/{id} (openapi.yaml)."""

from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from deployer.deployments_api import build_api
from deployer.observability import logger, metrics, tooling, tracer


@cache
def api() -> APIGatewayRestResolver:
    return build_api(tooling())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api().resolve(event, context)
