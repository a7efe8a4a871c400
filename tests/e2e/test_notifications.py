"""Every pipeline event reaches Slack through EventBridge and the notify function; a failed post ends in the DLQ."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import yaml

from deployer_cli.client import Stack
from sandbox.server import Sandbox
from tests.sandbox_fixtures import REPO, Deployments, wait_for

# SIT only receives what DEV ran (its promotion rule): DEV deploys first, once per module.
pytestmark = pytest.mark.usefixtures("promoted_to_sit")

DEV_CHANNEL = "#bbws-deploy-dev"


def header(message: dict[str, Any]) -> str:
    return str(message["blocks"][0]["text"]["text"]) if message.get("blocks") else str(message["text"])


def thread(deployments: Deployments, channel: str, deployment_id: str) -> list[dict[str, Any]]:
    """The deployment's notifications in a channel: its top-level message, then its thread."""
    posted = [m for m in deployments.slack_messages() if m.get("channel") == channel]
    top = next((m for m in posted if not m.get("thread_ts") and deployment_id in json.dumps(m["blocks"])), None)
    if top is None:
        return []
    return [top, *(m for m in posted if m.get("thread_ts") == top["ts"])]


def test_a_dev_deployment_posts_its_start_and_its_outcome_in_one_thread(deployments: Deployments) -> None:
    # WHEN a DEV deployment runs
    result = deployments.run("dev")
    assert result["status"] == "SUCCEEDED"

    # THEN the DEV channel gets "started" and, in its thread, "succeeded", broadcast to the channel
    messages = wait_for(
        lambda: (m := thread(deployments, DEV_CHANNEL, result["deploymentId"])) and len(m) >= 2 and m,
        "two notifications in the deployment's thread",
    )
    assert [header(m) for m in messages] == [
        ":rocket: dev deployment started",
        ":white_check_mark: dev deployment succeeded",
    ], [header(m) for m in messages]
    assert messages[1]["reply_broadcast"] is True
    # AND the thread is written on the record, and the execution's own status changes post nothing extra
    record = deployments.stack.records.get(result["deploymentId"])
    assert record is not None
    assert record["notifyThreadTs"] == messages[0]["ts"]
    assert len(thread(deployments, DEV_CHANNEL, result["deploymentId"])) == 2


def test_an_approved_sit_deployment_announces_the_approval_in_its_thread(deployments: Deployments) -> None:
    arn = deployments.start("sit", change_ticket="CHG-7")
    approval = deployments.approval(arn)
    deployments.click(approval, "sit-lead")
    result = deployments.finish(arn)
    assert result["status"] == "SUCCEEDED"

    messages = wait_for(
        lambda: (m := thread(deployments, approval.channel, result["deploymentId"])) and len(m) >= 3 and m,
        "three notifications in the SIT thread",
    )
    headers = [header(m) for m in messages]
    assert headers[0] == ":rocket: sit deployment started"
    assert headers[1] == ":raised_hand: sit deployment waiting for approval"
    assert headers[-1] == ":white_check_mark: sit deployment succeeded"
    assert "CHG-7" in json.dumps(messages[0]["blocks"])


def test_notifications_slack_refuses_end_in_the_dead_letter_queue(
    deployments: Deployments, sandbox: Sandbox, stack: Stack
) -> None:
    # GIVEN an environment whose channel Slack refuses (an outage)
    deployments.spec("dev-outage", policy={**_dev_policy(), "notifications": {"channel": "#bbws-outage"}})
    _slack(sandbox, "PUT", {"channel": "#bbws-outage"})
    try:
        # WHEN it deploys
        result = deployments.run("dev-outage")
        assert result["status"] == "SUCCEEDED"  # a notification never fails a deployment

        # THEN each of its notifications, after Lambda's retries, waits in the dead-letter queue
        sqs = sandbox.client("sqs")
        queue = stack.outputs["NotifyDeadLetterQueueUrl"]
        undelivered: list[dict[str, Any]] = []

        def both_dead_lettered() -> bool:
            for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
                undelivered.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            return len(_for(undelivered, result["deploymentId"])) >= 2

        wait_for(both_dead_lettered, "the outage deployment's notifications in the DLQ")
        failures = _for(undelivered, result["deploymentId"])
        assert {f["requestPayload"]["detail-type"] for f in failures} == {"Deployment Started", "Deployment Succeeded"}
        assert all(f["requestContext"]["condition"] == "RetriesExhausted" for f in failures)
        assert all(f["requestContext"]["approximateInvokeCount"] == 3 for f in failures)
        assert all(f["responsePayload"]["errorType"] == "NotificationFailed" for f in failures)
        assert not [m for m in deployments.slack_messages() if m.get("channel") == "#bbws-outage"]
    finally:
        _slack(sandbox, "DELETE")


def _for(failures: list[dict[str, Any]], deployment_id: str) -> list[dict[str, Any]]:
    return [f for f in failures if f["requestPayload"]["detail"].get("deploymentId") == deployment_id]


def _dev_policy() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "environments" / "dev.yaml").read_text())["policy"])


def _slack(sandbox: Sandbox, method: str, body: dict[str, Any] | None = None) -> None:
    request = urllib.request.Request(
        f"{sandbox.slack_url}/outage",
        data=json.dumps(body).encode() if body else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()
