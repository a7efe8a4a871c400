"""The Slack interactivity endpoint: one Approve or Reject click, end to end.

A request is checked in an order where each refusal touches nothing the next step would:
signature and freshness (401), replay (409), shape (400), workspace (403), approval (404).
Only then does the click count, and whatever it does, the clicker gets a 200 and an
ephemeral answer saying what happened. No step waits: Slack gives us three seconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from deployer.approvals import (
    Approval,
    ApprovalStore,
    ClickResult,
    Status,
    Vote,
    approving,
    deliver_decision,
    evaluate_click,
)
from deployer.observability import logger, record_approval_wait
from deployer.slack import (
    REPLAY_WINDOW_SECONDS,
    Interaction,
    Slack,
    SlackRequestRejected,
    approval_blocks,
    decided_blocks,
    execution_console_url,
    parse_interaction,
    summary_text,
    verify_request,
)

if TYPE_CHECKING:
    from deployer.tooling import Tooling

REFUSALS = ("not_authorized", "self_approval")
STATUS_OUTCOMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "replayed"}


@dataclass
class InteractionContext:
    store: ApprovalStore
    sfn: Any
    slack: Slack
    signing_secret: str
    team_id: str
    now: Callable[[], datetime]


def _response(status: int, outcome: str, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"outcome": outcome, "message": message}),
    }


def _raw_body(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return str(body).encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise SlackRequestRejected(400, "body is not valid base64") from None


def _admit(event: dict[str, Any], ctx: InteractionContext, now: datetime) -> tuple[Interaction, Approval]:
    headers = {str(k): str(v) for k, v in (event.get("headers") or {}).items()}
    raw = _raw_body(event)
    verify_request(headers, raw, ctx.signing_secret, now.timestamp())
    # Only a verified request reaches the guard, so forged requests cannot fill the table, and
    # the signature is unique per (timestamp, body): a replay inside the freshness window has it.
    signature = next(v for k, v in headers.items() if k.lower() == "x-slack-signature")
    if not ctx.store.first_sighting(hashlib.sha256(signature.encode()).hexdigest(), now, REPLAY_WINDOW_SECONDS):
        raise SlackRequestRejected(409, "this request was already received")
    interaction = parse_interaction(raw)
    if interaction.team_id != ctx.team_id:
        raise SlackRequestRejected(403, "request from another Slack workspace")
    approval = ctx.store.get(interaction.approval_id)
    if approval is None:
        raise SlackRequestRejected(404, f"no approval {interaction.approval_id}")
    return interaction, approval


def handle_interaction(event: dict[str, Any], ctx: InteractionContext) -> dict[str, Any]:
    """Handle one API Gateway (REST, proxy) request from Slack's interactivity URL.

    Refused requests get 400/401/403/404/409 and change nothing; a processed click always
    gets 200 with its outcome, whether it counted or not.
    """
    now = ctx.now()
    try:
        interaction, approval = _admit(event, ctx, now)
    except SlackRequestRejected as exc:
        return _response(exc.status, STATUS_OUTCOMES.get(exc.status, "refused"), exc.reason)
    logger.set_correlation_id(approval.deployment_id)
    result = _click(interaction, approval, ctx, now)
    ctx.slack.respond(interaction.response_url, result.message)
    return _response(200, result.outcome, result.message)


def _click(interaction: Interaction, approval: Approval, ctx: InteractionContext, now: datetime) -> ClickResult:
    votes = ctx.store.votes(approval.approval_id)
    result = evaluate_click(approval, votes, interaction.user_id, interaction.action, now)
    if result.outcome in REFUSALS:
        ctx.store.record_refusal(approval.approval_id, interaction.user_id, result.outcome, now)
    if result.vote is None:
        return result
    if not ctx.store.record_vote(approval.approval_id, result.vote):
        # The same user clicked twice at once and the other request stored the vote.
        return evaluate_click(
            approval, ctx.store.votes(approval.approval_id), interaction.user_id, result.vote.decision, now
        )
    # Count again with the votes as stored now: two approvers clicking at once must still
    # reach quorum, though neither saw the other's vote before writing its own.
    votes = ctx.store.votes(approval.approval_id)
    others = [v for v in votes if v.user_id != interaction.user_id]
    result = evaluate_click(approval, others, interaction.user_id, result.vote.decision, now)
    if result.outcome == "recorded":
        blocks = approval_blocks(approval, votes, execution_console_url(approval.execution_arn))
        _update(ctx, interaction, approval, votes, blocks)
        return result
    status: Status = "APPROVED" if result.outcome == "approved" else "REJECTED"
    deciders = [v.user_id for v in approving(votes)] if status == "APPROVED" else [interaction.user_id]
    if not ctx.store.decide(approval.approval_id, status, deciders, now):
        # Someone else's click decided first; say what they decided.
        current = ctx.store.get(approval.approval_id) or approval
        return evaluate_click(current, votes, interaction.user_id, interaction.action, now)
    decided = replace(approval, status=status, decided_by=deciders, decided_at=now)
    record_approval_wait(approval.environment, (now - approval.created_at).total_seconds(), status.lower())
    deliver_decision(ctx.sfn, decided, votes)
    _update(ctx, interaction, decided, votes, decided_blocks(decided, votes))
    return result


def _update(
    ctx: InteractionContext,
    interaction: Interaction,
    approval: Approval,
    votes: list[Vote],
    blocks: list[dict[str, Any]],
) -> None:
    # The stored ts is authoritative; the clicked message stands in if storing it had failed.
    ts = approval.message_ts or (interaction.message_ts if interaction.channel_id == approval.channel else None)
    if ts:
        ctx.slack.update(approval.channel, ts, summary_text(approval, votes), blocks)


def slack_interaction(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """POST /slack/interactions: an API Gateway proxy event in, a proxy response out."""
    return handle_interaction(event, tooling.interaction_context())
