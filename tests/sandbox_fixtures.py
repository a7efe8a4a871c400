"""Fixtures for tests that talk to the sandbox over HTTP, as a user or CI would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from deployer.approvals import Approval
from deployer.guardrails import packaged
from deployer_cli import client
from deployer_cli.clicks import SandboxSlack, slack_user
from deployer_cli.client import Stack
from sandbox.accounts import TARGET_ACCOUNTS, TOOLING_ACCESS_KEY, TOOLING_SECRET_KEY, account_session
from sandbox.server import Sandbox

REPO = Path(__file__).resolve().parent.parent
# Test environments' grace periods (runbook section 9), in minutes: about a second, so a failure that may
# clear is re-checked once (DecideRollback's recheck loop) before it rolls back.
TEST_GRACE = {"writeFailureGraceMinutes": 0.02, "transientGraceMinutes": 0.02}
EVENTS = REPO / "events"
DEV = TARGET_ACCOUNTS["dev"]


@dataclass
class Deployments:
    """Runs deployments against the session's sandbox the way `deployer run` does."""

    sandbox: Sandbox
    stack: Stack
    spec_dir: Path

    def spec(self, environment: str, **changes: Any) -> Path:
        """Write a spec for a test environment (a copy of dev's, with changes) into spec_dir.

        The copy deploys into DEV's account, whose guardrails take environments named ``dev-*``.
        """
        allowed = packaged().for_account(DEV)
        assert allowed.allows_environment(environment), (
            f"{environment!r}: a test environment deploys into DEV's account, whose guardrails allow only "
            f"{', '.join(allowed.environments)}"
        )
        data = yaml.safe_load((REPO / "environments" / "dev.yaml").read_text())
        data.update(environment=environment, **changes)
        # The runbook's 5-minute grace periods, in seconds: a failure that may clear is re-checked once.
        rollback = data.setdefault("policy", {}).setdefault("rollback", {})
        for name, minutes in TEST_GRACE.items():
            rollback.setdefault(name, minutes)
        path = self.spec_dir / f"{environment}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def approval_spec(self, environment: str, approver: str, channel: str, **policy: Any) -> None:
        """A test environment needing one approval, by ``approver`` (a Slack id), with a bucket of its own."""
        approvals = {
            "required": 1,
            "approvers": [{"slackUserId": approver, "name": approver.lower()}],
            "channel": channel,
        }
        self.spec(
            environment,
            policy={"approvals": approvals, "lockLeaseMinutes": 90, **policy},
            resources={"buckets": [{"name": f"bbws-{environment}-bucket"}]},
        )

    def _spec_dir(self, environment: str) -> Path:
        return self.spec_dir if (self.spec_dir / f"{environment}.yaml").exists() else REPO / "environments"

    def announce(self, environment: str, change_ticket: str, requested_by: str = "alice") -> datetime:
        """Announce the earliest window the notice allows (as `deployer announce` does), then travel to it."""
        return self.sandbox.announce_ahead(environment, change_ticket, requested_by, self._spec_dir(environment))

    def start(self, environment: str, requested_by: str = "pytest", **kwargs: Any) -> str:
        spec_dir = self._spec_dir(environment)
        version = client.push_spec(self.stack, spec_dir, environment)
        request = client.build_request(
            environment,
            requested_by,
            kwargs.get("change_ticket"),
            kwargs.get("dry_run", False),
            version,
            scheduledFor=kwargs.get("scheduled_for"),
            promotionOverride=kwargs.get("promotion_override"),
            emergency=kwargs.get("emergency"),
            releaseTag=kwargs.get("release_tag", self.release_tag(environment)),
        )
        return client.start(self.stack, request)

    def release_tag(self, environment: str) -> str | None:
        """PROD deploys a tagged release: the tag the deploy workflow would make today (simulated)."""
        return f"v{self.sandbox.now():%Y.%m.%d}-prod-pytest" if environment == "prod" else None

    def finish(self, execution_arn: str) -> dict[str, Any]:
        client.wait(self.stack, execution_arn, poll_seconds=0.1, timeout_seconds=300)
        return client.summary(self.stack, execution_arn)

    def run(self, environment: str, **kwargs: Any) -> dict[str, Any]:
        return self.finish(self.start(environment, **kwargs))

    def approval(self, execution_arn: str) -> Approval:
        """The deployment's approval, once it is posted to Slack."""
        approval = client.open_approval(self.stack, execution_arn)
        assert approval is not None, f"{execution_arn} ended without asking for approval"
        return approval

    def click(self, approval: Approval, user: str, action: str = "approve") -> dict[str, Any]:
        """A signed Slack click by an approver (name or Slack id) through the API."""
        spec, _ = self.stack.specs.get(approval.environment)
        user_id, name = slack_user(spec, user)
        return SandboxSlack.discover(self.sandbox.endpoint).click(approval, user_id, name, action)

    def approve(self, approval: Approval, *users: str) -> None:
        """Each user clicks Approve, in turn."""
        for user in users:
            self.click(approval, user)

    def slack_messages(self) -> list[dict[str, Any]]:
        """What the fake Slack recorded, read over its HTTP API like any client would."""
        with urllib.request.urlopen(f"{self.sandbox.slack_url}/messages") as response:
            return list(json.loads(response.read()))

    def approval_message(self, approval: Approval) -> dict[str, Any]:
        return next(
            m for m in self.slack_messages() if m.get("ts") == approval.message_ts and m["channel"] == approval.channel
        )

    def states_entered(self, execution_arn: str) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"]
            for e in client.history(self.stack, execution_arn)
            if e["type"].endswith("StateEntered")
        ]

    def calls_into(self, account: str) -> int:
        """How many AWS calls anyone has made into ``account`` so far."""
        return sum(n for (called, _, _), n in self.sandbox.calls.snapshot().items() if called == account)

    def target(self, account: str = DEV) -> boto3.Session:
        """A session in a target account, for arranging and inspecting it by hand."""
        return account_session(self.sandbox.client("sts"), account)

    def target_client(self, service: str, account: str = DEV, region: str | None = None) -> Any:
        return self.target(account).client(
            service, endpoint_url=self.sandbox.endpoint, region_name=region or self.sandbox.region
        )


@dataclass
class EventCapture:
    """Every event published to the deployer's bus, through a rule with an SQS target."""

    sqs: Any
    queue_url: str

    def drain(self) -> list[dict[str, Any]]:
        events = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return events
            for message in messages:
                events.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def for_deployment(self, deployment_id: str) -> list[dict[str, Any]]:
        return [e for e in self.drain() if e["detail"].get("deploymentId") == deployment_id]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(log_dir=tmp_path_factory.mktemp("sandbox-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def stack(sandbox: Sandbox) -> Stack:
    return Stack.discover(sandbox.session(), sandbox.stack_name, sandbox.region, sandbox.endpoint)


@pytest.fixture(scope="module")
def deployments(sandbox: Sandbox, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Deployments:
    return Deployments(sandbox, stack, tmp_path_factory.mktemp("specs"))


@pytest.fixture(scope="module")
def promoted_to_sit(deployments: Deployments) -> dict[str, Any]:
    """DEV deployed the repository's spec, as SIT's promotion rule requires before SIT may run it."""
    result = deployments.run("dev", requested_by="pytest-promotion")
    assert result["status"] == "SUCCEEDED", result
    return result


@pytest.fixture(scope="module")
def bus_events(sandbox: Sandbox) -> EventCapture:
    sqs, events = sandbox.client("sqs"), sandbox.client("events")
    queue_url = sqs.create_queue(QueueName="test-bus-capture")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = sandbox.outputs["EventBusName"]
    events.put_rule(Name="test-capture", EventBusName=bus, EventPattern=json.dumps({"source": ["bbws.deployer"]}))
    events.put_targets(Rule="test-capture", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return EventCapture(sqs, queue_url)


def wait_for(condition: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    """Poll until condition() is truthy and return its value; the bound is a safety net, never asserted on."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"gave up waiting for {what}")


def deployer(deployments: Deployments, *args: str) -> subprocess.CompletedProcess[str]:
    """The `deployer` command, run as a user would, against this sandbox (`--endpoint-url`)."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": TOOLING_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": TOOLING_SECRET_KEY,
        "AWS_REGION": deployments.sandbox.region,
    }
    return subprocess.run(
        [sys.executable, "-m", "deployer_cli.main", *args, "--endpoint-url", deployments.sandbox.endpoint],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def load_event(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / name).read_text()))
