"""One function per state of the deployment state machine; handlers only adapt to them."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from deployer import clock
from deployer.announcements import EMERGENCY_DETAIL_TYPE, announce, emergency_approvals, require_notice
from deployer.aws import execution_history, transient_errors
from deployer.checks import CheckResult, raise_if_failed, validate_region
from deployer.errors import InputInvalid, PreflightFailed
from deployer.events import publish
from deployer.incident import incident_report, recovered
from deployer.models import (
    DeploymentContext,
    DeploymentEvent,
    DeploymentRequest,
    OutcomeEvent,
    PolicySummary,
    RegionEvent,
    RegionWork,
    Requester,
    Schedule,
    Shard,
    StartEvent,
    parse_event,
)
from deployer.observability import record_deployment_metrics, record_failed_checks, record_mutating_calls
from deployer.plan import apply_region, plan_environment, unchanged_in
from deployer.policy_change import policy_change
from deployer.preflight import release_tag_check, run_preflight
from deployer.promotion import promotion_check
from deployer.records import iso
from deployer.rollback import count_data
from deployer.spec import EnvironmentSpec
from deployer.tooling import Tooling
from deployer.windows import decide_window

# A region not split into shards: all of its resources.
WHOLE = Shard(shard=0, of=1)
INCIDENT_STATUSES = ("ROLLED_BACK", "ROLLBACK_FAILED", "SUCCEEDED_WITH_WARNINGS")
OUTCOME_DETAIL_TYPES = {
    "SUCCEEDED": "Deployment Succeeded",
    "FAILED": "Deployment Failed",
    "PLANNED": "Deployment Planned",
    "ROLLED_BACK": "Rollback Completed",
    "SUCCEEDED_WITH_WARNINGS": "Deployment Succeeded",
    "ROLLBACK_FAILED": "Incident Declared",
}


def start(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Validate the execution input, pin the spec version and open the deployment record."""
    start_event = parse_event(StartEvent, event)
    request = parse_event(DeploymentRequest, start_event.input)
    requester = _requester(tooling, start_event.deployment_id, request)
    pinned = _rollback_target(tooling, request) if request.rollback_to else request.spec_version
    spec, version = tooling.specs.get(request.environment, pinned)
    # The account's guardrails, before anything else: a spec that loosens them never reaches its account.
    tooling.guardrails.enforce(spec)
    now = clock.now()
    if request.announce_only:
        _require_announcement_only(request)
    # Refused before anything is announced: an emergency is never scheduled.
    emergency = emergency_approvals(
        spec, request.emergency, scheduled=request.scheduled_for is not None, dry_run=request.dry_run
    )
    schedule, announced = None, None
    if request.scheduled_for is not None:
        # Announced now (runbook section 6 step 1), applied at its time: CheckWindow holds it to the notice.
        announced = announce(
            tooling,
            spec,
            change_ticket=request.change_ticket,
            scheduled_for=request.scheduled_for,
            announced_by=requester,
            now=now,
            execution_name=start_event.deployment_id,
            scheduled_run=not request.announce_only,
        )
        if request.announce_only:
            # The console's `deployer announce`: the window is announced, nothing is deployed (IsAnnouncement).
            return {
                "announceOnly": True,
                "announcement": {**announced["detail"], "announcementId": announced["announcementId"]},
            }
        schedule = Schedule(
            scheduled_for=iso(request.scheduled_for),
            wait_seconds=max(0, math.ceil((request.scheduled_for - now).total_seconds())),
        )
    elif request.emergency is None and not request.dry_run:
        # Checked again right before applying; now, so that nobody is asked to approve what cannot apply.
        # A dry run applies nothing, so it needs no notice.
        announced = require_notice(tooling.records, spec.policy, spec.environment, request.change_ticket, now)
    change = policy_change(tooling.records, tooling.specs, spec.environment, spec.policy)
    approvals = spec.policy.approvals
    # A promotion override is only ever granted with extra approvals on top of the policy's.
    override_approvals = (
        spec.policy.promotion.override_approvals if spec.policy.promotion and request.promotion_override else 0
    )
    context = DeploymentContext(
        deployment_id=start_event.deployment_id,
        execution_arn=start_event.execution_arn,
        execution_started_at=start_event.execution_started_at,
        environment=request.environment,
        requested_by=requester.name,
        requester=requester,
        change_ticket=request.change_ticket,
        dry_run=request.dry_run,
        spec_version=version,
        spec_hash=spec.spec_hash(),
        account=spec.account,
        regions=spec.regions.all(),
        policy=PolicySummary(
            approvals_required=approvals.required + override_approvals + emergency,
            previous_approvals_required=change.previous_required if change else 0,
            approval_first_wait_seconds=math.ceil(60 * (approvals.reminder_minutes or approvals.timeout_minutes)),
            lock_lease_seconds=spec.policy.lock_lease_minutes * 60,
            has_window=spec.policy.window is not None,
            needs_notice=bool(spec.policy.minimum_notice_hours) and request.emergency is None and not request.dry_run,
            has_replication=bool(spec.replicated_buckets() or any(t.replica_regions for t in spec.resources.tables)),
        ),
        schedule=schedule,
        promotion_override=request.promotion_override,
        emergency=request.emergency,
        release_tag=request.release_tag,
        rollback_to=request.rollback_to,
        work=[_region_work(spec, region, tooling.shard_size) for region in spec.regions.all()],
    )
    tooling.records.create(
        context.deployment_id,
        context.environment,
        clock.now(),
        {
            "executionArn": context.execution_arn,
            "requestedBy": context.requested_by,
            "requester": requester.dump(),
            "changeTicket": context.change_ticket,
            "dryRun": context.dry_run,
            "specVersion": version,
            "specHash": context.spec_hash,
            "resourcesHash": spec.resources_hash(),
            "promotionHash": spec.promotion_hash(),
            "scheduledFor": schedule.scheduled_for if schedule else None,
            "promotionOverride": request.promotion_override,
            "emergency": request.emergency,
            "releaseTag": request.release_tag,
            "announcement": _announcement_fields(announced),
            "rollbackTo": request.rollback_to,
            "origin": request.origin.dump() if request.origin else None,
            "account": spec.account,
            "regions": context.regions,
            "policy": spec.policy.model_dump(mode="json", by_alias=True),
            "policyChange": change.dump() if change else None,
            "input": start_event.input,
        },
    )
    if request.emergency is not None:
        _declare_emergency(tooling, context, spec)
    return context.dump()


def _require_announcement_only(request: DeploymentRequest) -> None:
    """An ``announceOnly`` input names the window's start, and nothing that only a deployment has."""
    if request.scheduled_for is None:
        raise InputInvalid("announceOnly: scheduledFor is required, the start of the window announced")
    extras = {
        "dryRun": request.dry_run,
        "promotionOverride": request.promotion_override,
        "emergency": request.emergency,
        "rollbackTo": request.rollback_to,
    }
    given = [name for name, value in extras.items() if value]
    if given:
        raise InputInvalid(f"announceOnly: an announcement deploys nothing, so {', '.join(given)} may not be given")


def _announcement_fields(announced: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a record keeps of the announcement its deployment is held to."""
    if announced is None:
        return None
    return {k: announced[k] for k in ("announcementId", "announcedAt", "windowStart", "windowEnd", "changeTicket")}


def _declare_emergency(tooling: Tooling, context: DeploymentContext, spec: EnvironmentSpec) -> None:
    """Announce in the policy's incident channel that a deployment skips the notice (runbook section 9)."""
    assert spec.policy.emergency is not None
    publish(
        tooling.events,
        tooling.event_bus,
        EMERGENCY_DETAIL_TYPE,
        {
            "deploymentId": context.deployment_id,
            "executionArn": context.execution_arn,
            "environment": context.environment,
            "requestedBy": context.requested_by,
            "changeTicket": context.change_ticket,
            "reason": context.emergency,
            "approvalsRequired": context.policy.approvals_required,
            "extraApprovals": spec.policy.emergency.extra_approvals,
            "minimumNoticeHours": spec.policy.minimum_notice_hours,
        },
    )


def _requester(tooling: Tooling, deployment_id: str, request: DeploymentRequest) -> Requester:
    """The requester the deployments API verified for this execution, else the name the input claims."""
    verified = tooling.records.verified_requester(deployment_id)
    if verified is not None:
        return Requester.model_validate(verified)
    return Requester(name=request.requested_by)


def _region_work(spec: EnvironmentSpec, region: str, shard_size: int) -> RegionWork:
    count = max(1, math.ceil(len(spec.resources_in(region)) / shard_size))
    return RegionWork(region=region, shards=[Shard(shard=i, of=count) for i in range(count)])


def _rollback_target(tooling: Tooling, request: DeploymentRequest) -> str:
    """The spec version a manual rollback deploys: that of an earlier successful deployment of this environment."""
    target = tooling.records.get(str(request.rollback_to))
    if target is None or target.get("environment") != request.environment:
        raise InputInvalid(f"rollbackTo: no deployment {request.rollback_to} of environment {request.environment}")
    if target.get("status") not in ("SUCCEEDED", "SUCCEEDED_WITH_WARNINGS"):
        raise InputInvalid(f"rollbackTo: deployment {request.rollback_to} ended {target.get('status')}, not SUCCEEDED")
    if request.spec_version and request.spec_version != target["specVersion"]:
        raise InputInvalid("specVersion: a rollback deploys the target deployment's spec version; leave it out")
    return str(target["specVersion"])


def acquire_lock(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    deployment = parse_event(DeploymentEvent, event).deployment
    return tooling.records.acquire_lock(
        deployment.environment,
        deployment.deployment_id,
        deployment.requested_by,
        deployment.policy.lock_lease_seconds,
        clock.now(),
    )


def release_lock(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    deployment = parse_event(DeploymentEvent, event).deployment
    released = tooling.records.release_lock(deployment.environment, deployment.deployment_id)
    return {"released": released}


def preflight(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Runbook section 3: identity, change ticket, approvals, bucket names, table backups."""
    deployment = parse_event(DeploymentEvent, event).deployment
    tooling.hold_lock(deployment)
    spec = tooling.spec_for(deployment)
    target = tooling.target_for(spec, deployment.deployment_id)
    with transient_errors():
        account = target.client("sts", spec.regions.primary).get_caller_identity()["Account"]
    promotion = (
        CheckResult(
            "promotion", "global", spec.environment, True, f"rollback to {deployment.rollback_to}, which succeeded here"
        )
        if deployment.rollback_to
        else promotion_check(tooling.records, spec, deployment.promotion_override, tooling.guardrails)
    )
    try:
        checks = run_preflight(
            target,
            account,
            spec,
            deployment.change_ticket,
            clock.now(),
            requested_by=deployment.requested_by,
            requester_slack_ids=tooling.identities.slack_ids_of(deployment.who_requested()),
        )
    except PreflightFailed as exc:
        checks = exc.checks
    # A dry run deploys nothing, and a rollback redeploys a release that was checked when it deployed.
    tag_required = spec.policy.release_tag.required and not (deployment.dry_run or deployment.rollback_to)
    checks += [release_tag_check(spec, deployment.release_tag, clock.now(), required=tag_required), promotion]
    tooling.records.update(deployment.deployment_id, clock.now(), {"preflight": _checks(checks)})
    record_failed_checks(deployment.environment, "preflight", checks)
    failed = [c.detail for c in checks if not c.passed]
    if failed:
        raise PreflightFailed("\n".join(failed), checks=checks)
    return {"passed": len(checks)}


def plan(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Diff desired with actual in every region and record the prior state of what will change."""
    deployment = parse_event(DeploymentEvent, event).deployment
    tooling.hold_lock(deployment)
    spec = tooling.spec_for(deployment)
    target = tooling.target_for(spec, deployment.deployment_id)
    result = plan_environment(target, spec)
    # Replication's prior state is recorded by Replicate when it applies: a rollback before then has none to undo.
    prior = {
        f"{r.region}/{r.kind}/{r.name}": r.prior
        for r in result.resources
        if r.action != "unchanged" and r.kind in ("bucket", "table")
    }
    summary = result.to_dict()
    # What a rollback must give back, counted before anything changes (runbook section 9 step 4).
    counts = count_data(target, spec)
    tooling.records.update(
        deployment.deployment_id, clock.now(), {"plan": summary, "priorState": prior, "countsBefore": counts}
    )
    return {key: summary[key] for key in ("add", "change", "unchanged", "hash", "summary")}


def provision(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Apply one region idempotently; only what the fresh plan says differs is touched."""
    region_event = parse_event(RegionEvent, event)
    deployment, region, shard = region_event.deployment, region_event.region, region_event.shard or WHOLE
    tooling.hold_lock(deployment)
    spec = tooling.spec_for(deployment)
    target = tooling.target_for(spec, deployment.deployment_id)
    record = tooling.records.get(deployment.deployment_id) or {}
    unchanged = unchanged_in(record.get("plan") or {}, region)
    applied = apply_region(target, spec, region, tooling.wait, shard=shard.shard, of=shard.of, unchanged=unchanged)
    result = {
        "resources": [{"kind": r.kind, "name": r.name, "action": r.action} for r in applied],
        "mutatingCalls": target.log.mutating,
        "apiCalls": target.log.as_dict(),
    }
    tooling.records.merge_region(
        deployment.deployment_id, "provisioned", region, result, mutating_calls=target.log.mutating, part=shard.shard
    )
    record_mutating_calls(target.log.mutating)
    return {"region": region, "mutatingCalls": target.log.mutating}


def validate(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Runbook section 7: every check reported on its own; any failure fails the deployment."""
    region_event = parse_event(RegionEvent, event)
    deployment, region, shard = region_event.deployment, region_event.region, region_event.shard or WHOLE
    tooling.hold_lock(deployment)
    spec = tooling.spec_for(deployment)
    target = tooling.target_for(spec, deployment.deployment_id)
    results = validate_region(target, spec, region, deployment.deployment_id, shard=shard.shard, of=shard.of)
    tooling.records.merge_region(deployment.deployment_id, "checks", region, _checks(results), part=shard.shard)
    record_failed_checks(deployment.environment, "validation", results)
    raise_if_failed(results)
    return {"region": region, "passed": len(results)}


def check_window(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Right before applying: proceed inside the window, wait for it within maxWaitHours, else fail.

    Proceeding, a deployment that needs notice is held to its announcement (NoticeTooShort).
    """
    deployment = parse_event(DeploymentEvent, event).deployment
    tooling.hold_lock(deployment)
    spec, now = tooling.spec_for(deployment), clock.now()
    record = tooling.records.get(deployment.deployment_id) or {}
    # The wait is measured from the first check, so re-checking after each wait cannot extend it.
    waited_since = datetime.fromisoformat(record["windowWaitSince"]) if record.get("windowWaitSince") else now
    decision = decide_window(spec.policy.window, now, waited_since)
    if not decision.proceed:
        if not record.get("windowWaitSince"):
            tooling.records.update(deployment.deployment_id, now, {"windowWaitSince": iso(now)})
    elif deployment.policy.needs_notice:
        # Inside the window: the change is applied now, so now is what must have been announced.
        announced = require_notice(tooling.records, spec.policy, spec.environment, deployment.change_ticket, now)
        tooling.records.update(deployment.deployment_id, now, {"announcement": _announcement_fields(announced)})
    return {"proceed": decision.proceed, "waitSeconds": decision.wait_seconds, "reason": decision.status.reason}


def record_outcome(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Close the record with the outcome; returns the detail of the outcome event."""
    outcome = parse_event(OutcomeEvent, event)
    finished_at = clock.now()
    fields: dict[str, Any] = {"status": outcome.status, "finishedAt": iso(finished_at)}
    before = tooling.records.get(outcome.deployment_id)
    earlier = (before or {}).get("decision") or {}
    if outcome.status == "SUCCEEDED" and earlier.get("response") == "recheck":
        # It failed, and passed when its steps ran again within the grace period: the runbook's fix forward.
        fields.update(status="SUCCEEDED_WITH_WARNINGS", decision=recovered(earlier, finished_at))
    if outcome.error:
        fields["error"] = outcome.error.error
        fields["cause"] = _cause_message(outcome.error.cause or "")
    if outcome.deployment is None:
        # The input never validated, so no record exists yet: open one to hold the failure.
        environment = str(outcome.input.get("environment", "unknown"))[:32]
        tooling.records.create(
            outcome.deployment_id,
            environment,
            clock.now(),
            {"executionArn": outcome.execution_arn, "input": outcome.input},
        )
    tooling.records.update(outcome.deployment_id, clock.now(), fields)
    # The record as now written: read again only when it was just opened.
    record = {**before, **fields} if before else tooling.records.get(outcome.deployment_id) or {}
    if fields["status"] in INCIDENT_STATUSES:
        # The post-incident report is kept with the deployment (`deployer report` re-renders it
        # later with the execution's last states).
        report = incident_report(
            record,
            execution_history(tooling.sfn, outcome.execution_arn),
            record.get("decision"),
            record.get("rollback", []),
            record.get("countsBefore", {}),
            record.get("countsAfter", {}),
            record.get("rollbackValidation", []),
        )
        tooling.records.update(outcome.deployment_id, clock.now(), {"report": report})
    # Only a validated environment names a metric dimension: a rejected input's is free text.
    started_at = datetime.fromisoformat(record["startedAt"]) if record.get("startedAt") else finished_at
    environment_name = outcome.deployment.environment if outcome.deployment else "unknown"
    record_deployment_metrics(environment_name, fields["status"], (finished_at - started_at).total_seconds())
    return {
        "detailType": OUTCOME_DETAIL_TYPES[fields["status"]],
        "deploymentId": outcome.deployment_id,
        "executionArn": outcome.execution_arn,
        "environment": record.get("environment"),
        "status": fields["status"],
        "error": fields.get("error"),
        "cause": fields.get("cause"),
        "plan": {k: record.get("plan", {}).get(k) for k in ("add", "change", "unchanged", "hash")},
        "mutatingCalls": record.get("mutatingCalls", 0),
    }


def _checks(results: list[CheckResult]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in results]


def _cause_message(cause: str) -> str:
    """A Lambda error's Cause is its JSON payload; keep just the message."""
    try:
        payload = json.loads(cause)
    except ValueError:
        return cause
    return str(payload.get("errorMessage", cause)) if isinstance(payload, dict) else cause
