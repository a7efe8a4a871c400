"""Runbook section 9 step 4: the restored state and data counts equal what was recorded."""

from deployer import rollback_steps
from deployer.observability import step_handler

lambda_handler = step_handler(rollback_steps.validate_rolled_back)
