"""Posts every pipeline event (EventBridge) to the environment's Slack channel, one thread per deployment."""

from deployer import notifications
from deployer.observability import step_handler

lambda_handler = step_handler(notifications.notify)
