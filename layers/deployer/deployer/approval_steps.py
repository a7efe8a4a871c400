"""The approval gate's steps: request (waitForTaskToken), wait elapsed, plan verification, Slack clicks.

The gate is a loop in the state machine: RequestApproval waits for a task token with a
timeout of one reminder interval; when it elapses, ApprovalWaitElapsed either reminds
the approvers and loops (RequestApproval registers a fresh token) or, past the
deadline, marks the approval expired and fails with ApprovalExpired. A decision made
while no token was live is delivered as soon as the next token is registered.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from deployer import clock
from deployer.approvals import Approval, ApprovalStore, deliver_decision, integrity_problems, new_approval_id
from deployer.errors import ApprovalExpired, ApprovalForged, ApprovalNotFound, PlanChangedSinceApproval
from deployer.events import APPROVAL_REQUESTED, publish
from deployer.models import ApprovalRequestEvent, DeploymentContext, DeploymentEvent, VerifyPlanEvent, parse_event
from deployer.observability import record_approval_wait
from deployer.plan import plan_environment
from deployer.policy_change import PolicyChange
from deployer.records import iso
from deployer.slack import approval_blocks, decided_blocks, execution_console_url, reminder_text
from deployer.tooling import Tooling


def _title(approval: Approval) -> str:
    return f"Approval needed: {approval.environment} deployment {approval.deployment_id} ({approval.plan_summary})"


def request_approval(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Open the approval and post it to Slack, or register the loop's new task token."""
    request = parse_event(ApprovalRequestEvent, event)
    deployment, store = request.deployment, tooling.approvals
    tooling.hold_lock(deployment)
    approval = store.for_execution(deployment.execution_key())
    if approval is None:
        approval = store.open(_new_approval(tooling, request, new_approval_id()), deployment.execution_key())
        tooling.records.update(deployment.deployment_id, clock.now(), {"approvalId": approval.approval_id})
    else:
        approval = store.set_token(approval.approval_id, request.task_token)
    approval_id = approval.approval_id
    if approval.message_ts is None:
        blocks = approval_blocks(approval, [], execution_console_url(deployment.execution_arn))
        store.set_message(approval_id, tooling.slack.post(approval.channel, _title(approval), blocks))
    _publish_requested(tooling, approval, deployment)
    if approval.status in ("APPROVED", "REJECTED"):
        deliver_decision(tooling.sfn, approval, store.votes(approval_id))
    return {"approvalId": approval_id, "status": approval.status}


def _publish_requested(tooling: Tooling, approval: Approval, deployment: DeploymentContext) -> None:
    # Once per approval, after its message is in Slack. The record keeps the event's id: a
    # request retried after a failed publish still publishes, the reminder loop's token
    # re-registrations do not. (A failure between publish and that write publishes twice.)
    record = tooling.records.get(deployment.deployment_id) or {}
    if record.get("approvalRequestedEventId"):
        return
    detail = {
        "deploymentId": approval.deployment_id,
        "executionArn": approval.execution_arn,
        "environment": approval.environment,
        "specVersion": deployment.spec_version,
        "approvalId": approval.approval_id,
        "required": approval.required,
        "approvers": [a["name"] for a in approval.approvers],
        "expiresAt": iso(approval.expires_at),
        "planSummary": approval.plan_summary,
        "requestedBy": approval.requested_by,
        "changeTicket": approval.change_ticket,
    }
    event_id = publish(tooling.events, tooling.event_bus, APPROVAL_REQUESTED, detail)
    tooling.records.update(deployment.deployment_id, clock.now(), {"approvalRequestedEventId": event_id})


def _new_approval(tooling: Tooling, request: ApprovalRequestEvent, approval_id: str) -> Approval:
    deployment = request.deployment
    policy = tooling.spec_for(deployment).policy.approvals
    record = tooling.records.get(deployment.deployment_id) or {}
    resources = record.get("plan", {}).get("resources", [])
    change = PolicyChange.model_validate(record["policyChange"]) if record.get("policyChange") else None
    now = clock.now()
    # The spec requires a channel whenever approvals are required; a policy that dropped its
    # approvals is approved by the previous policy's approvers, in their channel.
    channel = policy.channel or (change.previous_channel if change else None)
    assert channel is not None
    requester = deployment.who_requested()
    return Approval(
        approval_id=approval_id,
        deployment_id=deployment.deployment_id,
        execution_arn=deployment.execution_arn,
        environment=deployment.environment,
        requested_by=deployment.requested_by,
        change_ticket=deployment.change_ticket,
        plan_hash=request.plan.hash,
        plan_summary=request.plan.summary,
        plan_resources=[{k: r[k] for k in ("kind", "name", "region", "action", "changes")} for r in resources],
        required=deployment.policy.approvals_required,
        approvers=[a.model_dump(by_alias=True) for a in policy.approvers],
        escalation_approvers=[a.model_dump(by_alias=True) for a in policy.escalation_approvers],
        confirm=policy.confirm,
        channel=channel,
        created_at=now,
        expires_at=now + timedelta(minutes=policy.timeout_minutes),
        task_token=request.task_token,
        previous_required=change.previous_required if change else 0,
        previous_approvers=change.previous_approvers if change else [],
        policy_diff=change.diff if change else [],
        requester_description=requester.describe(),
        requester_slack_ids=tooling.identities.slack_ids_of(requester),
    )


def approval_wait_elapsed(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Past the deadline: expire and fail. Before it: remind in the thread and wait again."""
    deployment = parse_event(DeploymentEvent, event).deployment
    tooling.hold_lock(deployment)
    store = tooling.approvals
    approval = store.for_execution(deployment.execution_key())
    if approval is None:
        raise ApprovalExpired(f"deployment {deployment.deployment_id} never opened an approval")
    approval_id = approval.approval_id
    now = clock.now()
    if approval.status == "PENDING" and now >= approval.expires_at:
        expired_now = store.decide(approval_id, "EXPIRED", [], now)
        approval = _refresh(store, approval_id)  # a click may have decided it first
        if expired_now:
            record_approval_wait(approval.environment, (now - approval.created_at).total_seconds(), "expired")
        if expired_now and approval.message_ts:
            blocks = decided_blocks(approval, store.votes(approval_id))
            tooling.slack.update(approval.channel, approval.message_ts, f"Expired: {_title(approval)}", blocks)
    if approval.status == "EXPIRED":
        minutes = (approval.expires_at - approval.created_at).total_seconds() / 60
        raise ApprovalExpired(
            f"approval {approval_id} got no decision within {minutes:g} minutes; nothing was deployed"
        )
    if approval.status == "PENDING":
        tooling.slack.post(
            approval.channel, reminder_text(approval, store.votes(approval_id)), [], thread_ts=approval.message_ts
        )
        store.note_reminder(approval_id)
    return {"waitSeconds": _next_wait(tooling, deployment, approval, now)}


def _refresh(store: ApprovalStore, approval_id: str) -> Approval:
    approval = store.get(approval_id)
    assert approval is not None
    return approval


def _next_wait(tooling: Tooling, deployment: DeploymentContext, approval: Approval, now: datetime) -> int:
    if approval.status != "PENDING":
        return 1  # decided while no token was live: the next RequestApproval delivers it at once
    remaining = (approval.expires_at - now).total_seconds()
    reminder = tooling.spec_for(deployment).policy.approvals.reminder_minutes
    wait = min(remaining, reminder * 60) if reminder else remaining
    return max(1, math.ceil(wait))


def verify_plan(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """After approval: the stored approval must back the task's word, then the plan must still be the approved one.

    The task's output is only what someone with the task token sent. The approval this
    execution opened must be APPROVED, for this execution and plan, by a quorum of recorded
    votes; otherwise ApprovalNotFound or ApprovalForged, before anything is applied.
    """
    verify = parse_event(VerifyPlanEvent, event)
    deployment, store = verify.deployment, tooling.approvals
    tooling.hold_lock(deployment)
    approval = store.for_execution(deployment.execution_key())
    if approval is None:
        raise ApprovalNotFound(
            f"deployment {deployment.deployment_id} was reported approved, but it never opened an approval; "
            "nothing was changed"
        )
    claimed = verify.approval.model_dump(by_alias=True)
    problems = integrity_problems(approval, deployment.execution_arn, claimed, store.votes(approval.approval_id))
    if problems:
        raise ApprovalForged(
            f"deployment {deployment.deployment_id} was reported approved, but {'; '.join(problems)}; "
            "nothing was changed"
        )
    spec = tooling.spec_for(deployment)
    target = tooling.target_for(spec, deployment.deployment_id)
    current = plan_environment(target, spec)
    if current.hash != approval.plan_hash:
        tooling.records.update(deployment.deployment_id, clock.now(), {"replan": current.to_dict()})
        raise PlanChangedSinceApproval(
            f"the plan changed after approval {approval.approval_id} (approved {approval.plan_hash}, "
            f"now {current.hash}: {current.summary()}); nothing was changed, start a new deployment to re-approve"
        )
    return {"planHash": current.hash}
