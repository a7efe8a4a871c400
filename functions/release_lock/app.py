"""Release the environment lock if this deployment holds it."""

from deployer import pipeline
from deployer.observability import step_handler

lambda_handler = step_handler(pipeline.release_lock)
