"""Close the deployment record with its outcome."""

from deployer import pipeline
from deployer.observability import step_handler

lambda_handler = step_handler(pipeline.record_outcome)
