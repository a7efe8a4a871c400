"""Policy changes are approved under the old policy.

An environment's policy is in its spec, which the people it governs can change. So when
a deployment's policy differs from that of the environment's last successful deployment,
the change itself needs the consent of the policy it replaces: its approvers, in its
quorum, on top of the new policy's own. The approval message shows the difference field
by field.
"""

from __future__ import annotations

import json
from typing import Any

from deployer.models import Event
from deployer.records import RecordStore
from deployer.spec import Approver, Policy
from deployer.specstore import SpecStore

# Lines of difference kept: a rewrite of the whole policy is still readable in Slack.
MAX_DIFF_LINES = 40


class PolicyChange(Event):
    """How this deployment's policy differs from the last successful one's, and who must consent."""

    since_deployment: str
    diff: list[str]
    previous_required: int
    previous_approvers: list[dict[str, str]]
    previous_channel: str | None = None


def _flatten(value: Any, path: str, into: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(value[key], f"{path}.{key}", into)
    else:
        into[path] = json.dumps(value, sort_keys=True, default=str)
    return into


def policy_diff(old: Policy, new: Policy) -> list[str]:
    """One line per changed field, ``policy.<field>: <old> -> <new>``, in field order."""
    before = _flatten(old.model_dump(mode="json", by_alias=True), "policy", {})
    after = _flatten(new.model_dump(mode="json", by_alias=True), "policy", {})
    lines = [
        f"{path}: {before.get(path, '(unset)')} -> {after.get(path, '(unset)')}"
        for path in sorted(before.keys() | after.keys())
        if before.get(path) != after.get(path)
    ]
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... and {len(lines) - MAX_DIFF_LINES} more changed fields"]
    return lines


def _policy_of(record: dict[str, Any], specs: SpecStore) -> Policy:
    """The policy a deployment ran under: kept in its record, or read from the spec version it pinned."""
    if record.get("policy"):
        return Policy.model_validate(record["policy"])
    spec, _ = specs.get(str(record["environment"]), str(record["specVersion"]))
    return spec.policy


def policy_change(records: RecordStore, specs: SpecStore, environment: str, policy: Policy) -> PolicyChange | None:
    """The change from the environment's last successful deployment's policy, or None if unchanged (or first)."""
    previous = records.last_succeeded(environment)
    if previous is None:
        return None
    old = _policy_of(previous, specs)
    diff = policy_diff(old, policy)
    if not diff:
        return None
    voters: list[Approver] = [*old.approvals.approvers, *old.approvals.escalation_approvers]
    return PolicyChange(
        since_deployment=str(previous["deploymentId"]),
        diff=diff,
        previous_required=old.approvals.required,
        previous_approvers=[a.model_dump(by_alias=True) for a in voters],
        previous_channel=old.approvals.channel,
    )
