"""Approvals: the store (moto DynamoDB), what a click decides, and delivering the decision to Step Functions."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from deployer.approvals import (
    Approval,
    ApprovalStore,
    Vote,
    deliver_decision,
    evaluate_click,
    integrity_problems,
    new_approval_id,
)
from deployer.errors import TransientAwsError
from tests.unit.conftest import records_table

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
SENIOR_1 = {"slackUserId": "U0PRODSEN1", "name": "senior.one"}
SENIOR_2 = {"slackUserId": "U0PRODSEN2", "name": "senior.two"}
ALICE = {"slackUserId": "U0ALICE001", "name": "alice"}
CTO = {"slackUserId": "U0CTO00001", "name": "cto"}


def prod_approval(**changes: Any) -> Approval:
    approval = Approval(
        approval_id="apv-fedcba9876543210",
        deployment_id="prod-20261126T090000Z-0a1b2c3d",
        execution_arn="arn:aws:states:af-south-1:123456789012:execution:bbws-deployer-deployment:prod-20261126T090000Z-0a1b2c3d",
        environment="prod",
        requested_by="alice",
        change_ticket="CHG-1234",
        plan_hash="sha256:" + "ab" * 32,
        plan_summary="Plan: 1 to add, 1 to change, 0 unchanged.",
        plan_resources=[
            {"kind": "bucket", "name": "bbws-prod-data", "region": "af-south-1", "action": "add", "changes": []},
            {
                "kind": "table",
                "name": "Site-Generation-State",
                "region": "eu-west-1",
                "action": "change",
                "changes": [{"field": "pointInTimeRecovery", "from": False, "to": True}],
            },
        ],
        required=2,
        approvers=[SENIOR_1, SENIOR_2, ALICE],
        escalation_approvers=[CTO],
        confirm=True,
        channel="C0DEPLOYPRD",
        created_at=NOW,
        expires_at=NOW + timedelta(hours=4),
        task_token="task-token-prod",
        message_ts="1795683600.000200",
    )
    return replace(approval, **changes)


def vote(user: dict[str, str], decision: str = "approve", minutes: int = 1) -> Vote:
    return Vote(user_id=user["slackUserId"], name=user["name"], decision=decision, at=NOW + timedelta(minutes=minutes))  # type: ignore[arg-type]


@pytest.fixture
def table(aws: None) -> Any:
    return records_table()


@pytest.fixture
def store(table: Any) -> ApprovalStore:
    return ApprovalStore(table)


# ---------------------------------------------------------------- ids


def test_approval_ids_are_short_unguessable_and_button_safe() -> None:
    # WHEN two ids are drawn
    first, second = new_approval_id(), new_approval_id()
    # THEN they have the shape the interactions endpoint accepts, and differ
    assert first != second
    for approval_id in (first, second):
        assert approval_id.startswith("apv-")
        assert len(approval_id) == 20
        int(approval_id[4:], 16)


# ---------------------------------------------------------------- store


def test_an_approval_round_trips_through_the_table(store: ApprovalStore, table: Any) -> None:
    # GIVEN a stored approval
    approval = prod_approval()
    store.create(approval)
    # WHEN it is read back
    loaded = store.get(approval.approval_id)
    # THEN it is the same approval, with its lists stored as JSON (no Decimals) and its expiry as a number too
    assert loaded == approval
    item = table.get_item(Key={"pk": "APPROVAL#apv-fedcba9876543210", "sk": "APPROVAL"})["Item"]
    assert json.loads(item["approvers"]) == [SENIOR_1, SENIOR_2, ALICE]
    assert json.loads(item["planResources"])[1]["changes"][0]["field"] == "pointInTimeRecovery"
    assert int(item["expiresAtEpoch"]) == int((NOW + timedelta(hours=4)).timestamp())
    assert item["expiresAt"] == "2026-11-26T13:00:00.000Z"


def test_creating_the_same_approval_twice_keeps_the_first(store: ApprovalStore) -> None:
    # GIVEN an approval already stored
    store.create(prod_approval())
    # WHEN a retried request creates it again with other values
    store.create(prod_approval(task_token="another-token"))
    # THEN the first one stands
    loaded = store.get("apv-fedcba9876543210")
    assert loaded is not None
    assert loaded.task_token == "task-token-prod"


def test_an_unknown_approval_is_none(store: ApprovalStore) -> None:
    assert store.get("apv-0000000000000000") is None


def test_set_token_and_message_update_the_approval(store: ApprovalStore) -> None:
    # GIVEN an approval stored before its task token and message were known
    store.create(prod_approval(task_token=None, message_ts=None))
    # WHEN the token and the message ts are set
    updated = store.set_token("apv-fedcba9876543210", "the-token")
    store.set_message("apv-fedcba9876543210", "1795683600.000300")
    # THEN both are stored, and set_token returned the updated approval
    assert updated.task_token == "the-token"
    loaded = store.get("apv-fedcba9876543210")
    assert loaded is not None
    assert (loaded.task_token, loaded.message_ts) == ("the-token", "1795683600.000300")


def test_set_token_on_a_missing_approval_fails(store: ApprovalStore) -> None:
    with pytest.raises(ClientError):
        store.set_token("apv-0000000000000000", "the-token")


def test_each_user_votes_once(store: ApprovalStore) -> None:
    # GIVEN a vote from senior.one
    store.create(prod_approval())
    assert store.record_vote("apv-fedcba9876543210", vote(SENIOR_1, minutes=2))
    # WHEN senior.one votes again (even the other way), and senior.two votes
    again = store.record_vote("apv-fedcba9876543210", vote(SENIOR_1, "reject", minutes=3))
    assert store.record_vote("apv-fedcba9876543210", vote(SENIOR_2, minutes=1))
    # THEN the second vote is refused and the votes come back earliest first
    assert again is False
    votes = store.votes("apv-fedcba9876543210")
    assert [(v.user_id, v.decision) for v in votes] == [("U0PRODSEN2", "approve"), ("U0PRODSEN1", "approve")]
    assert votes[1] == vote(SENIOR_1, minutes=2)


def test_refusals_are_recorded_for_audit(store: ApprovalStore) -> None:
    # GIVEN an approval
    store.create(prod_approval())
    # WHEN an outsider and then the requester click
    store.record_refusal("apv-fedcba9876543210", "U0OUTSIDER", "not_authorized", NOW + timedelta(minutes=1))
    store.record_refusal("apv-fedcba9876543210", "U0ALICE001", "self_approval", NOW + timedelta(minutes=2))
    # THEN both refusals are kept, in order, and neither is a vote
    assert store.refusals("apv-fedcba9876543210") == [
        {"userId": "U0OUTSIDER", "reason": "not_authorized", "at": "2026-11-26T09:01:00.000Z"},
        {"userId": "U0ALICE001", "reason": "self_approval", "at": "2026-11-26T09:02:00.000Z"},
    ]
    assert store.votes("apv-fedcba9876543210") == []


def test_an_approval_is_decided_once(store: ApprovalStore) -> None:
    # GIVEN a pending approval
    store.create(prod_approval())
    # WHEN it is approved, and then someone tries to reject it
    first = store.decide("apv-fedcba9876543210", "APPROVED", ["U0PRODSEN1", "U0PRODSEN2"], NOW + timedelta(minutes=5))
    second = store.decide("apv-fedcba9876543210", "REJECTED", ["U0CTO00001"], NOW + timedelta(minutes=6))
    # THEN only the first decision counts
    assert (first, second) == (True, False)
    loaded = store.get("apv-fedcba9876543210")
    assert loaded is not None
    assert loaded.status == "APPROVED"
    assert loaded.decided_by == ["U0PRODSEN1", "U0PRODSEN2"]
    assert loaded.decided_at == NOW + timedelta(minutes=5)


def test_deciding_an_unknown_approval_is_refused(store: ApprovalStore) -> None:
    assert store.decide("apv-0000000000000000", "APPROVED", ["U0PRODSEN1"], NOW) is False
    assert store.get("apv-0000000000000000") is None


def test_reminders_are_counted(store: ApprovalStore) -> None:
    store.create(prod_approval())
    store.note_reminder("apv-fedcba9876543210")
    store.note_reminder("apv-fedcba9876543210")
    loaded = store.get("apv-fedcba9876543210")
    assert loaded is not None
    assert loaded.reminders_sent == 2


def test_a_deployments_approvals_are_found_by_deployment(store: ApprovalStore) -> None:
    store.create(prod_approval())
    store.create(prod_approval(approval_id="apv-00000000000000aa", deployment_id="prod-other"))
    assert [a.approval_id for a in store.for_deployment("prod-20261126T090000Z-0a1b2c3d")] == ["apv-fedcba9876543210"]


def test_the_replay_guard_sees_a_key_once_until_it_expires(store: ApprovalStore, table: Any) -> None:
    # WHEN the same key is seen three times, the last after its sighting expired
    first = store.first_sighting("abc", NOW, 600)
    again = store.first_sighting("abc", NOW + timedelta(seconds=599), 600)
    expired = store.first_sighting("abc", NOW + timedelta(seconds=601), 600)
    # THEN it is new the first time, a replay within the window, and new once the window passed
    assert (first, again, expired) == (True, False, True)
    item = table.get_item(Key={"pk": "SLACKREQ#abc", "sk": "SEEN"})["Item"]
    assert int(item["expiresAt"]) == int(NOW.timestamp()) + 601 + 600
    assert store.first_sighting("other", NOW, 600) is True


def test_an_execution_opens_one_approval_and_a_reused_name_gets_a_new_one(store: ApprovalStore) -> None:
    # GIVEN an execution that opened its approval, retried (the same execution asks again)
    first = store.open(prod_approval(approval_id=new_approval_id()), "arn:exec:prod-1@2026-11-26T09:00:00Z")
    retried = store.open(prod_approval(approval_id=new_approval_id()), "arn:exec:prod-1@2026-11-26T09:00:00Z")
    # THEN the retry gets the approval already bound
    assert retried.approval_id == first.approval_id
    assert store.for_execution("arn:exec:prod-1@2026-11-26T09:00:00Z") == first
    # AND an execution of the same name started later finds none of it
    assert store.for_execution("arn:exec:prod-1@2027-03-01T09:00:00Z") is None


# ---------------------------------------------------------------- integrity_problems


def test_an_approved_approval_with_its_quorum_backs_the_tasks_word() -> None:
    approval = prod_approval(status="APPROVED")
    claimed = {"approvalId": approval.approval_id, "planHash": approval.plan_hash}
    assert integrity_problems(approval, approval.execution_arn, claimed, [vote(SENIOR_1), vote(SENIOR_2)]) == []


def test_a_bare_task_success_is_named_for_everything_it_lacks() -> None:
    # GIVEN an approval still PENDING with no votes, and a task output that only names the plan
    approval = prod_approval()
    problems = integrity_problems(approval, approval.execution_arn, {"planHash": approval.plan_hash}, [])
    # THEN each gap is named
    assert problems == [
        "approval apv-fedcba9876543210 is PENDING, not APPROVED",
        "the task reported approval None, not apv-fedcba9876543210",
        "the recorded votes are 0 of 2 approvals: no quorum",
    ]


def test_votes_of_outsiders_or_the_requester_make_no_quorum() -> None:
    # GIVEN an APPROVED approval whose only recorded votes are an outsider's and the requester's
    approval = prod_approval(status="APPROVED")
    outsider = {"slackUserId": "U0OUTSIDER", "name": "outsider"}
    claimed = {"approvalId": approval.approval_id, "planHash": approval.plan_hash}
    problems = integrity_problems(
        approval, approval.execution_arn, claimed, [vote(outsider), vote(ALICE), vote(SENIOR_1)]
    )
    assert problems == ["the recorded votes are 1 of 2 approvals: no quorum"]


def test_another_executions_approval_or_plan_is_named() -> None:
    approval = prod_approval(status="APPROVED")
    claimed = {"approvalId": approval.approval_id, "planHash": "sha256:other"}
    problems = integrity_problems(approval, "arn:other-execution", claimed, [vote(SENIOR_1), vote(SENIOR_2)])
    assert problems == [
        f"approval apv-fedcba9876543210 belongs to execution {approval.execution_arn}",
        f"the task reported plan sha256:other, the approvers approved {approval.plan_hash}",
    ]


# ---------------------------------------------------------------- evaluate_click


def test_a_first_prod_approval_is_recorded_short_of_quorum() -> None:
    result = evaluate_click(prod_approval(), [], "U0PRODSEN1", "approve", NOW)
    assert result.outcome == "recorded"
    assert "1 of 2" in result.message
    assert result.vote == Vote("U0PRODSEN1", "senior.one", "approve", NOW)


def test_a_second_distinct_approver_reaches_quorum() -> None:
    result = evaluate_click(prod_approval(), [vote(SENIOR_1)], "U0PRODSEN2", "approve", NOW + timedelta(minutes=2))
    assert result.outcome == "approved"
    assert "2 of 2" in result.message
    assert result.vote is not None
    assert result.vote.user_id == "U0PRODSEN2"


def test_a_sit_approval_needs_one_approver() -> None:
    result = evaluate_click(prod_approval(required=1), [], "U0PRODSEN1", "approve", NOW)
    assert result.outcome == "approved"


def test_the_same_user_twice_counts_once() -> None:
    # GIVEN senior.one already approved a PROD deployment
    votes = [vote(SENIOR_1)]
    # WHEN senior.one clicks Approve again
    result = evaluate_click(prod_approval(), votes, "U0PRODSEN1", "approve", NOW + timedelta(minutes=2))
    # THEN it is a duplicate, no vote, and no quorum
    assert result.outcome == "duplicate"
    assert result.vote is None
    assert "already voted" in result.message


def test_duplicate_votes_in_the_list_do_not_inflate_the_count() -> None:
    # Each user counts once even if a list somehow held their vote twice.
    result = evaluate_click(
        prod_approval(required=3, approvers=[SENIOR_1, SENIOR_2, CTO]),
        [vote(SENIOR_1), vote(SENIOR_1, minutes=2)],
        "U0PRODSEN2",
        "approve",
        NOW + timedelta(minutes=3),
    )
    assert result.outcome == "recorded"
    assert "2 of 3" in result.message


def test_a_reject_decides_at_once() -> None:
    result = evaluate_click(prod_approval(), [vote(SENIOR_1)], "U0PRODSEN2", "reject", NOW + timedelta(minutes=2))
    assert result.outcome == "rejected"
    assert result.vote is not None
    assert result.vote.decision == "reject"


def test_someone_outside_the_approvers_is_not_authorized() -> None:
    result = evaluate_click(prod_approval(), [], "U0OUTSIDER", "approve", NOW)
    assert result.outcome == "not_authorized"
    assert result.vote is None


def test_an_escalation_approver_may_vote() -> None:
    result = evaluate_click(prod_approval(), [vote(SENIOR_1)], "U0CTO00001", "approve", NOW + timedelta(minutes=2))
    assert result.outcome == "approved"


@pytest.mark.parametrize("requested_by", ["alice", "U0ALICE001", "Alice"])
def test_the_requester_cannot_approve_by_name_or_by_id(requested_by: str) -> None:
    # GIVEN alice requested the deployment (under her name or her Slack id) and is also an approver
    approval = prod_approval(requested_by=requested_by)
    # WHEN alice clicks Approve
    result = evaluate_click(approval, [vote(SENIOR_1)], "U0ALICE001", "approve", NOW + timedelta(minutes=2))
    # THEN it is refused as self-approval, with no vote
    assert result.outcome == "self_approval"
    assert result.vote is None
    assert "you requested this deployment" in result.message.lower()


# A SIT policy changed since its last success: its previous approvers, one of whom must approve too.
OLD_LEAD = {"slackUserId": "U0OLDLEAD1", "name": "old.lead"}


def changed_policy_approval(**changes: Any) -> Approval:
    change: dict[str, Any] = {
        "required": 1,
        "approvers": [SENIOR_1, ALICE],
        "escalation_approvers": [],
        "previous_required": 1,
        "previous_approvers": [OLD_LEAD, SENIOR_2],
        "policy_diff": ["policy.approvals.approvers: [...] -> [...]"],
    }
    return prod_approval(**{**change, **changes})


def test_a_changed_policy_waits_for_the_previous_policys_quorum_too() -> None:
    # GIVEN a changed policy needing 1 of its own approvers and 1 of the previous policy's
    approval = changed_policy_approval()
    # WHEN one of the new policy's approvers approves
    first = evaluate_click(approval, [], "U0PRODSEN1", "approve", NOW)
    # THEN the vote is recorded short of quorum, both tallies shown
    assert first.outcome == "recorded"
    assert first.message == "Your approval is recorded: 1 of 1 approvals; 0 of 1 under the previous policy."
    # AND a previous approver's vote completes it
    assert first.vote is not None
    second = evaluate_click(approval, [first.vote], "U0OLDLEAD1", "approve", NOW + timedelta(minutes=1))
    assert second.outcome == "approved"
    assert "1 of 1 approvals; 1 of 1 under the previous policy" in second.message


def test_a_previous_approver_alone_does_not_satisfy_the_new_policy() -> None:
    result = evaluate_click(changed_policy_approval(), [], "U0OLDLEAD1", "approve", NOW)
    assert result.outcome == "recorded"
    assert "0 of 1 approvals; 1 of 1 under the previous policy" in result.message


def test_one_person_in_both_policies_counts_in_both_quorums() -> None:
    approval = changed_policy_approval(previous_approvers=[SENIOR_1])
    result = evaluate_click(approval, [], "U0PRODSEN1", "approve", NOW)
    assert result.outcome == "approved"


def test_a_changed_policy_approval_round_trips_through_the_table(store: ApprovalStore) -> None:
    approval = changed_policy_approval()
    store.create(approval)
    assert store.get(approval.approval_id) == approval


@pytest.mark.parametrize("status", ["APPROVED", "REJECTED", "EXPIRED"])
def test_a_decided_approval_says_how_it_was_decided(status: str) -> None:
    result = evaluate_click(prod_approval(status=status), [], "U0PRODSEN1", "approve", NOW)
    assert result.outcome == "already_decided"
    assert f"already {status.lower()}" in result.message
    assert result.vote is None


def test_a_decided_approval_is_reported_before_anything_else() -> None:
    # An outsider clicking a decided, expired approval is told it was decided: status comes first.
    approval = prod_approval(status="REJECTED")
    assert evaluate_click(approval, [], "U0OUTSIDER", "approve", NOW + timedelta(days=1)).outcome == "already_decided"


def test_expiry_is_inclusive_of_the_expiry_instant() -> None:
    approval = prod_approval(required=1)
    just_before = evaluate_click(approval, [], "U0PRODSEN1", "approve", approval.expires_at - timedelta(milliseconds=1))
    at_expiry = evaluate_click(approval, [], "U0PRODSEN1", "approve", approval.expires_at)
    assert just_before.outcome == "approved"
    assert at_expiry.outcome == "expired"
    assert at_expiry.vote is None


# ---------------------------------------------------------------- deliver_decision


@pytest.fixture
def sfn() -> Any:
    return boto3.client("stepfunctions", region_name="af-south-1")


def test_an_approval_is_delivered_with_its_approvers(sfn: Any) -> None:
    # GIVEN an approved PROD approval with two votes
    approval = prod_approval(status="APPROVED", decided_by=["U0PRODSEN1", "U0PRODSEN2"])
    votes = [vote(SENIOR_1, minutes=1), vote(SENIOR_2, minutes=2)]
    expected_output = {
        "decision": "approved",
        "approvalId": "apv-fedcba9876543210",
        "planHash": approval.plan_hash,
        "approvers": [
            {"user": "U0PRODSEN1", "name": "senior.one", "at": "2026-11-26T09:01:00.000Z"},
            {"user": "U0PRODSEN2", "name": "senior.two", "at": "2026-11-26T09:02:00.000Z"},
        ],
    }
    with Stubber(sfn) as stub:
        stub.add_response(
            "send_task_success", {}, {"taskToken": "task-token-prod", "output": json.dumps(expected_output)}
        )
        # WHEN it is delivered
        delivered = deliver_decision(sfn, approval, votes)
        # THEN Step Functions got SendTaskSuccess with the approvers
        stub.assert_no_pending_responses()
    assert delivered is True


def test_a_rejection_is_delivered_as_approval_rejected(sfn: Any) -> None:
    approval = prod_approval(status="REJECTED", decided_by=["U0PRODSEN2"])
    votes = [vote(SENIOR_1), vote(SENIOR_2, "reject", minutes=2)]
    with Stubber(sfn) as stub:
        stub.add_response(
            "send_task_failure",
            {},
            {
                "taskToken": "task-token-prod",
                "error": "ApprovalRejected",
                "cause": "rejected by senior.two (U0PRODSEN2)",
            },
        )
        assert deliver_decision(sfn, approval, votes) is True
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("code", ["TaskTimedOut", "InvalidToken", "TaskDoesNotExist"])
def test_a_task_that_is_gone_is_not_an_error(sfn: Any, code: str) -> None:
    # GIVEN Step Functions no longer waits on the token
    approval = prod_approval(status="APPROVED", decided_by=["U0PRODSEN1", "U0PRODSEN2"])
    with Stubber(sfn) as stub:
        stub.add_client_error("send_task_success", service_error_code=code, http_status_code=400)
        # WHEN the decision is delivered
        delivered = deliver_decision(sfn, approval, [vote(SENIOR_1), vote(SENIOR_2)])
    # THEN it reports not delivered instead of raising
    assert delivered is False


def test_other_step_functions_errors_are_raised(sfn: Any) -> None:
    approval = prod_approval(status="REJECTED", decided_by=["U0PRODSEN1"])
    with Stubber(sfn) as stub:
        stub.add_client_error("send_task_failure", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(TransientAwsError):
            deliver_decision(sfn, approval, [vote(SENIOR_1, "reject")])


@pytest.mark.parametrize(
    "approval",
    [
        prod_approval(status="APPROVED", task_token=None),
        prod_approval(status="PENDING"),
        prod_approval(status="EXPIRED"),
    ],
    ids=["no-token", "pending", "expired"],
)
def test_nothing_is_delivered_without_a_token_or_a_decision(sfn: Any, approval: Approval) -> None:
    with Stubber(sfn) as stub:
        assert deliver_decision(sfn, approval, [vote(SENIOR_1)]) is False
        stub.assert_no_pending_responses()
