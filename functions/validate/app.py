"""Runbook section 7: post-deployment validation of one region."""

from deployer import pipeline
from deployer.observability import step_handler

lambda_handler = step_handler(pipeline.validate)
