"""Validate the execution input, pin the spec version, open the deployment record."""

from deployer import pipeline
from deployer.observability import step_handler

lambda_handler = step_handler(pipeline.start)
