"""Approval gates: the stored approval, its votes, and what one Slack click decides.

Single-table layout in the records table (pk, sk):
- ``APPROVAL#<id>`` / ``APPROVAL``: the approval (task token, plan hash, quorum, approvers,
  expiry, status); ``gsi1pk = DEPLOYMENT#<deploymentId>`` finds a deployment's approvals.
- ``APPROVAL#<id>`` / ``VOTE#<slackUserId>``: one vote per user, by key, so a conditional
  put is all it takes to count each user once.
- ``APPROVAL#<id>`` / ``REFUSED#<at>#<slackUserId>``: a click that was not allowed to vote.
- ``SLACKREQ#<sha256 of the signature>`` / ``SEEN``: the replay guard for Slack requests.
- ``EXECUTION#<execution ARN>@<start time>`` / ``APPROVAL``: which approval an execution opened. Ids
  are random, so a deployment whose name was used before never finds that one's approval.

The task token is stored here and only here: it never leaves AWS (a Slack button carries
the approval id). Lists and maps are stored as JSON strings, as in ``records``, so numbers
do not come back as Decimals.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from botocore.exceptions import ClientError

from deployer.aws import error_code, transient_errors
from deployer.records import HISTORY_INDEX, iso

Decision = Literal["approve", "reject"]
Status = Literal["PENDING", "APPROVED", "REJECTED", "EXPIRED"]
Outcome = Literal[
    "recorded", "approved", "rejected", "duplicate", "not_authorized", "self_approval", "already_decided", "expired"
]

APPROVAL_ID_PATTERN = r"^apv-[0-9a-f]{16}$"
JSON_FIELDS = (
    "planResources",
    "approvers",
    "escalationApprovers",
    "decidedBy",
    "previousApprovers",
    "policyDiff",
    "requesterSlackIds",
)
# Step Functions' answers meaning the waiting task is gone: nothing left to deliver to.
TASK_GONE_CODES = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})


def new_approval_id() -> str:
    """A fresh approval id: short, unguessable, and safe to put on a Slack button."""
    return "apv-" + secrets.token_hex(8)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@dataclass
class Approval:
    approval_id: str
    deployment_id: str
    execution_arn: str
    environment: str
    requested_by: str
    change_ticket: str | None
    plan_hash: str
    plan_summary: str
    plan_resources: list[dict[str, Any]]
    required: int
    approvers: list[dict[str, str]]
    escalation_approvers: list[dict[str, str]]
    confirm: bool
    channel: str
    created_at: datetime
    expires_at: datetime
    status: Status = "PENDING"
    task_token: str | None = None
    message_ts: str | None = None
    decided_at: datetime | None = None
    decided_by: list[str] = field(default_factory=list)
    reminders_sent: int = 0
    # A policy changed since the environment's last success: the previous policy's quorum and
    # approvers must approve too, and the message shows the difference.
    previous_required: int = 0
    previous_approvers: list[dict[str, str]] = field(default_factory=list)
    policy_diff: list[str] = field(default_factory=list)
    # Who requested it, as shown (verified or claimed), and the Slack ids of every person that is
    # (the identity map): none of them may vote.
    requester_description: str = ""
    requester_slack_ids: list[str] = field(default_factory=list)

    def is_requester(self, user_id: str, name: str) -> bool:
        """Whether the Slack user (``name`` as the approvers list them) is who requested the deployment."""
        # Case-insensitive: "Alice" requesting and "alice" approving is still one person.
        claimed = self.requested_by.casefold()
        return user_id in self.requester_slack_ids or claimed in (name.casefold(), user_id.casefold())

    def voter(self, user_id: str) -> dict[str, str] | None:
        """The approver or escalation approver, of this policy or the previous one, with this Slack user id."""
        voters = [*self.approvers, *self.escalation_approvers, *self.previous_approvers]
        return next((a for a in voters if a["slackUserId"] == user_id), None)

    def quorums(self, votes: list[Vote]) -> list[Quorum]:
        """This policy's quorum and, for a changed policy, the previous one's, each counted from ``votes``."""
        approvers = [v.user_id for v in approving(votes)]
        current = {a["slackUserId"] for a in [*self.approvers, *self.escalation_approvers]}
        quorums = [Quorum("", self.required, sum(1 for a in approvers if a in current))]
        if self.previous_required:
            previous = {a["slackUserId"] for a in self.previous_approvers}
            quorums.append(
                Quorum(" under the previous policy", self.previous_required, sum(1 for a in approvers if a in previous))
            )
        return quorums

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": f"APPROVAL#{self.approval_id}",
            "sk": "APPROVAL",
            "gsi1pk": f"DEPLOYMENT#{self.deployment_id}",
            "gsi1sk": f"{iso(self.created_at)}#{self.approval_id}",
            "approvalId": self.approval_id,
            "deploymentId": self.deployment_id,
            "executionArn": self.execution_arn,
            "environment": self.environment,
            "requestedBy": self.requested_by,
            "changeTicket": self.change_ticket,
            "planHash": self.plan_hash,
            "planSummary": self.plan_summary,
            "planResources": self.plan_resources,
            "required": self.required,
            "approvers": self.approvers,
            "escalationApprovers": self.escalation_approvers,
            "confirm": self.confirm,
            "channel": self.channel,
            "createdAt": iso(self.created_at),
            "expiresAt": iso(self.expires_at),
            "expiresAtEpoch": int(self.expires_at.timestamp()),
            "status": self.status,
            "taskToken": self.task_token,
            "messageTs": self.message_ts,
            "decidedAt": iso(self.decided_at) if self.decided_at else None,
            "decidedBy": self.decided_by,
            "remindersSent": self.reminders_sent,
            "previousRequired": self.previous_required,
            "previousApprovers": self.previous_approvers,
            "policyDiff": self.policy_diff,
            "requesterDescription": self.requester_description or None,
            "requesterSlackIds": self.requester_slack_ids,
        }
        encoded = {k: json.dumps(v, sort_keys=True) if k in JSON_FIELDS else v for k, v in item.items()}
        return {k: v for k, v in encoded.items() if v is not None}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Approval:
        data: dict[str, Any] = {k: json.loads(v) if k in JSON_FIELDS else v for k, v in item.items()}
        return cls(
            approval_id=str(data["approvalId"]),
            deployment_id=str(data["deploymentId"]),
            execution_arn=str(data["executionArn"]),
            environment=str(data["environment"]),
            requested_by=str(data["requestedBy"]),
            change_ticket=data.get("changeTicket"),
            plan_hash=str(data["planHash"]),
            plan_summary=str(data["planSummary"]),
            plan_resources=list(data["planResources"]),
            required=int(data["required"]),
            approvers=list(data["approvers"]),
            escalation_approvers=list(data.get("escalationApprovers", [])),
            confirm=bool(data.get("confirm", False)),
            channel=str(data["channel"]),
            created_at=_parse_time(data["createdAt"]),
            expires_at=_parse_time(data["expiresAt"]),
            status=data.get("status", "PENDING"),
            task_token=data.get("taskToken"),
            message_ts=data.get("messageTs"),
            decided_at=_parse_time(data["decidedAt"]) if data.get("decidedAt") else None,
            decided_by=list(data.get("decidedBy", [])),
            reminders_sent=int(data.get("remindersSent", 0)),
            previous_required=int(data.get("previousRequired", 0)),
            previous_approvers=list(data.get("previousApprovers", [])),
            policy_diff=list(data.get("policyDiff", [])),
            requester_description=str(data.get("requesterDescription") or ""),
            requester_slack_ids=list(data.get("requesterSlackIds", [])),
        )


@dataclass
class Vote:
    user_id: str
    name: str
    decision: Decision
    at: datetime


@dataclass(frozen=True)
class Quorum:
    """One quorum an approval needs: ``required`` approvals, ``have`` of them cast; ``label`` says whose."""

    label: str
    required: int
    have: int

    @property
    def met(self) -> bool:
        return self.have >= self.required

    def __str__(self) -> str:
        return f"{self.have} of {self.required}{self.label}"


def tally(quorums: list[Quorum], noun: str = "") -> str:
    """``1 of 2 <noun>`` or, for a changed policy, ``1 of 2 <noun>; 0 of 1 under the previous policy``."""
    first, *rest = [str(q) for q in quorums]
    return "; ".join([f"{first} {noun}".rstrip(), *rest])


@dataclass
class ClickResult:
    outcome: Outcome
    message: str
    vote: Vote | None = None


def _key(approval_id: str) -> dict[str, str]:
    return {"pk": f"APPROVAL#{approval_id}", "sk": "APPROVAL"}


def _conditional(call: Any, **kwargs: Any) -> bool:
    """Run a conditional write; False when its condition did not hold."""
    try:
        with transient_errors():
            call(**kwargs)
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return False
    return True


@dataclass
class ApprovalStore:
    """Reads and writes approvals, votes and refusals; ``table`` is a boto3 Table resource."""

    table: Any

    def create(self, approval: Approval) -> None:
        """Store a new approval; a retried call for the same id keeps the first one."""
        _conditional(self.table.put_item, Item=approval.to_item(), ConditionExpression="attribute_not_exists(pk)")

    def open(self, approval: Approval, execution_key: str) -> Approval:
        """Bind a new approval to the execution and store it; a retried call gets the one already bound."""
        pointer = {"pk": f"EXECUTION#{execution_key}", "sk": "APPROVAL", "approvalId": approval.approval_id}
        if not _conditional(self.table.put_item, Item=pointer, ConditionExpression="attribute_not_exists(pk)"):
            bound = self._bound_id(execution_key)
            assert bound is not None  # the condition failed because it exists
            approval = replace(approval, approval_id=bound)
        self.create(approval)
        stored = self.get(approval.approval_id)
        assert stored is not None
        return stored

    def for_execution(self, execution_key: str) -> Approval | None:
        """The approval this execution opened, if any."""
        bound = self._bound_id(execution_key)
        return self.get(bound) if bound else None

    def _bound_id(self, execution_key: str) -> str | None:
        with transient_errors():
            item = self.table.get_item(
                Key={"pk": f"EXECUTION#{execution_key}", "sk": "APPROVAL"}, ConsistentRead=True
            ).get("Item")
        return str(item["approvalId"]) if item else None

    def get(self, approval_id: str) -> Approval | None:
        with transient_errors():
            item = self.table.get_item(Key=_key(approval_id), ConsistentRead=True).get("Item")
        return Approval.from_item(item) if item else None

    def for_deployment(self, deployment_id: str) -> list[Approval]:
        """A deployment's approvals, oldest first (the index is eventually consistent)."""
        with transient_errors():
            items = self.table.query(
                IndexName=HISTORY_INDEX,
                KeyConditionExpression="gsi1pk = :pk",
                ExpressionAttributeValues={":pk": f"DEPLOYMENT#{deployment_id}"},
            )["Items"]
        return [Approval.from_item(i) for i in items]

    def set_token(self, approval_id: str, token: str) -> Approval:
        """Attach the waiting task's token to an existing approval and return the approval."""
        with transient_errors():
            item = self.table.update_item(
                Key=_key(approval_id),
                UpdateExpression="SET taskToken = :t",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":t": token},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return Approval.from_item(item)

    def set_message(self, approval_id: str, ts: str) -> None:
        with transient_errors():
            self.table.update_item(
                Key=_key(approval_id),
                UpdateExpression="SET messageTs = :ts",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":ts": ts},
            )

    def record_vote(self, approval_id: str, vote: Vote) -> bool:
        """Store the user's vote; False if that user has already voted (one vote per user)."""
        item = {
            "pk": f"APPROVAL#{approval_id}",
            "sk": f"VOTE#{vote.user_id}",
            "userId": vote.user_id,
            "name": vote.name,
            "decision": vote.decision,
            "at": iso(vote.at),
        }
        return _conditional(self.table.put_item, Item=item, ConditionExpression="attribute_not_exists(pk)")

    def _query(self, approval_id: str, prefix: str) -> list[dict[str, Any]]:
        with transient_errors():
            items: list[dict[str, Any]] = self.table.query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                ExpressionAttributeValues={":pk": f"APPROVAL#{approval_id}", ":prefix": prefix},
                ConsistentRead=True,
            )["Items"]
        return items

    def votes(self, approval_id: str) -> list[Vote]:
        """The approval's votes, earliest first."""
        votes = [
            Vote(user_id=i["userId"], name=i["name"], decision=i["decision"], at=_parse_time(i["at"]))
            for i in self._query(approval_id, "VOTE#")
        ]
        return sorted(votes, key=lambda v: (v.at, v.user_id))

    def record_refusal(self, approval_id: str, user_id: str, reason: str, at: datetime) -> None:
        """Keep an audit trail of a click that was not allowed to vote (outsider, requester)."""
        item = {
            "pk": f"APPROVAL#{approval_id}",
            "sk": f"REFUSED#{iso(at)}#{user_id}",
            "userId": user_id,
            "reason": reason,
            "at": iso(at),
        }
        with transient_errors():
            self.table.put_item(Item=item)

    def refusals(self, approval_id: str) -> list[dict[str, Any]]:
        """The refused clicks, earliest first, as ``{"userId", "reason", "at"}``."""
        return [
            {"userId": i["userId"], "reason": i["reason"], "at": i["at"]} for i in self._query(approval_id, "REFUSED#")
        ]

    def decide(self, approval_id: str, status: Status, deciders: list[str], at: datetime) -> bool:
        """Move a PENDING approval to its final status; False if it was already decided."""
        return _conditional(
            self.table.update_item,
            Key=_key(approval_id),
            UpdateExpression="SET #s = :s, decidedBy = :by, decidedAt = :at",
            ConditionExpression="#s = :pending",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":s": status,
                ":by": json.dumps(deciders),
                ":at": iso(at),
                ":pending": "PENDING",
            },
        )

    def note_reminder(self, approval_id: str) -> None:
        with transient_errors():
            self.table.update_item(
                Key=_key(approval_id),
                UpdateExpression="ADD remindersSent :one",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":one": 1},
            )

    def first_sighting(self, key: str, now: datetime, ttl_seconds: int) -> bool:
        """True the first time ``key`` is seen (or once its earlier sighting expired), False after."""
        epoch = int(now.timestamp())
        return _conditional(
            self.table.put_item,
            Item={"pk": f"SLACKREQ#{key}", "sk": "SEEN", "expiresAt": epoch + ttl_seconds},
            ConditionExpression="attribute_not_exists(pk) OR expiresAt < :now",
            ExpressionAttributeValues={":now": epoch},
        )


def approving(votes: list[Vote]) -> list[Vote]:
    """The approve votes, one per user, earliest first."""
    seen: set[str] = set()
    result = []
    for vote in sorted(votes, key=lambda v: v.at):
        if vote.decision == "approve" and vote.user_id not in seen:
            seen.add(vote.user_id)
            result.append(vote)
    return result


def evaluate_click(  # noqa: PLR0911 - one return per outcome, checked in a fixed order
    approval: Approval, votes: list[Vote], user_id: str, decision: Decision, now: datetime
) -> ClickResult:
    """What one click does to an approval, given the votes already cast; changes nothing itself."""
    if approval.status != "PENDING":
        return ClickResult(
            "already_decided", f"This deployment was already {approval.status.lower()}; nothing changed."
        )
    if now >= approval.expires_at:
        return ClickResult("expired", f"This approval expired at {iso(approval.expires_at)}; nothing changed.")
    voter = approval.voter(user_id)
    if voter is None:
        return ClickResult(
            "not_authorized",
            f"You are not an approver for {approval.environment} deployments; "
            "your click was recorded and changed nothing.",
        )
    if approval.is_requester(user_id, voter["name"]):
        return ClickResult("self_approval", "You requested this deployment and cannot approve or reject it.")
    earlier = next((v for v in votes if v.user_id == user_id), None)
    if earlier is not None:
        return ClickResult(
            "duplicate", f"You already voted ({earlier.decision}) at {iso(earlier.at)}; each approver counts once."
        )
    vote = Vote(user_id=user_id, name=voter["name"], decision=decision, at=now)
    if decision == "reject":
        return ClickResult("rejected", "You rejected this deployment; it will not proceed.", vote)
    quorums = approval.quorums([*votes, vote])
    if all(q.met for q in quorums):
        return ClickResult("approved", f"Approved ({tally(quorums, 'approvals')}); the deployment continues.", vote)
    return ClickResult("recorded", f"Your approval is recorded: {tally(quorums, 'approvals')}.", vote)


def integrity_problems(approval: Approval, execution_arn: str, claimed: dict[str, Any], votes: list[Vote]) -> list[str]:
    """Why the stored approval does not back what the task said: empty when it does.

    ``claimed`` is the task's output (approvalId, planHash). The votes counted are the
    recorded ones of eligible approvers who are not the requester, so a quorum cannot
    come from anywhere but Slack clicks the interactions endpoint accepted.
    """
    found = []
    if approval.execution_arn != execution_arn:
        found.append(f"approval {approval.approval_id} belongs to execution {approval.execution_arn}")
    if approval.status != "APPROVED":
        found.append(f"approval {approval.approval_id} is {approval.status}, not APPROVED")
    if claimed.get("approvalId") != approval.approval_id:
        found.append(f"the task reported approval {claimed.get('approvalId')}, not {approval.approval_id}")
    if claimed.get("planHash") != approval.plan_hash:
        found.append(f"the task reported plan {claimed.get('planHash')}, the approvers approved {approval.plan_hash}")
    eligible = [
        v for v in votes if (voter := approval.voter(v.user_id)) and not approval.is_requester(v.user_id, voter["name"])
    ]
    short = [q for q in approval.quorums(eligible) if not q.met]
    if short:
        found.append(f"the recorded votes are {tally(approval.quorums(eligible), 'approvals')}: no quorum")
    return found


def deliver_decision(sfn: Any, approval: Approval, votes: list[Vote]) -> bool:
    """Tell the waiting Step Functions task the decision; False if there is no task to tell.

    A task that timed out or whose token is no longer valid is not an error here: the
    decision stays recorded and whoever next looks at the approval can act on it.
    """
    if not approval.task_token or approval.status not in ("APPROVED", "REJECTED"):
        return False
    try:
        with transient_errors():
            if approval.status == "APPROVED":
                output = {
                    "decision": "approved",
                    "approvalId": approval.approval_id,
                    "planHash": approval.plan_hash,
                    "approvers": [{"user": v.user_id, "name": v.name, "at": iso(v.at)} for v in approving(votes)],
                }
                sfn.send_task_success(taskToken=approval.task_token, output=json.dumps(output))
            else:
                # In a race of two rejecters, the one whose decision was stored is named.
                rejects = [v for v in votes if v.decision == "reject"]
                rejecter = next(
                    (v for v in rejects if v.user_id in approval.decided_by), rejects[0] if rejects else None
                )
                who = f"{rejecter.name} ({rejecter.user_id})" if rejecter else ", ".join(approval.decided_by)
                sfn.send_task_failure(
                    taskToken=approval.task_token, error="ApprovalRejected", cause=f"rejected by {who}"
                )
    except ClientError as exc:
        if error_code(exc) in TASK_GONE_CODES:
            return False
        raise
    return True
