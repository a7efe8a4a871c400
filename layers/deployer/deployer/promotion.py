"""The promotion gate (runbook sections 5 and 6): an environment only receives what the whole chain before it ran.

Policy ``promotion.from`` names the source environment (prod: sit; sit: dev), and the chain goes
on through the guardrails' ``promotionFrom`` of each source's account (sit's: dev): PROD needs
the resources spec to have succeeded in SIT and in DEV. A deployment passes when, in every link,
a deployment of the same resources spec, compared by ``EnvironmentSpec.promotion_hash()``,
succeeded; every record stores its spec's hash as ``promotionHash``. A refusal names every
missing link. An override is possible only with a reason, and costs
``promotion.overrideApprovals`` extra approvals.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from deployer.checks import CheckResult, run_check
from deployer.guardrails import Guardrails
from deployer.records import RecordStore
from deployer.spec import EnvironmentSpec

CHECK_NAME = "promotion"
GLOBAL = "global"
OVERRIDE_PREFIX = "OVERRIDE: "
# How many of the source environment's latest deployments are searched for a match.
HISTORY_LIMIT = 200


def promotion_check(
    records: RecordStore, spec: EnvironmentSpec, override_reason: str | None, guardrails: Guardrails
) -> CheckResult:
    """Pass when every link of the promotion chain succeeded with this resources spec, or when overridden.

    A failed check's detail names the hash and each link that lacks it, with that environment's latest
    deployment. An AWS error reading the records is a failed check; a retryable one raises TransientAwsError.
    """
    check = partial(_promotion, records, spec, override_reason, guardrails)
    return run_check(CHECK_NAME, GLOBAL, spec.environment, check)


def chain(spec: EnvironmentSpec, guardrails: Guardrails) -> list[str]:
    """The environments the spec must have succeeded in, nearest first (prod: sit, dev)."""
    links: list[str] = []
    source = spec.policy.promotion.from_ if spec.policy.promotion else None
    while source is not None and source not in links and source != spec.environment:
        links.append(source)
        source = guardrails.promotion_source(source)
    return links


def extra_approvals(spec: EnvironmentSpec, check: CheckResult) -> int:
    """The extra approvals a promotion override needs: 0 unless ``check`` passed by override."""
    promotion = spec.policy.promotion
    if promotion is None or check.name != CHECK_NAME or not check.passed:
        return 0
    return promotion.override_approvals if check.detail.startswith(OVERRIDE_PREFIX) else 0


def _promotion(
    records: RecordStore, spec: EnvironmentSpec, override_reason: str | None, guardrails: Guardrails
) -> tuple[bool, str]:
    promotion = spec.policy.promotion
    if promotion is None:
        return True, "no promotion rule"
    links, wanted, found, missing = chain(spec, guardrails), spec.promotion_hash(), [], []
    for source in links:
        history = records.history(source, limit=HISTORY_LIMIT)
        match = next((r for r in history if r.get("status") == "SUCCEEDED" and r.get("promotionHash") == wanted), None)
        if match is None:
            missing.append(f"{source} ({_latest(source, history)})")
        else:
            found.append(
                f"{source} as deployment {match.get('deploymentId')}, "
                f"finished {match.get('finishedAt', 'at an unrecorded time')}"
            )
    if not missing:
        return True, f"promotion hash {wanted} succeeded in " + "; in ".join(found)
    reason = (override_reason or "").strip()
    if reason:
        count = promotion.override_approvals
        return True, f"{OVERRIDE_PREFIX}{reason}; needs {count} extra approval(s)"
    return False, (
        f"{spec.environment} only receives a resources spec that succeeded in {' and then '.join(reversed(links))}; "
        f"promotion hash {wanted} "
        f"is missing in: " + "; ".join(missing)
    )


def _latest(source: str, history: list[dict[str, Any]]) -> str:
    if not history:
        return f"no {source} deployment yet"
    latest = history[0]
    hash_text = f"promotion hash {latest['promotionHash']}" if latest.get("promotionHash") else "no promotion hash"
    return f"latest {source} deployment: {latest.get('deploymentId')} {latest.get('status')} with {hash_text}"
