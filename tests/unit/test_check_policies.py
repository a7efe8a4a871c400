"""scripts/check_policies.py: every IAM policy of the project, resolved, linted by parliament."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.sam_roles import FUNCTION, STATE_MACHINE, role_logical_id
from sandbox.template import Resolver, load_template
from scripts.check_policies import (
    REVIEWED,
    SOURCES,
    Finding,
    LintedPolicy,
    Reviewed,
    Source,
    collect_policies,
    lint,
    policies_of,
    report,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def collected() -> tuple[dict[str, LintedPolicy], list[str]]:
    policies, skipped = collect_policies(REPO)
    return {p.label: p for p in policies}, skipped


@pytest.fixture(scope="module")
def policies(collected: tuple[dict[str, LintedPolicy], list[str]]) -> dict[str, LintedPolicy]:
    return collected[0]


def _statements(policy: LintedPolicy) -> list[dict[str, Any]]:
    found = policy.document["Statement"]
    return found if isinstance(found, list) else [found]


def _walk(value: Any) -> list[Any]:
    """Every key and scalar of a JSON-like value."""
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in (k, *_walk(v))]
    if isinstance(value, list):
        return [item for v in value for item in _walk(v)]
    return [value]


def _policy(document: dict[str, Any], owner: str = "BadRole", name: str = "bad") -> LintedPolicy:
    return LintedPolicy("tests.yaml", owner, name, "identity", document)


# --- what is linted -----------------------------------------------------------------------------


def test_every_sam_execution_role_is_linted(policies: dict[str, LintedPolicy]) -> None:
    # GIVEN template.yaml's serverless functions and state machine, whose roles SAM makes
    template = load_template(REPO / "template.yaml")
    serverless = [lid for lid, r in template["Resources"].items() if r["Type"] in (FUNCTION, STATE_MACHINE)]
    # WHEN the policies are collected
    # THEN each role's trust policy is there, and PreflightFunction's inline policy may assume the target role
    assert serverless
    for logical_id in serverless:
        assert f"template.yaml: {role_logical_id(logical_id)}/AssumeRolePolicyDocument" in policies
    preflight = policies["template.yaml: PreflightFunctionRole/PreflightFunctionRolePolicy0"]
    assert preflight.kind == "identity"
    roles = [
        f"arn:aws:iam::{account}:role/bbws-deployer" for account in ("093646564004", "536580886816", "815856636111")
    ]
    assert {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": roles} in _statements(preflight)
    # ... and the state machine's policy templates are expanded: one inline policy each (19 entries)
    machine = [label for label in policies if label.startswith("template.yaml: DeploymentStateMachineRole/")]
    assert len(machine) == 19 + 1  # its Policies entries and its trust policy


def test_the_target_account_roles_are_linted(policies: dict[str, LintedPolicy]) -> None:
    # GIVEN target-account/deployment-role.yaml, deployed in account 536580886816 for tooling account 123456789012
    # WHEN the policies are collected
    deploy = policies["target-account/deployment-role.yaml: DeploymentRole/provision-and-validate"]
    trust = policies["target-account/deployment-role.yaml: DeploymentRole/AssumeRolePolicyDocument"]
    # THEN the provision-and-validate policy is there with its parameters and GetAtt resolved
    by_sid = {s["Sid"]: s for s in _statements(deploy)}
    assert by_sid["ManageTables"]["Resource"] == "arn:aws:dynamodb:*:536580886816:table/Site-*"
    assert by_sid["PassReplicationRole"]["Resource"] == "arn:aws:iam::536580886816:role/bbws-s3-replication"
    # ... and so is the trust policy, checked as the role's resource policy
    (statement,) = _statements(trust)
    assert trust.kind == "trust"
    assert statement["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    assert statement["Resource"] == "arn:aws:iam::536580886816:role/bbws-deployer"
    assert "target-account/deployment-role.yaml: ReplicationRole/replicate-managed-buckets" in policies


def test_a_role_its_condition_leaves_out_is_still_linted(policies: dict[str, LintedPolicy]) -> None:
    # GIVEN CI's roles, which template.yaml creates only when GitHubRepository is set (not by default)
    template = load_template(REPO / "template.yaml")
    assert Resolver(template, "bbws-deployer", "af-south-1", "123456789012").condition("HasCiRole") is False
    for environment in ("dev", "sit", "prod"):
        role = f"GitHubCi{environment.capitalize()}Role"
        assert template["Resources"][role]["Condition"] == "HasCiRole"
        # WHEN the policies are collected
        trust = policies[f"template.yaml: {role}/AssumeRolePolicyDocument"]
        # THEN its policies are there, its Fn::If and Subs resolved to the OIDC provider and a real repository,
        # trusted for its own GitHub environment only and writing its own environment's spec only
        (statement,) = _statements(trust)
        assert statement["Principal"]["Federated"] == (
            "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
        )
        subject = statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"]
        assert subject == f"repo:example-org/bbws-deployer:environment:{environment}"
        writes = next(
            s
            for s in _statements(policies[f"template.yaml: {role}/start-deployments"])
            if s["Action"] == "s3:PutObject"
        )
        assert [r.rsplit(":::", 1)[1].split("/", 1)[1] for r in writes["Resource"]] == [
            f"environments/{environment}.yaml",
            f"commits/{environment}/*",
        ]


def test_resource_policies_are_linted(policies: dict[str, LintedPolicy]) -> None:
    # GIVEN the specs bucket's and the dead-letter queue's policies
    # WHEN the policies are collected
    bucket = policies["template.yaml: SpecsBucketPolicy/PolicyDocument"]
    queue = policies["template.yaml: NotifyDeadLetterQueuePolicy/PolicyDocument"]
    # THEN both are there as resource policies, on the ARNs of their bucket and queue
    assert bucket.kind == queue.kind == "resource"
    assert _statements(bucket)[0]["Resource"] == [
        "arn:aws:s3:::bbws-deployer-specs-123456789012-af-south-1",
        "arn:aws:s3:::bbws-deployer-specs-123456789012-af-south-1/*",
    ]
    assert _statements(queue)[0]["Resource"] == "arn:aws:sqs:af-south-1:123456789012:bbws-deployer-notify-dlq"


def test_no_intrinsic_is_left_in_any_linted_document(policies: dict[str, LintedPolicy]) -> None:
    # GIVEN every collected policy
    assert len(policies) > 50
    # WHEN its keys and values are walked
    # THEN none is an intrinsic (Ref, Fn::...) nor an unresolved ${...}, and every trust statement names its role
    for label, policy in policies.items():
        for item in _walk(policy.document):
            if isinstance(item, str):
                assert not item.startswith("Fn::"), (label, item)
                assert item != "Ref", (label, item)
                assert "${" not in item, (label, item)
        if policy.kind == "trust":
            assert all(s["Resource"].startswith("arn:aws:iam::") for s in _statements(policy)), label


def test_aws_managed_policies_are_skipped(collected: tuple[dict[str, LintedPolicy], list[str]]) -> None:
    # GIVEN roles that attach AWS's managed policies (SAM's basic execution role, X-Ray, API Gateway logging)
    policies, skipped = collected
    # WHEN the policies are collected
    # THEN those attachments are counted as skipped, and none is linted as ours
    assert "template.yaml: PreflightFunctionRole/arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole" in (
        skipped
    )
    assert any(s.endswith("AmazonAPIGatewayPushToCloudWatchLogs") for s in skipped)
    assert not [label for label in policies if ":iam::aws:policy/" in label]


# --- what is reported ---------------------------------------------------------------------------


def test_an_unknown_action_is_reported() -> None:
    # GIVEN a policy with a misspelt action
    policy = _policy(
        {
            "Version": "2012-10-17",
            "Statement": [{"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObjcet", "Resource": "arn:aws:s3:::b/*"}],
        }
    )
    # WHEN it is linted and reported
    findings = lint(policy)
    status, lines, summary = report(findings, [])
    # THEN parliament's finding is one line, keyed by the action, and the run fails
    assert [(f.issue, f.subject) for f in findings] == [("UNKNOWN_ACTION", "s3:GetObjcet")]
    assert lines == ["tests.yaml: BadRole/bad: UNKNOWN_ACTION LOW: statement Read: Unknown action s3:GetObjcet"]
    assert status == 1
    assert summary == "1 findings: 0 reviewed, 1 new; 0 stale exceptions"


def test_a_malformed_statement_is_reported() -> None:
    # GIVEN a statement with no Effect
    policy = _policy({"Version": "2012-10-17", "Statement": [{"Action": "s3:GetObject", "Resource": "*"}]})
    # WHEN it is linted
    findings = lint(policy)
    # THEN parliament calls it malformed, with its severity
    assert [(f.issue, f.severity) for f in findings] == [("MALFORMED", "HIGH")]
    assert "does not contain an Effect" in findings[0].detail


def test_a_bad_policy_in_a_template_is_reported_after_resolving(tmp_path: Path) -> None:
    # GIVEN a template whose function's policy has an unknown action on a bucket it names with !Sub,
    # and a role whose trust policy misspells its action
    (tmp_path / "bad.yaml").write_text(
        """
Resources:
  Bucket:
    Type: AWS::S3::Bucket
  Reader:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - Statement:
            - Effect: Allow
              Action: s3:GetObjcet
              Resource: !Sub ${Bucket.Arn}/*
  Assumed:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {Service: lambda.amazonaws.com}
            Action: sts:AssumeRol
"""
    )
    # WHEN its policies are collected and linted
    policies, _ = policies_of(Source("bad.yaml", "stack", "123456789012"), tmp_path)
    findings = [f for p in policies for f in lint(p)]
    # THEN the resolved resource is an S3 object ARN, and both bad actions are reported where they are
    reader = next(p for p in policies if p.owner == "ReaderRole" and p.kind == "identity")
    assert _statements(reader)[0]["Resource"] == "arn:aws:s3:::stack-Bucket/*"
    unknown = {(f.policy, f.subject) for f in findings if f.issue == "UNKNOWN_ACTION"}
    assert unknown == {
        ("bad.yaml: ReaderRole/ReaderRolePolicy0", "s3:GetObjcet"),
        ("bad.yaml: Assumed/AssumeRolePolicyDocument", "sts:AssumeRol"),
    }


# --- reviewed exceptions ------------------------------------------------------------------------


def _finding(policy: str = "tests.yaml: A/p", subject: str = "s3:GetObjcet") -> Finding:
    return Finding(policy, "UNKNOWN_ACTION", "LOW", subject, f"Unknown action {subject}")


def test_a_review_covers_only_its_own_issue_policy_and_subject() -> None:
    # GIVEN a review of one unknown action in one policy
    review = Reviewed("UNKNOWN_ACTION", "tests.yaml: A/p", "s3:GetObjcet", "a reason")
    # WHEN the same action is found in that policy and in another, and another action in that policy
    status, lines, _ = report(
        [_finding(), _finding(policy="tests.yaml: B/p"), _finding(subject="s3:PutObjcet")], [review]
    )
    # THEN only the first is reviewed; the others fail the run
    assert status == 1
    assert lines == [
        "tests.yaml: A/p: UNKNOWN_ACTION LOW: Unknown action s3:GetObjcet  (reviewed)",
        "tests.yaml: A/p: UNKNOWN_ACTION LOW: Unknown action s3:PutObjcet",
        "tests.yaml: B/p: UNKNOWN_ACTION LOW: Unknown action s3:GetObjcet",
    ]


def test_reviewed_findings_pass_and_a_stale_review_fails() -> None:
    # GIVEN a review for a finding, and one for a finding that is gone
    review = Reviewed("UNKNOWN_ACTION", "tests.yaml: A/p", "s3:GetObjcet", "a reason")
    stale = Reviewed("UNKNOWN_ACTION", "tests.yaml: A/p", "s3:Gone", "fixed since")
    # WHEN reported with and without the stale one
    # THEN only every finding reviewed and every review used passes
    assert report([_finding()], [review])[0] == 0
    status, lines, summary = report([_finding()], [review, stale])
    assert status == 1
    assert lines[-1].startswith("stale reviewed exception")
    assert "s3:Gone" in lines[-1]
    assert summary == "1 findings: 1 reviewed, 0 new; 1 stale exceptions"


def test_every_review_is_precise_and_says_why() -> None:
    # GIVEN the reviewed exceptions
    # WHEN they are read
    # THEN each names one policy of a linted file, no two are the same, and each has a one-line reason
    files = {source.path for source in SOURCES}
    assert len(set(REVIEWED)) == len(REVIEWED)
    for review in REVIEWED:
        assert review.policy.split(": ", 1)[0] in files, review
        assert "/" in review.policy.split(": ", 1)[1], review
        assert review.reason.strip(), review
        assert "\n" not in review.reason, review


def test_finding_lines_follow_the_documented_format() -> None:
    # GIVEN a finding parliament makes about several actions at once
    policy = _policy(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"}]}
    )
    # WHEN it is linted
    findings = lint(policy)
    # THEN it is split per action, each line "file: Owner/Policy: ISSUE severity: detail"
    assert [(f.issue, f.subject) for f in findings] == [("RESOURCE_STAR", "s3:GetObject")]
    assert findings[0].line().startswith("tests.yaml: BadRole/bad: RESOURCE_STAR LOW: statement #1: s3:GetObject")
