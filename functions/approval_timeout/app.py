"""The wait for approval elapsed: remind in the thread, or expire past the deadline."""

from deployer import approval_steps
from deployer.observability import step_handler

lambda_handler = step_handler(approval_steps.approval_wait_elapsed)
