"""Runbook section 3 as code: the pre-deployment checklist."""

from deployer import pipeline
from deployer.observability import step_handler

lambda_handler = step_handler(pipeline.preflight)
