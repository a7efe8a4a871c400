"""Runbook section 6 step 6: S3 cross-region replication and global-table replicas."""

from deployer import replication_steps
from deployer.observability import step_handler

lambda_handler = step_handler(replication_steps.replicate)
