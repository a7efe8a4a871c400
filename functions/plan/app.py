"""Plan: desired vs actual in every region; records the prior state."""

from deployer import pipeline
from deployer.observability import step_handler

lambda_handler = step_handler(pipeline.plan)
