"""Slack notifications: every event renders, status changes are filtered, one thread per deployment, once per event.

Events start from events/notify_*.json (EventBridge envelopes) where one fits. AWS is moto;
Slack is slack_sdk's WebClient replaced by a recorder, as in test_slack.py, except where a
real HTTP answer (5xx, 429) is the point.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import jmespath
import pytest
import yaml
from slack_sdk.errors import SlackApiError

from deployer import notifications
from deployer import slack as slack_module
from deployer.errors import NotificationFailed, TransientAwsError
from deployer.notifications import Notification, notification_for, notify
from deployer.observability import CORRELATION_PATH
from deployer.resources import WaitConfig
from deployer.tooling import Tooling
from tests.unit.conftest import BASE_SPEC, records_table

ROOT = Path(__file__).resolve().parents[2]
SUCCEEDED = json.loads((ROOT / "events" / "notify_deployment_succeeded.json").read_text())
ABORTED = json.loads((ROOT / "events" / "notify_deployment_closed.json").read_text())
PROD_ID = ABORTED["detail"]["deploymentId"]
PROD_ARN = ABORTED["detail"]["executionArn"]
SIT_ID = SUCCEEDED["detail"]["deploymentId"]
SIT_ARN = SUCCEEDED["detail"]["executionArn"]
CONSOLE = "https://af-south-1.console.aws.amazon.com/states/home?region=af-south-1#/v2/executions/details/"
SPECS_BUCKET = "bbws-deployer-specs-test"
BUS = "bbws-deployer-test"
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PROD_MENTIONS = "<@U0SENIOR01> <@U0SENIOR02> <@U0SENIOR03>"
PLAN = {
    "add": 1,
    "change": 1,
    "unchanged": 0,
    "hash": "sha256:" + "ab" * 32,
    "summary": "Plan: 1 to add, 1 to change, 0 unchanged.",
    "resources": [
        {"kind": "bucket", "name": "bbws-prod-data-bucket", "region": "af-south-1", "action": "add", "changes": []},
        {
            "kind": "table",
            "name": "Site-Generation-State",
            "region": "af-south-1",
            "action": "change",
            "changes": [{"field": "pointInTimeRecovery", "from": False, "to": True}],
        },
    ],
}


def envelope(detail_type: str, detail: dict[str, Any], source: str = "bbws.deployer") -> dict[str, Any]:
    """An EventBridge envelope shaped like the sample events, with a fresh event id."""
    return {
        **copy.deepcopy(SUCCEEDED),
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "detail": detail,
    }


def outcome(status: str, environment: str = "prod", deployment_id: str = PROD_ID, **extra: Any) -> dict[str, Any]:
    """The detail of PublishOutcome / PublishFailed / PublishRollbackCompleted: what record_outcome returns."""
    detail = copy.deepcopy(SUCCEEDED["detail"])
    arn = PROD_ARN if deployment_id == PROD_ID else SIT_ARN
    detail.update(deploymentId=deployment_id, executionArn=arn, environment=environment, status=status, **extra)
    return detail


def closed(status: str, record: str = "closed", lock: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """CloseStoppedFunction's "Deployment Closed" for an execution that ended ``status``."""
    event = copy.deepcopy(ABORTED)
    event["id"] = str(uuid.uuid4())
    event["detail"].update(
        executionStatus=status, record=record, lock=lock or {"outcome": "released", "inFlight": []}, **extra
    )
    return event


def text_of(notification: Notification) -> str:
    return notification.text + "\n" + json.dumps(notification.blocks)


# ---------------------------------------------------------------- every event renders

STARTED = {
    "deploymentId": PROD_ID,
    "executionArn": PROD_ARN,
    "environment": "prod",
    "requestedBy": "alice",
    "changeTicket": "CHG-1234",
    "dryRun": False,
    "specVersion": "v1",
    "specHash": "sha256:" + "00" * 32,
    "account": "093646564004",
    "regions": ["af-south-1", "eu-west-1"],
    "policy": {"approvalsRequired": 2, "approvalFirstWaitSeconds": 1800, "lockLeaseSeconds": 14400},
    "schedule": None,
}
APPROVAL_REQUESTED = {
    "deploymentId": PROD_ID,
    "executionArn": PROD_ARN,
    "environment": "prod",
    "specVersion": "v1",
    "approvalId": "apv-fedcba9876543210",
    "required": 2,
    "approvers": ["senior-engineer-1", "senior-engineer-2", "senior-engineer-3"],
    "expiresAt": "2026-11-26T11:00:00.000Z",
    "planSummary": "Plan: 1 to add, 1 to change, 0 unchanged.",
    "requestedBy": "alice",
    "changeTicket": "CHG-1234",
}
ANNOUNCED = {
    "detailType": "Deployment Window Announced",
    "deploymentId": PROD_ID,
    "environment": "prod",
    "scheduledFor": "2026-11-30T08:00:00.000Z",
    "windowStartUtc": "2026-11-30T08:00:00.000Z",
    "windowEndUtc": "2026-11-30T13:00:00.000Z",
    "windowText": "Mon 30 Nov 2026 10:00-15:00 SAST",
    "allowedWindow": "mon-thu 09:00-15:00 Africa/Johannesburg",
    "expectedDowntime": "none",
    "rollbackEstimateMinutes": 15,
    "changeTicket": "CHG-1234",
    "escalation": "on-call engineer",
}
RUNNING_RECORD = {
    "deploymentId": PROD_ID,
    "environment": "prod",
    "status": "RUNNING",
    "executionArn": PROD_ARN,
    "requestedBy": "alice",
    "changeTicket": "CHG-1234",
    "specVersion": "v1",
    "plan": PLAN,
}
DECIDED = {
    "response": "rollback",
    "criterion": "dataLossRisk",
    "reason": "writes to Site-Generation-State failed for 6 minutes",
    "findings": [],
}
FIXED_FORWARD = {"response": "fixForward", "criterion": "monitoringGap", "reason": "no table metrics yet"}

RENDER_CASES = [
    pytest.param(
        "Deployment Started",
        STARTED,
        None,
        [":rocket: prod deployment started", "`af-south-1`, `eu-west-1`", "*Approvals required*\\n2", "CHG-1234"],
        (False, False),
        id="started",
    ),
    pytest.param(
        "Approval Requested",
        APPROVAL_REQUESTED,
        None,
        [
            "prod deployment waiting for approval",
            "*Approvals needed*\\n2",
            "<!date^1795690800^{date_short_pretty} {time}|2026-11-26T11:00:00.000Z>",
            "*Plan* 1 to add, 1 to change, 0 unchanged.",
            "senior-engineer-1, senior-engineer-2, senior-engineer-3",
        ],
        (False, False),
        id="approval-requested",
    ),
    pytest.param(
        "Deployment Window Announced",
        ANNOUNCED,
        RUNNING_RECORD,
        [
            "prod deployment scheduled: Mon 30 Nov 2026 10:00-15:00 SAST",
            "*Rollback estimate*\\n15 minutes",
            "*Expected downtime*\\nnone",
            "*Escalation*\\non-call engineer",
            "mon-thu 09:00-15:00 Africa/Johannesburg",
        ],
        (False, False),
        id="window-announced",
    ),
    pytest.param(
        "Deployment Succeeded",
        outcome("SUCCEEDED"),
        RUNNING_RECORD,
        [":white_check_mark: prod deployment succeeded", "*Plan* 1 to add, 1 to change", "*Mutating AWS calls*\\n7"],
        (False, True),
        id="succeeded",
    ),
    pytest.param(
        "Deployment Succeeded",
        outcome("SUCCEEDED_WITH_WARNINGS", error="ValidationFailed", cause="monitoring.metrics: no metrics yet"),
        {**RUNNING_RECORD, "decision": FIXED_FORWARD},
        [
            ":warning: prod deployment succeeded with warnings",
            "fixed forward",
            "*Criterion* `monitoringGap`: no table metrics yet",
            "*Error* `ValidationFailed`",
            "monitoring.metrics: no metrics yet",
        ],
        (False, True),
        id="succeeded-with-warnings",
    ),
    pytest.param(
        "Deployment Failed",
        outcome(
            "FAILED",
            error="PreflightFailed",
            cause="change ticket CHG-1234 is not approved",
            plan={"add": None, "change": None, "unchanged": None, "hash": None},
        ),
        {**RUNNING_RECORD, "plan": None},
        [":x: prod deployment failed: PreflightFailed", "*Cause* change ticket CHG-1234 is not approved"],
        (True, True),
        id="failed",
    ),
    pytest.param(
        "Deployment Planned",
        outcome("PLANNED"),
        RUNNING_RECORD,
        [":memo: prod dry run planned", "*Plan* 1 to add, 1 to change, 0 unchanged.", "Nothing was changed."],
        (False, True),
        id="planned",
    ),
    pytest.param(
        "Rollback Started",
        {
            "deploymentId": PROD_ID,
            "environment": "prod",
            "criterion": "dataLossRisk",
            "reason": DECIDED["reason"],
            "error": "ValidationFailed",
        },
        RUNNING_RECORD,
        [
            ":rewind: prod deployment rolling back (dataLossRisk)",
            "*Criterion*\\n`dataLossRisk`",
            "*Failure*\\n`ValidationFailed`",
            "*Reason* writes to Site-Generation-State failed for 6 minutes",
        ],
        (True, False),
        id="rollback-started",
    ),
    pytest.param(
        "Rollback Completed",
        outcome("ROLLED_BACK", error="ValidationFailed", cause="dynamodb.write: AccessDenied"),
        {**RUNNING_RECORD, "status": "ROLLED_BACK", "decision": DECIDED},
        [
            "prod deployment rolled back",
            "*Criterion* `dataLossRisk`: writes to Site-Generation-State failed for 6 minutes",
            "*Error* `ValidationFailed`",
            "dynamodb.write: AccessDenied",
        ],
        (True, True),
        id="rollback-completed",
    ),
    pytest.param(
        "Incident Declared",
        {"deploymentId": PROD_ID, "executionArn": PROD_ARN, "environment": "prod", "error": "RollbackFailed"},
        {
            **RUNNING_RECORD,
            "status": "ROLLBACK_FAILED",
            "decision": DECIDED,
            "cause": "the rollback could not be validated: 3 items missing",
        },
        [
            ":rotating_light: Incident: prod rollback failed",
            "*Error* `RollbackFailed`",
            "the rollback could not be validated: 3 items missing",
            f"`deployer report {PROD_ARN}`",
        ],
        (True, True),
        id="incident",
    ),
]


@pytest.mark.parametrize(("detail_type", "detail", "record", "expected", "flags"), RENDER_CASES)
def test_every_pipeline_event_renders_with_its_deployment_and_a_console_link(
    detail_type: str,
    detail: dict[str, Any],
    record: dict[str, Any] | None,
    expected: list[str],
    flags: tuple[bool, bool],
) -> None:
    # GIVEN one of the pipeline's events (and the record, where the pipeline keeps more)
    # WHEN it is turned into a notification
    notification = notification_for(envelope(detail_type, detail), record)
    assert notification is not None
    text = text_of(notification)
    # THEN it names the environment, the deployment, who asked and the ticket, and links the execution
    assert notification.text.startswith(("prod ", "Incident: prod "))
    assert PROD_ID in notification.text
    assert (notification.deployment_id, notification.environment) == (PROD_ID, "prod")
    for common in ("*Environment*\\nprod", f"*Deployment*\\n`{PROD_ID}`", "*Requested by*\\nalice"):
        assert common in text
    assert CONSOLE + PROD_ARN in text
    # AND what is particular to the event, with failures flagged for mentions and outcomes for the channel
    for particular in expected:
        assert particular in text
    assert (notification.alert, notification.terminal) == flags
    assert notification.blocks[0]["type"] == "header"


def test_the_sample_success_event_renders_without_a_record() -> None:
    notification = notification_for(SUCCEEDED)
    assert notification is not None
    assert notification.text == f"sit deployment succeeded (deployment {SIT_ID})"
    assert "*Change ticket*\\nnone" in text_of(notification)
    assert notification.spec_version is None


def test_the_event_names_the_spec_version_when_it_carries_one() -> None:
    notification = notification_for(envelope("Deployment Started", STARTED))
    assert notification is not None
    assert notification.spec_version == "v1"


def test_user_supplied_text_cannot_mention_the_channel() -> None:
    # GIVEN a deployment requested by someone whose name is a broadcast mention
    detail = {**STARTED, "requestedBy": "<!channel>", "changeTicket": "<!here>"}
    notification = notification_for(envelope("Deployment Started", detail))
    assert notification is not None
    # THEN it is shown, escaped, and pings nobody
    text = text_of(notification)
    assert "<!channel>" not in text
    assert "<!here>" not in text
    assert "&lt;!channel&gt;" in notification.text


def test_alerts_mention_users_and_groups_and_other_messages_do_not() -> None:
    failed = notification_for(envelope("Deployment Failed", outcome("FAILED", error="LockHeld")))
    succeeded = notification_for(envelope("Deployment Succeeded", outcome("SUCCEEDED")))
    assert failed is not None
    assert succeeded is not None
    mentioned = failed.mentioning(["U0SENIOR01", "S0ONCALL01"])
    assert mentioned.text.endswith("cc <@U0SENIOR01> <!subteam^S0ONCALL01>")
    assert mentioned.blocks[-1] == {
        "type": "section",
        "block_id": "mentions",
        "text": {"type": "mrkdwn", "text": "cc <@U0SENIOR01> <!subteam^S0ONCALL01>"},
    }
    assert succeeded.mentioning(["U0SENIOR01"]) == succeeded
    assert failed.mentioning([]) == failed


@pytest.mark.parametrize(
    "event",
    [
        {"detail-type": "Deployment Succeeded", "source": "someone.else", "detail": outcome("SUCCEEDED")},
        {"detail-type": "Deployment Exploded", "source": "bbws.deployer", "detail": outcome("SUCCEEDED")},
        {"detail-type": "Deployment Succeeded", "source": "bbws.deployer", "detail": "not an object"},
    ],
    ids=["foreign-source", "unknown-type", "no-detail"],
)
def test_events_that_are_not_ours_say_nothing(event: dict[str, Any]) -> None:
    assert notification_for(event) is None


def test_the_correlation_id_of_a_notification_is_its_deployment_id() -> None:
    assert jmespath.search(CORRELATION_PATH, SUCCEEDED) == SIT_ID
    assert jmespath.search(CORRELATION_PATH, ABORTED) == PROD_ID


# ---------------------------------------------------------------- executions that ended outside the pipeline


@pytest.mark.parametrize(("status", "headline"), [("ABORTED", "aborted"), ("TIMED_OUT", "timed out")])
def test_an_aborted_or_timed_out_run_says_its_record_closed_and_its_lock_released(status: str, headline: str) -> None:
    # GIVEN a deployment stopped from outside while it ran, closed by CloseStoppedFunction
    notification = notification_for(closed(status), RUNNING_RECORD)
    assert notification is not None
    text = text_of(notification)
    # THEN the channel hears it, with what became of the record and the lock, and the command to check
    assert notification.text == f"prod deployment {headline} (deployment {PROD_ID}, requested by alice)"
    assert f"Its record is closed as `{status}`." in text
    assert "The prod lock it held is released." in text
    assert f"Check with `deployer status {PROD_ARN}`" in text
    assert f"*Execution status*\\n`{status}`" in text
    assert "*Change ticket*\\nCHG-1234" in text
    assert CONSOLE + PROD_ARN in text
    assert (notification.alert, notification.terminal) == (True, True)


def test_a_lock_kept_for_a_running_step_says_until_when_and_how_to_free_it_sooner() -> None:
    lock = {"outcome": "kept", "until": "2026-11-26T09:45:00Z", "inFlight": ["Provision"]}
    notification = notification_for(closed("ABORTED", lock=lock), RUNNING_RECORD)
    assert notification is not None
    text = text_of(notification)
    assert "The prod lock stays held until <!date^1795686300^" in text
    assert "Provision was still running when the execution ended" in text
    assert "`deployer unlock --env prod --reason ...` frees it sooner" in text
    assert "is released" not in text


def test_a_lock_another_deployment_took_is_named() -> None:
    lock = {"outcome": "not-held", "holder": "prod-20261126T100000Z-99999999"}
    notification = notification_for(closed("TIMED_OUT", record="already-closed", lock=lock), None)
    assert notification is not None
    text = text_of(notification)
    assert "It no longer held the prod lock: deployment `prod-20261126T100000Z-99999999` holds it." in text
    assert "record is closed" not in text


def test_the_sample_aborted_run_without_a_record_took_no_lock() -> None:
    # GIVEN the sample: aborted before StartDeployment opened a record (who asked comes from the input)
    notification = notification_for(ABORTED, None)
    assert notification is not None
    text = text_of(notification)
    assert "took no lock and changed nothing" in text
    assert "*Requested by*\\nalice" in text
    assert notification.environment == "prod"


def test_a_failure_that_escaped_every_catch_is_posted_with_its_error() -> None:
    # GIVEN the execution failed while its record still said RUNNING
    event = closed(
        "FAILED",
        error="States.Runtime",
        cause="An error occurred while executing the state 'RecordFailed': the JSONPath '$.deployment' was not found",
    )
    notification = notification_for(event, RUNNING_RECORD)
    assert notification is not None
    text = text_of(notification)
    assert notification.text.startswith("prod deployment failed outside the pipeline: States.Runtime")
    assert "*Error* `States.Runtime`" in text
    assert "the JSONPath '$.deployment' was not found" in text
    assert "Its record is closed as `FAILED`." in text
    assert notification.alert


# ---------------------------------------------------------------- notify: channel, thread, once


@dataclass
class World:
    tooling: Tooling
    s3: Any
    sqs: Any
    queue_url: str
    versions: dict[str, str]
    posts: list[dict[str, Any]] = field(default_factory=list)
    slack_error: Exception | None = None
    # Runs while Slack takes a post: what another invocation does meanwhile.
    during_post: Callable[[], None] | None = None

    def notify(self, event: dict[str, Any]) -> dict[str, Any]:
        return notify(copy.deepcopy(event), self.tooling)

    def open_record(self, environment: str = "prod", deployment_id: str = PROD_ID, **fields: Any) -> None:
        arn = PROD_ARN if deployment_id == PROD_ID else SIT_ARN
        self.tooling.records.create(
            deployment_id,
            environment,
            NOW,
            {
                "executionArn": arn,
                "requestedBy": "alice",
                "changeTicket": "CHG-1234",
                "specVersion": self.versions[environment],
                "plan": PLAN,
                **fields,
            },
        )

    def record(self, deployment_id: str = PROD_ID) -> dict[str, Any]:
        record = self.tooling.records.get(deployment_id)
        assert record is not None
        return record

    def items(self, prefix: str) -> list[dict[str, Any]]:
        return [i for i in self.tooling.records.table.scan()["Items"] if i["pk"].startswith(prefix)]

    def put_spec(self, environment: str, change: dict[str, Any]) -> str:
        data = yaml.safe_load((ROOT / "environments" / f"{environment}.yaml").read_text())
        data["policy"].update(change)
        return self.tooling.specs.put(environment, yaml.safe_dump(data))

    def published(self) -> list[dict[str, Any]]:
        """Every event that reached the bus, as the capture rule's queue received it (EventBridge envelopes)."""
        events = []
        while messages := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                events.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return events


class RecordingWebClient:
    """slack_sdk's WebClient, replaced as in test_slack.py: records each post and answers with a fresh ts."""

    world: World

    def __init__(self, token: str, base_url: str, timeout: int) -> None:
        assert token == "xoxb-test"

    def chat_postMessage(self, **kwargs: Any) -> dict[str, Any]:
        if self.world.slack_error is not None:
            raise self.world.slack_error
        if self.world.during_post is not None:
            self.world.during_post()
        self.world.posts.append(kwargs)
        return {"ok": True, "channel": kwargs["channel"], "ts": f"1795683600.{len(self.world.posts):06d}"}


SLACK_SECRET = {"botToken": "xoxb-test", "signingSecret": "s3cr3t", "teamId": "T0BBWS0001"}


def build_world(monkeypatch: pytest.MonkeyPatch, web_client: bool = True) -> World:
    """moto: the records table, the versioned specs bucket with every environment, the bus and a capture queue."""
    records_table()
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=SPECS_BUCKET)
    s3.put_bucket_versioning(Bucket=SPECS_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    events, sqs = boto3.client("events", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    events.create_event_bus(Name=BUS)
    queue_url = sqs.create_queue(QueueName="captured")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="capture", EventBusName=BUS, EventPattern=json.dumps({"source": ["bbws.deployer"]}))
    events.put_targets(Rule="capture", EventBusName=BUS, Targets=[{"Id": "queue", "Arn": queue_arn}])
    tooling = Tooling(
        records_table="bbws-deployer-records",
        specs_bucket=SPECS_BUCKET,
        event_bus=BUS,
        wait=WaitConfig(delay_seconds=0, max_attempts=1),
        slack_bot_secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:bbws-deployer-slack-bot",
    )
    versions = {
        env: tooling.specs.put(env, (ROOT / "environments" / f"{env}.yaml").read_text())
        for env in ("dev", "sit", "prod")
    }
    versions["test"] = tooling.specs.put("test", yaml.safe_dump(BASE_SPEC))
    monkeypatch.setattr(Tooling, "slack_bot_token", lambda self: SLACK_SECRET["botToken"])
    world = World(tooling=tooling, s3=s3, sqs=sqs, queue_url=queue_url, versions=versions)
    if web_client:
        RecordingWebClient.world = world
        monkeypatch.setattr(slack_module, "WebClient", RecordingWebClient)
    return world


@pytest.fixture
def world(aws: None, monkeypatch: pytest.MonkeyPatch) -> World:
    return build_world(monkeypatch)


def test_a_deployments_notifications_share_one_thread_and_outcomes_reach_the_channel(world: World) -> None:
    # GIVEN a PROD deployment's record, with no thread yet
    world.open_record()
    # WHEN it starts, asks for approval and succeeds
    started = world.notify(envelope("Deployment Started", {**STARTED, "specVersion": world.versions["prod"]}))
    world.notify(envelope("Approval Requested", {**APPROVAL_REQUESTED, "specVersion": world.versions["prod"]}))
    world.notify(envelope("Deployment Succeeded", outcome("SUCCEEDED")))
    # THEN the first message opened the thread in PROD's channel, and the record keeps it
    first, approval, succeeded = world.posts
    assert started["status"] == "posted"
    assert (first["channel"], first["thread_ts"], first["reply_broadcast"]) == ("C0DEPLOYPROD", None, None)
    assert world.record()["notifyThreadTs"] == started["ts"] == "1795683600.000001"
    # AND the others replied in it, the outcome broadcast to the channel as well
    assert (approval["channel"], approval["thread_ts"], approval["reply_broadcast"]) == (
        "C0DEPLOYPROD",
        started["ts"],
        None,
    )
    assert (succeeded["channel"], succeeded["thread_ts"], succeeded["reply_broadcast"]) == (
        "C0DEPLOYPROD",
        started["ts"],
        True,
    )
    assert succeeded["text"] == f"prod deployment succeeded (deployment {PROD_ID}, requested by alice)"
    assert "waiting for approval" in approval["text"]


def test_an_emergency_goes_to_the_incident_channel_outside_the_deployments_thread(world: World) -> None:
    # GIVEN a PROD deployment whose thread is open
    world.open_record()
    started = world.notify(envelope("Deployment Started", {**STARTED, "specVersion": world.versions["prod"]}))
    # WHEN its emergency is declared
    declared = world.notify(
        envelope(
            "Emergency Deployment Declared",
            {
                "deploymentId": PROD_ID,
                "environment": "prod",
                "requestedBy": "alice",
                "changeTicket": "CHG-1234",
                "reason": "Sev-1 INC-42 <!channel>",
                "approvalsRequired": 3,
                "extraApprovals": 1,
                "minimumNoticeHours": 24,
            },
        )
    )
    # THEN it is posted in PROD's incident channel (its spec's policy.emergency.channel), as a new message,
    # mentioning PROD's people, with the reason escaped; the deployment's thread stays where it was
    post = world.posts[-1]
    assert (declared["channel"], post["thread_ts"]) == ("#incidents", None)
    assert post["text"].startswith("Emergency prod deployment without 24 hours' notice")
    assert post["text"].endswith(f"cc {PROD_MENTIONS}")
    body = json.dumps(post["blocks"])
    assert "Sev-1 INC-42 &lt;!channel&gt;" in body
    assert "3 (1 extra)" in body
    assert world.record()["notifyThreadTs"] == started["ts"]


def test_an_announcement_of_a_change_is_posted_without_a_deployment(world: World) -> None:
    detail = {**ANNOUNCED, "announcedBy": "github:octo-release"}
    detail.pop("deploymentId", None)
    world.notify(envelope("Deployment Window Announced", {**detail, "environment": "prod"}))
    post = world.posts[-1]
    assert post["channel"] == "C0DEPLOYPROD"
    assert post["text"].startswith("prod change CHG-1234 announced: ")
    body = json.dumps(post["blocks"])
    assert "not started yet" in body
    assert "github:octo-release" in body


def test_failures_mention_the_environments_people_and_successes_do_not(world: World) -> None:
    world.open_record()
    world.notify(envelope("Deployment Succeeded", outcome("SUCCEEDED")))
    world.notify(envelope("Deployment Failed", outcome("FAILED", error="ValidationFailed")))
    world.notify(envelope("Rollback Started", {"deploymentId": PROD_ID, "environment": "prod", "criterion": "x"}))
    succeeded, failed, rollback = world.posts
    assert PROD_MENTIONS not in succeeded["text"] + json.dumps(succeeded["blocks"])
    for alert in (failed, rollback):
        assert alert["text"].endswith(f"cc {PROD_MENTIONS}")
        assert alert["blocks"][-1]["text"]["text"] == f"cc {PROD_MENTIONS}"


def test_the_same_event_delivered_twice_is_posted_once(world: World) -> None:
    # GIVEN an event already posted
    world.open_record()
    event = envelope("Deployment Succeeded", outcome("SUCCEEDED"))
    first = world.notify(event)
    # WHEN EventBridge (or Lambda's retry) delivers it again
    again = world.notify(event)
    # THEN nothing more is posted, and the answer says why
    assert len(world.posts) == 1
    assert again == {
        "status": "duplicate",
        "eventId": event["id"],
        "detailType": "Deployment Succeeded",
        "ts": first["ts"],
    }
    (delivered,) = world.items("NOTIFIED#")
    assert delivered["pk"] == f"NOTIFIED#{event['id']}"
    assert (delivered["deploymentId"], delivered["channel"], delivered["ts"]) == (PROD_ID, "C0DEPLOYPROD", first["ts"])


def test_a_retry_after_the_post_only_finishes_the_thread_write(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the first notification posted, then failed to keep its thread on the record
    world.open_record()
    event = envelope("Deployment Started", STARTED)
    claim = notifications._claim_thread

    def throttled(*args: Any) -> bool:
        raise TransientAwsError("ProvisionedThroughputExceededException")

    monkeypatch.setattr(notifications, "_claim_thread", throttled)
    with pytest.raises(TransientAwsError):
        world.notify(event)
    assert "notifyThreadTs" not in world.record()
    # WHEN Lambda retries the event
    monkeypatch.setattr(notifications, "_claim_thread", claim)
    retried = world.notify(event)
    # THEN it posts nothing again, and the thread is kept for the next message
    assert retried["status"] == "duplicate"
    assert len(world.posts) == 1
    assert world.record()["notifyThreadTs"] == "1795683600.000001"
    world.notify(envelope("Deployment Succeeded", outcome("SUCCEEDED")))
    assert world.posts[-1]["thread_ts"] == "1795683600.000001"


def test_of_two_first_posts_racing_the_first_to_write_keeps_the_thread(world: World) -> None:
    # GIVEN another notification of the same deployment claims the thread while this one posts
    world.open_record()
    world.during_post = lambda: world.tooling.records.update(PROD_ID, NOW, {"notifyThreadTs": "1795683599.000042"})
    # WHEN this one posts (to the channel: it saw no thread) and tries to keep its ts
    result = world.notify(envelope("Deployment Window Announced", ANNOUNCED))
    # THEN the other's thread stays; this message stays on its own in the channel
    assert result["threadTs"] is None
    assert world.record()["notifyThreadTs"] == "1795683599.000042"


def test_without_a_record_the_message_goes_to_the_channel_and_no_record_is_made(world: World) -> None:
    # GIVEN the sample: an execution aborted before StartDeployment opened a record
    result = world.notify(ABORTED)
    # THEN PROD's channel hears it at the top level, with the PROD approvers mentioned
    (post,) = world.posts
    assert (post["channel"], post["thread_ts"]) == ("C0DEPLOYPROD", None)
    assert post["text"] == f"prod deployment aborted (deployment {PROD_ID}, requested by alice) cc {PROD_MENTIONS}"
    assert result["status"] == "posted"
    # AND no partial deployment record was created (StartDeployment's conditional create would refuse its own)
    assert world.items("DEPLOYMENT#") == []
    assert len(world.items("NOTIFIED#")) == 1


def test_the_channel_is_that_of_the_spec_version_the_deployment_runs(world: World) -> None:
    # GIVEN PROD's spec changed channel after the deployment pinned its version
    world.open_record()
    newer = world.put_spec("prod", {"notifications": {"channel": "#bbws-deploy-prod"}})
    # WHEN an event names no version, names the newer one, or has no record to read one from
    world.notify(envelope("Deployment Succeeded", outcome("SUCCEEDED")))
    world.notify(envelope("Deployment Started", {**STARTED, "specVersion": newer}))
    world.tooling.records.table.delete_item(Key={"pk": f"DEPLOYMENT#{PROD_ID}", "sk": "RECORD"})
    world.notify(closed("TIMED_OUT"))
    # THEN the record's pinned version, the event's version, and the latest decide in turn
    assert [p["channel"] for p in world.posts] == ["C0DEPLOYPROD", "#bbws-deploy-prod", "#bbws-deploy-prod"]


def test_a_pinned_version_that_is_gone_falls_back_to_the_latest_spec(world: World) -> None:
    # GIVEN a record pinned to a spec version that no longer exists (expired by a lifecycle rule, say)
    world.open_record(specVersion="expired-version")
    world.put_spec("prod", {"notifications": {"channel": "#bbws-deploy-prod"}})
    # WHEN one of its events arrives THEN it goes to the latest spec's channel rather than nowhere
    assert world.notify(envelope("Deployment Succeeded", outcome("SUCCEEDED")))["channel"] == "#bbws-deploy-prod"


def test_an_environment_with_no_channel_is_skipped_not_failed(world: World) -> None:
    # GIVEN the test environment: no approvals channel, no notifications section
    world.open_record("test", SIT_ID)
    # WHEN one of its events arrives
    result = world.notify(envelope("Deployment Succeeded", outcome("SUCCEEDED", "test", SIT_ID)))
    # THEN it is skipped with the reason, and Slack is not called
    assert result["status"] == "skipped"
    assert "neither policy.notifications.channel nor policy.approvals.channel" in result["reason"]
    assert world.posts == []


@pytest.mark.parametrize(
    ("environment", "reason"),
    [("DEV!", "names no known environment"), (None, "names no known environment"), ("qa", "no usable spec for qa")],
)
def test_an_event_with_no_environment_to_find_a_channel_for_is_skipped(
    world: World, environment: str | None, reason: str
) -> None:
    # GIVEN a rejected input's outcome (its "environment" was never validated), or a spec that does not exist
    detail = outcome("FAILED", error="InputInvalid", deployment_id="f3c1d2e4-0000-4000-8000-000000000001")
    detail["environment"] = environment
    result = world.notify(envelope("Deployment Failed", detail))
    assert result["status"] == "skipped"
    assert reason in result["reason"]
    assert world.posts == []


def test_a_slack_refusal_raises_so_lambda_retries_and_nothing_is_marked(world: World) -> None:
    # GIVEN Slack refuses the post
    world.open_record()
    event = envelope("Deployment Failed", outcome("FAILED", error="ValidationFailed"))
    world.slack_error = SlackApiError("The request to the Slack API failed.", {"ok": False, "error": "not_in_channel"})
    # WHEN the event is notified THEN NotificationFailed names it (Lambda retries, then the dead-letter queue)
    with pytest.raises(
        NotificationFailed, match=r"'Deployment Failed' notification of deployment prod-.* for C0DEPLOYPROD"
    ):
        world.notify(event)
    assert world.items("NOTIFIED#") == []
    assert "notifyThreadTs" not in world.record()
    # AND the retry, once Slack takes it, posts it
    world.slack_error = None
    assert world.notify(event)["status"] == "posted"
    assert len(world.posts) == 1


@pytest.fixture
def slack_http() -> Iterator[tuple[str, list[tuple[int, dict[str, Any]]]]]:
    """A local HTTP server answering Slack Web API calls with the queued (status, body) answers."""
    answers: list[tuple[int, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, body = answers.pop(0) if answers else (200, {"ok": True, "ts": "1795683600.000001"})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "30")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/", answers
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"ok": False, "error": "internal_error"}),
        (503, {"ok": False, "error": "service_unavailable"}),
        (429, {"ok": False, "error": "ratelimited"}),
        (200, {"ok": False, "error": "channel_not_found"}),
    ],
    ids=["http-500", "http-503", "rate-limited", "slack-error"],
)
def test_slacks_errors_over_http_raise_notification_failed(
    aws: None,
    monkeypatch: pytest.MonkeyPatch,
    slack_http: tuple[str, list[tuple[int, dict[str, Any]]]],
    status: int,
    body: dict[str, Any],
) -> None:
    # GIVEN the real WebClient talking to a Slack that answers with an error
    world = build_world(monkeypatch, web_client=False)
    url, answers = slack_http
    world.tooling.slack_api_url = url
    world.open_record()
    answers.append((status, body))
    # WHEN a notification is posted THEN it raises NotificationFailed, caused by slack_sdk's SlackApiError
    with pytest.raises(NotificationFailed) as raised:
        world.notify(envelope("Deployment Succeeded", outcome("SUCCEEDED")))
    assert isinstance(raised.value.__cause__, SlackApiError)
    assert world.items("NOTIFIED#") == []
    # AND the next attempt, answered ok, is posted
    assert world.notify(envelope("Deployment Succeeded", outcome("SUCCEEDED")))["status"] == "posted"


def test_slack_out_of_reach_raises_notification_failed(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    world = build_world(monkeypatch, web_client=False)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    world.tooling.slack_api_url = f"http://127.0.0.1:{port}/api/"
    world.open_record()
    with pytest.raises(NotificationFailed, match="URLError"):
        world.notify(envelope("Deployment Succeeded", outcome("SUCCEEDED")))


def test_no_task_token_or_secret_reaches_slack(world: World) -> None:
    world.open_record()
    for event in (
        envelope("Deployment Started", STARTED),
        envelope("Approval Requested", APPROVAL_REQUESTED),
        envelope("Incident Declared", {"deploymentId": PROD_ID, "environment": "prod", "error": "RollbackFailed"}),
        closed("ABORTED"),
    ):
        world.notify(event)
    posted = json.dumps(world.posts)
    assert len(world.posts) == 4
    for secret in (*SLACK_SECRET.values(), "taskToken", "task-token"):
        assert secret not in posted
