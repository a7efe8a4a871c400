"""Guardrails: each account's rules, packaged with the functions, that a spec may tighten and never loosen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.documents import DocumentInvalid
from deployer.errors import GuardrailViolation
from deployer.guardrails import Guardrails, parse_guardrails
from deployer.spec import EnvironmentSpec, parse_spec
from sandbox.template import load_template

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "layers" / "deployer" / "deployer" / "guardrails.yaml"
DEV, SIT, PROD = "536580886816", "815856636111", "093646564004"


@pytest.fixture(scope="module")
def guardrails() -> Guardrails:
    # The document as packaged (the unit conftest adds the unit tests' account to what the functions read).
    return parse_guardrails(DOCUMENT.read_text(), str(DOCUMENT))


def _spec_data(environment: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "environments" / f"{environment}.yaml").read_text()))


def _spec(data: dict[str, Any]) -> EnvironmentSpec:
    return parse_spec(yaml.safe_dump(data), f"{data['environment']}.yaml")


def _prod(**policy: Any) -> EnvironmentSpec:
    data = _spec_data("prod")
    data["policy"] = {**data["policy"], **policy}
    return _spec(data)


def _refusal(guardrails: Guardrails, spec: EnvironmentSpec) -> list[str]:
    with pytest.raises(GuardrailViolation) as refused:
        guardrails.enforce(spec)
    return str(refused.value).splitlines()


def test_the_runbook_specs_meet_their_accounts_guardrails(guardrails: Guardrails) -> None:
    # GIVEN the packaged guardrails and the repository's specs
    # WHEN each spec is checked THEN none breaks a rule, and each account is the runbook's
    for environment, account in (("dev", DEV), ("sit", SIT), ("prod", PROD)):
        spec = _spec(_spec_data(environment))
        assert spec.account == account
        assert guardrails.violations(spec) == []
        assert guardrails.for_account(account).name == environment
    assert guardrails.role_arns() == [f"arn:aws:iam::{a}:role/bbws-deployer" for a in (PROD, DEV, SIT)]


def test_the_functions_may_assume_exactly_the_guardrail_roles(guardrails: Guardrails) -> None:
    # GIVEN template.yaml
    template = load_template(REPO / "template.yaml")
    # WHEN every function's sts:AssumeRole grant is collected
    grants = []
    for resource in template["Resources"].values():
        for policy in resource.get("Properties", {}).get("Policies", []):
            statements = policy.get("Statement", []) if isinstance(policy, dict) else []
            grants += [s["Resource"] for s in statements if s.get("Action") == "sts:AssumeRole"]
    # THEN each names the guardrails' roles, no more and no fewer
    assert grants
    assert all(sorted(grant) == guardrails.role_arns() for grant in grants)


def test_dev_spec_aimed_at_prod_account_names_every_loosened_rule(guardrails: Guardrails) -> None:
    # GIVEN DEV's spec with PROD's account and role
    data = _spec_data("dev")
    data.update(account=PROD, deploymentRoleArn=f"arn:aws:iam::{PROD}:role/bbws-deployer")
    # WHEN it is checked
    lines = _refusal(guardrails, _spec(data))
    # THEN the environment and each rule of PROD's floor it loosens are named, with the spec's value and the rule
    where = f"the guardrails of account {PROD} (prod)"
    assert lines == [
        f"environment: the spec has 'dev'; {where} allow only prod",
        f"policy.approvals.required: the spec has 0; {where} require at least 2",
        f"policy.changeTicket.required: the spec has false; {where} require true",
        f"policy.releaseTag.required: the spec has false; {where} require true",
        f"policy.promotion.from: the spec has none; {where} require 'sit'",
        f"policy.window: the spec has none; {where} require a window inside Mon-Thu 09:00-15:00 Africa/Johannesburg",
        f"policy.minimumNoticeHours: the spec has 0; {where} require at least 24",
    ]


@pytest.mark.parametrize(
    ("policy", "line"),
    [
        (
            {"approvals": {**_spec_data("prod")["policy"]["approvals"], "required": 1}},
            "policy.approvals.required: the spec has 1; the guardrails of account 093646564004 (prod) "
            "require at least 2",
        ),
        ({"window": None}, "policy.window: the spec has none;"),
        ({"promotion": None}, "policy.promotion.from: the spec has none;"),
        ({"promotion": {"from": "dev"}}, "policy.promotion.from: the spec has dev;"),
        ({"changeTicket": {"required": False}}, "policy.changeTicket.required: the spec has false;"),
        ({"releaseTag": {"required": False}}, "policy.releaseTag.required: the spec has false;"),
        ({"minimumNoticeHours": 1}, "policy.minimumNoticeHours: the spec has 1;"),
    ],
)
def test_prod_spec_loosening_one_rule_is_refused_naming_it(
    guardrails: Guardrails, policy: dict[str, Any], line: str
) -> None:
    # GIVEN PROD's spec with one rule loosened WHEN it is checked
    lines = _refusal(guardrails, _prod(**policy))
    # THEN exactly that rule is named
    assert len(lines) == 1
    assert lines[0].startswith(line)


@pytest.mark.parametrize(
    ("window", "line"),
    [
        ({"weekdays": ["mon", "fri", "sat"]}, "policy.window.weekdays: the spec adds fri, sat;"),
        ({"start": "08:00"}, "policy.window.start: the spec has 08:00;"),
        ({"end": "18:00"}, "policy.window.end: the spec has 18:00;"),
        ({"blackoutDates": ["2026-12-24"]}, "policy.window.blackoutDates: the spec lacks 2026-12-25, 2026-12-31, 2027"),
        ({"maxWaitHours": 2.1}, "policy.window.maxWaitHours: the spec has 2.1;"),
        ({"timeZone": "UTC"}, "policy.window.timeZone: the spec has UTC;"),
    ],
)
def test_prod_window_must_lie_inside_the_guardrail_window(
    guardrails: Guardrails, window: dict[str, Any], line: str
) -> None:
    # GIVEN PROD's window widened one way WHEN it is checked THEN that widening is named
    lines = _refusal(guardrails, _prod(window={**_spec_data("prod")["policy"]["window"], **window}))
    assert len(lines) == 1
    assert lines[0].startswith(line)


def test_an_emergency_cheaper_than_the_floor_is_refused() -> None:
    # GIVEN guardrails whose PROD floor prices an emergency at two extra approvals
    document = yaml.safe_load(DOCUMENT.read_text())
    document["accounts"][PROD]["floor"]["emergencyApprovals"] = 2
    strict = parse_guardrails(yaml.safe_dump(document), "strict.yaml")
    # WHEN PROD's spec offers an emergency for one THEN it is refused, naming both prices
    lines = _refusal(strict, _prod(emergency={"extraApprovals": 1, "channel": "#incidents"}))
    assert lines == [
        f"policy.emergency.extraApprovals: the spec has 1; the guardrails of account {PROD} (prod) require at least 2"
    ]
    # AND a spec with no emergency path at all (stricter) passes
    strict.enforce(_prod(emergency=None))


def test_a_tightened_prod_spec_passes(guardrails: Guardrails) -> None:
    # GIVEN PROD's spec with three approvals, a shorter window, more blackouts and more notice
    prod = _spec_data("prod")["policy"]
    spec = _prod(
        approvals={**prod["approvals"], "required": 3},
        window={
            **prod["window"],
            "weekdays": ["tue", "wed"],
            "start": "10:00",
            "end": "12:00",
            "maxWaitHours": 1,
            "blackoutDates": [*prod["window"]["blackoutDates"], "2027-02-02"],
        },
        minimumNoticeHours=48,
    )
    # WHEN it is checked THEN nothing is refused
    assert guardrails.violations(spec) == []
    guardrails.enforce(spec)


def test_an_approver_the_guardrails_do_not_know_is_refused(guardrails: Guardrails) -> None:
    # GIVEN PROD's spec that adds two approvers of its own choosing
    prod = _spec_data("prod")["policy"]["approvals"]
    extra = [{"slackUserId": "U0SOCKPUP1", "name": "sock-1"}, {"slackUserId": "U0SOCKPUP2", "name": "sock-2"}]
    lines = _refusal(guardrails, _prod(approvals={**prod, "approvers": [*prod["approvers"], *extra]}))
    # THEN they are named, with who the guardrails allow
    assert lines == [
        "policy.approvals.approvers: the spec has U0SOCKPUP1, U0SOCKPUP2; the guardrails of account 093646564004 "
        "(prod) allow only U0SENIOR01, U0SENIOR02, U0SENIOR03, U0HEADPLAT"
    ]


def test_an_account_without_guardrails_is_refused_naming_the_known_ones(guardrails: Guardrails) -> None:
    # GIVEN DEV's spec aimed at an account the guardrails do not list
    data = _spec_data("dev")
    data.update(account="111122223333", deploymentRoleArn="arn:aws:iam::111122223333:role/bbws-deployer")
    # WHEN it is checked THEN the account is refused, and the accounts the deployer serves are named
    assert _refusal(guardrails, _spec(data)) == [
        "account: 111122223333 has no guardrails, so nothing is deployed into it; the deployer deploys only into "
        "536580886816 (dev), 815856636111 (sit), 093646564004 (prod)"
    ]


def test_roles_and_regions_other_than_the_guardrails_are_refused(guardrails: Guardrails) -> None:
    # GIVEN DEV's spec with another role in DEV's account and a region DEV does not allow
    data = _spec_data("dev")
    data.update(deploymentRoleArn=f"arn:aws:iam::{DEV}:role/admin", regions={"primary": "us-east-1"})
    lines = _refusal(guardrails, _spec(data))
    # THEN both are named; and the role check before an assumption refuses the role too
    assert lines == [
        f"deploymentRoleArn: the spec has arn:aws:iam::{DEV}:role/admin; the guardrails of account {DEV} (dev) "
        f"allow only arn:aws:iam::{DEV}:role/bbws-deployer",
        f"regions.primary: the spec has us-east-1; the guardrails of account {DEV} (dev) allow only af-south-1",
    ]
    with pytest.raises(GuardrailViolation, match="allow only arn:aws:iam::536580886816:role/bbws-deployer"):
        guardrails.check_role(DEV, f"arn:aws:iam::{DEV}:role/admin")
    guardrails.check_role(DEV, f"arn:aws:iam::{DEV}:role/bbws-deployer")


@pytest.mark.parametrize(
    ("environment", "allowed"),
    [("dev", True), ("dev-feature-x", True), ("devx", False), ("dev-", False), ("sit", False)],
)
def test_dev_account_takes_dev_and_dev_prefixed_environments(
    guardrails: Guardrails, environment: str, allowed: bool
) -> None:
    assert guardrails.for_account(DEV).allows_environment(environment) is allowed


def test_a_document_with_a_role_outside_its_account_does_not_load() -> None:
    # GIVEN a document whose DEV entry names a role in another account
    text = DOCUMENT.read_text().replace(f"arn:aws:iam::{DEV}:role/bbws-deployer", f"arn:aws:iam::{PROD}:role/x")
    # WHEN it is parsed THEN it is refused, naming the entry
    with pytest.raises(DocumentInvalid, match=f"accounts.{DEV}.deploymentRoleArn is not in account {DEV}"):
        parse_guardrails(text, "guardrails.yaml")


def test_describe_prints_each_accounts_rules(guardrails: Guardrails) -> None:
    text = "\n".join(guardrails.describe())
    assert f"{PROD} (prod)" in text
    assert "  minimum approvals    2" in text
    assert "  promotion from       sit" in text
    assert "required, inside Mon-Thu 09:00-15:00 Africa/Johannesburg" in text
    assert "  environments         dev, dev-*" in text
