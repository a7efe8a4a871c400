"""Post-deployment validation (runbook section 7) against moto."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from deployer.aws import TargetSession
from deployer.checks import CheckResult, raise_if_failed, validate_region, validation_key
from deployer.errors import ValidationFailed
from deployer.plan import apply_region
from deployer.resources import WaitConfig
from deployer.spec import EnvironmentSpec
from sandbox.iam_policy import Request, evaluate
from sandbox.template import load_template

REGION = "af-south-1"
BUCKET = "bbws-test-data-bucket"
TABLE = "Site-Generation-State"
REPO = Path(__file__).resolve().parents[2]
MARKER = "dep-0001"
NO_WAIT = WaitConfig(delay_seconds=0, max_attempts=3)
BUCKET_CHECKS = [
    "bucket.exists",
    "bucket.versioning",
    "bucket.public-access-block",
    "bucket.encryption",
    "bucket.tags",
    "bucket.write-read-delete",
    "performance.latency",
]
TABLE_CHECKS = [
    "table.active",
    "table.key-schema",
    "table.billing-mode",
    "table.ttl",
    "table.point-in-time-recovery",
    "table.tags",
    "table.write-read-delete",
    "performance.latency",
    "monitoring.metrics",
]


def _result(results: list[CheckResult], resource: str, name: str) -> CheckResult:
    return next(r for r in results if r.resource == resource and r.name == name)


def _table_metrics_published(target: TargetSession) -> None:
    """What AWS does after writes to a table (moto in-process does not): its CloudWatch metrics appear."""
    target.client("cloudwatch", REGION).put_metric_data(
        Namespace="AWS/DynamoDB",
        MetricData=[
            {
                "MetricName": "ConsumedWriteCapacityUnits",
                "Value": 1.0,
                "Dimensions": [{"Name": "TableName", "Value": TABLE}],
            }
        ],
    )


def test_missing_table_metrics_fail_the_monitoring_check_only(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN an applied environment whose table has no CloudWatch metrics
    apply_region(target, spec, REGION, NO_WAIT)
    # WHEN the region is validated
    results = validate_region(target, spec, REGION, MARKER)
    # THEN only the monitoring check fails, saying what is missing
    failed = [(r.name, r.detail) for r in results if not r.passed]
    assert failed == [
        ("monitoring.metrics", "no CloudWatch metrics in AWS/DynamoDB for the table yet (monitoring not visible)")
    ]


def test_every_check_passes_after_apply(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN an applied environment, whose table's metrics CloudWatch shows
    apply_region(target, spec, REGION, NO_WAIT)
    _table_metrics_published(target)

    # WHEN the region is validated
    results = validate_region(target, spec, REGION, MARKER)

    # THEN every runbook check ran, for each resource, and passed
    assert [r.name for r in results] == BUCKET_CHECKS + TABLE_CHECKS
    assert [r for r in results if not r.passed] == []
    assert _result(results, BUCKET, "bucket.versioning").detail == "versioning is Enabled"


def test_validation_leaves_no_object_or_item_behind(
    target: TargetSession, spec: EnvironmentSpec, s3: Any, ddb: Any
) -> None:
    # GIVEN an applied environment with a versioned bucket
    apply_region(target, spec, REGION, NO_WAIT)

    # WHEN the region is validated
    results = validate_region(target, spec, REGION, MARKER)

    # THEN the test object left no version or delete marker, and the test item is gone
    assert _result(results, BUCKET, "bucket.write-read-delete").passed
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="_deployer/")
    assert versions.get("Versions", []) == []
    assert versions.get("DeleteMarkers", []) == []
    table = spec.resources.tables[0]
    assert "Item" not in ddb.get_item(TableName=TABLE, Key=validation_key(table, MARKER), ConsistentRead=True)


def test_failed_check_is_reported_and_the_others_still_run(
    target: TargetSession, spec: EnvironmentSpec, s3: Any
) -> None:
    # GIVEN an applied environment whose bucket versioning was suspended by hand
    apply_region(target, spec, REGION, NO_WAIT)
    _table_metrics_published(target)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})

    # WHEN the region is validated
    results = validate_region(target, spec, REGION, MARKER)

    # THEN only versioning fails, with a readable detail, and every other check ran
    failed = [r for r in results if not r.passed]
    assert [(r.resource, r.name, r.detail) for r in failed] == [
        (BUCKET, "bucket.versioning", "versioning is Suspended, expected Enabled")
    ]
    assert len(results) == len(BUCKET_CHECKS) + len(TABLE_CHECKS)
    # ...and the round trip in the suspended bucket still cleaned up after itself
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="_deployer/")
    assert versions.get("Versions", []) + versions.get("DeleteMarkers", []) == []

    # AND raising lists the failure as "<region> <resource> <name>: <detail>"
    with pytest.raises(ValidationFailed) as raised:
        raise_if_failed(results)
    assert str(raised.value) == f"{REGION} {BUCKET} bucket.versioning: versioning is Suspended, expected Enabled"


def test_a_slow_round_trip_fails_the_latency_check_only(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Any
) -> None:
    # GIVEN a latency threshold no round trip can meet
    spec_data["policy"] = {"rollback": {"latencyThresholdMs": 1}}
    spec = build_spec(spec_data)
    apply_region(target, spec, REGION, NO_WAIT)
    # WHEN the region is validated
    results = validate_region(target, spec, REGION, MARKER)
    # THEN the round trips pass, and the latency checks fail saying how long they took
    assert _result(results, BUCKET, "bucket.write-read-delete").passed
    slow = [r for r in results if r.name == "performance.latency"]
    assert [r.resource for r in slow] == [BUCKET, TABLE]
    assert not any(r.passed for r in slow)
    assert all("threshold 1 ms" in r.detail for r in slow)


def test_missing_resources_fail_every_check_without_crashing(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN nothing was deployed
    # WHEN the region is validated
    results = validate_region(target, spec, REGION, MARKER)

    # THEN every check is reported failed, with the AWS error where there is one (a failed round
    # trip is not timed, so there is no latency check)
    timed = ("performance.latency",)
    assert [r.name for r in results] == [n for n in BUCKET_CHECKS + TABLE_CHECKS if n not in timed]
    assert not any(r.passed for r in results)
    assert _result(results, BUCKET, "bucket.exists").detail == "bucket does not exist"
    assert _result(results, TABLE, "table.active").detail.startswith("ResourceNotFoundException")


def test_disabled_pitr_and_changed_tags_fail_with_details(
    target: TargetSession, spec: EnvironmentSpec, ddb: Any
) -> None:
    # GIVEN an applied table with PITR disabled and one of our tags changed
    apply_region(target, spec, REGION, NO_WAIT)
    ddb.update_continuous_backups(
        TableName=TABLE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
    )
    arn = ddb.describe_table(TableName=TABLE)["Table"]["TableArn"]
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "Environment", "Value": "prod"}])

    # WHEN the region is validated
    results = validate_region(target, spec, REGION, MARKER)

    # THEN both are failed with what is wrong
    pitr = _result(results, TABLE, "table.point-in-time-recovery")
    assert (pitr.passed, pitr.detail) == (False, "point-in-time recovery is DISABLED, expected ENABLED")
    tags = _result(results, TABLE, "table.tags")
    assert (tags.passed, tags.detail) == (False, "tag Environment is 'prod', expected 'test'")


def test_round_trip_builds_keys_of_every_type(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Any, ddb: Any
) -> None:
    # GIVEN a table with a numeric partition key and a binary sort key, and no TTL
    spec_data["resources"]["tables"][0].update(
        {"partitionKey": {"name": "Id", "type": "N"}, "sortKey": {"name": "Blob", "type": "B"}, "ttlAttribute": None}
    )
    spec = build_spec(spec_data)
    apply_region(target, spec, REGION, NO_WAIT)

    # WHEN the region is validated
    results = validate_region(target, spec, REGION, MARKER)

    # THEN the item round trip passes, the TTL check is skipped, and the item is gone
    assert _result(results, TABLE, "table.write-read-delete").passed
    assert "table.ttl" not in [r.name for r in results]
    assert ddb.scan(TableName=TABLE)["Items"] == []


def _validation_items_only() -> dict[str, Any]:
    """The deployment role's grant to delete the deployer's own test items, its Resource made concrete."""
    role = load_template(REPO / "target-account" / "deployment-role.yaml")["Resources"]["DeploymentRole"]
    (policy,) = [p for p in role["Properties"]["Policies"] if p["PolicyName"] == "provision-and-validate"]
    (statement,) = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Sid") == "ValidationItemsOnly"]
    return {**statement, "Resource": "arn:aws:dynamodb:*:536580886816:table/Site-*"}


@pytest.mark.parametrize("kind", ["S", "N", "B"])
def test_every_validation_partition_key_is_one_the_deployment_role_may_delete(
    spec_data: dict[str, Any], build_spec: Any, kind: str
) -> None:
    # GIVEN a table whose partition key is of this type (with a sort key)
    spec_data["resources"]["tables"][0].update(
        {"partitionKey": {"name": "Id", "type": kind}, "sortKey": {"name": "At", "type": "S"}}
    )
    table = build_spec(spec_data).resources.tables[0]
    (value,) = validation_key(table, MARKER)["Id"].values()
    # WHEN IAM sees its DeleteItem (dynamodb:LeadingKeys is the partition key as text: binary in base64)
    text = base64.b64encode(value).decode() if kind == "B" else str(value)
    table_arn = "arn:aws:dynamodb:af-south-1:536580886816:table/Site-Generation-State"
    policy = {"Version": "2012-10-17", "Statement": [_validation_items_only()]}
    allowed = evaluate([policy], Request("dynamodb:DeleteItem", table_arn, {"dynamodb:LeadingKeys": [text]}))
    # THEN the role allows it; and a real item's key of the same type it does not
    assert allowed.allowed
    real = {"S": "site-001", "N": "-7351", "B": base64.b64encode(b"site-001").decode()}[kind]
    denied = evaluate([policy], Request("dynamodb:DeleteItem", table_arn, {"dynamodb:LeadingKeys": [real]}))
    assert not denied.allowed


def test_existing_item_with_the_validation_key_is_left_untouched(
    target: TargetSession, spec: EnvironmentSpec, ddb: Any
) -> None:
    # GIVEN an item that happens to have the validation key already exists
    apply_region(target, spec, REGION, NO_WAIT)
    key = validation_key(spec.resources.tables[0], MARKER)
    ddb.put_item(TableName=TABLE, Item={**key, "Data": {"S": "real"}})

    # WHEN the region is validated
    results = validate_region(target, spec, REGION, MARKER)

    # THEN the round trip fails rather than overwrite or delete it
    check = _result(results, TABLE, "table.write-read-delete")
    assert (check.passed, check.detail) == (False, "an item with the validation key already exists; left untouched")
    assert ddb.get_item(TableName=TABLE, Key=key)["Item"]["Data"] == {"S": "real"}
