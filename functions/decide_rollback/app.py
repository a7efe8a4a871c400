"""Runbook section 9: classify the failure; roll back or fix forward by the policy's criteria."""

from deployer import rollback_steps
from deployer.observability import step_handler

lambda_handler = step_handler(rollback_steps.decide_rollback)
