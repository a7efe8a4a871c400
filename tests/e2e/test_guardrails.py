"""Guardrails end to end: each account's rules, pinned with the stack, refuse specs that loosen them.

Every refusal happens at StartDeployment, before any call to the target account: the
sandbox's call counter sees none, and the account stays empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from deployer_cli import client
from tests.sandbox_fixtures import REPO, TARGET_ACCOUNTS, Deployments, deployer

# SIT only receives what DEV ran (its promotion rule): DEV deploys first, once per module.
pytestmark = pytest.mark.usefixtures("promoted_to_sit")

DEV, PROD = TARGET_ACCOUNTS["dev"], TARGET_ACCOUNTS["prod"]


def write_spec(deployments: Deployments, environment: str, data: dict[str, Any]) -> None:
    """A spec in the test's spec directory, which Deployments.start pushes instead of environments/."""
    (deployments.spec_dir / f"{environment}.yaml").write_text(yaml.safe_dump(data))


def spec_data(environment: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "environments" / f"{environment}.yaml").read_text()))


def prod_spec(deployments: Deployments, **policy: Any) -> None:
    data = spec_data("prod")
    data["policy"] = {k: v for k, v in {**data["policy"], **policy}.items() if v is not None}
    write_spec(deployments, "prod", data)


@contextmanager
def untouched(deployments: Deployments, account: str) -> Iterator[None]:
    """Whatever runs inside makes no call into ``account``, and leaves it without buckets or tables."""
    before = deployments.calls_into(account)
    yield
    assert deployments.calls_into(account) == before
    assert deployments.target_client("s3", account=account).list_buckets()["Buckets"] == []
    for region in ("af-south-1", "eu-west-1"):
        assert deployments.target_client("dynamodb", account=account, region=region).list_tables()["TableNames"] == []


def refused(result: dict[str, Any]) -> list[str]:
    assert result["status"] == "FAILED", result
    assert result["error"] == "GuardrailViolation", result
    return str(result["cause"]).splitlines()


def test_dev_spec_aimed_at_prod_account_is_refused_and_prod_stays_empty(deployments: Deployments) -> None:
    # GIVEN DEV's spec, edited to name PROD's account and deployment role
    data = spec_data("dev")
    data.update(account=PROD, deploymentRoleArn=f"arn:aws:iam::{PROD}:role/bbws-deployer")
    write_spec(deployments, "dev", data)
    # WHEN it is deployed
    with untouched(deployments, PROD):
        result = deployments.run("dev")
    # THEN it is refused with GuardrailViolation, naming the environment and each loosened rule of PROD's
    lines = refused(result)
    assert lines[0] == f"environment: the spec has 'dev'; the guardrails of account {PROD} (prod) allow only prod"
    assert any(line.startswith("policy.approvals.required: the spec has 0;") for line in lines)
    assert "Preflight" not in deployments.states_entered(result["executionArn"])
    (deployments.spec_dir / "dev.yaml").unlink()


def test_the_api_refuses_it_the_same_way(deployments: Deployments) -> None:
    # GIVEN CI pushed, for a commit, DEV's spec naming PROD's account
    data = spec_data("dev")
    data.update(account=PROD, deploymentRoleArn=f"arn:aws:iam::{PROD}:role/bbws-deployer")
    commit = "c1" * 20
    deployments.stack.specs.put("dev", yaml.safe_dump(data), commit=commit)
    # WHEN CI asks the API to deploy that commit
    with untouched(deployments, PROD):
        request = {"environment": "dev", "requestedBy": "ci", "specVersion": commit, "clientToken": "guardrails-1"}
        started = client.api_call(deployments.stack, "POST", "/deployments", request)
        view = client.api_wait(deployments.stack, started["deploymentId"], poll_seconds=0.1)
    # THEN the deployment it started ends GuardrailViolation, before preflight
    assert (view["status"], view["error"]) == ("FAILED", "GuardrailViolation")
    assert view["cause"].startswith("environment: the spec has 'dev'; the guardrails of account 093646564004")


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (
            {"approvals": {**spec_data("prod")["policy"]["approvals"], "required": 1}},
            "policy.approvals.required: the spec has 1; the guardrails of account 093646564004 (prod) "
            "require at least 2",
        ),
        ({"window": None}, "policy.window: the spec has none;"),
        ({"promotion": None}, "policy.promotion.from: the spec has none;"),
    ],
    ids=["fewer-approvals", "no-window", "no-promotion-source"],
)
def test_prod_spec_below_its_floor_is_refused_naming_the_field(
    deployments: Deployments, policy: dict[str, Any], field: str
) -> None:
    # GIVEN PROD's spec with one rule below its account's floor
    prod_spec(deployments, **policy)
    # WHEN it is deployed (through the CLI's path: spec pushed, execution started)
    with untouched(deployments, PROD):
        result = deployments.run("prod", requested_by="alice", change_ticket="CHG-500")
    # THEN it is refused, naming exactly that field, the spec's value and the guardrail
    lines = refused(result)
    assert len(lines) == 1
    assert lines[0].startswith(field)


def test_account_without_guardrails_is_refused(deployments: Deployments) -> None:
    # GIVEN a copy of DEV's spec aimed at an account no guardrail lists
    nowhere = "111122223333"
    deployments.spec("dev-e2e-nowhere", account=nowhere, deploymentRoleArn=f"arn:aws:iam::{nowhere}:role/bbws-deployer")
    # WHEN it is deployed
    with untouched(deployments, nowhere):
        result = deployments.run("dev-e2e-nowhere")
    # THEN it is refused, naming the account and the ones the deployer serves
    assert refused(result) == [
        f"account: {nowhere} has no guardrails, so nothing is deployed into it; the deployer deploys only into "
        f"{DEV} (dev), 815856636111 (sit), {PROD} (prod)"
    ]


def test_a_tightened_prod_spec_passes_with_three_approvals(deployments: Deployments) -> None:
    # GIVEN SIT ran PROD's resources spec, and PROD's spec demands three approvals (tighter than its floor)
    sit = deployments.start("sit", requested_by="alice", change_ticket="CHG-501")
    deployments.click(deployments.approval(sit), "sit-lead")
    assert deployments.finish(sit)["status"] == "SUCCEEDED"
    prod_spec(deployments, approvals={**spec_data("prod")["policy"]["approvals"], "required": 3})
    deployments.announce("prod", "CHG-501")
    # WHEN PROD is deployed and three approvers approve
    arn = deployments.start("prod", requested_by="alice", change_ticket="CHG-501")
    approval = deployments.approval(arn)
    assert approval.required == 3
    deployments.approve(approval, "senior-engineer-1", "senior-engineer-2", "senior-engineer-3")
    # THEN it deploys
    result = deployments.finish(arn)
    assert result["status"] == "SUCCEEDED", result
    assert deployments.target_client("s3", account=PROD).head_bucket(Bucket="bbws-prod-data-bucket")


def test_lowering_prod_quorum_needs_the_previous_policys_quorum(deployments: Deployments) -> None:
    # GIVEN PROD last succeeded under three approvals; its spec now asks for the floor's two
    prod_spec(deployments)
    deployments.announce("prod", "CHG-502")
    arn = deployments.start("prod", requested_by="alice", change_ticket="CHG-502")
    approval = deployments.approval(arn)
    # THEN the approval message shows the change and that the previous policy's quorum must approve too
    message = deployments.approval_message(approval)
    change = next(b for b in message["blocks"] if b.get("block_id") == "policy_change")["text"]["text"]
    assert "policy.approvals.required: 3 -&gt; 2" in change
    assert "3 of the previous policy's approvers" in change
    # WHEN two approve, the new policy's quorum, it still waits
    deployments.click(approval, "senior-engineer-1")
    answer = deployments.click(approval, "senior-engineer-2")
    assert answer["outcome"] == "recorded"
    assert "2 of 2 approvals; 2 of 3 under the previous policy" in answer["message"]
    # AND the third previous approver's vote lets it proceed
    assert deployments.click(approval, "senior-engineer-3")["outcome"] == "approved"
    result = deployments.finish(arn)
    assert result["status"] == "SUCCEEDED", result
    record = deployments.stack.records.get(arn.rsplit(":", 1)[1])
    assert record is not None
    assert record["policyChange"]["diff"] == ["policy.approvals.required: 3 -> 2"]


def test_changing_the_approvers_needs_the_previous_approvers_too(deployments: Deployments) -> None:
    # GIVEN a DEV-account environment that succeeded with U0APPROVEA as its approver
    environment = "dev-e2e-handover"
    deployments.approval_spec(environment, "U0APPROVEA", "C0DEVAPPR1")
    first = deployments.start(environment)
    deployments.click(deployments.approval(first), "U0APPROVEA")
    assert deployments.finish(first)["status"] == "SUCCEEDED"
    # WHEN its spec replaces the approver with U0APPROVEB and is deployed
    deployments.approval_spec(environment, "U0APPROVEB", "C0DEVAPPR1")
    arn = deployments.start(environment)
    approval = deployments.approval(arn)
    # THEN the new approver alone is not enough
    assert deployments.click(approval, "U0APPROVEB")["outcome"] == "recorded"
    # AND the previous approver's consent completes it
    assert deployments.click(approval, "U0APPROVEA")["outcome"] == "approved"
    assert deployments.finish(arn)["status"] == "SUCCEEDED"


def test_dropping_approvals_still_waits_for_the_previous_policys_approver(deployments: Deployments) -> None:
    # GIVEN the environment above, last deployed with U0APPROVEB as its approver; its spec now requires none
    environment = "dev-e2e-handover"
    deployments.spec(environment, resources={"buckets": [{"name": f"bbws-{environment}-bucket"}]})
    # WHEN it is deployed THEN it waits for approval in the previous policy's channel
    arn = deployments.start(environment)
    approval = deployments.approval(arn)
    assert approval.channel == "C0DEVAPPR1"
    assert (approval.required, approval.previous_required) == (0, 1)
    # AND only the last successful policy's approver may decide (an approver of an older one may not)
    assert deployments.click(approval, "U0APPROVEA")["outcome"] == "not_authorized"
    assert deployments.click(approval, "U0APPROVEB", "reject")["outcome"] == "rejected"
    result = deployments.finish(arn)
    assert result["error"] == "ApprovalRejected"
    assert result["mutatingCalls"] == 0


def test_deployer_guardrails_prints_what_the_stack_enforces(deployments: Deployments) -> None:
    # WHEN `deployer guardrails` asks the running stack (through its API)
    shown = deployer(deployments, "guardrails")
    as_json = deployer(deployments, "guardrails", "--json")
    # THEN it prints each account's rules, and the JSON is the packaged document
    assert shown.returncode == 0, shown.stderr
    assert f"{PROD} (prod)" in shown.stdout
    assert "  minimum approvals    2" in shown.stdout
    assert "  environments         dev, dev-*" in shown.stdout
    document = yaml.safe_load(as_json.stdout)
    assert document["accounts"][PROD]["floor"]["promotionFrom"] == "sit"
    assert document["accounts"][DEV]["environments"] == ["dev", "dev-*"]
