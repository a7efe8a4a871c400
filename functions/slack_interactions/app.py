"""POST /slack/interactions: Slack's signed button clicks on approvals."""

from deployer import approval_steps
from deployer.observability import step_handler

lambda_handler = step_handler(approval_steps.slack_interaction)
