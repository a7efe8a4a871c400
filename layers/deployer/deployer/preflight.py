"""Runbook section 3, the pre-deployment checklist, as code (the environment lock lives elsewhere)."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from deployer.aws import TargetSession, error_code
from deployer.checks import CheckResult, run_check
from deployer.errors import PreflightFailed
from deployer.resources import BucketOwnedElsewhere, bucket_region, pitr_status
from deployer.spec import EnvironmentSpec

GLOBAL = "global"


def run_preflight(
    target: TargetSession,
    sts_identity_account: str,
    spec: EnvironmentSpec,
    change_ticket: str | None,
    now: datetime,
    *,
    requested_by: str | None = None,
    requester_slack_ids: Collection[str] = (),
) -> list[CheckResult]:
    """Run every pre-deployment check; raise PreflightFailed listing each failure's detail on its own line.

    ``sts_identity_account`` is the account get_caller_identity reported for the assumed role;
    ``now`` must be timezone-aware (backup times are compared with it).
    """
    results = [
        run_check("account.identity", GLOBAL, spec.account, partial(_identity, spec, sts_identity_account)),
        run_check("change-ticket", GLOBAL, change_ticket or "-", partial(_change_ticket, spec, change_ticket)),
        run_check(
            "approvals.quorum", GLOBAL, spec.environment, partial(_approvals, spec, requested_by, requester_slack_ids)
        ),
    ]
    for bucket in spec.resources.buckets:
        region = spec.region_of(bucket)
        check = partial(_bucket_name, target.client("s3", region), bucket.name, target.account, region)
        results.append(run_check("bucket.name-available", region, bucket.name, check))
    for table in spec.resources.tables:
        # Runbook section 6: backups verified in every region the table lives in (PITR is each replica's own).
        for region in (spec.region_of(table), *spec.replica_regions_of(table)):
            ddb = target.client("dynamodb", region)
            check = partial(_table_backup, ddb, table.name, region, now, spec.policy.backup.max_age_hours)
            results.append(run_check("table.backup", region, table.name, check))
    failed = [r.detail for r in results if not r.passed]
    if failed:
        raise PreflightFailed("\n".join(failed), checks=results)
    return results


def release_tag_check(spec: EnvironmentSpec, tag: str | None, now: datetime, *, required: bool) -> CheckResult:
    """Runbook section 6 step 2: the release tag, ``v<YYYY.MM.DD>-<environment>-<name>``, dated no later than today.

    ``required``: where ``policy.releaseTag.required`` (PROD), for what it deploys; a tag given is
    checked wherever it is.
    The deployer cannot see the repository: that the tag names the commit deployed is the deploy
    workflow's part (it tags ``GITHUB_SHA`` and deploys that commit's spec).
    """
    return run_check("release-tag", GLOBAL, tag or "-", partial(_release_tag, spec, tag, now, required))


def _release_tag(spec: EnvironmentSpec, tag: str | None, now: datetime, required: bool) -> tuple[bool, str]:
    if not tag:
        if required:
            return False, (
                f"environment {spec.environment} deploys only a tagged release (policy.releaseTag.required), "
                f"but none was given: tag the commit v{now:%Y.%m.%d}-{spec.environment}-<name> and pass "
                "--release-tag (the deploy workflow does both)"
            )
        return True, "no release tag required"
    prefix = re.fullmatch(r"v(?P<date>[0-9]{4}\.[0-9]{2}\.[0-9]{2})-(?P<rest>.+)", tag)
    if prefix is None or not prefix["rest"].startswith(f"{spec.environment}-"):
        return False, f"release tag {tag} is not v<YYYY.MM.DD>-{spec.environment}-<name>"
    try:
        dated = datetime.strptime(prefix["date"], "%Y.%m.%d").replace(tzinfo=UTC)
    except ValueError:
        return False, f"release tag {tag}: {prefix['date']} is not a date"
    # A day of slack: the tagger's calendar may be ahead of UTC.
    if dated > now + timedelta(days=1):
        return False, f"release tag {tag} is dated after today ({now:%Y.%m.%d} UTC)"
    return True, f"release tag {tag}"


def _identity(spec: EnvironmentSpec, account: str) -> tuple[bool, str]:
    if account == spec.account:
        return True, f"deploying as account {account}"
    return False, f"credentials are for account {account}, but environment {spec.environment} is account {spec.account}"


def _change_ticket(spec: EnvironmentSpec, ticket: str | None) -> tuple[bool, str]:
    policy = spec.policy.change_ticket
    if not ticket:
        if policy.required:
            return False, f"environment {spec.environment} requires a change ticket, but none was given"
        return True, "no change ticket required"
    if not re.fullmatch(policy.pattern, ticket):
        return False, f"change ticket {ticket!r} does not match the pattern {policy.pattern}"
    return True, f"change ticket {ticket}"


def _approvals(
    spec: EnvironmentSpec, requested_by: str | None, requester_slack_ids: Collection[str]
) -> tuple[bool, str]:
    policy = spec.policy.approvals
    if policy.required == 0:
        return True, "no approvals required"
    # The requester may never approve their own deployment, under any identity: a quorum without them must exist.
    voters = {a.slack_user_id: a for a in [*policy.approvers, *policy.escalation_approvers]}
    eligible = [
        a
        for a in voters.values()
        if requested_by not in (a.name, a.slack_user_id) and a.slack_user_id not in requester_slack_ids
    ]
    if len(eligible) < policy.required:
        return False, (
            f"environment {spec.environment} requires {policy.required} approval(s) but only {len(eligible)} "
            f"approver(s) other than the requester {requested_by} can vote"
        )
    return True, f"{policy.required} approval(s) required from {len(eligible)} eligible approver(s)"


def _bucket_name(s3: Any, name: str, account: str, region: str) -> tuple[bool, str]:
    try:
        actual = bucket_region(s3, name, account)
    except BucketOwnedElsewhere:
        return False, f"bucket {name} exists in another AWS account"
    if actual is None:
        return True, "available"
    if actual != region:
        return False, f"bucket {name} exists in {actual}, but the spec places it in {region}"
    return True, f"exists in account {account}, will be adopted"


def _table_backup(ddb: Any, name: str, region: str, now: datetime, max_age_hours: int) -> tuple[bool, str]:
    try:
        pitr = pitr_status(ddb, name)
    except ClientError as exc:
        if error_code(exc) in ("TableNotFoundException", "ResourceNotFoundException"):
            return True, f"will be created in {region}"
        raise
    if pitr == "ENABLED":
        return True, f"point-in-time recovery is enabled in {region}"
    oldest = now - timedelta(hours=max_age_hours)
    kwargs: dict[str, Any] = {"TableName": name, "TimeRangeLowerBound": oldest}
    while True:
        page = ddb.list_backups(**kwargs)
        for backup in page.get("BackupSummaries", []):
            if backup["BackupStatus"] == "AVAILABLE" and backup["BackupCreationDateTime"] >= oldest:
                created = backup["BackupCreationDateTime"].isoformat()
                return True, f"backup {backup['BackupName']} from {created} in {region}"
        if not page.get("LastEvaluatedBackupArn"):
            break
        kwargs["ExclusiveStartBackupArn"] = page["LastEvaluatedBackupArn"]
    return False, (
        f"table {name} in {region} has neither point-in-time recovery nor an AVAILABLE backup from the last "
        f"{max_age_hours} hours"
    )
