"""PROD's replication steps: configure it (runbook section 6 step 6) and prove it works (section 7)."""

from __future__ import annotations

import os
from typing import Any

from deployer import clock
from deployer.checks import raise_if_failed
from deployer.models import DeploymentEvent, parse_event
from deployer.observability import record_failed_checks
from deployer.replication import apply_replication, verify_replication
from deployer.tooling import Tooling

# S3 Replication Time Control promises 15 minutes; the sandbox sets seconds.
DEFAULT_TIMEOUT_SECONDS = 900


def replicate(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Configure replication idempotently, recording the prior replication state for rollback."""
    deployment = parse_event(DeploymentEvent, event).deployment
    tooling.hold_lock(deployment)
    spec = tooling.spec_for(deployment)
    target = tooling.target_for(spec, deployment.deployment_id)
    applied = apply_replication(target, spec, tooling.wait)
    record = tooling.records.get(deployment.deployment_id) or {}
    prior = {
        **record.get("priorState", {}),
        **{f"{p.region}/{p.kind}/{p.name}": p.prior for p in applied if p.action != "unchanged"},
    }
    tooling.records.update(deployment.deployment_id, clock.now(), {"priorState": prior})
    result = {
        "resources": [{"kind": p.kind, "name": p.name, "action": p.action} for p in applied],
        "mutatingCalls": target.log.mutating,
        "apiCalls": target.log.as_dict(),
    }
    tooling.records.merge_region(
        deployment.deployment_id, "provisioned", "replication", result, mutating_calls=target.log.mutating
    )
    return {"mutatingCalls": target.log.mutating}


def verify(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Each replication check on its own; any failure fails the deployment with ValidationFailed."""
    deployment = parse_event(DeploymentEvent, event).deployment
    tooling.hold_lock(deployment)
    spec = tooling.spec_for(deployment)
    target = tooling.target_for(spec, deployment.deployment_id)
    timeout = float(os.environ.get("REPLICATION_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))
    results = verify_replication(target, spec, deployment.deployment_id, timeout, poll_seconds=min(5.0, timeout / 20))
    tooling.records.merge_region(deployment.deployment_id, "checks", "replication", [r.to_dict() for r in results])
    record_failed_checks(deployment.environment, "replication", results)
    raise_if_failed(results)
    return {"passed": len(results)}
