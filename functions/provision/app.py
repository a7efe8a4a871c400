"""Apply one region idempotently."""

from deployer import pipeline
from deployer.observability import step_handler

lambda_handler = step_handler(pipeline.provision)
