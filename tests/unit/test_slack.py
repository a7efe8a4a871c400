"""Slack: the approval message, request verification, payload parsing and the Web API wrapper."""

from __future__ import annotations

import base64
import json
import urllib.parse
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from deployer import slack as slack_module
from deployer.slack import (
    Slack,
    SlackRequestRejected,
    approval_blocks,
    decided_blocks,
    execution_console_url,
    parse_interaction,
    reminder_text,
    verify_request,
)
from tests.slack_signing import raw_body, sign, signature
from tests.unit.test_approvals import (
    ALICE,
    CTO,
    NOW,
    SENIOR_1,
    SENIOR_2,
    changed_policy_approval,
    prod_approval,
    vote,
)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TS = int(NOW.timestamp())
CONSOLE = "https://af-south-1.console.aws.amazon.com/states/home?region=af-south-1#/v2/executions/details/x"
SAMPLE = json.loads((Path(__file__).parents[2] / "events" / "slack_interaction_approve.json").read_text())


def all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks)


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def form(payload: Any) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return ("payload=" + urllib.parse.quote_plus(text)).encode()


def sample_payload() -> dict[str, Any]:
    body = urllib.parse.parse_qs(SAMPLE["body"])
    payload: dict[str, Any] = json.loads(body["payload"][0])
    return payload


# ---------------------------------------------------------------- blocks


def test_the_request_message_shows_the_plan_and_buttons_carrying_only_the_approval_id() -> None:
    # GIVEN a PROD approval with one approval so far
    approval = prod_approval()
    # WHEN its message is built
    blocks = approval_blocks(approval, [vote(SENIOR_1)], CONSOLE)
    text = all_text(blocks)
    # THEN it has the header, context, plan per resource, hash, console link and tally
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == "Approval needed: prod deployment"
    for expected in (
        "alice",
        "CHG-1234",
        approval.plan_hash,
        "Plan: 1 to add, 1 to change",
        CONSOLE,
        "1 of 2: <@U0PRODSEN1>",
    ):
        assert expected in text
    assert "`eu-west-1` table `Site-Generation-State`: change (pointInTimeRecovery)" in text
    assert "`af-south-1` bucket `bbws-prod-data`: add" in text
    # AND two buttons whose value is the approval id and nothing else, and no token anywhere
    approve, reject = buttons(blocks)
    assert (approve["action_id"], approve["style"], approve["value"]) == ("approve", "primary", "apv-fedcba9876543210")
    assert (reject["action_id"], reject["style"], reject["value"]) == ("reject", "danger", "apv-fedcba9876543210")
    assert "task-token-prod" not in text


def test_a_changed_policy_shows_its_diff_and_the_previous_quorum() -> None:
    # GIVEN an approval of a policy changed since the last success
    approval = changed_policy_approval()
    # WHEN its message and a reminder are built
    blocks = approval_blocks(approval, [vote(SENIOR_1)], CONSOLE)
    text = all_text(blocks)
    reminder = reminder_text(approval, [vote(SENIOR_1)])
    # THEN the diff, who must consent and both tallies are shown; the reminder waits on the previous approvers
    change = next(b for b in blocks if b.get("block_id") == "policy_change")["text"]["text"]
    assert change.startswith("*Policy change* since the last successful deployment. 1 of the previous policy's")
    assert "(<@U0OLDLEAD1>, <@U0PRODSEN2>) must approve too." in change
    assert "• `policy.approvals.approvers: [...] -&gt; [...]`" in change
    assert "1 of 1; 0 of 1 under the previous policy: <@U0PRODSEN1>" in text
    assert "still needs 1 more approval " in reminder
    assert "Waiting on <@U0OLDLEAD1>, <@U0PRODSEN2>." in reminder


def test_an_unchanged_policy_has_no_policy_change_section() -> None:
    assert not [b for b in approval_blocks(prod_approval(), [], CONSOLE) if b.get("block_id") == "policy_change"]


def test_prod_buttons_ask_for_confirmation_and_sit_buttons_do_not() -> None:
    prod = buttons(approval_blocks(prod_approval(confirm=True), [], CONSOLE))
    sit = buttons(approval_blocks(prod_approval(confirm=False), [], CONSOLE))
    assert all("confirm" in b for b in prod)
    assert prod[0]["confirm"]["confirm"]["text"] == "Approve"
    assert prod[1]["confirm"]["confirm"]["text"] == "Reject"
    assert not any("confirm" in b for b in sit)


def test_user_supplied_text_cannot_mention_the_channel() -> None:
    blocks = approval_blocks(prod_approval(requested_by="<!channel>", change_ticket="A&B"), [], CONSOLE)
    text = all_text(blocks)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt;" in text
    assert "A&amp;B" in text


def test_a_long_plan_is_cut_to_fit_in_one_message() -> None:
    resources = [
        {
            "kind": "bucket",
            "name": f"bucket-{i:04d}-" + "x" * 40,
            "region": "af-south-1",
            "action": "add",
            "changes": [],
        }
        for i in range(200)
    ]
    blocks = approval_blocks(prod_approval(plan_resources=resources), [], CONSOLE)
    plan = next(b for b in blocks if b["type"] == "section" and b.get("text", {}).get("text", "").startswith("*Plan*"))
    assert len(plan["text"]["text"]) <= 3000
    assert "more" in plan["text"]["text"]


def test_decided_messages_say_who_decided_and_have_no_buttons() -> None:
    votes = [vote(SENIOR_1), vote(SENIOR_2, minutes=2)]
    approved = decided_blocks(prod_approval(status="APPROVED", decided_by=["U0PRODSEN1", "U0PRODSEN2"]), votes)
    rejected = decided_blocks(prod_approval(status="REJECTED", decided_by=["U0PRODSEN2"]), [vote(SENIOR_2, "reject")])
    expired = decided_blocks(prod_approval(status="EXPIRED"), [vote(SENIOR_1)])
    finals = [b[-1]["text"]["text"] for b in (approved, rejected, expired)]
    assert finals == [
        "*Approved by <@U0PRODSEN1>, <@U0PRODSEN2>*",
        "*Rejected by <@U0PRODSEN2>*",
        "*Expired — no decision within the time allowed*",
    ]
    assert all(buttons(b) == [] for b in (approved, rejected, expired))
    assert "reject" not in finals[2].lower()
    assert "prod deployment approval expired" in all_text(expired)
    assert execution_console_url(prod_approval().execution_arn) in all_text(approved)


def test_a_pending_approval_has_no_decided_message() -> None:
    with pytest.raises(ValueError, match="not decided"):
        decided_blocks(prod_approval(), [])


def test_a_reminder_mentions_who_has_not_voted_and_the_escalation() -> None:
    # GIVEN senior.one approved; alice (an approver) is the requester
    text = reminder_text(prod_approval(), [vote(SENIOR_1)])
    # THEN senior.two is waited on, the CTO is escalated to, and neither senior.one nor alice is pinged
    assert "<@U0PRODSEN2>" in text
    assert "Escalating to <@U0CTO00001>" in text
    assert "<@U0ALICE001>" not in text
    assert "1 more approval " in text
    assert "Waiting on <@U0PRODSEN2>." in text


def test_a_reminder_without_escalation_approvers_escalates_to_nobody() -> None:
    text = reminder_text(prod_approval(escalation_approvers=[]), [])
    assert "Escalating" not in text
    assert "<@U0PRODSEN1>, <@U0PRODSEN2>" in text
    assert "2 more approvals" in text


# ---------------------------------------------------------------- verify_request


def headers(ts: str | int = TS, body: bytes = b"payload=%7B%7D", secret: str = SECRET) -> dict[str, str]:
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature(secret, int(ts) if str(ts).isdigit() else 0, body),
    }


def test_a_correctly_signed_fresh_request_is_accepted() -> None:
    verify_request(headers(), b"payload=%7B%7D", SECRET, float(TS))
    # Headers are case-insensitive, and the edge of the five-minute window still counts.
    lower = {k.lower(): v for k, v in headers().items()}
    verify_request(lower, b"payload=%7B%7D", SECRET, float(TS + 300))
    verify_request(lower, b"payload=%7B%7D", SECRET, float(TS - 300))


@pytest.mark.parametrize(
    ("request_headers", "now", "reason"),
    [
        (headers(secret="another-secret"), TS, "bad signature"),
        ({**headers(), "X-Slack-Signature": "v0=" + "0" * 64}, TS, "bad signature"),
        ({**headers(), "X-Slack-Signature": "v0=é"}, TS, "bad signature"),
        (headers(), TS + 301, "stale"),
        (headers(), TS - 301, "from the future"),
        ({"X-Slack-Signature": headers()["X-Slack-Signature"]}, TS, "missing X-Slack-Request-Timestamp"),
        ({**headers(), "X-Slack-Request-Timestamp": ""}, TS, "missing X-Slack-Request-Timestamp"),
        ({**headers(), "X-Slack-Request-Timestamp": "17956836OO"}, TS, "non-numeric"),
        ({**headers(), "X-Slack-Request-Timestamp": "-1795683600"}, TS, "non-numeric"),
        ({"X-Slack-Request-Timestamp": str(TS)}, TS, "missing X-Slack-Signature"),
    ],
    ids=[
        "wrong-secret",
        "wrong-signature",
        "non-ascii-signature",
        "stale",
        "future",
        "missing-timestamp",
        "empty-timestamp",
        "non-numeric-timestamp",
        "negative-timestamp",
        "missing-signature",
    ],
)
def test_a_forged_or_stale_request_is_401(request_headers: dict[str, str], now: int, reason: str) -> None:
    with pytest.raises(SlackRequestRejected) as caught:
        verify_request(request_headers, b"payload=%7B%7D", SECRET, float(now))
    assert caught.value.status == 401
    assert reason in caught.value.reason


def test_the_signature_covers_the_body() -> None:
    with pytest.raises(SlackRequestRejected, match="bad signature"):
        verify_request(headers(), b"payload=%7B%22x%22%7D", SECRET, float(TS))


def test_a_signed_non_utf8_body_passes_verification_and_fails_parsing() -> None:
    body = b"payload=\xff\xfe"
    verify_request(headers(body=body), body, SECRET, float(TS))
    with pytest.raises(SlackRequestRejected) as caught:
        parse_interaction(body)
    assert caught.value.status == 400


# ---------------------------------------------------------------- parse_interaction


def test_the_sample_event_parses() -> None:
    interaction = parse_interaction(raw_body(sign(SAMPLE, SECRET, TS)))
    assert interaction == slack_module.Interaction(
        team_id="T0BBWS0001",
        user_id="U0SITLEAD1",
        user_name="sit.lead",
        action="approve",
        approval_id="apv-0123456789abcdef",
        response_url="https://hooks.slack.com/actions/T0BBWS0001/8123456789012/0a1B2c3D4e5F6g7H8i9J0k1L",
        channel_id="C0DEPLOYSIT",
        message_ts="1795683600.000100",
    )


def with_payload(**changes: Any) -> dict[str, Any]:
    payload = sample_payload()
    payload.update(changes)
    return payload


def with_action(**changes: Any) -> dict[str, Any]:
    payload = sample_payload()
    payload["actions"][0].update(changes)
    return payload


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe\xfd",
        b"",
        b"other=1",
        form("{not json"),
        form("[1, 2]"),
        form(with_payload(type="view_submission")),
        form(with_payload(actions=[])),
        form(with_payload(team=None)),
        form(with_action(action_id="delete")),
        form(with_action(value="apv-0123")),
        form(with_action(value="arn:aws:states:task-token")),
        form(with_action(value="APV-0123456789ABCDEF")),
    ],
    ids=[
        "non-utf8",
        "empty",
        "no-payload",
        "not-json",
        "not-an-object",
        "not-block-actions",
        "no-actions",
        "no-team",
        "unknown-action",
        "short-id",
        "token-instead-of-id",
        "uppercase-id",
    ],
)
def test_anything_but_one_of_our_buttons_is_400(body: bytes) -> None:
    with pytest.raises(SlackRequestRejected) as caught:
        parse_interaction(body)
    assert caught.value.status == 400


# ---------------------------------------------------------------- Slack client


class RecordingWebhook:
    sent: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, url: str, timeout: int = 30) -> None:
        self.url = url

    def send(self, **kwargs: Any) -> None:
        RecordingWebhook.sent.append((self.url, kwargs))


class RecordingWebClient:
    instances: list[RecordingWebClient] = []

    def __init__(self, token: str, base_url: str, timeout: int) -> None:
        self.token, self.base_url, self.calls = token, base_url, []
        RecordingWebClient.instances.append(self)

    def chat_postMessage(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("chat.postMessage", kwargs))
        return {"ok": True, "ts": "1795683600.000100"}

    def chat_update(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("chat.update", kwargs))
        return {"ok": True}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> type[RecordingWebhook]:
    RecordingWebhook.sent = []
    RecordingWebClient.instances = []
    monkeypatch.setattr(slack_module, "WebhookClient", RecordingWebhook)
    monkeypatch.setattr(slack_module, "WebClient", RecordingWebClient)
    return RecordingWebhook


def test_ephemeral_replies_go_only_to_slacks_response_urls(recorded: type[RecordingWebhook]) -> None:
    client = Slack(token="xoxb-test", base_url="https://slack.com/api", response_url_prefix="https://hooks.slack.com")
    # WHEN replies are sent to Slack's response URL and to lookalikes
    client.respond("https://hooks.slack.com/actions/T0BBWS0001/1/abc", "recorded")
    client.respond("https://hooks.slack.com.evil.example/actions/x", "leak")
    client.respond("https://evil.example/?https://hooks.slack.com/actions/", "leak")
    client.respond("http://169.254.169.254/latest/meta-data/", "leak")
    # THEN only the genuine one is called, ephemeral and not replacing the message
    assert recorded.sent == [
        (
            "https://hooks.slack.com/actions/T0BBWS0001/1/abc",
            {"text": "recorded", "response_type": "ephemeral", "replace_original": False},
        )
    ]


def test_the_web_client_is_built_on_first_use_and_posts_and_updates(recorded: type[RecordingWebhook]) -> None:
    # GIVEN a Slack wrapper (nothing built yet)
    client = Slack(
        token="xoxb-test", base_url="http://127.0.0.1:9999/api", response_url_prefix="http://127.0.0.1:9999/"
    )
    assert RecordingWebClient.instances == []
    # WHEN a message is posted, threaded, and updated
    ts = client.post("C0DEPLOYPRD", "approval needed", [{"type": "divider"}])
    client.post("C0DEPLOYPRD", "reminder", [], thread_ts=ts)
    client.update("C0DEPLOYPRD", ts, "approved", [])
    # THEN one WebClient was built, with a base URL Slack's client can join methods to, and the token stays out of repr
    (web,) = RecordingWebClient.instances
    assert web.base_url == "http://127.0.0.1:9999/api/"
    assert ts == "1795683600.000100"
    assert [c[0] for c in web.calls] == ["chat.postMessage", "chat.postMessage", "chat.update"]
    assert web.calls[1][1]["thread_ts"] == ts
    assert web.calls[2][1] == {"channel": "C0DEPLOYPRD", "ts": ts, "text": "approved", "blocks": []}
    assert "xoxb-test" not in repr(client)


def test_interaction_bodies_may_arrive_base64_encoded() -> None:
    # API Gateway may base64 the body; the signing helper and the parser agree on the raw bytes.
    event = sign(SAMPLE, SECRET, TS)
    encoded = sign(
        {**SAMPLE, "body": base64.b64encode(SAMPLE["body"].encode()).decode(), "isBase64Encoded": True}, SECRET, TS
    )
    assert raw_body(encoded) == raw_body(event)
    assert encoded["headers"]["X-Slack-Signature"] == event["headers"]["X-Slack-Signature"]


def test_the_vote_tally_counts_each_user_once() -> None:
    votes = [vote(SENIOR_1), replace(vote(SENIOR_1), at=NOW + timedelta(minutes=5)), vote(CTO, minutes=3)]
    blocks = approval_blocks(prod_approval(), votes, CONSOLE)
    assert "2 of 2: <@U0PRODSEN1>, <@U0CTO00001>" in all_text(blocks)
    assert ALICE["slackUserId"] not in all_text(blocks)
