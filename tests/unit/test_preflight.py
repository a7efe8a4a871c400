"""Pre-deployment checks (runbook section 3) against moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deployer.aws import TargetSession
from deployer.checks import CheckResult
from deployer.errors import PreflightFailed
from deployer.preflight import release_tag_check, run_preflight
from deployer.spec import EnvironmentSpec

ACCOUNT = "123456789012"
REGION = "af-south-1"
BUCKET = "bbws-test-data-bucket"
TABLE = "Site-Generation-State"


def _now() -> datetime:
    return datetime.now(UTC)


def _details(results: list[CheckResult]) -> dict[str, str]:
    return {f"{r.name} {r.resource}": r.detail for r in results}


def _existing_table_without_pitr(ddb: Any) -> None:
    ddb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "SiteId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "SiteId", "AttributeType": "S"}],
    )


def test_new_environment_passes_every_check(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN an empty account matching the spec, which needs no ticket or approval
    # WHEN preflight runs
    results = run_preflight(target, ACCOUNT, spec, None, _now())

    # THEN every check passed, and says why
    assert all(r.passed for r in results)
    assert _details(results) == {
        f"account.identity {ACCOUNT}": f"deploying as account {ACCOUNT}",
        "change-ticket -": "no change ticket required",
        "approvals.quorum test": "no approvals required",
        f"bucket.name-available {BUCKET}": "available",
        f"table.backup {TABLE}": f"will be created in {REGION}",
    }
    assert {r.region for r in results} == {"global", REGION}
    assert target.log.mutating == 0


def test_wrong_account_fails(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN the assumed role turned out to be in another account
    # WHEN preflight runs
    # THEN it fails, naming both accounts
    with pytest.raises(PreflightFailed) as raised:
        run_preflight(target, "999999999999", spec, None, _now())
    assert str(raised.value) == f"credentials are for account 999999999999, but environment test is account {ACCOUNT}"


def test_required_change_ticket_missing_fails(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Any
) -> None:
    # GIVEN an environment that requires a change ticket
    spec_data["policy"] = {"changeTicket": {"required": True}}
    spec = build_spec(spec_data)

    # WHEN preflight runs without one
    # THEN it fails saying so
    with pytest.raises(PreflightFailed, match="environment test requires a change ticket, but none was given"):
        run_preflight(target, ACCOUNT, spec, None, _now())

    # AND a well-formed ticket passes
    results = run_preflight(target, ACCOUNT, spec, "CHG-1234", _now())
    assert _details(results)["change-ticket CHG-1234"] == "change ticket CHG-1234"


def test_optional_change_ticket_must_still_match_the_pattern(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN an environment where a ticket is optional
    # WHEN a malformed ticket is given
    # THEN preflight fails naming the ticket
    with pytest.raises(PreflightFailed, match="change ticket 'chg 12' does not match the pattern"):
        run_preflight(target, ACCOUNT, spec, "chg 12", _now())


def test_approval_quorum_must_be_reachable_without_the_requester(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Any
) -> None:
    # GIVEN an environment that requires two approvals from two approvers
    spec_data["policy"] = {
        "approvals": {
            "required": 2,
            "approvers": [{"slackUserId": "U0AAA", "name": "a"}, {"slackUserId": "U0BBB", "name": "b"}],
            "channel": "C0DEPLOY",
        },
        "lockLeaseMinutes": 240,
    }
    spec = build_spec(spec_data)

    # WHEN someone else requests it, THEN the quorum is reachable
    results = run_preflight(target, ACCOUNT, spec, None, _now(), requested_by="c")
    assert _details(results)["approvals.quorum test"] == "2 approval(s) required from 2 eligible approver(s)"

    # WHEN one of the two approvers requests it (by name or Slack id)
    # THEN it is refused: they cannot approve their own deployment, so no quorum is possible
    for requester in ("a", "U0AAA"):
        with pytest.raises(PreflightFailed) as raised:
            run_preflight(target, ACCOUNT, spec, None, _now(), requested_by=requester)
        assert str(raised.value) == (
            f"environment test requires 2 approval(s) but only 1 approver(s) other than the requester {requester} "
            "can vote"
        )


def test_bucket_in_another_account_fails(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN S3 answers 403 for the bucket name (moto answers 200 cross-account, so stub it)
    with Stubber(target.client("s3", REGION)) as stub:
        stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)

        # WHEN preflight runs
        # THEN the name is reported as taken by another account
        with pytest.raises(PreflightFailed, match=f"bucket {BUCKET} exists in another AWS account"):
            run_preflight(target, ACCOUNT, spec, None, _now())


def test_our_existing_bucket_will_be_adopted(target: TargetSession, spec: EnvironmentSpec, s3: Any) -> None:
    # GIVEN the bucket already exists in our account and region
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})

    # WHEN preflight runs
    results = run_preflight(target, ACCOUNT, spec, None, _now())

    # THEN the name check passes and says it will be adopted
    assert _details(results)[f"bucket.name-available {BUCKET}"] == f"exists in account {ACCOUNT}, will be adopted"


def test_existing_table_without_backup_fails(target: TargetSession, spec: EnvironmentSpec, ddb: Any) -> None:
    # GIVEN an existing table with neither PITR nor a backup
    _existing_table_without_pitr(ddb)

    # WHEN preflight runs
    # THEN it fails naming the table
    with pytest.raises(PreflightFailed) as raised:
        run_preflight(target, ACCOUNT, spec, None, _now())
    assert str(raised.value) == (
        f"table {TABLE} in {REGION} has neither point-in-time recovery nor an AVAILABLE backup from the last 24 hours"
    )


def test_existing_table_with_recent_backup_passes(target: TargetSession, spec: EnvironmentSpec, ddb: Any) -> None:
    # GIVEN an existing table without PITR but with a fresh on-demand backup
    _existing_table_without_pitr(ddb)
    ddb.create_backup(TableName=TABLE, BackupName="pre-deploy")

    # WHEN preflight runs
    results = run_preflight(target, ACCOUNT, spec, None, _now())

    # THEN the backup check passes, naming the backup
    assert _details(results)[f"table.backup {TABLE}"].startswith("backup pre-deploy from ")


def test_existing_table_with_stale_backup_fails(target: TargetSession, spec: EnvironmentSpec, ddb: Any) -> None:
    # GIVEN an existing table whose only backup is older than the policy's 24 hours
    _existing_table_without_pitr(ddb)
    ddb.create_backup(TableName=TABLE, BackupName="last-week")
    two_days_later = _now() + timedelta(days=2)

    # WHEN preflight runs (two days after the backup)
    # THEN the backup check fails
    with pytest.raises(PreflightFailed, match=f"table {TABLE} in {REGION} has neither point-in-time recovery"):
        run_preflight(target, ACCOUNT, spec, None, two_days_later)


def test_existing_table_with_pitr_passes(target: TargetSession, spec: EnvironmentSpec, ddb: Any) -> None:
    # GIVEN an existing table with PITR on and no backups
    _existing_table_without_pitr(ddb)
    ddb.update_continuous_backups(
        TableName=TABLE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )

    # WHEN preflight runs
    results = run_preflight(target, ACCOUNT, spec, None, _now())

    # THEN the backup check passes
    assert _details(results)[f"table.backup {TABLE}"] == f"point-in-time recovery is enabled in {REGION}"


def test_a_replica_without_backup_fails_naming_its_region(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Any, ddb: Any
) -> None:
    # GIVEN a table with PITR in its own region, and its replica in the failover region without it
    failover = "eu-west-1"
    spec_data["regions"]["failover"] = failover
    spec_data["resources"]["tables"][0]["replicaRegions"] = ["failover"]
    spec = build_spec(spec_data)
    _existing_table_without_pitr(ddb)
    ddb.update_continuous_backups(
        TableName=TABLE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    _existing_table_without_pitr(boto3.client("dynamodb", region_name=failover))

    # WHEN preflight runs
    with pytest.raises(PreflightFailed) as raised:
        run_preflight(target, ACCOUNT, spec, None, _now())

    # THEN the backup check passes in the table's region and fails in the failover region, naming it
    backups = [(c.region, c.passed) for c in raised.value.checks if c.name == "table.backup"]
    assert backups == [(REGION, True), (failover, False)]
    assert str(raised.value) == (
        f"table {TABLE} in {failover} has neither point-in-time recovery nor an AVAILABLE backup from the last 24 hours"
    )


def test_every_failure_is_listed_on_its_own_line(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Any, ddb: Any
) -> None:
    # GIVEN a wrong account, a missing required ticket and an unprotected existing table
    spec_data["policy"] = {"changeTicket": {"required": True}}
    spec = build_spec(spec_data)
    _existing_table_without_pitr(ddb)

    # WHEN preflight runs
    # THEN the error lists all three problems, one per line
    with pytest.raises(PreflightFailed) as raised:
        run_preflight(target, "999999999999", spec, None, _now())
    lines = str(raised.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("credentials are for account 999999999999")
    assert lines[1] == "environment test requires a change ticket, but none was given"
    assert lines[2].startswith(f"table {TABLE} in {REGION} has neither")


def test_failover_bucket_is_checked_in_its_own_region(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Any
) -> None:
    # GIVEN a bucket placed in the failover region, which exists there already
    spec_data["regions"]["failover"] = "eu-west-1"
    spec_data["resources"]["buckets"].append({"name": "bbws-test-failover", "region": "failover"})
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="bbws-test-failover", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )

    # WHEN preflight runs
    results = run_preflight(target, ACCOUNT, build_spec(spec_data), None, _now())

    # THEN that bucket is checked in eu-west-1 and will be adopted
    check = next(r for r in results if r.resource == "bbws-test-failover")
    assert (check.region, check.detail) == ("eu-west-1", f"exists in account {ACCOUNT}, will be adopted")


# ---------------------------------------------------------------- the release tag (runbook section 6 step 2)


@pytest.mark.parametrize(
    ("tag", "required", "passed", "detail"),
    [
        (None, False, True, "no release tag required"),
        (None, True, False, "environment test deploys only a tagged release (policy.releaseTag.required)"),
        ("v{today}-test-s3-dynamodb", True, True, "release tag v{today}-test-s3-dynamodb"),
        ("v{today}-prod-s3-dynamodb", False, False, "is not v<YYYY.MM.DD>-test-<name>"),
        ("v2026.13.40-test-x", True, False, "2026.13.40 is not a date"),
        ("v{in_three_days}-test-x", True, False, "is dated after today"),
    ],
    ids=["none-needed", "missing", "good", "other-environment", "not-a-date", "future"],
)
def test_the_release_tag_names_the_environment_and_a_day_not_yet_to_come(
    spec: EnvironmentSpec, tag: str | None, required: bool, passed: bool, detail: str
) -> None:
    now = _now()
    days = {"today": f"{now:%Y.%m.%d}", "in_three_days": f"{now + timedelta(days=3):%Y.%m.%d}"}
    result = release_tag_check(spec, tag.format(**days) if tag else None, now, required=required)
    assert (result.name, result.passed) == ("release-tag", passed)
    assert detail.format(**days) in result.detail
