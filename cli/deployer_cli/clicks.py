"""Approve or reject in a sandbox the way Slack does it: a signed block_actions click.

The click travels the real path: a form-encoded ``payload`` POSTed, signed with the
Slack app's signing secret, to the deployer's ``/slack/interactions`` route. Only a
sandbox hands out its signing secret (``/_sandbox/info``); on AWS, people click in Slack.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from deployer.approvals import Approval
from deployer.spec import EnvironmentSpec

INFO_PATH = "/_sandbox/info"


def sandbox_info(endpoint_url: str) -> dict[str, Any]:
    """What a sandbox says about itself (``/_sandbox/info``); URLError or ValueError if the endpoint is none."""
    with urllib.request.urlopen(endpoint_url.rstrip("/") + INFO_PATH, timeout=10) as response:  # noqa: S310
        return dict(json.loads(response.read()))


class ClicksUnavailable(Exception):
    """The target is not a sandbox, so there is no signing secret to click with."""


@dataclass(frozen=True)
class SandboxSlack:
    api: str
    slack: str
    signing_secret: str
    team_id: str
    # The sandbox's simulated time, so a click is signed at the moment the functions think it is.
    time_offset_seconds: float = 0

    @classmethod
    def discover(cls, endpoint_url: str | None) -> SandboxSlack:
        if not endpoint_url:
            raise ClicksUnavailable("on AWS, approvals are clicked in Slack; --approve-as works against a sandbox")
        try:
            info = sandbox_info(endpoint_url)
        except (urllib.error.URLError, ValueError) as exc:
            raise ClicksUnavailable(f"{endpoint_url} is not a deployer sandbox ({exc}); approve in Slack") from None
        return cls(
            info["api"], info["slack"], info["slackSigningSecret"], info["slackTeamId"], info["timeOffsetSeconds"]
        )

    def click(self, approval: Approval, user_id: str, user_name: str, action: str) -> dict[str, Any]:
        """Send one button click; returns the interactions endpoint's answer (status and body)."""
        channel, ts = approval.channel, approval.message_ts or ""
        payload = {
            "type": "block_actions",
            "team": {"id": self.team_id, "domain": "bbws"},
            "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": self.team_id},
            "api_app_id": "A0DEPLOYER",
            "trigger_id": uuid.uuid4().hex,
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
            "channel": {"id": channel, "name": "deployments"},
            "message": {"type": "message", "ts": ts},
            "response_url": f"{self.slack}/actions/{channel}/{uuid.uuid4().hex}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action,
                    "block_id": "decision",
                    "value": approval.approval_id,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        body = urlencode({"payload": json.dumps(payload)})
        timestamp = str(int(time.time() + self.time_offset_seconds))
        signature = SignatureVerifier(self.signing_secret).generate_signature(timestamp=timestamp, body=body)
        request = urllib.request.Request(  # noqa: S310 - the sandbox's own loopback API
            f"{self.api}/slack/interactions",
            data=body.encode(),
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": signature or "",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return {"status": response.status, **json.loads(response.read() or b"{}")}
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, **json.loads(exc.read() or b"{}")}


def slack_user(spec: EnvironmentSpec, user: str) -> tuple[str, str]:
    """(Slack id, name) of an approver given by either; an unknown user is taken as a Slack id."""
    policy = spec.policy.approvals
    for approver in [*policy.approvers, *policy.escalation_approvers]:
        if user in (approver.slack_user_id, approver.name):
            return approver.slack_user_id, approver.name
    return user, user
