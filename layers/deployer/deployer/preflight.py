"""Runbook section 3, the pre-deployment checklist, as code (the environment lock lives elsewhere)."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from deployer.aws import TargetSession, error_code
from deployer.checks import CheckResult, run_check
from deployer.errors import PreflightFailed
from deployer.resources import BucketOwnedElsewhere, bucket_region
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
        region = spec.region_of(table)
        check = partial(
            _table_backup, target.client("dynamodb", region), table.name, now, spec.policy.backup.max_age_hours
        )
        results.append(run_check("table.backup", region, table.name, check))
    failed = [r.detail for r in results if not r.passed]
    if failed:
        raise PreflightFailed("\n".join(failed), checks=results)
    return results


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


def _table_backup(ddb: Any, name: str, now: datetime, max_age_hours: int) -> tuple[bool, str]:
    try:
        backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    except ClientError as exc:
        if error_code(exc) in ("TableNotFoundException", "ResourceNotFoundException"):
            return True, "will be created"
        raise
    if backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") == "ENABLED":
        return True, "point-in-time recovery is enabled"
    oldest = now - timedelta(hours=max_age_hours)
    kwargs: dict[str, Any] = {"TableName": name, "TimeRangeLowerBound": oldest}
    while True:
        page = ddb.list_backups(**kwargs)
        for backup in page.get("BackupSummaries", []):
            if backup["BackupStatus"] == "AVAILABLE" and backup["BackupCreationDateTime"] >= oldest:
                return True, f"backup {backup['BackupName']} from {backup['BackupCreationDateTime'].isoformat()}"
        if not page.get("LastEvaluatedBackupArn"):
            break
        kwargs["ExclusiveStartBackupArn"] = page["LastEvaluatedBackupArn"]
    return False, (
        f"table {name} has neither point-in-time recovery nor an AVAILABLE backup from the last {max_age_hours} hours"
    )
