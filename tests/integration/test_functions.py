"""Each function on its own, invoked through the Lambda Invoke API of the sandbox.

The events are the samples in events/ (what the state machine passes), so a change in
the ASL's parameters that the functions no longer accept shows up here.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deployer.models import DeploymentEvent
from deployer.records import iso
from deployer_cli import client
from tests.sandbox_fixtures import Deployments, load_event

ENV = "dev-int"


class Invoked:
    def __init__(self, response: dict[str, Any]) -> None:
        self.error = response.get("FunctionError")
        self.payload = json.loads(response["Payload"].read())

    @property
    def error_type(self) -> str | None:
        return self.payload.get("errorType") if self.error else None


def invoke(deployments: Deployments, function: str, event: dict[str, Any]) -> Invoked:
    name = f"{deployments.sandbox.stack_name}-{function}"
    return Invoked(deployments.stack.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event)))


@pytest.fixture(scope="module")
def context(deployments: Deployments) -> dict[str, Any]:
    """A started deployment of a DEV-account test environment, as StartDeployment returns it."""
    deployments.spec(ENV, resources={"buckets": [{"name": "bbws-int-dev-bucket"}]})
    event = load_event("start_deployment.json")
    event["deploymentId"] = f"int-{uuid.uuid4().hex[:8]}"
    event["input"]["environment"] = ENV
    client.push_spec(deployments.stack, deployments.spec_dir, ENV)
    started = invoke(deployments, "start-deployment", event)
    assert started.error is None, started.payload
    return dict(started.payload)


def test_start_deployment_pins_the_spec_and_opens_the_record(deployments: Deployments, context: dict[str, Any]) -> None:
    assert context["environment"] == ENV
    assert context["regions"] == ["af-south-1"]
    assert context["policy"] == {
        "approvalsRequired": 0,
        "previousApprovalsRequired": 0,
        "approvalFirstWaitSeconds": 3600,
        "lockLeaseSeconds": 7200,
        "hasWindow": False,
        "needsNotice": False,
        "hasReplication": False,
    }
    assert context["schedule"] is None
    spec, latest = deployments.stack.specs.get(ENV)
    assert context["specVersion"] == latest
    assert context["specHash"] == spec.spec_hash()
    record = deployments.stack.records.get(context["deploymentId"])
    assert record is not None
    assert record["status"] == "RUNNING"
    assert record["requestedBy"] == "alice"


def test_start_deployment_rejects_bad_input_naming_the_fields(deployments: Deployments) -> None:
    event = load_event("start_deployment.json")
    event["input"] = {"environment": "Dev", "requestedBy": "", "dryRun": "maybe"}
    result = invoke(deployments, "start-deployment", event)
    assert result.error_type == "InputInvalid"
    for field in ("environment", "requestedBy", "dryRun"):
        assert field in result.payload["errorMessage"]


def test_lock_is_exclusive_and_only_its_holder_releases_it(deployments: Deployments, context: dict[str, Any]) -> None:
    mine = {"deployment": context}
    other = {"deployment": {**context, "deploymentId": "someone-else", "requestedBy": "bob"}}

    assert invoke(deployments, "acquire-lock", mine).error is None
    assert invoke(deployments, "acquire-lock", mine).error is None  # a retried state re-enters

    blocked = invoke(deployments, "acquire-lock", other)
    assert blocked.error_type == "LockHeld"
    assert context["deploymentId"] in blocked.payload["errorMessage"]

    assert invoke(deployments, "release-lock", other).payload == {"released": False}
    assert deployments.stack.records.lock_holder(ENV) is not None
    assert invoke(deployments, "release-lock", mine).payload == {"released": True}
    assert deployments.stack.records.lock_holder(ENV) is None


def test_preflight_plan_provision_validate_in_sequence(deployments: Deployments, context: dict[str, Any]) -> None:
    event = {"deployment": context}
    region_event = {"deployment": context, "region": "af-south-1"}

    preflight = invoke(deployments, "preflight", event)
    assert preflight.error is None, preflight.payload

    plan = invoke(deployments, "plan", event)
    assert plan.error is None, plan.payload
    assert (plan.payload["add"], plan.payload["change"]) == (1, 0)
    assert plan.payload["summary"] == "Plan: 1 to add, 0 to change, 0 unchanged."

    first = invoke(deployments, "provision", region_event)
    assert first.error is None, first.payload
    assert first.payload["mutatingCalls"] > 0
    again = invoke(deployments, "provision", region_event)
    assert again.payload["mutatingCalls"] == 0

    validated = invoke(deployments, "validate", region_event)
    assert validated.error is None, validated.payload
    record = deployments.stack.records.get(context["deploymentId"])
    assert record is not None
    assert record["plan"]["add"] == 1
    assert all(c["passed"] for c in record["checks"]["af-south-1"])
    assert {c["name"] for c in record["preflight"]} >= {"account.identity", "bucket.name-available"}


def test_preflight_refuses_a_quorum_out_of_reach_without_the_requester(
    deployments: Deployments, context: dict[str, Any]
) -> None:
    # GIVEN an environment needing two approvals from its two approvers, requested by one of them
    approvers = [{"slackUserId": "U0AAA", "name": "a"}, {"slackUserId": "U0BBB", "name": "b"}]
    deployments.spec(
        "dev-int-approval",
        policy={"approvals": {"required": 2, "approvers": approvers, "channel": "C0DEPLOY"}, "lockLeaseMinutes": 240},
    )
    needs_approval = copy.deepcopy(context)
    needs_approval.update(environment="dev-int-approval", requestedBy="a")
    needs_approval["specVersion"] = client.push_spec(deployments.stack, deployments.spec_dir, "dev-int-approval")
    # WHEN preflight runs
    result = invoke(deployments, "preflight", {"deployment": needs_approval})
    # THEN it refuses: the requester cannot approve, so the quorum is out of reach
    assert result.error_type == "PreflightFailed"
    assert "only 1 approver(s) other than the requester a can vote" in result.payload["errorMessage"]


def test_record_outcome_records_a_rejected_input(deployments: Deployments) -> None:
    event = load_event("record_outcome_rejected.json")
    result = invoke(deployments, "record-outcome", event)
    assert result.error is None, result.payload
    assert result.payload["detailType"] == "Deployment Failed"
    record = deployments.stack.records.get(event["deploymentId"])
    assert record is not None
    assert record["status"] == "FAILED"
    assert record["error"] == "InputInvalid"
    assert record["cause"].startswith("invalid DeploymentRequest")


def test_sample_deployment_event_is_a_valid_deployment_event() -> None:
    event = DeploymentEvent.model_validate(load_event("deployment.json"))
    assert event.deployment.environment == "dev"


def test_a_reused_execution_name_never_finds_the_earlier_approval(
    deployments: Deployments, context: dict[str, Any]
) -> None:
    # GIVEN an execution of a deployment needing one approval, whose approval was opened and approved
    approvers = [{"slackUserId": "U0AAA", "name": "a"}]
    deployments.spec(
        "dev-int-reuse",
        policy={"approvals": {"required": 1, "approvers": approvers, "channel": "C0DEPLOY"}, "lockLeaseMinutes": 240},
    )
    earlier = copy.deepcopy(context)
    started = datetime.now(UTC)
    earlier.update(environment="dev-int-reuse", deploymentId="dev-int-reuse-1", executionStartedAt=iso(started))
    earlier["specVersion"] = client.push_spec(deployments.stack, deployments.spec_dir, "dev-int-reuse")
    earlier["policy"]["approvalsRequired"] = 1
    plan = {"add": 1, "change": 0, "unchanged": 0, "hash": "sha256:" + "ab" * 32, "summary": "Plan: 1 to add."}
    opened = invoke(deployments, "approval-request", {"deployment": earlier, "plan": plan, "taskToken": "token-1"})
    assert opened.error is None, opened.payload
    first = deployments.stack.approvals.get(opened.payload["approvalId"])
    assert first is not None
    assert deployments.click(first, "U0AAA")["outcome"] == "approved"
    # WHEN a later execution of the same name (same deployment id, started later) reaches VerifyPlan
    later = {**earlier, "executionStartedAt": iso(started + timedelta(days=91))}
    claimed = {"decision": "approved", "approvalId": first.approval_id, "planHash": plan["hash"], "approvers": []}
    verified = invoke(deployments, "verify-plan", {"deployment": later, "approval": claimed})
    # THEN the earlier approval does not count for it: it opened none
    assert verified.error_type == "ApprovalNotFound", verified.payload
    # AND asking for approval opens a new one, with a new id, pending
    reopened = invoke(deployments, "approval-request", {"deployment": later, "plan": plan, "taskToken": "token-2"})
    assert reopened.error is None, reopened.payload
    assert reopened.payload["approvalId"] != first.approval_id
    assert reopened.payload["status"] == "PENDING"
