"""Verified requesters end to end: CI's GitHub OIDC token, one CI role per environment, no self-approval.

CI acts here as its GitHub workflow would: as its environment's role (assumed with the
sandbox's unrestricted key, as STS would after AssumeRoleWithWebIdentity), pushing its
environment's spec for a commit, and calling the API SigV4-signed with a token the
sandbox's issuer minted, as GitHub would for the job.
"""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from deployer.oidc import TOKEN_HEADER
from deployer.specstore import SpecStore
from deployer_cli import client
from deployer_cli.client import ApiRefused, Stack
from sandbox.accounts import role_session
from sandbox.server import Sandbox
from tests.sandbox_fixtures import REPO, Deployments

# SIT only receives what DEV ran (its promotion rule): DEV deploys first, once per module.
pytestmark = pytest.mark.usefixtures("promoted_to_sit")

COMMIT = "a1" * 20
OTHER_COMMIT = "b2" * 20


def ci(sandbox: Sandbox, environment: str) -> Stack:
    """The stack as CI's role for ``environment`` sees it."""
    arn = sandbox.outputs[f"GitHubCi{environment.capitalize()}RoleArn"]
    session = role_session(sandbox.client("sts"), arn, f"gh-1-{environment}")
    return Stack(session, sandbox.endpoint, sandbox.region, sandbox.outputs)


def push(sandbox: Sandbox, environment: str, commit: str = COMMIT) -> None:
    """CI pushes the environment's spec for a commit, with its own role."""
    stack = ci(sandbox, environment)
    spec = (REPO / "environments" / f"{environment}.yaml").read_text()
    SpecStore(stack.client("s3"), sandbox.outputs["SpecsBucketName"]).put(environment, spec, commit=commit)


def start(sandbox: Sandbox, environment: str, token: str | None, as_role: str | None = None, **body: Any) -> Any:
    request = {"environment": environment, "specVersion": COMMIT, "clientToken": uuid.uuid4().hex, **body}
    headers = {TOKEN_HEADER: token} if token else None
    return client.api_call(ci(sandbox, as_role or environment), "POST", "/deployments", request, headers)


def refusal(call: Any) -> str:
    with pytest.raises(ApiRefused) as refused:
        call()
    return str(refused.value)


@pytest.fixture(scope="module", autouse=True)
def pushed(sandbox: Sandbox) -> None:
    for environment in ("dev", "sit", "prod"):
        push(sandbox, environment)


def test_a_valid_token_for_dev_deploys_dev_as_its_actor(sandbox: Sandbox, stack: Stack) -> None:
    # GIVEN dev's CI role and its job's token
    token = sandbox.oidc.mint(environment="dev", sha=COMMIT, actor="octo-dev", ref="refs/heads/dev-feature")
    # WHEN it asks for a DEV deployment, claiming to be someone else
    started = start(sandbox, "dev", token, requestedBy="somebody-else")
    view = client.api_wait(stack, started["deploymentId"], poll_seconds=0.1)
    # THEN DEV is deployed, requested by the token's actor (verified); the claim is only recorded
    assert view["status"] == "SUCCEEDED", view
    assert view["requestedBy"] == "github:octo-dev"
    record = stack.records.get(started["deploymentId"])
    assert record is not None
    assert record["requester"] == {
        "name": "github:octo-dev",
        "verifiedBy": "github-oidc",
        "githubLogin": "octo-dev",
        "awsPrincipal": f"arn:aws:sts::123456789012:assumed-role/{sandbox.stack_name}-github-ci-dev/gh-1-dev",
        "claimed": "somebody-else",
    }


def test_the_dev_token_cannot_deploy_prod(sandbox: Sandbox) -> None:
    token = sandbox.oidc.mint(environment="dev", sha=COMMIT)
    # WHEN dev's role asks for PROD THEN the role itself is refused, naming both
    by_dev_role = refusal(lambda: start(sandbox, "prod", token, as_role="dev", changeTicket="CHG-1"))
    assert "403" in by_dev_role
    assert "is CI's role for environment dev; it may not deploy environment prod" in by_dev_role
    # AND with PROD's role, the dev token's environment claim is refused
    by_prod_role = refusal(lambda: start(sandbox, "prod", token, changeTicket="CHG-1"))
    assert "403" in by_prod_role
    assert "environment claim is refused: the token is for environment 'dev', the request for 'prod'" in by_prod_role


def test_a_token_from_a_dev_branch_cannot_deploy_prod(sandbox: Sandbox) -> None:
    token = sandbox.oidc.mint(environment="prod", sha=COMMIT, ref="refs/heads/dev-hotfix")
    refused = refusal(lambda: start(sandbox, "prod", token, changeTicket="CHG-2"))
    assert "403" in refused
    assert "ref claim is refused: refs/heads/dev-hotfix is not a deployment branch of account 093646564004" in refused
    assert "whose guardrails allow main" in refused


def test_ci_announces_prod_through_the_api_as_its_actor_and_only_its_own_environment(sandbox: Sandbox) -> None:
    token = sandbox.oidc.mint(environment="prod", sha=COMMIT, actor="octo-release")
    at = sandbox.first_announceable("prod")
    body = {"environment": "prod", "changeTicket": "CHG-7", "scheduledFor": at.isoformat()}

    def announce(role: str, **changes: Any) -> Any:
        return client.api_call(ci(sandbox, role), "POST", "/announcements", {**body, **changes}, {TOKEN_HEADER: token})

    # WHEN PROD's CI role announces a window a day ahead THEN it is kept, announced by the token's actor
    announced = announce("prod")
    assert (announced["changeTicket"], announced["announcedBy"]) == ("CHG-7", "github:octo-release")
    assert announced["windowStart"] == at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    kept = Stack(sandbox.session(), sandbox.endpoint, sandbox.region, sandbox.outputs).records.announcements(
        "prod", "CHG-7"
    )
    assert [a["announcementId"] for a in kept] == [announced["announcementId"]]
    # AND dev's role may not announce PROD
    assert "it may not announce environment prod" in refusal(lambda: announce("dev"))
    # AND a window with less than a day's notice is refused, naming scheduledFor
    soon = (sandbox.now() + timedelta(hours=2)).isoformat()
    too_soon = refusal(lambda: announce("prod", scheduledFor=soon))
    assert "answered 400" in too_soon
    assert "scheduledFor: a scheduled deployment needs at least 24 hours' notice" in too_soon


@pytest.mark.parametrize(
    ("mint", "reason"),
    [
        ({"forged": True}, "Signature verification failed"),
        ({"audience": "sts.amazonaws.com"}, "the token's audience is not 'bbws-deployer'"),
        ({"issued_seconds_ago": 3600}, "the token expired at"),
    ],
    ids=["forged-signature", "wrong-audience", "expired"],
)
def test_a_token_that_proves_nothing_is_401(sandbox: Sandbox, mint: dict[str, Any], reason: str) -> None:
    token = sandbox.oidc.mint(environment="dev", sha=COMMIT, **mint)
    refused = refusal(lambda: start(sandbox, "dev", token))
    assert "answered 401" in refused
    assert reason in refused


def test_a_token_for_another_commit_is_403(sandbox: Sandbox) -> None:
    token = sandbox.oidc.mint(environment="dev", sha=OTHER_COMMIT)
    refused = refusal(lambda: start(sandbox, "dev", token))
    assert "403" in refused
    assert f"sha claim is refused: the token was issued for commit {OTHER_COMMIT}" in refused


def test_ci_without_its_token_is_401(sandbox: Sandbox) -> None:
    assert "answered 401" in refusal(lambda: start(sandbox, "dev", None))


def test_a_ci_role_may_push_only_its_own_environments_spec(sandbox: Sandbox) -> None:
    # WHEN dev's CI role pushes PROD's spec THEN IAM refuses it
    specs = SpecStore(ci(sandbox, "dev").client("s3"), sandbox.outputs["SpecsBucketName"])
    with pytest.raises(ClientError) as denied:
        specs.put("prod", (REPO / "environments" / "prod.yaml").read_text(), commit=OTHER_COMMIT)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_an_approver_who_requested_through_ci_cannot_approve_it(sandbox: Sandbox, deployments: Deployments) -> None:
    # GIVEN sit-lead starts SIT through CI (their GitHub login is in the identity map with their Slack id)
    token = sandbox.oidc.mint(environment="sit", sha=COMMIT, actor="bbws-sit-lead")
    started = start(sandbox, "sit", token, changeTicket="CHG-7", requestedBy="github:bbws-sit-lead")
    approval = deployments.approval(started["executionArn"])
    # THEN the approval shows a verified requester
    fields = str(deployments.approval_message(approval)["blocks"])
    assert "github:bbws-sit-lead (verified: GitHub OIDC token)" in fields
    # WHEN sit-lead clicks Approve in Slack THEN it is refused as self-approval
    assert deployments.click(approval, "sit-lead")["outcome"] == "self_approval"
    # AND the other approver's vote deploys SIT
    assert deployments.click(approval, "release-manager")["outcome"] == "approved"
    assert deployments.finish(started["executionArn"])["status"] == "SUCCEEDED"


def test_a_console_start_is_shown_as_claimed(deployments: Deployments) -> None:
    arn = deployments.start("sit", requested_by="alice", change_ticket="CHG-8")
    approval = deployments.approval(arn)
    assert "alice (claimed)" in str(deployments.approval_message(approval)["blocks"])
    deployments.click(approval, "release-manager", "reject")
    assert deployments.finish(arn)["error"] == "ApprovalRejected"
