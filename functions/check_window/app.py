"""Right before applying: inside the deployment window, or how long to wait for it."""

from deployer import pipeline
from deployer.observability import step_handler

lambda_handler = step_handler(pipeline.check_window)
