"""Take the environment lock (a lease), or fail with LockHeld."""

from deployer import pipeline
from deployer.observability import step_handler

lambda_handler = step_handler(pipeline.acquire_lock)
