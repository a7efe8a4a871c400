"""POST /slack/interactions: Slack's signed button clicks on approvals.

Slack's three seconds include this function's cold start, so it imports the interactions
module alone: deployer.approval_steps would also import planning, the spec models and
their YAML parser, none of which a click needs.
"""

from deployer.interactions import slack_interaction
from deployer.observability import step_handler

lambda_handler = step_handler(slack_interaction)
