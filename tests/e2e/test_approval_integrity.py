"""Approvals that cannot be bypassed: the task token alone approves nothing."""

from __future__ import annotations

import json

import pytest

from tests.sandbox_fixtures import TARGET_ACCOUNTS, Deployments

# SIT only receives what DEV ran (its promotion rule): DEV deploys first, once per module.
pytestmark = pytest.mark.usefixtures("promoted_to_sit")

SIT = TARGET_ACCOUNTS["sit"]


def task_token(deployments: Deployments, execution_arn: str) -> str:
    """The approval task's token, read from the execution history as anyone allowed to read it can."""
    for event in deployments.stack.client("stepfunctions").get_execution_history(executionArn=execution_arn)["events"]:
        details = event.get("taskScheduledEventDetails", {})
        parameters = json.loads(details.get("parameters") or "{}")
        token = parameters.get("Payload", {}).get("taskToken")
        if token:
            return str(token)
    raise AssertionError(f"no task token in the history of {execution_arn}")


def test_a_bare_send_task_success_ends_forged_with_nothing_created(deployments: Deployments) -> None:
    # GIVEN SIT waiting for its Slack approval, no vote cast
    arn = deployments.start("sit", requested_by="alice", change_ticket="CHG-900")
    approval = deployments.approval(arn)
    # WHEN someone with the token from the history and states:SendTaskSuccess reports it approved
    output = {"decision": "approved", "planHash": approval.plan_hash}
    sfn = deployments.stack.client("stepfunctions")
    sfn.send_task_success(taskToken=task_token(deployments, arn), output=json.dumps(output))
    result = deployments.finish(arn)
    # THEN VerifyPlan finds no recorded approval behind it, and nothing is created in SIT's account
    assert (result["status"], result["error"]) == ("FAILED", "ApprovalForged")
    assert "is PENDING, not APPROVED" in result["cause"]
    assert "the recorded votes are 0 of 1 approvals: no quorum" in result["cause"]
    assert "Provision" not in deployments.states_entered(arn)
    assert deployments.target_client("s3", account=SIT).list_buckets()["Buckets"] == []
    assert deployments.target_client("dynamodb", account=SIT).list_tables()["TableNames"] == []


def test_a_real_quorum_still_deploys(deployments: Deployments) -> None:
    arn = deployments.start("sit", requested_by="alice", change_ticket="CHG-901")
    deployments.click(deployments.approval(arn), "sit-lead")
    assert deployments.finish(arn)["status"] == "SUCCEEDED"
