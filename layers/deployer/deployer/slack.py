"""Slack: the approval message (Block Kit), request verification and parsing, and the Web API.

Everything Slack-shaped goes through slack_sdk: Block Kit models, the request signature
verifier, ``WebClient`` for chat.postMessage / chat.update and ``WebhookClient`` for
``response_url`` replies. The task token never appears in anything built here: buttons
carry the approval id only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, Field, ValidationError
from slack_sdk import WebClient
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook import WebhookClient

from deployer.approvals import APPROVAL_ID_PATTERN, Approval, Decision, Vote, approving, tally

# Slack's own rule: a request more than five minutes off our clock is refused.
MAX_AGE_SECONDS = 300
# A signed request is accepted for MAX_AGE_SECONDS either side of its timestamp, so its
# replay guard must outlive both halves of that window.
REPLAY_WINDOW_SECONDS = 2 * MAX_AGE_SECONDS
# Block Kit limits (slack_sdk validates them and would refuse the whole message).
SECTION_TEXT_LIMIT = 3000
HEADER_LIMIT = 150


def escape(text: str) -> str:
    # Slack's mrkdwn control characters: without this a requester named "<!channel>" pings everyone.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mention(user_id: str) -> str:
    return f"<@{user_id}>"


def execution_console_url(execution_arn: str) -> str:
    """The Step Functions console page of an execution."""
    region = execution_arn.split(":")[3]
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"


def _tally(approval: Approval, votes: list[Vote]) -> str:
    who = ", ".join(_mention(v.user_id) for v in approving(votes))
    return tally(approval.quorums(votes)) + (f": {who}" if who else "")


def _resource_line(resource: dict[str, Any]) -> str:
    changes = [str(c.get("field", c)) if isinstance(c, dict) else str(c) for c in resource.get("changes", [])]
    changed = f" ({', '.join(escape(c) for c in changes)})" if changes else ""
    return (
        f"• `{escape(str(resource.get('region', '?')))}` {escape(str(resource.get('kind', '?')))} "
        f"`{escape(str(resource.get('name', '?')))}`: {escape(str(resource.get('action', '?')))}{changed}"
    )


def _resources_text(resources: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    budget = SECTION_TEXT_LIMIT - 100
    for index, resource in enumerate(resources):
        line = _resource_line(resource)
        if sum(len(x) + 1 for x in lines) + len(line) > budget:
            lines.append(f"… and {len(resources) - index} more")
            break
        lines.append(line)
    return "*Plan*\n" + ("\n".join(lines) if lines else "no resources")


def _policy_change(approval: Approval) -> list[Block]:
    """A changed policy: what changed, and that the previous policy's approvers must consent too."""
    if not approval.policy_diff:
        return []
    previous = ", ".join(_mention(a["slackUserId"]) for a in approval.previous_approvers) or "nobody"
    consent = (
        f"{approval.previous_required} of the previous policy's approvers ({previous}) must approve too."
        if approval.previous_required
        else "The previous policy required no approvals."
    )
    lines = "\n".join(f"• `{escape(line)}`" for line in approval.policy_diff)
    text = f"*Policy change* since the last successful deployment. {consent}\n{lines}"
    return [SectionBlock(block_id="policy_change", text=MarkdownTextObject(text=clip(text, SECTION_TEXT_LIMIT)))]


def _context(approval: Approval, votes: list[Vote], console_url: str) -> list[Block]:
    expires = int(approval.expires_at.timestamp())
    fields = [
        f"*Environment*\n{escape(approval.environment)}",
        f"*Requested by*\n{escape(approval.requester_description or approval.requested_by)}",
        f"*Change ticket*\n{escape(approval.change_ticket) if approval.change_ticket else 'none'}",
        f"*Deployment*\n`{escape(approval.deployment_id)}`",
        f"*Plan summary*\n{escape(approval.plan_summary)}",
        f"*Plan hash*\n`{escape(approval.plan_hash)}`",
        f"*Approvals*\n{_tally(approval, votes)}",
        f"*Expires*\n<!date^{expires}^{{date_short_pretty}} {{time}}|{approval.expires_at.isoformat()}>",
    ]
    return [
        SectionBlock(fields=[MarkdownTextObject(text=clip(f, 2000)) for f in fields]),
        *_policy_change(approval),
        SectionBlock(text=MarkdownTextObject(text=clip(_resources_text(approval.plan_resources), SECTION_TEXT_LIMIT))),
        ContextBlock(
            elements=[MarkdownTextObject(text=f"<{console_url}|View the execution in the Step Functions console>")]
        ),
    ]


def _button(approval: Approval, decision: Decision) -> ButtonElement:
    verb = "Approve" if decision == "approve" else "Reject"
    confirm = None
    if approval.confirm:
        confirm = ConfirmObject(
            title=f"{verb} this deployment?",
            text=clip(
                f"{verb} the *{escape(approval.environment)}* deployment requested by "
                f"{escape(approval.requested_by)} (plan `{escape(approval.plan_hash)}`)?",
                300,
            ),
            confirm=verb,
            deny="Cancel",
            style="primary" if decision == "approve" else "danger",
        )
    return ButtonElement(
        text=verb,
        action_id=decision,
        value=approval.approval_id,
        style="primary" if decision == "approve" else "danger",
        confirm=confirm,
    )


def summary_text(approval: Approval, votes: list[Vote]) -> str:
    """The plain-text fallback of the message (notifications, screen readers)."""
    state = {
        "PENDING": f"approval needed ({tally(approval.quorums(votes))})",
        "APPROVED": "approved",
        "REJECTED": "rejected",
        "EXPIRED": "approval expired",
    }[approval.status]
    return f"{approval.environment} deployment {approval.deployment_id}: {state}"


def approval_blocks(approval: Approval, votes: list[Vote], console_url: str) -> list[dict[str, Any]]:
    """The approval request: what would change, who asked, who approved so far, and the buttons."""
    blocks: list[Block] = [
        HeaderBlock(text=clip(f"Approval needed: {approval.environment} deployment", HEADER_LIMIT)),
        *_context(approval, votes, console_url),
        ActionsBlock(block_id="decision", elements=[_button(approval, "approve"), _button(approval, "reject")]),
    ]
    return [b.to_dict() for b in blocks]


def decided_blocks(approval: Approval, votes: list[Vote], console_url: str | None = None) -> list[dict[str, Any]]:
    """The message once decided: the same context, no buttons, and who decided (or that it expired)."""
    if approval.status == "APPROVED":
        header = "approved"
        ids = approval.decided_by or [v.user_id for v in approving(votes)]
        final = "*Approved by " + ", ".join(_mention(u) for u in ids) + "*"
    elif approval.status == "REJECTED":
        header = "rejected"
        ids = approval.decided_by or [v.user_id for v in votes if v.decision == "reject"][:1]
        final = "*Rejected by " + ", ".join(_mention(u) for u in ids) + "*"
    elif approval.status == "EXPIRED":
        header = "approval expired"
        final = "*Expired — no decision within the time allowed*"
    else:
        raise ValueError(f"approval {approval.approval_id} is not decided yet")
    blocks: list[Block] = [
        HeaderBlock(text=clip(f"{approval.environment} deployment {header}", HEADER_LIMIT)),
        *_context(approval, votes, console_url or execution_console_url(approval.execution_arn)),
        SectionBlock(block_id="outcome", text=MarkdownTextObject(text=final)),
    ]
    return [b.to_dict() for b in blocks]


def reminder_text(approval: Approval, votes: list[Vote]) -> str:
    """A reminder for the thread: who still has to vote and, if set, who it is escalated to."""
    voted = {v.user_id for v in votes}

    def waiting(people: list[dict[str, str]]) -> list[str]:
        # The requester is never asked: they cannot vote on their own deployment.
        return [
            _mention(p["slackUserId"])
            for p in people
            if p["slackUserId"] not in voted and not approval.is_requester(p["slackUserId"], p["name"])
        ]

    # One approver may count in both quorums of a changed policy, so this is the fewest more it takes.
    missing = max(q.required - q.have for q in approval.quorums(votes))
    text = (
        f"Reminder: the {approval.environment} deployment {approval.deployment_id} still needs "
        f"{missing} more approval{'s' if missing != 1 else ''} ({_tally(approval, votes)})."
    )
    current = {a["slackUserId"] for a in [*approval.approvers, *approval.escalation_approvers]}
    previous = [a for a in approval.previous_approvers if a["slackUserId"] not in current]
    pending = waiting([*approval.approvers, *previous])
    if pending:
        text += " Waiting on " + ", ".join(pending) + "."
    escalation = waiting(approval.escalation_approvers)
    if escalation:
        text += " Escalating to " + ", ".join(escalation) + "."
    return text


@dataclass
class Slack:
    """The Slack Web API and ``response_url`` replies; the WebClient is built on first use."""

    token: str = field(repr=False)
    base_url: str
    response_url_prefix: str
    # Slack gives an interaction 3 s; a slow Slack must not hold the click's answer longer.
    timeout: int = 3
    _client: WebClient | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Both are joined to paths: without the slash, "https://hooks.slack.com" would also admit
        # "https://hooks.slack.com.example.net/...", and WebClient would drop the last path segment.
        self.base_url = self.base_url.rstrip("/") + "/"
        self.response_url_prefix = self.response_url_prefix.rstrip("/") + "/"

    @property
    def client(self) -> WebClient:
        if self._client is None:
            self._client = WebClient(token=self.token, base_url=self.base_url, timeout=self.timeout)
        return self._client

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
    ) -> str:
        """Post a message (in a thread when ``thread_ts`` is given, also to the channel with ``reply_broadcast``).

        Returns its ts. Slack's refusals (an error answer, HTTP 429 or 5xx) raise slack_sdk's SlackApiError.
        """
        # None is left out of the request, so a plain post sends what it always did.
        broadcast = True if reply_broadcast and thread_ts else None
        response = self.client.chat_postMessage(
            channel=channel, text=text, blocks=blocks, thread_ts=thread_ts, reply_broadcast=broadcast
        )
        return str(response["ts"])

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)

    def respond(self, response_url: str, text: str) -> None:
        """Reply to the clicker only; a URL outside ``response_url_prefix`` is never called."""
        if not response_url.startswith(self.response_url_prefix):
            return
        WebhookClient(response_url, timeout=self.timeout).send(
            text=text, response_type="ephemeral", replace_original=False
        )


class SlackRequestRejected(Exception):
    """A request that is not a genuine, fresh, well-formed Slack interaction; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class _FixedClock(Clock):
    at: float

    def now(self) -> float:
        return self.at


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def verify_request(headers: Mapping[str, str], raw_body: bytes, signing_secret: str, now: float) -> None:
    """Raise SlackRequestRejected(401) unless Slack signed this exact body within the last five minutes."""
    timestamp = _header(headers, "X-Slack-Request-Timestamp")
    if not timestamp:
        raise SlackRequestRejected(401, "missing X-Slack-Request-Timestamp")
    if not re.fullmatch(r"[0-9]{1,12}", timestamp):
        raise SlackRequestRejected(401, "non-numeric X-Slack-Request-Timestamp")
    age = now - int(timestamp)
    if age > MAX_AGE_SECONDS:
        raise SlackRequestRejected(401, "stale request")
    if age < -MAX_AGE_SECONDS:
        raise SlackRequestRejected(401, "request from the future")
    signature = _header(headers, "X-Slack-Signature")
    if not signature:
        raise SlackRequestRejected(401, "missing X-Slack-Signature")
    # hmac.compare_digest raises on non-ASCII text; such a signature is simply wrong.
    if not signature.isascii():
        raise SlackRequestRejected(401, "bad signature")
    try:
        body = raw_body.decode("utf-8")
    except UnicodeDecodeError:
        # slack_sdk's verifier decodes the body as UTF-8 first. The same v0 HMAC over the raw
        # bytes lets a signed but undecodable body be refused as malformed (400), not forged.
        digest = hmac.new(signing_secret.encode(), f"v0:{timestamp}:".encode() + raw_body, hashlib.sha256)
        valid = hmac.compare_digest("v0=" + digest.hexdigest(), signature)
    else:
        verifier = SignatureVerifier(signing_secret, clock=_FixedClock(now))
        valid = verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
    if not valid:
        raise SlackRequestRejected(401, "bad signature")


@dataclass
class Interaction:
    team_id: str
    user_id: str
    user_name: str
    action: Decision
    approval_id: str
    response_url: str
    channel_id: str
    message_ts: str


class _Id(BaseModel):
    id: str


class _User(BaseModel):
    id: str
    username: str = ""
    name: str = ""


class _Action(BaseModel):
    action_id: Literal["approve", "reject"]
    value: Annotated[str, Field(pattern=APPROVAL_ID_PATTERN)]


class _Container(BaseModel):
    message_ts: str


class _BlockActions(BaseModel):
    """The fields of Slack's block_actions payload this endpoint relies on (others are ignored)."""

    type: Literal["block_actions"]
    team: _Id
    user: _User
    actions: Annotated[list[_Action], Field(min_length=1)]
    response_url: str
    channel: _Id
    container: _Container


def parse_interaction(raw_body: bytes) -> Interaction:
    """Parse a form-encoded block_actions request; SlackRequestRejected(400) if it is not one of our buttons."""
    try:
        body = raw_body.decode("utf-8")
    except UnicodeDecodeError:
        raise SlackRequestRejected(400, "body is not UTF-8") from None
    try:
        form = parse_qs(body, max_num_fields=16)
    except ValueError:
        raise SlackRequestRejected(400, "body is not a form") from None
    if not form.get("payload"):
        raise SlackRequestRejected(400, "no payload field")
    try:
        data = json.loads(form["payload"][0])
    except json.JSONDecodeError:
        raise SlackRequestRejected(400, "payload is not JSON") from None
    if not isinstance(data, dict) or data.get("type") != "block_actions":
        raise SlackRequestRejected(400, "not a block_actions payload")
    try:
        payload = _BlockActions.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SlackRequestRejected(400, f"malformed block_actions payload at {where}: {first['msg']}") from None
    action = payload.actions[0]
    return Interaction(
        team_id=payload.team.id,
        user_id=payload.user.id,
        user_name=payload.user.username or payload.user.name,
        action=action.action_id,
        approval_id=action.value,
        response_url=payload.response_url,
        channel_id=payload.channel.id,
        message_ts=payload.container.message_ts,
    )
