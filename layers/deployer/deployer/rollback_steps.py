"""Runbook section 9 as state machine steps: decide, roll back, prove the rollback worked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from deployer import clock
from deployer.aws import TargetSession
from deployer.checks import raise_if_failed
from deployer.errors import RollbackFailed
from deployer.incident import applied_so_far, changed_resources, classify, decide, failed_checks, within_grace
from deployer.models import DeploymentContext, DeploymentEvent, FailureEvent, parse_event
from deployer.observability import record_rollback
from deployer.rollback import RollbackAction, apply_rollback, count_data, plan_rollback, validate_rollback
from deployer.spec import EnvironmentSpec
from deployer.tooling import Tooling


def _target(tooling: Tooling, deployment: DeploymentContext) -> tuple[EnvironmentSpec, TargetSession]:
    spec = tooling.spec_for(deployment)
    return spec, tooling.target_for(spec, deployment.deployment_id)


def decide_rollback(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Classify the failure by the runbook's criteria: roll back, fix forward, or neither."""
    failure = parse_event(FailureEvent, event)
    deployment = failure.deployment
    spec = tooling.spec_for(deployment)
    record = tooling.records.get(deployment.deployment_id) or {}
    earlier, now = record.get("decision") or {}, clock.now()
    applied = applied_so_far(record)
    error = failure.error.error
    findings = classify(
        failed_checks(record),
        error,
        failure.error.cause,
        changed_resources(record),
        applied=bool(applied) or bool(record.get("mutatingCalls")),
    )
    # A failure inside its grace period is re-checked; the period runs from the first recheck's failure.
    since = datetime.fromisoformat(earlier["graceSince"]) if earlier.get("response") == "recheck" else now
    decision = within_grace(decide(findings, spec.policy.rollback), spec.policy.rollback, since, now)
    decision["applied"] = applied
    if decision["response"] == "none" and applied:  # LockLost after changes: another deployment holds the lock
        decision["reason"] = (
            f"not rolled back: {error} after changes in {', '.join(sorted(applied))}: another deployment holds "
            "the environment, and rolling back under it would change what it deploys; the changes stay as recorded"
        )
    tooling.records.update(deployment.deployment_id, now, {"decision": decision})
    if decision["response"] == "rollback":
        # Counted as it starts (the state machine's next step publishes Rollback Started).
        record_rollback(deployment.environment, decision["criterion"])
    return decision


def roll_back(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Undo this deployment from the prior state recorded at plan time; resumable, never deletes data."""
    deployment = parse_event(DeploymentEvent, event).deployment
    spec, target = _target(tooling, deployment)
    record = tooling.records.get(deployment.deployment_id) or {}
    actions = plan_rollback(record.get("priorState", {}), spec)

    def keep(progress: list[RollbackAction]) -> None:
        """The actions as they stand: the record says what ran, the one that failed and why, what did not run."""
        tooling.records.update(deployment.deployment_id, clock.now(), {"rollback": [a.to_dict() for a in progress]})

    try:
        applied = apply_rollback(target, spec, actions, tooling.wait, clock.now(), progress=keep)
    except RollbackFailed as exc:
        keep(exc.actions)
        raise
    keep(applied)
    return {"actions": len(applied), "mutatingCalls": target.log.mutating}


def validate_rolled_back(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Runbook section 9 step 4: restored as recorded, and not one item or object version lost."""
    deployment = parse_event(DeploymentEvent, event).deployment
    spec, target = _target(tooling, deployment)
    record = tooling.records.get(deployment.deployment_id) or {}
    results = validate_rollback(target, spec, record.get("priorState", {}), record.get("countsBefore", {}))
    validation = {"rollbackValidation": [r.to_dict() for r in results], "countsAfter": count_data(target, spec)}
    tooling.records.update(deployment.deployment_id, clock.now(), validation)
    try:
        raise_if_failed(results)
    except Exception as exc:
        raise RollbackFailed(f"the rollback could not be validated: {exc}") from exc
    return {"passed": len(results)}
