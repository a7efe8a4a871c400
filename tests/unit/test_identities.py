"""The identity map: a requester under any identity is never an approver of their own deployment."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.approvals import evaluate_click
from deployer.documents import DocumentInvalid
from deployer.identities import parse_identities
from deployer.models import Requester
from deployer.spec import load_spec_file
from tests.unit.test_approvals import NOW, prod_approval

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "layers" / "deployer" / "deployer" / "identities.yaml"
MAP = parse_identities(
    DOCUMENT.read_text()
    + "  - name: alice\n    slackUserId: U0ALICE001\n    githubLogin: alice-gh\n"
    + "    awsPrincipals: [arn:aws:sts::123456789012:assumed-role/Admin/alice]\n",
    "identities.yaml",
)


def test_every_approver_of_the_runbook_specs_is_in_the_packaged_map() -> None:
    # The cross-identity check covers an approver only if the map knows them.
    packaged = parse_identities(DOCUMENT.read_text(), str(DOCUMENT))
    known = {p.slack_user_id for p in packaged.people}
    for path in sorted((REPO / "environments").glob("*.yaml")):
        approvals = load_spec_file(path).policy.approvals
        assert {a.slack_user_id for a in [*approvals.approvers, *approvals.escalation_approvers]} <= known, path


@pytest.mark.parametrize(
    "requester",
    [
        Requester(name="github:alice-gh", verified_by="github-oidc", github_login="alice-gh"),
        Requester(name="github:ALICE-GH", verified_by="github-oidc", github_login="ALICE-GH"),
        Requester(
            name="arn:aws:sts::123456789012:assumed-role/Admin/alice",
            verified_by="aws-sigv4",
            aws_principal="arn:aws:sts::123456789012:assumed-role/Admin/alice",
        ),
        Requester(name="alice"),
        Requester(name="github:alice-gh"),
    ],
    ids=["github-login", "github-login-any-case", "aws-principal", "claimed-name", "claimed-github-login"],
)
def test_a_requester_is_found_by_any_of_their_identities(requester: Requester) -> None:
    assert MAP.slack_ids_of(requester) == ["U0ALICE001"]


def test_someone_else_is_nobody_in_the_map() -> None:
    requester = Requester(
        name="github:mallory", verified_by="github-oidc", github_login="mallory", claimed="someone-unknown"
    )
    assert MAP.slack_ids_of(requester) == []


def test_an_approver_who_requested_through_ci_cannot_approve_in_slack() -> None:
    # GIVEN alice's deployment, requested by her GitHub login through CI; the approval carries her Slack id
    requester = Requester(name="github:alice-gh", verified_by="github-oidc", github_login="alice-gh")
    approval = prod_approval(requested_by=requester.name, requester_slack_ids=MAP.slack_ids_of(requester))
    # WHEN alice clicks Approve in Slack THEN it is refused as self-approval
    assert evaluate_click(approval, [], "U0ALICE001", "approve", NOW).outcome == "self_approval"
    # AND another approver's click counts
    assert evaluate_click(approval, [], "U0PRODSEN1", "approve", NOW).outcome == "recorded"


def test_one_identity_naming_two_people_does_not_load() -> None:
    text = DOCUMENT.read_text() + "  - name: twin\n    slackUserId: U0TWIN0001\n    githubLogin: BBWS-SIT-LEAD\n"
    with pytest.raises(DocumentInvalid, match="githubLogin names more than one person: bbws-sit-lead"):
        parse_identities(text, "identities.yaml")


def test_requesters_describe_how_they_are_known() -> None:
    assert Requester(name="github:octo", verified_by="github-oidc", github_login="octo").describe() == (
        "github:octo (verified: GitHub OIDC token)"
    )
    assert Requester(name="alice").describe() == "alice (claimed)"
    assert Requester(name="arn:x", verified_by="aws-sigv4", aws_principal="arn:x", claimed="al").describe() == (
        "arn:x (verified: AWS SigV4, claims to be al)"
    )
