"""Publishing the deployer's events, and "Approval Requested": once per approval, never with the task token."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from deployer.approval_steps import request_approval
from deployer.errors import EventPublishFailed, TransientAwsError
from deployer.events import APPROVAL_REQUESTED, SOURCE, publish
from tests.unit.test_notifications import BUS, PLAN, SIT_ARN, SIT_ID, World, build_world

TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAeSecretTaskToken=="


@pytest.fixture
def world(aws: None, monkeypatch: pytest.MonkeyPatch) -> World:
    return build_world(monkeypatch)


def stubbed_events() -> tuple[Any, Stubber]:
    # One attempt per call, so the stub sees exactly what the deployer's call did.
    client = boto3.client("events", region_name="us-east-1", config=Config(retries={"total_max_attempts": 1}))
    return client, Stubber(client)


# ---------------------------------------------------------------- publish


def test_publish_puts_one_event_on_the_bus_and_returns_its_id(world: World) -> None:
    # WHEN an event is published
    event_id = publish(world.tooling.events, BUS, "Approval Requested", {"deploymentId": SIT_ID, "required": 1})
    # THEN exactly that event reaches the bus, from the deployer's source, under the id returned
    (event,) = world.published()
    assert event["id"] == event_id
    assert (event["source"], event["detail-type"]) == (SOURCE, "Approval Requested")
    assert event["detail"] == {"deploymentId": SIT_ID, "required": 1}


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("NotAuthorizedForSourceException", EventPublishFailed),
        ("MalformedDetail", EventPublishFailed),
        ("ThrottlingException", TransientAwsError),
        ("InternalFailure", TransientAwsError),
    ],
)
def test_a_refused_entry_raises_a_named_error(code: str, error: type[Exception]) -> None:
    # GIVEN EventBridge answers the call but refuses the entry (FailedEntryCount 1)
    client, stub = stubbed_events()
    stub.add_response(
        "put_events", {"FailedEntryCount": 1, "Entries": [{"ErrorCode": code, "ErrorMessage": "refused"}]}
    )
    # THEN the failure is named: worth a retry (TransientAwsError, which the ASL retries) or not
    with stub, pytest.raises(error, match=f"refused the 'Approval Requested' event on bus {BUS}: {code}: refused"):
        publish(client, BUS, APPROVAL_REQUESTED, {"deploymentId": SIT_ID})


def test_a_throttled_call_is_transient() -> None:
    client, stub = stubbed_events()
    stub.add_client_error("put_events", service_error_code="ThrottlingException", http_status_code=400)
    with stub, pytest.raises(TransientAwsError, match="ThrottlingException"):
        publish(client, BUS, APPROVAL_REQUESTED, {"deploymentId": SIT_ID})


def test_a_limit_reached_is_not_transient() -> None:
    # Runbook section 9: a limit hit is resource exhaustion, to decide on, not to retry as a network glitch
    client, stub = stubbed_events()
    stub.add_client_error("put_events", service_error_code="LimitExceededException", http_status_code=400)
    with stub, pytest.raises(ClientError, match="LimitExceededException") as raised:
        publish(client, BUS, APPROVAL_REQUESTED, {"deploymentId": SIT_ID})
    assert not isinstance(raised.value, TransientAwsError)


def test_without_a_bus_nothing_is_published() -> None:
    client, stub = stubbed_events()
    with stub, pytest.raises(EventPublishFailed, match="no event bus is configured"):
        publish(client, "", APPROVAL_REQUESTED, {"deploymentId": SIT_ID})


# ---------------------------------------------------------------- Approval Requested


def open_sit_deployment(world: World) -> dict[str, Any]:
    """A SIT deployment at its approval gate: its record (with the plan) and its $.deployment."""
    world.open_record("sit", SIT_ID, plan=PLAN)
    return {
        "deploymentId": SIT_ID,
        "executionArn": SIT_ARN,
        "environment": "sit",
        "requestedBy": "alice",
        "changeTicket": "CHG-1234",
        "dryRun": False,
        "specVersion": world.versions["sit"],
        "specHash": "sha256:" + "00" * 32,
        "account": "815856636111",
        "regions": ["af-south-1"],
        "policy": {"approvalsRequired": 1, "approvalFirstWaitSeconds": 900, "lockLeaseSeconds": 7200},
    }


def approval_request(deployment: dict[str, Any], token: str = TOKEN) -> dict[str, Any]:
    plan = {k: PLAN[k] for k in ("add", "change", "unchanged", "hash", "summary")}
    return {"deployment": deployment, "plan": plan, "taskToken": token}


def test_opening_an_approval_publishes_approval_requested_once(world: World) -> None:
    # GIVEN a SIT deployment reaching its approval gate
    deployment = open_sit_deployment(world)
    # WHEN the approval is opened, then the reminder loop registers two fresh tokens
    request_approval(approval_request(deployment), world.tooling)
    request_approval(approval_request(deployment, TOKEN + "2"), world.tooling)
    request_approval(approval_request(deployment, TOKEN + "3"), world.tooling)
    # THEN the approval message was posted once, and "Approval Requested" published once
    assert [p["channel"] for p in world.posts] == ["C0DEPLOYSIT"]
    (event,) = world.published()
    assert (event["source"], event["detail-type"]) == ("bbws.deployer", "Approval Requested")
    detail = event["detail"]
    assert detail["expiresAt"].endswith("Z")
    assert {k: v for k, v in detail.items() if k != "expiresAt"} == {
        "deploymentId": SIT_ID,
        "executionArn": SIT_ARN,
        "environment": "sit",
        "specVersion": world.versions["sit"],
        "approvalId": world.record(SIT_ID)["approvalId"],
        "required": 1,
        "approvers": ["sit-lead", "release-manager"],
        "planSummary": "Plan: 1 to add, 1 to change, 0 unchanged.",
        "requestedBy": "alice",
        "changeTicket": "CHG-1234",
    }
    # AND the record remembers it, and the task token appears nowhere in it
    assert world.record(SIT_ID)["approvalRequestedEventId"] == event["id"]
    assert "SecretTaskToken" not in json.dumps(event)


def test_a_request_retried_after_a_failed_publish_still_publishes_once(world: World) -> None:
    # GIVEN EventBridge throttles the first publish, after the approval message is in Slack
    deployment = open_sit_deployment(world)
    client, stub = stubbed_events()
    stub.add_client_error("put_events", service_error_code="ThrottlingException", http_status_code=400)
    real = world.tooling.events
    world.tooling.events = client  # type: ignore[misc]
    with stub, pytest.raises(TransientAwsError):
        request_approval(approval_request(deployment), world.tooling)
    assert world.published() == []
    # WHEN the state machine retries the task (TransientAwsError is in its Retry)
    world.tooling.events = real  # type: ignore[misc]
    request_approval(approval_request(deployment), world.tooling)
    # THEN the event is published, and the approval message is not posted again
    assert [e["detail-type"] for e in world.published()] == ["Approval Requested"]
    assert len(world.posts) == 1


def test_approval_requested_becomes_a_reply_in_the_deployments_thread(world: World) -> None:
    # GIVEN a SIT deployment whose start was announced (opening its thread)
    deployment = open_sit_deployment(world)
    started = {"version": "0", "id": "started-1", "source": "bbws.deployer", "detail-type": "Deployment Started"}
    world.notify({**started, "detail": deployment})
    # WHEN its approval is requested and the published event reaches NotifyFunction
    request_approval(approval_request(deployment), world.tooling)
    (event,) = world.published()
    result = world.notify(event)
    # THEN it replies in the thread, in SIT's channel, saying who can approve until when
    _, approval_message, notification = world.posts
    assert result["threadTs"] == world.record(SIT_ID)["notifyThreadTs"] == "1795683600.000001"
    assert (notification["channel"], notification["thread_ts"]) == ("C0DEPLOYSIT", "1795683600.000001")
    assert notification["text"] == f"sit deployment waiting for approval (deployment {SIT_ID}, requested by alice)"
    blocks = json.dumps(notification["blocks"])
    assert "sit-lead, release-manager" in blocks
    assert "<!date^" in blocks
    assert approval_message["thread_ts"] is None
    assert "SecretTaskToken" not in json.dumps(world.posts)
