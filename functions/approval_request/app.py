"""Opens an approval and posts it to Slack; registers each wait's task token."""

from deployer import approval_steps
from deployer.observability import step_handler

lambda_handler = step_handler(approval_steps.request_approval)
