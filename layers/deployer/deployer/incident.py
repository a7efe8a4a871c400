"""Runbook section 9 as code: classify a failure, decide rollback or fix forward, and write the incident report.

Classification and decision are pure: they read failed checks, the execution's error and
the environment's ``RollbackPolicy`` (policy data), and call nothing. The report is a pure
function of what the deployment recorded, so ``deployer report`` and the rollback function
render the same Markdown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from deployer import errors
from deployer.records import iso
from deployer.spec import RUNBOOK_CRITERIA, Criterion, RollbackPolicy

# "recheck": a rollback criterion with a grace period, still inside it: the state machine waits and runs the
# deployment's steps from Provision again, then decides anew (recovered: fix forward; still failing: roll back).
DecisionResponse = Literal["rollback", "fixForward", "none", "recheck"]

# Runbook order: the first rollback criterion in this order decides (data loss before security, ...).
CRITERIA_ORDER: tuple[Criterion, ...] = tuple(RUNBOOK_CRITERIA)

# Runbook section 9, word for word: (heading, text).
RUNBOOK_WORDING: dict[Criterion, tuple[str, str]] = {
    "dataLossRisk": ("Data Loss Risk", "Write operations failing for more than 5 minutes"),
    "securityExposure": ("Security Breach", "Unauthorized access detected in logs"),
    "serviceUnavailable": ("Service Unavailability", "Application cannot access S3 or DynamoDB"),
    "replicationFailure": ("Cross-Region Failure", "Replication not functioning (PROD only)"),
    "configurationError": ("Configuration Errors", "Wrong IAM policies causing access denial"),
    "resourceExhaustion": ("Resource Exhaustion", "Unexpected AWS service limits hit"),
    "transientConnectivity": ("Minor Connectivity Issues", "Temporary network glitches (resolve in <5 min)"),
    "monitoringGap": ("Monitoring Gaps", "Missing CloudWatch metrics (non-critical)"),
    "documentationIssue": ("Documentation Issues", "Runbook or label inconsistencies"),
    "performanceDegradation": ("Performance Degradation", "Elevated latency under investigation"),
}

# Errors raised before anything is changed: there is nothing to roll back or fix, so no finding.
# Names come from the classes so a rename in errors.py cannot silently break the match.
NO_CHANGE_ERRORS = frozenset(
    cls.__name__
    for cls in (
        errors.InputInvalid,
        errors.SpecInvalid,
        errors.SpecNotFound,
        errors.GuardrailViolation,
        errors.LockHeld,
        errors.LockLost,
        errors.PreflightFailed,
        errors.PlanRejected,
        errors.SlackNotConfigured,
        errors.ApprovalRejected,
        errors.ApprovalExpired,
        errors.PlanChangedSinceApproval,
        errors.ApprovalNotFound,
        errors.ApprovalForged,
        errors.OutsideDeploymentWindow,
        errors.ScheduleRefused,
        errors.NoticeTooShort,
        errors.PromotionRequired,
    )
)
# Where an error names no resource, its finding is about the deployment as a whole.
DEPLOYMENT = "deployment"

_SECURITY = re.compile(
    # "BlockPublicPolicy" or "block public access" name the protection, not an exposure.
    r"(?<!block)(?<!block )public[ -]?(access|read|write|acl|policy|bucket)|publicly"
    r"|\bIsPublic\b|AllUsers|AuthenticatedUsers"
    r"""|["']?Principal["']?\s*[:=]\s*(\{\s*["']?AWS["']?\s*:\s*)?\[?\s*["']?\*"""
    r"|unknown[ -](account|principal)|untrusted account",
    re.IGNORECASE,
)
_ACCESS_DENIED = re.compile(
    r"AccessDenied|Access Denied|\(403\)|\b403\b|Forbidden|not authori[sz]ed|UnauthorizedOperation", re.IGNORECASE
)
_EXHAUSTION = re.compile(
    r"LimitExceeded|TooManyBuckets|quota|limit (exceeded|reached)|exceeds? the (account )?limit", re.IGNORECASE
)
# raise_if_failed's message: "<region> <resource> <check>: <detail>", one failed check per line.
_VALIDATION_LINE = re.compile(r"^(?P<region>\S+) (?P<resource>\S+) (?P<name>[\w.-]+): (?P<detail>.*)$")
# The criteria in this deployer's terms, with the policy's grace periods and threshold filled in.
_WHY: dict[Criterion, str] = {
    "dataLossRisk": "writes failing beyond the {write:g}-minute grace period",
    "securityExposure": "public access possible, or a policy granting public or unknown-account access",
    "serviceUnavailable": "S3 or DynamoDB cannot be reached or used",
    "replicationFailure": "cross-region replication not functioning",
    "configurationError": "access denied by a policy this deployment changed",
    "resourceExhaustion": "an AWS service limit was hit",
    "transientConnectivity": "connectivity failures that cleared within {transient:g} minutes",
    "monitoringGap": "missing monitoring (non-critical)",
    "documentationIssue": "documentation or label inconsistencies",
    "performanceDegradation": "latency above {latency} ms, under investigation",
}
_FAILURE_EVENT = re.compile(r"(Failed|TimedOut|Aborted)$")
_CELL_LIMIT = 300


@dataclass(frozen=True)
class Finding:
    criterion: Criterion
    check: str | None
    resource: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            criterion=data["criterion"],
            check=data.get("check"),
            resource=str(data.get("resource", "")),
            detail=str(data.get("detail", "")),
        )


@dataclass(frozen=True)
class Decision:
    response: DecisionResponse
    criterion: Criterion | None
    findings: list[Finding]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "response": self.response,
            "criterion": self.criterion,
            "findings": [f.to_dict() for f in self.findings],
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        return cls(
            response=data["response"],
            criterion=data.get("criterion"),
            findings=[Finding.from_dict(f) for f in data.get("findings", [])],
            reason=str(data.get("reason", "")),
        )


# ---------------------------------------------------------------- classification


def classify(
    failed_checks: list[dict[str, Any]],
    error: str | None,
    cause: str | None,
    changed_policies: set[str],
    applied: bool = False,
) -> list[Finding]:
    """Map failed checks and the execution's error to runbook section 9 criteria, one finding per failure.

    Per check, the first rule that matches wins: recovered on retry (transient connectivity);
    public access or a public/unknown-account grant (security exposure); access denied, from a
    resource this deployment changed (configuration error) or otherwise (service unavailable);
    limits hit (resource exhaustion); then by check name (write-read-delete: data-loss risk,
    replication/replica: replication failure, tags: documentation, monitoring, performance).
    Anything else (a function's timeout, retries exhausted, an error no rule knows) fails safe
    as service unavailable. Errors that change nothing themselves (lock, preflight, approvals, a
    refused plan, ...) yield no finding while nothing was ``applied``; after an earlier step or
    region changed something, a refused plan left the deployment half-applied (configuration
    error). ``LockLost`` never does: another deployment holds the environment, and rolling back
    under it would change what it deploys. ``ValidationFailed`` is covered by its checks.
    """
    findings = [
        _classify_check(check, changed_policies)
        for check in failed_checks
        if not check.get("passed", False) or check.get("recovered")
    ]
    findings += _classify_error(error, cause, changed_policies, covered_by_checks=bool(findings), applied=applied)
    return list(dict.fromkeys(findings))


def _classify_check(check: Mapping[str, Any], changed: set[str]) -> Finding:  # noqa: PLR0911 - rules in a fixed order
    name = str(check.get("name") or "unnamed-check")
    resource = str(check.get("resource") or DEPLOYMENT)
    detail = str(check.get("detail") or "")

    def finding(criterion: Criterion, text: str = detail) -> Finding:
        return Finding(criterion, name, resource, text)

    if check.get("recovered"):
        return finding("transientConnectivity", detail or "failed at first, passed on retry")
    if name == "bucket.public-access-block" or _SECURITY.search(detail):
        return finding("securityExposure")
    if _ACCESS_DENIED.search(detail):
        return finding("configurationError" if resource in changed else "serviceUnavailable")
    if _EXHAUSTION.search(detail):
        return finding("resourceExhaustion")
    family, _, kind = name.partition(".")
    if kind == "write-read-delete":
        return finding("dataLossRisk")
    if family in ("replication", "replica"):
        return finding("replicationFailure")
    if kind == "tags":
        return finding("documentationIssue")
    if family == "monitoring":
        return finding("monitoringGap")
    if family == "performance":
        return finding("performanceDegradation")
    # bucket.exists / table.active (missing, unreachable, 5xx) and any check not known here:
    # fail safe, since an unexplained failure may mean the application cannot use the resource.
    return finding("serviceUnavailable")


def _classify_error(  # noqa: PLR0911 - rules in a fixed order
    error: str | None, cause: str | None, changed: set[str], covered_by_checks: bool, applied: bool
) -> list[Finding]:
    if not error:
        return []
    message = error_message(cause)
    if error in NO_CHANGE_ERRORS:
        if not applied or error == errors.LockLost.__name__:
            return []
        detail = f"{error} after changes were applied: {message}" if message else f"{error} after changes were applied"
        return [Finding("configurationError", None, DEPLOYMENT, f"the deployment stopped part-way: {detail}")]
    if error == errors.ValidationFailed.__name__:
        if covered_by_checks:
            return []
        parsed = [m.groupdict() for line in message.splitlines() if (m := _VALIDATION_LINE.match(line.strip()))]
        if parsed:
            return [_classify_check(check, changed) for check in parsed]
    resource = next((name for name in sorted(changed) if name in message), DEPLOYMENT)
    detail = f"{error}: {message}" if message else error

    if error == errors.TransientAwsError.__name__:
        return [Finding("serviceUnavailable", None, resource, f"{detail} (still failing after retries)")]
    if _SECURITY.search(message):
        return [Finding("securityExposure", None, resource, detail)]
    if _EXHAUSTION.search(message):
        return [Finding("resourceExhaustion", None, resource, detail)]
    if _ACCESS_DENIED.search(message) and resource != DEPLOYMENT:
        return [Finding("configurationError", None, resource, detail)]
    return [Finding("serviceUnavailable", None, resource, detail)]


def error_message(cause: str | None) -> str:
    """The human message in a Step Functions cause: a Lambda error's ``errorMessage``, else the text itself."""
    if not cause:
        return ""
    try:
        data = json.loads(cause)
    except ValueError:
        return cause.strip()
    if isinstance(data, dict) and isinstance(data.get("errorMessage"), str):
        return cast(str, data["errorMessage"]).strip()
    return cause.strip()


def failed_checks(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A deployment record's failed (or recovered-on-retry) checks across regions, each with its region."""
    found = []
    for region, checks in sorted((record.get("checks") or {}).items()):
        for check in checks or []:
            if not check.get("passed", False) or check.get("recovered"):
                found.append({"region": region, **check})
    return found


def applied_so_far(record: Mapping[str, Any]) -> dict[str, list[str]]:
    """What the deployment changed before it stopped, by region (``replication`` for the replication step).

    From what Provision and Replicate recorded, and what an earlier decision of the deployment
    kept (a recheck's re-run finds those changes in place, "unchanged"). A function that timed
    out recorded nothing: its changes are found by the rollback, which reads every resource first.
    """
    earlier = (record.get("decision") or {}).get("applied") or {}
    applied: dict[str, list[str]] = {region: list(changes) for region, changes in earlier.items()}
    for region, result in (record.get("provisioned") or {}).items():
        for r in (result or {}).get("resources", []):
            change = f"{r.get('action')} {r.get('kind')} {r.get('name')}"
            if r.get("action") not in (None, "unchanged") and change not in applied.setdefault(region, []):
                applied[region].append(change)
    return {region: changes for region, changes in sorted(applied.items()) if changes}


def changed_resources(record: Mapping[str, Any]) -> set[str]:
    """Names of the resources this deployment's plan adds or changes (its ``changed_policies``)."""
    plan = record.get("plan") or {}
    return {r["name"] for r in plan.get("resources", []) if r.get("action") in ("add", "change") and r.get("name")}


# ---------------------------------------------------------------- decision


def decide(findings: list[Finding], policy: RollbackPolicy) -> Decision:
    """Roll back if any finding's criterion calls for it under ``policy``, else fix forward, else nothing.

    The deciding criterion is the first rollback one in runbook order (data-loss risk,
    security exposure, service unavailability, replication, configuration, exhaustion, then
    the fix-forward criteria a policy may have turned into rollback ones).
    """
    if not findings:
        return Decision("none", None, [], "no failure matched a runbook section 9 criterion")
    ordered = sorted(findings, key=lambda f: CRITERIA_ORDER.index(f.criterion))
    rollback = [f for f in ordered if policy.criteria[f.criterion] == "rollback"]
    if rollback:
        first = rollback[0]
        reason = f"roll back: {first.criterion} ({_why(first.criterion, policy)}){_override(first.criterion, policy)}"
        reason += f": {_where(first)}" + (f": {first.detail}" if first.detail else "")
        if len(rollback) > 1:
            reason += "; also " + ", ".join(_ref(f) for f in rollback[1:])
        return Decision("rollback", first.criterion, list(findings), reason)
    reason = "fix forward: " + ", ".join(_ref(f) for f in ordered)
    return Decision("fixForward", ordered[0].criterion, list(findings), reason)


# Runbook section 9's grace periods: how long a failure of these criteria may last before it is one.
_GRACE: dict[Criterion, str] = {
    "dataLossRisk": "write_failure_grace_minutes",  # "write operations failing for more than 5 minutes"
    "serviceUnavailable": "transient_grace_minutes",  # "temporary network glitches (resolve in <5 min)"
    "performanceDegradation": "transient_grace_minutes",  # when a policy makes it a rollback criterion
}
# Rechecks within a grace period: about five, at least a second apart.
RECHECKS_PER_GRACE = 5


def grace_seconds(criterion: Criterion | None, policy: RollbackPolicy) -> float:
    """How long a failure of ``criterion`` may last before it rolls back (0: at once)."""
    field = _GRACE.get(criterion) if criterion else None
    return float(getattr(policy, field)) * 60 if field else 0.0


def within_grace(decision: Decision, policy: RollbackPolicy, since: datetime, now: datetime) -> dict[str, Any]:
    """The decision, made a ``recheck`` while its rollback criterion's grace period (from ``since``) lasts.

    A failure that clears within the grace period is the runbook's fix forward; one that outlasts
    it rolls back, its reason saying how long it lasted.
    """
    result = decision.to_dict()
    grace = grace_seconds(decision.criterion, policy)
    if decision.response != "rollback" or grace <= 0:
        return result
    elapsed = max((now - since).total_seconds(), 0.0)
    minutes = f"{grace / 60:g}-minute"
    if elapsed >= grace:
        result["reason"] += f"; still failing after {elapsed:.0f} s, beyond the {minutes} grace period"
        return result
    wait = max(1, round(min(grace - elapsed, grace / RECHECKS_PER_GRACE)))
    return {
        **result,
        "response": "recheck",
        "waitSeconds": wait,
        "graceSince": iso(since),
        "reason": (
            f"{decision.criterion} for {elapsed:.0f} s, within its {minutes} grace period: running the deployment's "
            f"steps again in {wait} s; still failing after the grace period rolls back ({decision.reason})"
        ),
    }


def recovered(decision: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A ``recheck`` decision whose failure cleared on a re-run: the runbook's fix forward, with how long it lasted."""
    since = datetime.fromisoformat(str(decision["graceSince"]))
    lasted = max((now - since).total_seconds(), 0.0)
    finding = Finding(
        "transientConnectivity", None, DEPLOYMENT, f"{decision.get('criterion')} cleared after {lasted:.0f} s"
    )
    return {
        "response": "fixForward",
        "criterion": "transientConnectivity",
        "findings": [finding.to_dict(), *decision.get("findings", [])],
        "reason": (
            f"fix forward: {decision.get('criterion')} cleared after {lasted:.0f} s, within its grace period "
            "(transientConnectivity)"
        ),
        "graceSince": decision["graceSince"],
        "applied": decision.get("applied", {}),
    }


def _why(criterion: Criterion, policy: RollbackPolicy) -> str:
    return _WHY[criterion].format(
        write=policy.write_failure_grace_minutes,
        transient=policy.transient_grace_minutes,
        latency=policy.latency_threshold_ms,
    )


def _override(criterion: Criterion, policy: RollbackPolicy) -> str:
    if policy.criteria[criterion] == RUNBOOK_CRITERIA[criterion]:
        return ""
    return f" [policy override: {policy.criteria[criterion]}, runbook: {RUNBOOK_CRITERIA[criterion]}]"


def _where(finding: Finding) -> str:
    return f"{finding.check} on {finding.resource}" if finding.check else f"on {finding.resource}"


def _ref(finding: Finding) -> str:
    return f"{finding.criterion} ({_where(finding)})"


# ---------------------------------------------------------------- report


def incident_report(  # noqa: PLR0917 - the report's documented call signature
    record: dict[str, Any],
    history: list[dict[str, Any]],
    decision: dict[str, Any] | None,
    rollback_actions: list[dict[str, Any]],
    counts_before: dict[str, int],
    counts_after: dict[str, int],
    validation: list[dict[str, Any]],
) -> str:
    """Render the post-incident report (Markdown) of one deployment, as runbook section 9 step 5 asks.

    Every section is present even when empty (no rollback, a fix forward, a failed rollback),
    saying why it is empty, so a reader never wonders whether a part was lost.
    """
    status = str(record.get("status") or "UNKNOWN")
    sections = [
        f"# Incident report: {record.get('environment') or '?'} · {record.get('deploymentId') or '?'} · {status}",
        _banner(status, decision),
        _summary(record, status),
        _timeline(history, record),
        _trigger(record),
        _decision(decision),
        _actions(rollback_actions, decision),
        _counts(counts_before, counts_after),
        _validation(validation, decision, status),
        _follow_up(decision, status),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _banner(status: str, decision: Mapping[str, Any] | None) -> str:
    response = (decision or {}).get("response")
    if status == "ROLLBACK_FAILED":
        return (
            "> **INCIDENT: the rollback could not be validated.** The environment may not be in its last "
            "known good state; restore it by hand (runbook section 9 step 3) and keep every backup listed below."
        )
    if status == "ROLLED_BACK":
        return "> Rolled back to the state recorded before this deployment."
    if response == "fixForward" or status == "SUCCEEDED_WITH_WARNINGS":
        return "> Fixed forward: the deployment stands, with the warnings below to resolve."
    return ""


def _summary(record: Mapping[str, Any], status: str) -> str:
    error = record.get("error")
    message = error_message(record.get("cause"))
    rows = [
        ("Environment", record.get("environment")),
        ("Deployment", record.get("deploymentId")),
        ("Status", status),
        ("Requested by", record.get("requestedBy")),
        ("Change ticket", record.get("changeTicket")),
        ("Started", record.get("startedAt")),
        ("Finished", record.get("finishedAt")),
        ("Duration", _duration(record.get("startedAt"), record.get("finishedAt"))),
        ("Plan", (record.get("plan") or {}).get("summary")),
        ("Error", f"{error}: {message}" if error and message else error),
        ("Execution", record.get("executionArn")),
    ]
    lines = ["## Summary", "", "| Field | Value |", "|---|---|"]
    lines += [f"| {label} | {_cell(value)} |" for label, value in rows]
    return "\n".join(lines)


def _timeline(history: list[dict[str, Any]], record: Mapping[str, Any]) -> str:
    by_id = {event.get("id"): event for event in history if event.get("id") is not None}
    lines = []
    for event in history:
        kind = str(event.get("type") or "")
        at = _time(event.get("timestamp"))
        if kind == "ExecutionStarted":
            lines.append(f"- `{at}` execution started")
        elif kind == "ExecutionSucceeded":
            lines.append(f"- `{at}` execution succeeded")
        elif kind.endswith("StateEntered"):
            name = (event.get("stateEnteredEventDetails") or {}).get("name", "?")
            lines.append(f"- `{at}` entered **{name}**")
        elif _FAILURE_EVENT.search(kind):
            details = _event_details(event)
            what = str(details.get("error") or kind)
            message = error_message(details.get("cause"))
            state = "execution" if kind.startswith("Execution") else f"**{state_of(event, by_id)}**"
            lines.append(f"- `{at}` {state} failed ({kind}): {what}" + (f": {_clip(message)}" if message else ""))
    if not lines:
        lines = ["_No execution history was available._"]
        lines += [f"- `{value}` {label}" for label, value in _record_times(record)]
    return "## Timeline\n\n" + "\n".join(lines)


def _record_times(record: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [
        (label, record[key]) for key, label in (("startedAt", "started"), ("finishedAt", "finished")) if key in record
    ]


def _event_details(event: Mapping[str, Any]) -> Mapping[str, Any]:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, Mapping):
            return value
    return {}


def state_of(event: Mapping[str, Any], by_id: Mapping[Any, Mapping[str, Any]]) -> str:
    # A failure event links back (TaskFailed -> TaskStarted -> TaskScheduled -> TaskStateEntered) to its state.
    seen: set[Any] = set()
    current = by_id.get(event.get("previousEventId"))
    while current is not None and current.get("id") not in seen:
        seen.add(current.get("id"))
        if str(current.get("type") or "").endswith("StateEntered"):
            return str((current.get("stateEnteredEventDetails") or {}).get("name", "?"))
        current = by_id.get(current.get("previousEventId"))
    return "?"


def _trigger(record: Mapping[str, Any]) -> str:
    failed = failed_checks(record)
    lines = ["## Triggering cause", ""]
    if failed:
        lines += [f"{len(failed)} post-deployment check(s) failed:", ""]
        lines += ["| Region | Resource | Check | Detail |", "|---|---|---|---|"]
        for check in failed:
            detail = str(check.get("detail") or "")
            if check.get("recovered"):
                detail += " (recovered on retry)"
            lines.append(
                f"| {_cell(check.get('region'))} | {_cell(check.get('resource'))} | "
                f"{_cell(check.get('name'))} | {_cell(detail)} |"
            )
    else:
        lines.append("No post-deployment check failed.")
    if record.get("error"):
        message = error_message(record.get("cause"))
        lines += ["", f"Error: `{record['error']}`" + (f": {_clip(message)}" if message else "")]
    return "\n".join(lines)


def _decision(decision: Mapping[str, Any] | None) -> str:
    lines = ["## Decision", ""]
    if not decision:
        lines.append("No rollback decision was taken: the deployment did not reach a point where one was needed.")
        return "\n".join(lines)
    response = str(decision.get("response") or "none")
    criterion = decision.get("criterion")
    label = {"rollback": "Roll back", "fixForward": "Fix forward", "none": "No action"}.get(response, response)
    lines.append(f"**Response:** {label}")
    if criterion in RUNBOOK_WORDING:
        heading, text = RUNBOOK_WORDING[cast(Criterion, criterion)]
        when = "Rollback Immediately If" if response == "rollback" else "Fix Forward If"
        lines += [
            "",
            f"**Criterion applied:** `{criterion}`",
            "",
            f"> Runbook section 9, *{when}*: **{heading}**: {text}",
        ]
    if decision.get("reason"):
        lines += ["", f"**Why:** {decision['reason']}"]
    findings = decision.get("findings") or []
    if findings:
        lines += ["", "| Criterion | Check | Resource | Detail |", "|---|---|---|---|"]
        lines += [
            f"| {_cell(f.get('criterion'))} | {_cell(f.get('check'))} | {_cell(f.get('resource'))} | "
            f"{_cell(f.get('detail'))} |"
            for f in findings
        ]
    return "\n".join(lines)


def _actions(actions: list[dict[str, Any]], decision: Mapping[str, Any] | None) -> str:
    lines = ["## Rollback actions", ""]
    if not actions:
        response = (decision or {}).get("response")
        lines.append(
            "None: the decision was to fix forward." if response == "fixForward" else "No rollback action was taken."
        )
        return "\n".join(lines)
    lines += ["| # | Action | Resource | Region | Result | Detail |", "|---|---|---|---|---|---|"]
    for number, action in enumerate(actions, start=1):
        detail = _first(action, "detail", "message", "error")
        backup = _first(action, "backupArn", "backup")
        if backup:
            detail = f"{detail}; backup {backup}" if detail else f"backup {backup}"
        resource = _first(action, "resource") or " ".join(str(action[k]) for k in ("kind", "name") if action.get(k))
        lines.append(
            f"| {number} | {_cell(_first(action, 'action', 'type', 'step'))} | {_cell(resource)} | "
            f"{_cell(action.get('region'))} | {_cell(_result(action))} | {_cell(detail)} |"
        )
    return "\n".join(lines)


def _result(action: Mapping[str, Any]) -> str:
    result = _first(action, "result", "status", "outcome")
    if result:
        return result
    if "ok" in action:
        return "ok" if action["ok"] else "failed"
    return ""


def _first(data: Mapping[str, Any], *keys: str) -> str:
    return next((str(data[k]) for k in keys if data.get(k) not in (None, "")), "")


def _counts(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    lines = ["## Data counts before/after", ""]
    names = sorted({*before, *after})
    if not names:
        lines.append("No item or object counts were recorded.")
        return "\n".join(lines)
    matching = sum(1 for n in names if n in before and n in after and before[n] == after[n])
    lines += [f"{matching} of {len(names)} count(s) match the state before the deployment.", ""]
    lines += ["| Resource | Before | After | ✓/✗ |", "|---|---|---|---|"]
    for name in names:
        ok = name in before and name in after and before[name] == after[name]
        lines.append(f"| {_cell(name)} | {_cell(before.get(name))} | {_cell(after.get(name))} | {'✓' if ok else '✗'} |")
    return "\n".join(lines)


def _validation(validation: list[dict[str, Any]], decision: Mapping[str, Any] | None, status: str) -> str:
    lines = ["## Rollback validation", ""]
    if not validation:
        if status == "ROLLBACK_FAILED":
            lines.append("The rollback could not be validated: no validation result was recorded.")
        elif (decision or {}).get("response") == "rollback":
            lines.append("No validation result was recorded.")
        else:
            lines.append("Not applicable: nothing was rolled back.")
        return "\n".join(lines)
    passed = sum(1 for check in validation if check.get("passed"))
    lines += [f"{passed} of {len(validation)} check(s) passed.", ""]
    lines += ["| Region | Resource | Check | ✓/✗ | Detail |", "|---|---|---|---|---|"]
    lines += [
        f"| {_cell(c.get('region'))} | {_cell(c.get('resource'))} | {_cell(c.get('name'))} | "
        f"{'✓' if c.get('passed') else '✗'} | {_cell(c.get('detail'))} |"
        for c in validation
    ]
    return "\n".join(lines)


def _follow_up(decision: Mapping[str, Any] | None, status: str) -> str:
    decision = decision or {}
    criterion = decision.get("criterion")
    if decision.get("response") == "rollback" and criterion in RUNBOOK_WORDING:
        heading, text = RUNBOOK_WORDING[cast(Criterion, criterion)]
        why = f"Why rollback was necessary: {heading} ({text})"
    elif decision.get("response") == "fixForward":
        why = "Why rollback was necessary: it was not; track the fix-forward items above to closure"
    else:
        why = "Why rollback was necessary"
    items = [
        "Timeline of events (see Timeline)",
        "Root cause analysis",
        why,
        "Preventive measures",
        "Implementation timeline",
        "Update the runbook based on lessons learned",
        "Schedule a team retrospective",
    ]
    if status == "ROLLBACK_FAILED":
        items.insert(0, "Restore the last known good state by hand and validate it (runbook section 9 steps 3-4)")
    return "## Follow-up\n\nPost-incident review (runbook section 9 step 5):\n\n" + "\n".join(
        f"- [ ] {item}" for item in items
    )


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, int | float):
        return iso(datetime.fromtimestamp(value, UTC))
    return str(value) if value else "?"


def _duration(started: Any, finished: Any) -> str | None:
    try:
        seconds = int((datetime.fromisoformat(str(finished)) - datetime.fromisoformat(str(started))).total_seconds())
    except (TypeError, ValueError):
        return None
    minutes, seconds = divmod(max(seconds, 0), 60)
    return f"{minutes}m {seconds:02d}s"


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _CELL_LIMIT else flat[: _CELL_LIMIT - 1] + "…"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "—"
    return _clip(str(value)).replace("|", "\\|")
