"""Re-plan after approval: a plan that changed since it was approved stops the deployment."""

from deployer import approval_steps
from deployer.observability import step_handler

lambda_handler = step_handler(approval_steps.verify_plan)
