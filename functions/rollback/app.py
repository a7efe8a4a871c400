"""Undo a deployment from its recorded prior state, replication first; never deletes data."""

from deployer import rollback_steps
from deployer.observability import step_handler

lambda_handler = step_handler(rollback_steps.roll_back)
