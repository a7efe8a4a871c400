"""Closes the record and frees the lock of a deployment whose execution was aborted, timed out or failed uncaught."""

from deployer import stopped
from deployer.observability import step_handler

lambda_handler = step_handler(stopped.close_stopped)
