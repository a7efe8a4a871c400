"""The promotion gate (runbook section 6 prerequisites): an environment only receives what its source ran.

Policy ``promotion.from`` names the source environment (prod: sit). A deployment passes when
a deployment of the same resources spec, compared by ``EnvironmentSpec.promotion_hash()``,
succeeded there; every record stores its spec's hash as ``promotionHash``. An override is
possible only with a reason, and costs ``promotion.overrideApprovals`` extra approvals.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from deployer.checks import CheckResult, run_check
from deployer.records import RecordStore
from deployer.spec import EnvironmentSpec

CHECK_NAME = "promotion"
GLOBAL = "global"
OVERRIDE_PREFIX = "OVERRIDE: "
# How many of the source environment's latest deployments are searched for a match.
HISTORY_LIMIT = 200


def promotion_check(records: RecordStore, spec: EnvironmentSpec, override_reason: str | None) -> CheckResult:
    """Pass when the promotion source succeeded with this resources spec, or when overridden with a reason.

    A failed check's detail names the hash that is missing and the source's latest deployment.
    An AWS error reading the records is a failed check; a retryable one raises TransientAwsError.
    """
    return run_check(CHECK_NAME, GLOBAL, spec.environment, partial(_promotion, records, spec, override_reason))


def extra_approvals(spec: EnvironmentSpec, check: CheckResult) -> int:
    """The extra approvals a promotion override needs: 0 unless ``check`` passed by override."""
    promotion = spec.policy.promotion
    if promotion is None or check.name != CHECK_NAME or not check.passed:
        return 0
    return promotion.override_approvals if check.detail.startswith(OVERRIDE_PREFIX) else 0


def _promotion(records: RecordStore, spec: EnvironmentSpec, override_reason: str | None) -> tuple[bool, str]:
    promotion = spec.policy.promotion
    if promotion is None:
        return True, "no promotion rule"
    source, wanted = promotion.from_, spec.promotion_hash()
    history = records.history(source, limit=HISTORY_LIMIT)
    match = next((r for r in history if r.get("status") == "SUCCEEDED" and r.get("promotionHash") == wanted), None)
    if match is not None:
        return True, (
            f"promotion hash {wanted} succeeded in {source} as deployment {match.get('deploymentId')}, "
            f"finished {match.get('finishedAt', 'at an unrecorded time')}"
        )
    reason = (override_reason or "").strip()
    if reason:
        count = promotion.override_approvals
        return True, f"{OVERRIDE_PREFIX}{reason}; needs {count} extra approval(s)"
    return False, (
        f"{spec.environment} only receives a resources spec that succeeded in {source}; no successful {source} "
        f"deployment has promotion hash {wanted} ({_latest(source, history)})"
    )


def _latest(source: str, history: list[dict[str, Any]]) -> str:
    if not history:
        return f"no {source} deployment yet"
    latest = history[0]
    hash_text = f"promotion hash {latest['promotionHash']}" if latest.get("promotionHash") else "no promotion hash"
    return f"latest {source} deployment: {latest.get('deploymentId')} {latest.get('status')} with {hash_text}"
