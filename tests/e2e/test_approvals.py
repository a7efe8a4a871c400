"""The Slack approval gate end to end: signed clicks through the API, the real state machine."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.sandbox_fixtures import TARGET_ACCOUNTS, Deployments, EventCapture

# SIT only receives what DEV ran (its promotion rule): DEV deploys first, once per module.
pytestmark = pytest.mark.usefixtures("promoted_to_sit")

SIT_BUCKET = "bbws-sit-data-bucket"


def sit_buckets(deployments: Deployments) -> list[str]:
    s3 = deployments.target_client("s3", account=TARGET_ACCOUNTS["sit"])
    return [b["Name"] for b in s3.list_buckets()["Buckets"]]


def approval_spec(deployments: Deployments, environment: str, **approvals: Any) -> None:
    """A DEV-account environment whose policy needs approval, with a bucket of its own."""
    policy = {
        "required": 1,
        "approvers": [
            {"slackUserId": "U0APPROVE1", "name": "approver-1"},
            {"slackUserId": "U0APPROVE2", "name": "approver-2"},
        ],
        "channel": "C0E2E",
        **approvals,
    }
    deployments.spec(
        environment,
        policy={"approvals": policy, "lockLeaseMinutes": 90},
        resources={"buckets": [{"name": f"bbws-{environment}-bucket"}]},
    )


def test_sit_deployment_approved_in_slack(deployments: Deployments, bus_events: EventCapture) -> None:
    # GIVEN a SIT deployment requested by alice, waiting for approval
    arn = deployments.start("sit", requested_by="alice", change_ticket="CHG-100")
    approval = deployments.approval(arn)
    assert approval.required == 1
    assert SIT_BUCKET not in sit_buckets(deployments)  # nothing applied before approval

    # THEN the request is in Slack with the plan, and buttons that carry only the approval id
    request = deployments.approval_message(approval)
    assert request["channel"] == "C0DEPLOYSIT"
    text = json.dumps(request["blocks"])
    assert "Plan: 2 to add" in text
    assert "CHG-100" in text
    assert approval.task_token is not None
    assert approval.task_token not in text
    buttons = [e for b in request["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert {b["action_id"]: b["value"] for b in buttons} == {
        "approve": approval.approval_id,
        "reject": approval.approval_id,
    }

    # WHEN the SIT lead approves
    clicked = deployments.click(approval, "sit-lead")
    result = deployments.finish(arn)

    # THEN the deployment succeeds with that approval recorded, and the message shows who approved
    assert clicked["status"] == 200
    assert clicked["outcome"] == "approved"
    assert result["status"] == "SUCCEEDED", result
    assert result["approvalId"] == approval.approval_id
    assert [(a["user"], a["name"], a["decision"]) for a in result["approvals"]] == [
        ("U0SITLEAD1", "sit-lead", "approve")
    ]
    assert SIT_BUCKET in sit_buckets(deployments)
    final = deployments.approval_message(approval)
    assert "actions" not in [b["type"] for b in final["blocks"]]
    assert "<@U0SITLEAD1>" in json.dumps(final["blocks"])
    assert final["updates"], "the original request was updated, not replaced"
    assert [e["detail-type"] for e in bus_events.for_deployment(result["deploymentId"])][-1] == "Deployment Succeeded"


def test_sit_deployment_rejected_changes_nothing(deployments: Deployments) -> None:
    # GIVEN SIT deployed, then a bucket setting drifts, and a repair deployment waits for approval
    deployments.target_client("s3", account=TARGET_ACCOUNTS["sit"]).put_bucket_versioning(
        Bucket=SIT_BUCKET, VersioningConfiguration={"Status": "Suspended"}
    )
    arn = deployments.start("sit", requested_by="alice", change_ticket="CHG-101")
    approval = deployments.approval(arn)

    # WHEN the release manager rejects it
    clicked = deployments.click(approval, "release-manager", "reject")
    result = deployments.finish(arn)

    # THEN it ends ApprovalRejected, nothing is applied, the lock is free, and Slack says rejected
    assert clicked["outcome"] == "rejected"
    assert result["status"] == "FAILED"
    assert result["error"] == "ApprovalRejected"
    assert result["mutatingCalls"] == 0
    s3 = deployments.target_client("s3", account=TARGET_ACCOUNTS["sit"])
    assert s3.get_bucket_versioning(Bucket=SIT_BUCKET)["Status"] == "Suspended"
    assert deployments.stack.records.lock_holder("sit") is None
    final = json.dumps(deployments.approval_message(approval)["blocks"])
    assert "Rejected by <@U0RELMGR01>" in final

    # AND a click after the decision changes nothing
    late = deployments.click(approval, "sit-lead")
    assert late["outcome"] == "already_decided"
    assert deployments.stack.approvals.get(approval.approval_id).status == "REJECTED"  # type: ignore[union-attr]


def test_plan_that_drifts_after_approval_stops_before_applying(deployments: Deployments) -> None:
    # GIVEN a SIT deployment (repairing the suspended versioning) waiting for approval
    arn = deployments.start("sit", requested_by="alice", change_ticket="CHG-102")
    approval = deployments.approval(arn)
    assert "change" in approval.plan_summary
    # WHEN someone changes the bucket again before the approval arrives
    s3 = deployments.target_client("s3", account=TARGET_ACCOUNTS["sit"])
    s3.put_bucket_tagging(Bucket=SIT_BUCKET, Tagging={"TagSet": [{"Key": "Project", "Value": "hijacked"}]})
    deployments.click(approval, "sit-lead")
    result = deployments.finish(arn)

    # THEN the deployment stops with PlanChangedSinceApproval and changes nothing
    assert result["status"] == "FAILED"
    assert result["error"] == "PlanChangedSinceApproval"
    assert result["mutatingCalls"] == 0
    assert s3.get_bucket_versioning(Bucket=SIT_BUCKET)["Status"] == "Suspended"
    assert "Provision" not in deployments.states_entered(arn)
    assert deployments.stack.records.lock_holder("sit") is None


def test_prod_needs_two_distinct_approvers_and_never_the_requester(deployments: Deployments) -> None:
    # GIVEN a PROD deployment (inside its window; SIT ran this spec above) requested by an approver
    deployments.announce("prod", "CHG-200")
    arn = deployments.start("prod", requested_by="senior-engineer-1", change_ticket="CHG-200")
    approval = deployments.approval(arn)
    assert approval.required == 2
    assert approval.confirm is True

    # WHEN the requester approves, an outsider approves, and one approver clicks twice
    own = deployments.click(approval, "senior-engineer-1")
    outsider = deployments.click(approval, "U0STRANGER")
    first = deployments.click(approval, "senior-engineer-2")
    again = deployments.click(approval, "senior-engineer-2")

    # THEN none of that reaches the quorum, and the refusals are recorded
    assert (own["outcome"], outsider["outcome"], first["outcome"], again["outcome"]) == (
        "self_approval",
        "not_authorized",
        "recorded",
        "duplicate",
    )
    store = deployments.stack.approvals
    assert store.get(approval.approval_id).status == "PENDING"  # type: ignore[union-attr]
    assert {r["userId"] for r in store.refusals(approval.approval_id)} == {"U0SENIOR01", "U0STRANGER"}
    assert "RequestApproval" in deployments.states_entered(arn)
    assert "Provision" not in deployments.states_entered(arn)

    # WHEN a second, different approver approves
    second = deployments.click(approval, "senior-engineer-3")
    result = deployments.finish(arn)

    # THEN PROD deploys both regions, with both approvals recorded
    assert second["outcome"] == "approved"
    assert result["status"] == "SUCCEEDED", result
    assert [a["name"] for a in result["approvals"]] == ["senior-engineer-2", "senior-engineer-3"]
    assert result["regions"] == ["af-south-1", "eu-west-1"]


def test_forged_click_is_rejected_and_changes_nothing(deployments: Deployments) -> None:
    approval_spec(deployments, "dev-e2e-forged")
    arn = deployments.start("dev-e2e-forged")
    approval = deployments.approval(arn)
    body = "payload=" + json.dumps({"type": "block_actions", "user": {"id": "U0APPROVE1"}})
    forged = urllib.request.Request(
        f"{deployments.sandbox.api}/slack/interactions",
        data=body.encode(),
        method="POST",
        headers={"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=" + "0" * 64},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged)
    assert refused.value.code == 401
    assert deployments.stack.approvals.votes(approval.approval_id) == []
    deployments.click(approval, "approver-1", "reject")  # end the execution
    assert deployments.finish(arn)["error"] == "ApprovalRejected"


def test_reminder_then_expiry(deployments: Deployments) -> None:
    # GIVEN an environment whose approvals remind after 3 s and expire after 9 s, with an escalation contact
    approval_spec(
        deployments,
        "dev-e2e-expiry",
        timeoutMinutes=0.15,
        reminderMinutes=0.05,
        escalationApprovers=[{"slackUserId": "U0ESCALATE", "name": "head"}],
    )
    # WHEN nobody decides
    arn = deployments.start("dev-e2e-expiry")
    approval = deployments.approval(arn)
    result = deployments.finish(arn)

    # THEN approvers were reminded in the thread, escalation mentioned, and the deployment expired
    assert result["status"] == "FAILED"
    assert result["error"] == "ApprovalExpired"
    assert result["mutatingCalls"] == 0
    reminders = [m for m in deployments.slack_messages() if m.get("thread_ts") == approval.message_ts]
    assert reminders, "a reminder was posted in the request's thread"
    assert "<@U0APPROVE1>" in reminders[0]["text"]
    assert "<@U0ESCALATE>" in reminders[0]["text"]
    final = json.dumps(deployments.approval_message(approval)["blocks"])
    assert "Expired" in final
    assert "Rejected" not in final
    assert deployments.stack.records.lock_holder("dev-e2e-expiry") is None

    # AND a click after expiry is harmless
    late = deployments.click(approval, "approver-1")
    assert late["status"] == 200
    assert late["outcome"] in ("already_decided", "expired")
    assert deployments.stack.approvals.votes(approval.approval_id) == []
