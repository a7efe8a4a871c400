"""Runbook section 7, PROD: replication configured, and a marker object and test item replicated."""

from deployer import replication_steps
from deployer.observability import step_handler

lambda_handler = step_handler(replication_steps.verify)
