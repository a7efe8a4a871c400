"""Guardrails: each target account's rules, pinned with the stack, that no spec can loosen.

A spec (``environments/<env>.yaml``) is written by the people and the CI it governs, so
what protects an account cannot live in it. ``guardrails.yaml`` beside this module is
packaged with the functions and changes only when the stack is deployed. For each
account it names the environments allowed into it, the one deployment role assumed
there, the regions, and the floor of the policy. ``enforce`` refuses, with
``GuardrailViolation``, a spec whose account has no entry or that loosens any rule; it
runs when a deployment starts, before anything calls the target account, and
``check_role`` runs again before every role assumption.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import Field, model_validator

from deployer.documents import packaged_document, parse_document
from deployer.errors import GuardrailViolation
from deployer.spec import (
    ACCOUNT_ID,
    REGION,
    SLACK_USER_ID,
    WEEKDAYS,
    DeploymentWindow,
    EnvironmentSpec,
    Model,
    Policy,
)
from deployer.windows import describe_window

DOCUMENT = "guardrails.yaml"
# An environment name, or a prefix of names ending in "-*".
ENVIRONMENT_PATTERN = r"^[a-z][a-z0-9-]{1,31}(-\*)?$"
# A git branch name, or a prefix of names ending in "-*".
BRANCH_PATTERN = r"^[A-Za-z0-9._/-]{1,200}(-\*)?$"
BRANCH_REF_PREFIX = "refs/heads/"
ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$"


class Floor(Model):
    """The weakest policy a spec deployed into the account may have."""

    minimum_approvals: Annotated[int, Field(ge=0, le=10)] = 0
    eligible_approvers: list[Annotated[str, Field(pattern=SLACK_USER_ID)]] | None = None
    change_ticket_required: bool = False
    release_tag_required: bool = False
    promotion_from: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,31}$")] | None = None
    window: DeploymentWindow | None = None
    minimum_notice_hours: Annotated[float, Field(ge=0, le=24 * 30)] = 0
    # An emergency (deploying without the notice) costs at least this many extra approvals.
    emergency_approvals: Annotated[int, Field(ge=1, le=10)] = 1


class AccountGuardrails(Model):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    environments: Annotated[list[Annotated[str, Field(pattern=ENVIRONMENT_PATTERN)]], Field(min_length=1)]
    deployment_role_arn: Annotated[str, Field(pattern=ROLE_ARN)]
    regions: Annotated[list[Annotated[str, Field(pattern=REGION)]], Field(min_length=1)]
    # The branches CI may deploy into the account from: the GitHub OIDC token's ref must name one.
    branches: Annotated[list[Annotated[str, Field(pattern=BRANCH_PATTERN)]], Field(min_length=1)]
    floor: Floor = Floor()

    def allows_environment(self, environment: str) -> bool:
        return _matches(environment, self.environments)

    def allows_ref(self, ref: str) -> bool:
        """Whether a git ref (``refs/heads/<branch>``) is one of the account's deployment branches."""
        return ref.startswith(BRANCH_REF_PREFIX) and _matches(ref.removeprefix(BRANCH_REF_PREFIX), self.branches)


def _matches(name: str, patterns: list[str]) -> bool:
    """``name`` is one of ``patterns``, or has the prefix of one ending in ``-*`` and more after it."""
    return any(
        name == pattern or (pattern.endswith("-*") and name.startswith(pattern[:-1]) and len(name) >= len(pattern))
        for pattern in patterns
    )


class Guardrails(Model):
    accounts: dict[Annotated[str, Field(pattern=ACCOUNT_ID)], AccountGuardrails]

    @model_validator(mode="after")
    def _roles_in_their_accounts(self) -> Guardrails:
        for account, rules in self.accounts.items():
            if rules.deployment_role_arn.split(":")[4] != account:
                raise ValueError(f"accounts.{account}.deploymentRoleArn is not in account {account}")
        return self

    def role_arns(self) -> list[str]:
        """Every role the tooling functions may assume, sorted."""
        return sorted(rules.deployment_role_arn for rules in self.accounts.values())

    def for_account(self, account: str) -> AccountGuardrails:
        rules = self.accounts.get(account)
        if rules is None:
            raise GuardrailViolation(
                f"account: {account} has no guardrails, so nothing is deployed into it; "
                f"the deployer deploys only into {self._known()}"
            )
        return rules

    def promotion_source(self, environment: str) -> str | None:
        """The environment the guardrails say ``environment`` is promoted from (its account's floor), if any."""
        return next((r.floor.promotion_from for r in self.accounts.values() if r.allows_environment(environment)), None)

    def check_role(self, account: str, role_arn: str) -> None:
        """Refuse to assume any role but the account's guardrail role."""
        rules = self.for_account(account)
        if role_arn != rules.deployment_role_arn:
            raise GuardrailViolation(
                f"deploymentRoleArn: the spec has {role_arn}; the guardrails of account {account} "
                f"({rules.name}) allow only {rules.deployment_role_arn}"
            )

    def violations(self, spec: EnvironmentSpec) -> list[str]:
        """Every rule the spec breaks, one line each naming the field, the spec's value and the guardrail."""
        rules = self.for_account(spec.account)
        where = f"the guardrails of account {spec.account} ({rules.name})"
        found = []
        if not rules.allows_environment(spec.environment):
            found.append(
                f"environment: the spec has {spec.environment!r}; {where} allow only {', '.join(rules.environments)}"
            )
        if spec.deployment_role_arn != rules.deployment_role_arn:
            found.append(
                f"deploymentRoleArn: the spec has {spec.deployment_role_arn}; {where} allow only "
                f"{rules.deployment_role_arn}"
            )
        for role in ("primary", "failover"):
            region = getattr(spec.regions, role)
            if region is not None and region not in rules.regions:
                found.append(f"regions.{role}: the spec has {region}; {where} allow only {', '.join(rules.regions)}")
        found += [f"policy.{line}; {where} {rule}" for line, rule in _policy_violations(spec.policy, rules.floor)]
        return found

    def enforce(self, spec: EnvironmentSpec) -> None:
        found = self.violations(spec)
        if found:
            raise GuardrailViolation("\n".join(found))

    def _known(self) -> str:
        return ", ".join(f"{account} ({rules.name})" for account, rules in self.accounts.items())

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def describe(self) -> list[str]:
        """The guardrails as text, one account after another (``deployer guardrails``)."""
        lines = []
        for account, rules in self.accounts.items():
            floor = rules.floor
            lines += [
                f"{account} ({rules.name})",
                f"  environments         {', '.join(rules.environments)}",
                f"  deployment role      {rules.deployment_role_arn}",
                f"  regions              {', '.join(rules.regions)}",
                f"  CI branches          {', '.join(rules.branches)}",
                f"  minimum approvals    {floor.minimum_approvals}",
                "  eligible approvers   "
                + (", ".join(floor.eligible_approvers) if floor.eligible_approvers is not None else "any"),
                f"  change ticket        {'required' if floor.change_ticket_required else 'optional'}",
                f"  release tag          {'required' if floor.release_tag_required else 'optional'}",
                f"  promotion from       {floor.promotion_from or 'not required'}",
                f"  window               {_describe_bound(floor.window)}",
                f"  minimum notice       {floor.minimum_notice_hours:g} hours",
                f"  emergency approvals  at least {floor.emergency_approvals} extra",
            ]
        return lines


def _policy_violations(policy: Policy, floor: Floor) -> list[tuple[str, str]]:
    """(``<field>: the spec has <value>``, what the guardrail demands) for each loosened rule."""
    found = []
    approvals = policy.approvals
    if approvals.required < floor.minimum_approvals:
        found.append(
            (f"approvals.required: the spec has {approvals.required}", f"require at least {floor.minimum_approvals}")
        )
    if floor.eligible_approvers is not None:
        eligible = set(floor.eligible_approvers)
        for name, people in (
            ("approvers", approvals.approvers),
            ("escalationApprovers", approvals.escalation_approvers),
        ):
            strangers = [p.slack_user_id for p in people if p.slack_user_id not in eligible]
            if strangers:
                found.append(
                    (
                        f"approvals.{name}: the spec has {', '.join(strangers)}",
                        f"allow only {', '.join(floor.eligible_approvers)}",
                    )
                )
    if floor.change_ticket_required and not policy.change_ticket.required:
        found.append(("changeTicket.required: the spec has false", "require true"))
    if floor.release_tag_required and not policy.release_tag.required:
        found.append(("releaseTag.required: the spec has false", "require true"))
    if floor.promotion_from is not None:
        source = policy.promotion.from_ if policy.promotion else None
        if source != floor.promotion_from:
            found.append((f"promotion.from: the spec has {source or 'none'}", f"require {floor.promotion_from!r}"))
    if floor.window is not None:
        found += _window_violations(policy.window, floor.window)
    if policy.minimum_notice_hours < floor.minimum_notice_hours:
        found.append(
            (
                f"minimumNoticeHours: the spec has {policy.minimum_notice_hours:g}",
                f"require at least {floor.minimum_notice_hours:g}",
            )
        )
    if policy.emergency is not None and policy.emergency.extra_approvals < floor.emergency_approvals:
        found.append(
            (
                f"emergency.extraApprovals: the spec has {policy.emergency.extra_approvals}",
                f"require at least {floor.emergency_approvals}",
            )
        )
    return found


def _window_violations(window: DeploymentWindow | None, bound: DeploymentWindow) -> list[tuple[str, str]]:
    """A spec's window must lie inside the guardrail's: fewer days and hours, more blackouts, less waiting."""
    if window is None:
        return [("window: the spec has none", f"require a window inside {describe_window(bound)}")]
    found = []
    if window.time_zone != bound.time_zone:
        found.append((f"window.timeZone: the spec has {window.time_zone}", f"require {bound.time_zone}"))
    extra_days = [d for d in WEEKDAYS if d in window.weekdays and d not in bound.weekdays]
    if extra_days:
        found.append(
            (f"window.weekdays: the spec adds {', '.join(extra_days)}", f"allow only {', '.join(bound.weekdays)}")
        )
    if window.start < bound.start:
        found.append((f"window.start: the spec has {window.start}", f"allow no start before {bound.start}"))
    if window.end > bound.end:
        found.append((f"window.end: the spec has {window.end}", f"allow no end after {bound.end}"))
    missing = sorted(set(bound.blackout_dates) - set(window.blackout_dates))
    if missing:
        found.append(
            (
                f"window.blackoutDates: the spec lacks {', '.join(d.isoformat() for d in missing)}",
                "require every one of their blackout dates",
            )
        )
    if window.max_wait_hours > bound.max_wait_hours:
        found.append(
            (f"window.maxWaitHours: the spec has {window.max_wait_hours:g}", f"allow at most {bound.max_wait_hours:g}")
        )
    return found


def _describe_bound(window: DeploymentWindow | None) -> str:
    if window is None:
        return "not required"
    blackouts = f", blackout {', '.join(d.isoformat() for d in window.blackout_dates)}" if window.blackout_dates else ""
    return f"required, inside {describe_window(window)}{blackouts}, waiting at most {window.max_wait_hours:g} h"


def parse_guardrails(text: str, source: str) -> Guardrails:
    return parse_document(Guardrails, text, source)


@cache
def packaged() -> Guardrails:
    """The guardrails deployed with these functions, read once per container."""
    return packaged_document(Guardrails, DOCUMENT)
