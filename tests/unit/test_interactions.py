"""The Slack interactivity endpoint: refused requests change nothing; clicks count as the policy says.

Every request starts from events/slack_interaction_approve.json (an API Gateway REST proxy
event), with its payload changed as the test needs and re-signed.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from deployer.approvals import Approval, ApprovalStore, Vote
from deployer.interactions import InteractionContext, handle_interaction
from tests.slack_signing import sign
from tests.unit.conftest import records_table
from tests.unit.test_approvals import NOW, prod_approval

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0BBWS0001"
SAMPLE = json.loads((Path(__file__).parents[2] / "events" / "slack_interaction_approve.json").read_text())
RESPONSE_URL = "https://hooks.slack.com/actions/T0BBWS0001/8123456789012/0a1B2c3D4e5F6g7H8i9J0k1L"
SIT_ID = "apv-0123456789abcdef"
PROD_ID = "apv-fedcba9876543210"
SIT_LEAD = {"slackUserId": "U0SITLEAD1", "name": "sit.lead"}
SIT_ENG = {"slackUserId": "U0SITENG02", "name": "sit.eng"}


@dataclass
class FakeSfn:
    """Records SendTaskSuccess/SendTaskFailure; answers with ``error`` when one is set."""

    error: str | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def _call(self, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((operation, kwargs))
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "Task Timed Out"}}, operation)
        return {}

    def send_task_success(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("SendTaskSuccess", kwargs)

    def send_task_failure(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("SendTaskFailure", kwargs)


@dataclass
class FakeSlack:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def post(self, channel: str, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None) -> str:
        self.calls.append(("post", {"channel": channel, "text": text, "blocks": blocks, "thread_ts": thread_ts}))
        return "1795683600.000999"

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self.calls.append(("update", {"channel": channel, "ts": ts, "text": text, "blocks": blocks}))

    def respond(self, response_url: str, text: str) -> None:
        self.calls.append(("respond", {"response_url": response_url, "text": text}))

    def updates(self) -> list[dict[str, Any]]:
        return [c for name, c in self.calls if name == "update"]

    def replies(self) -> list[str]:
        return [c["text"] for name, c in self.calls if name == "respond"]


@dataclass
class World:
    table: Any
    store: ApprovalStore
    sfn: FakeSfn
    slack: FakeSlack
    clock: list[datetime]
    ctx: InteractionContext

    def items(self, prefix: str) -> list[dict[str, Any]]:
        return [i for i in self.table.scan()["Items"] if i["sk"].startswith(prefix)]

    def assert_untouched(self) -> None:
        assert self.items("VOTE#") == []
        assert self.items("REFUSED#") == []
        assert self.sfn.calls == []
        assert self.slack.calls == []
        for approval_id in (SIT_ID, PROD_ID):
            approval = self.store.get(approval_id)
            assert approval is not None
            assert approval.status == "PENDING"


def sit_approval() -> Approval:
    return prod_approval(
        approval_id=SIT_ID,
        deployment_id="sit-20261126T090000Z-0a1b2c3d",
        execution_arn="arn:aws:states:af-south-1:123456789012:execution:bbws-deployer-deployment:sit-20261126T090000Z-0a1b2c3d",
        environment="sit",
        change_ticket=None,
        required=1,
        approvers=[SIT_LEAD, SIT_ENG],
        escalation_approvers=[],
        confirm=False,
        channel="C0DEPLOYSIT",
        expires_at=NOW + timedelta(hours=1),
        task_token="task-token-sit",
        message_ts="1795683600.000100",
    )


@pytest.fixture
def world(aws: None) -> World:
    table = records_table()
    store = ApprovalStore(table)
    # GIVEN a SIT approval (one of two approvers) and a PROD one (two of three, alice requested it and is one)
    store.create(sit_approval())
    store.create(prod_approval())
    sfn, slack, clock = FakeSfn(), FakeSlack(), [NOW + timedelta(minutes=1)]
    ctx = InteractionContext(
        store=store,
        sfn=sfn,
        slack=slack,
        signing_secret=SECRET,
        team_id=TEAM,
        now=lambda: clock[0],  # type: ignore[arg-type]
    )
    return World(table, store, sfn, slack, clock, ctx)


def click(
    world: World,
    user: str = "U0SITLEAD1",
    action: str = "approve",
    approval_id: str = SIT_ID,
    team: str = TEAM,
    *,
    seconds_later: int = 0,
) -> dict[str, Any]:
    """A signed click from the sample event, at the world's clock (moved on by ``seconds_later``)."""
    world.clock[0] += timedelta(seconds=seconds_later)
    payload = json.loads(urllib.parse.parse_qs(SAMPLE["body"])["payload"][0])
    payload["user"] = {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team}
    payload["team"] = {"id": team, "domain": "bbws"}
    payload["actions"][0].update(action_id=action, value=approval_id, block_id="decision")
    event = {**SAMPLE, "body": "payload=" + urllib.parse.quote_plus(json.dumps(payload))}
    return sign(event, SECRET, int(world.clock[0].timestamp()))


def answer(response: dict[str, Any]) -> tuple[int, str]:
    assert response["headers"]["Content-Type"] == "application/json"
    body = json.loads(response["body"])
    return response["statusCode"], body["outcome"]


# ---------------------------------------------------------------- refused requests: right status, no side effect


def with_header(event: dict[str, Any], name: str, value: str | None) -> dict[str, Any]:
    headers = {k: v for k, v in event["headers"].items() if k.lower() != name.lower()}
    if value is not None:
        headers[name] = value
    return {**event, "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()}}


def test_a_bad_signature_is_401(world: World) -> None:
    # GIVEN a click signed with another secret
    event = sign(click(world), "not-the-secret", int(world.clock[0].timestamp()))
    # WHEN it arrives / THEN 401 and nothing changed
    assert answer(handle_interaction(event, world.ctx)) == (401, "unauthorized")
    world.assert_untouched()


def test_a_body_changed_after_signing_is_401(world: World) -> None:
    event = click(world)
    event["body"] = event["body"].replace("U0SITLEAD1", "U0SITENG02")
    assert answer(handle_interaction(event, world.ctx))[0] == 401
    world.assert_untouched()


def test_a_stale_request_is_401(world: World) -> None:
    event = click(world)
    world.clock[0] += timedelta(seconds=301)
    assert answer(handle_interaction(event, world.ctx))[0] == 401
    world.assert_untouched()


def test_a_request_from_the_future_is_401(world: World) -> None:
    event = click(world)
    world.clock[0] -= timedelta(seconds=301)
    assert answer(handle_interaction(event, world.ctx))[0] == 401
    world.assert_untouched()


def test_a_missing_timestamp_is_401(world: World) -> None:
    event = with_header(click(world), "X-Slack-Request-Timestamp", None)
    assert answer(handle_interaction(event, world.ctx))[0] == 401
    world.assert_untouched()


def test_a_non_numeric_timestamp_is_401(world: World) -> None:
    event = with_header(click(world), "X-Slack-Request-Timestamp", "yesterday")
    assert answer(handle_interaction(event, world.ctx))[0] == 401
    world.assert_untouched()


def test_a_missing_signature_is_401(world: World) -> None:
    event = with_header(click(world), "X-Slack-Signature", None)
    assert answer(handle_interaction(event, world.ctx))[0] == 401
    world.assert_untouched()


def test_an_event_without_headers_is_401(world: World) -> None:
    event = {**click(world), "headers": None, "multiValueHeaders": None}
    assert answer(handle_interaction(event, world.ctx))[0] == 401
    world.assert_untouched()


def test_a_replayed_request_is_409_and_changes_nothing_more(world: World) -> None:
    # GIVEN a PROD click that was processed (one of two approvals)
    event = click(world, "U0PRODSEN1", approval_id=PROD_ID)
    assert answer(handle_interaction(event, world.ctx)) == (200, "recorded")
    votes, calls = world.items("VOTE#"), list(world.slack.calls)
    # WHEN the very same request arrives again, within the freshness window
    world.clock[0] += timedelta(seconds=30)
    response = handle_interaction(event, world.ctx)
    # THEN it is refused as a replay, and no vote, message, reply or Step Functions call follows
    assert answer(response) == (409, "replayed")
    assert world.items("VOTE#") == votes
    assert world.slack.calls == calls
    assert world.sfn.calls == []


def test_a_base64_body_is_accepted(world: World) -> None:
    # GIVEN API Gateway passed the form body base64-encoded, signed over the raw bytes
    plain = click(world)
    event = {**plain, "body": base64.b64encode(plain["body"].encode()).decode(), "isBase64Encoded": True}
    event = sign(event, SECRET, int(world.clock[0].timestamp()))
    # WHEN it arrives / THEN the click counts
    assert answer(handle_interaction(event, world.ctx)) == (200, "approved")


def test_a_non_utf8_body_is_400(world: World) -> None:
    # GIVEN a correctly signed body that is not UTF-8
    event = {**SAMPLE, "body": base64.b64encode(b"payload=\xff\xfe%7B%7D").decode(), "isBase64Encoded": True}
    event = sign(event, SECRET, int(world.clock[0].timestamp()))
    # WHEN it arrives / THEN 400, nothing changed
    assert answer(handle_interaction(event, world.ctx)) == (400, "bad_request")
    world.assert_untouched()


def test_a_body_that_is_not_base64_is_400(world: World) -> None:
    event = {**click(world), "isBase64Encoded": True, "body": "%%%not base64%%%"}
    assert answer(handle_interaction(event, world.ctx))[0] == 400
    world.assert_untouched()


def test_a_click_from_another_workspace_is_403(world: World) -> None:
    event = click(world, team="T0ELSEWHER")
    assert answer(handle_interaction(event, world.ctx)) == (403, "forbidden")
    world.assert_untouched()


def test_an_unknown_approval_is_404(world: World) -> None:
    event = click(world, approval_id="apv-ffffffffffffffff")
    assert answer(handle_interaction(event, world.ctx)) == (404, "not_found")
    world.assert_untouched()


@pytest.mark.parametrize(
    "body",
    [
        "",
        "token=abc",
        "payload=" + urllib.parse.quote_plus("{not json"),
        "payload=" + urllib.parse.quote_plus(json.dumps({"type": "view_submission"})),
        "payload=" + urllib.parse.quote_plus(json.dumps({"type": "block_actions", "actions": []})),
    ],
    ids=["empty", "no-payload", "not-json", "not-block-actions", "no-actions"],
)
def test_a_malformed_payload_is_400(world: World, body: str) -> None:
    event = sign({**SAMPLE, "body": body}, SECRET, int(world.clock[0].timestamp()))
    assert answer(handle_interaction(event, world.ctx)) == (400, "bad_request")
    world.assert_untouched()


@pytest.mark.parametrize(("action", "value"), [("delete", SIT_ID), ("approve", "task-token-sit")])
def test_a_button_we_did_not_make_is_400(world: World, action: str, value: str) -> None:
    event = click(world, action=action, approval_id=value)
    assert answer(handle_interaction(event, world.ctx))[0] == 400
    world.assert_untouched()


# ---------------------------------------------------------------- clicks that count


def test_sit_is_approved_by_one_approver(world: World) -> None:
    # WHEN the SIT lead clicks Approve
    response = handle_interaction(click(world), world.ctx)
    # THEN the click is approved, the waiting task is told with the approver, and the message shows it
    assert answer(response) == (200, "approved")
    ((operation, call),) = world.sfn.calls
    assert operation == "SendTaskSuccess"
    assert call["taskToken"] == "task-token-sit"
    output = json.loads(call["output"])
    assert output["decision"] == "approved"
    assert output["approvalId"] == SIT_ID
    assert output["planHash"] == sit_approval().plan_hash
    assert [(a["user"], a["name"]) for a in output["approvers"]] == [("U0SITLEAD1", "sit.lead")]
    (update,) = world.slack.updates()
    assert (update["channel"], update["ts"]) == ("C0DEPLOYSIT", "1795683600.000100")
    assert update["blocks"][-1]["text"]["text"] == "*Approved by <@U0SITLEAD1>*"
    assert "actions" not in [b["type"] for b in update["blocks"]]
    approval = world.store.get(SIT_ID)
    assert approval is not None
    assert (approval.status, approval.decided_by) == ("APPROVED", ["U0SITLEAD1"])
    # AND the clicker alone is told, through Slack's response URL
    assert world.slack.calls[-1] == (
        "respond",
        {"response_url": RESPONSE_URL, "text": json.loads(response["body"])["message"]},
    )


def test_prod_needs_two_distinct_approvers(world: World) -> None:
    # WHEN one senior engineer approves
    first = handle_interaction(click(world, "U0PRODSEN1", approval_id=PROD_ID), world.ctx)
    # THEN it is recorded, the message shows 1 of 2 with the buttons still there, and the task still waits
    assert answer(first) == (200, "recorded")
    assert world.sfn.calls == []
    (update,) = world.slack.updates()
    assert update["ts"] == "1795683600.000200"
    assert "1 of 2: <@U0PRODSEN1>" in json.dumps(update["blocks"])
    assert update["blocks"][-1]["type"] == "actions"
    # WHEN the second one approves
    second = handle_interaction(click(world, "U0PRODSEN2", approval_id=PROD_ID, seconds_later=60), world.ctx)
    # THEN quorum is reached and both approvers are handed to the state machine
    assert answer(second) == (200, "approved")
    ((operation, call),) = world.sfn.calls
    assert operation == "SendTaskSuccess"
    assert [a["user"] for a in json.loads(call["output"])["approvers"]] == ["U0PRODSEN1", "U0PRODSEN2"]
    assert world.slack.updates()[-1]["blocks"][-1]["text"]["text"] == "*Approved by <@U0PRODSEN1>, <@U0PRODSEN2>*"


def test_the_same_user_twice_counts_once(world: World) -> None:
    # GIVEN senior.one approved PROD
    handle_interaction(click(world, "U0PRODSEN1", approval_id=PROD_ID), world.ctx)
    calls = len(world.slack.updates())
    # WHEN senior.one clicks Approve again (a new, correctly signed request)
    response = handle_interaction(click(world, "U0PRODSEN1", approval_id=PROD_ID, seconds_later=10), world.ctx)
    # THEN it is a duplicate: still one vote, no decision, no Step Functions call, message unchanged
    assert answer(response) == (200, "duplicate")
    assert len(world.items("VOTE#")) == 1
    assert world.sfn.calls == []
    assert len(world.slack.updates()) == calls
    approval = world.store.get(PROD_ID)
    assert approval is not None
    assert approval.status == "PENDING"
    assert "each approver counts once" in world.slack.replies()[-1]


def test_the_requester_cannot_approve_and_is_recorded(world: World) -> None:
    # WHEN alice, who requested the PROD deployment and is an approver, clicks Approve
    response = handle_interaction(click(world, "U0ALICE001", approval_id=PROD_ID), world.ctx)
    # THEN it is refused, recorded as such, and counts for nothing
    assert answer(response) == (200, "self_approval")
    assert [(r["userId"], r["reason"]) for r in world.store.refusals(PROD_ID)] == [("U0ALICE001", "self_approval")]
    assert world.items("VOTE#") == []
    assert world.sfn.calls == []
    assert world.slack.updates() == []
    assert world.slack.replies() == ["You requested this deployment and cannot approve or reject it."]


def test_an_outsider_cannot_approve_and_is_recorded(world: World) -> None:
    response = handle_interaction(click(world, "U0OUTSIDER"), world.ctx)
    assert answer(response) == (200, "not_authorized")
    assert [(r["userId"], r["reason"]) for r in world.store.refusals(SIT_ID)] == [("U0OUTSIDER", "not_authorized")]
    assert world.items("VOTE#") == []
    assert world.sfn.calls == []
    assert world.slack.updates() == []


def test_a_reject_fails_the_task_with_approval_rejected(world: World) -> None:
    # WHEN a PROD approver rejects after another approved
    handle_interaction(click(world, "U0PRODSEN1", approval_id=PROD_ID), world.ctx)
    response = handle_interaction(click(world, "U0PRODSEN2", "reject", PROD_ID, seconds_later=5), world.ctx)
    # THEN the task fails with ApprovalRejected naming the rejecter, and the message says so
    assert answer(response) == (200, "rejected")
    assert world.sfn.calls == [
        (
            "SendTaskFailure",
            {
                "taskToken": "task-token-prod",
                "error": "ApprovalRejected",
                "cause": "rejected by senior.two (U0PRODSEN2)",
            },
        )
    ]
    assert world.slack.updates()[-1]["blocks"][-1]["text"]["text"] == "*Rejected by <@U0PRODSEN2>*"
    approval = world.store.get(PROD_ID)
    assert approval is not None
    assert (approval.status, approval.decided_by) == ("REJECTED", ["U0PRODSEN2"])


def test_a_click_after_the_decision_changes_nothing(world: World) -> None:
    # GIVEN SIT was approved
    handle_interaction(click(world), world.ctx)
    votes, sfn_calls, updates = world.items("VOTE#"), list(world.sfn.calls), world.slack.updates()
    # WHEN the other approver clicks Reject afterwards
    response = handle_interaction(click(world, "U0SITENG02", "reject", seconds_later=20), world.ctx)
    # THEN they are told it was already approved, and nothing changes
    assert answer(response) == (200, "already_decided")
    assert "already approved" in world.slack.replies()[-1]
    assert world.items("VOTE#") == votes
    assert world.sfn.calls == sfn_calls
    assert world.slack.updates() == updates
    approval = world.store.get(SIT_ID)
    assert approval is not None
    assert approval.status == "APPROVED"


def test_a_click_after_expiry_changes_nothing(world: World) -> None:
    # GIVEN the SIT approval's time has run out
    world.clock[0] = sit_approval().expires_at + timedelta(seconds=1)
    # WHEN its approver clicks Approve
    response = handle_interaction(click(world), world.ctx)
    # THEN they are told it expired, and nothing changes
    assert answer(response) == (200, "expired")
    assert world.items("VOTE#") == []
    assert world.sfn.calls == []
    assert world.slack.updates() == []
    assert "expired" in world.slack.replies()[-1]


@pytest.mark.parametrize("code", ["TaskTimedOut", "InvalidToken"])
def test_a_task_that_timed_out_is_answered_not_crashed(world: World, code: str) -> None:
    # GIVEN Step Functions no longer waits on the SIT token
    world.sfn.error = code
    # WHEN the approver clicks Approve
    response = handle_interaction(click(world), world.ctx)
    # THEN Slack gets a 200, the decision stays recorded and the message shows it
    assert answer(response) == (200, "approved")
    assert [c[0] for c in world.sfn.calls] == ["SendTaskSuccess"]
    approval = world.store.get(SIT_ID)
    assert approval is not None
    assert approval.status == "APPROVED"
    assert world.slack.updates()[-1]["blocks"][-1]["text"]["text"] == "*Approved by <@U0SITLEAD1>*"


def test_concurrent_approvers_still_reach_quorum(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN senior.two's request read the votes just before senior.one's concurrent vote was stored
    stored_votes = world.store.votes
    reads: list[int] = []

    def votes(approval_id: str) -> list[Vote]:
        reads.append(1)
        return [] if len(reads) == 1 else stored_votes(approval_id)

    world.store.record_vote(PROD_ID, Vote("U0PRODSEN1", "senior.one", "approve", world.clock[0]))
    monkeypatch.setattr(world.store, "votes", votes)
    # WHEN senior.two's click is handled
    response = handle_interaction(click(world, "U0PRODSEN2", approval_id=PROD_ID, seconds_later=1), world.ctx)
    # THEN quorum is reached from the votes as stored, not as first read
    assert answer(response) == (200, "approved")
    ((operation, call),) = world.sfn.calls
    assert operation == "SendTaskSuccess"
    assert [a["user"] for a in json.loads(call["output"])["approvers"]] == ["U0PRODSEN1", "U0PRODSEN2"]
