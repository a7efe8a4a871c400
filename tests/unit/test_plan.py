"""Planning and applying S3 buckets and DynamoDB tables against moto."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deployer.aws import TargetSession
from deployer.errors import PlanRejected, ProvisioningFailed
from deployer.plan import Plan, apply_region, plan_environment
from deployer.resources import BucketOwnedElsewhere, ResourcePlan, WaitConfig, apply_table, read_bucket
from deployer.spec import EnvironmentSpec

ACCOUNT = "123456789012"
REGION = "af-south-1"
BUCKET = "bbws-test-data-bucket"
TABLE = "Site-Generation-State"
NO_WAIT = WaitConfig(delay_seconds=0, max_attempts=3)


def _by_name(plan: Plan) -> dict[str, ResourcePlan]:
    return {r.name: r for r in plan.resources}


def _fresh(target: TargetSession) -> TargetSession:
    """A new session (and call log) in the same mocked account."""
    return TargetSession(session=target.session, account=target.account)


def test_first_plan_adds_everything(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN an account without any of the spec's resources
    # WHEN the environment is planned
    plan = plan_environment(target, spec)

    # THEN every resource is to be added, read-only
    assert plan.summary() == "Plan: 2 to add, 0 to change, 0 unchanged."
    assert {r.action for r in plan.resources} == {"add"}
    assert target.log.mutating == 0
    bucket_fields = {c["field"] for c in _by_name(plan)[BUCKET].changes}
    assert bucket_fields == {"versioning", "publicAccessBlock", "encryption", "tags"}
    table_fields = {c["field"] for c in _by_name(plan)[TABLE].changes}
    assert table_fields == {"keySchema", "billingMode", "ttlAttribute", "pointInTimeRecovery", "tags"}


def test_plan_round_trips_through_json_with_the_same_hash(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN a plan
    plan = plan_environment(target, spec)

    # WHEN it goes through JSON (as it does through Step Functions) and back
    data = json.loads(json.dumps(plan.to_dict()))
    restored = Plan.from_dict(data)

    # THEN it is the same plan
    assert data["add"] == 2
    assert data["summary"] == plan.summary()
    assert data["hash"].startswith("sha256:")
    assert restored.hash == plan.hash
    assert restored.resources == plan.resources


def test_apply_creates_resources_as_specified(target: TargetSession, spec: EnvironmentSpec, s3: Any, ddb: Any) -> None:
    # GIVEN an empty account
    # WHEN the region is applied
    applied = apply_region(target, spec, REGION, NO_WAIT)

    # THEN the bucket and table exist with every specified attribute
    assert [(r.kind, r.action) for r in applied] == [("bucket", "add"), ("table", "add")]
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == REGION
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"].values())
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    bucket_tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert bucket_tags == {
        "Project": "bbws",
        "Environment": "test",
        "ManagedBy": "bbws-deployer",
        "DataClassification": "internal",
    }
    table = ddb.describe_table(TableName=TABLE)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "SiteId", "KeyType": "HASH"}]
    assert ddb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]["AttributeName"] == "TTL"
    pitr = ddb.describe_continuous_backups(TableName=TABLE)["ContinuousBackupsDescription"]
    assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


def test_second_apply_changes_nothing(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN an applied environment
    apply_region(target, spec, REGION, NO_WAIT)

    # WHEN it is planned and applied again
    second = _fresh(target)
    plan = plan_environment(second, spec)
    applied = apply_region(second, spec, REGION, NO_WAIT)

    # THEN everything is unchanged and no mutating call is made
    assert plan.summary() == "Plan: 0 to add, 0 to change, 2 unchanged."
    assert {r.action for r in applied} == {"unchanged"}
    assert second.log.mutating == 0


def test_plan_hash_is_stable_and_follows_the_changes(target: TargetSession, spec: EnvironmentSpec, s3: Any) -> None:
    # GIVEN an applied environment, planned twice
    apply_region(target, spec, REGION, NO_WAIT)
    first, again = plan_environment(target, spec), plan_environment(target, spec)

    # WHEN someone changes a bucket by hand
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})

    # THEN the hash only moves with the planned changes
    assert first.hash == again.hash
    assert plan_environment(target, spec).hash != first.hash


def test_suspended_versioning_is_planned_and_repaired(target: TargetSession, spec: EnvironmentSpec, s3: Any) -> None:
    # GIVEN a deployed bucket whose versioning was suspended by hand
    apply_region(target, spec, REGION, NO_WAIT)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})

    # WHEN it is planned and applied
    plan = plan_environment(target, spec)
    apply_region(target, spec, REGION, NO_WAIT)

    # THEN exactly that drift is a change, and it is repaired
    assert _by_name(plan)[BUCKET].action == "change"
    assert _by_name(plan)[BUCKET].changes == [{"field": "versioning", "before": "Suspended", "after": "Enabled"}]
    assert _by_name(plan)[TABLE].action == "unchanged"
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    assert plan_environment(target, spec).summary() == "Plan: 0 to add, 0 to change, 2 unchanged."


def test_changed_tags_are_restored_and_foreign_tags_kept(target: TargetSession, spec: EnvironmentSpec, s3: Any) -> None:
    # GIVEN a deployed bucket whose tags were edited: one of ours changed, a foreign one added
    apply_region(target, spec, REGION, NO_WAIT)
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    tags.update({"Environment": "oops", "CostCentre": "42"})
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})

    # WHEN it is planned and applied
    change = _by_name(plan_environment(target, spec))[BUCKET]
    apply_region(target, spec, REGION, NO_WAIT)

    # THEN the tags are a change; ours are restored and the foreign tag survives
    assert change.action == "change"
    assert [c["field"] for c in change.changes] == ["tags"]
    assert change.changes[0]["before"]["Environment"] == "oops"
    after = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert after["Environment"] == "test"
    assert after["CostCentre"] == "42"


def test_foreign_tags_alone_are_not_a_change(target: TargetSession, spec: EnvironmentSpec, ddb: Any) -> None:
    # GIVEN a deployed table that someone added a tag to
    apply_region(target, spec, REGION, NO_WAIT)
    arn = ddb.describe_table(TableName=TABLE)["Table"]["TableArn"]
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "Owner", "Value": "someone"}])

    # WHEN it is planned
    plan = plan_environment(target, spec)

    # THEN nothing is to change
    assert _by_name(plan)[TABLE].action == "unchanged"


def test_disabled_pitr_is_planned_and_repaired(target: TargetSession, spec: EnvironmentSpec, ddb: Any) -> None:
    # GIVEN a deployed table whose point-in-time recovery was disabled by hand
    apply_region(target, spec, REGION, NO_WAIT)
    ddb.update_continuous_backups(
        TableName=TABLE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
    )

    # WHEN it is planned and applied
    change = _by_name(plan_environment(target, spec))[TABLE]
    apply_region(target, spec, REGION, NO_WAIT)

    # THEN PITR is the one change, and it is enabled again
    assert change.changes == [{"field": "pointInTimeRecovery", "before": False, "after": True}]
    pitr = ddb.describe_continuous_backups(TableName=TABLE)["ContinuousBackupsDescription"]
    assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


def test_existing_bucket_is_adopted_not_recreated(target: TargetSession, spec: EnvironmentSpec, s3: Any) -> None:
    # GIVEN a bucket of that name already in the account, unconfigured, with an object in it
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BUCKET, Key="data.txt", Body=b"keep me")

    # WHEN the region is applied
    applied = apply_region(target, spec, REGION, NO_WAIT)

    # THEN it is changed in place: no create, and the data is still there
    assert [r.action for r in applied if r.kind == "bucket"] == ["change"]
    assert target.log.calls["s3:CreateBucket"] == 0
    assert s3.get_object(Bucket=BUCKET, Key="data.txt")["Body"].read() == b"keep me"


def test_key_schema_change_is_rejected(target: TargetSession, spec: EnvironmentSpec, ddb: Any) -> None:
    # GIVEN a table of that name whose partition key differs from the spec's
    ddb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "Id", "AttributeType": "S"}],
    )

    # WHEN the environment is planned or applied
    # THEN the plan is rejected naming the table and field, and nothing is touched
    with pytest.raises(PlanRejected, match=rf"table {TABLE}: keySchema:"):
        plan_environment(target, spec)
    with pytest.raises(PlanRejected):
        apply_region(target, spec, REGION, NO_WAIT)
    assert target.log.mutating == 0


def test_bucket_in_another_region_is_rejected(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN the bucket already exists in our account, but in eu-west-1
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )

    # WHEN the environment is planned
    # THEN the plan is rejected, naming the bucket and its region
    with pytest.raises(PlanRejected, match=rf"bucket {BUCKET}: region: exists in eu-west-1"):
        plan_environment(target, spec)


def test_forbidden_bucket_is_owned_elsewhere(aws: None) -> None:
    # GIVEN S3 answers 403 to head_bucket (moto answers 200 cross-account, so stub it)
    s3 = boto3.client("s3", region_name=REGION)
    with Stubber(s3) as stub:
        stub.add_client_error(
            "head_bucket",
            service_error_code="403",
            http_status_code=403,
            expected_params={"Bucket": BUCKET, "ExpectedBucketOwner": ACCOUNT},
        )

        # WHEN the bucket is read
        # THEN it is classified as owned elsewhere
        with pytest.raises(BucketOwnedElsewhere, match=BUCKET):
            read_bucket(s3, BUCKET, ACCOUNT)


def test_table_that_never_becomes_active_fails_provisioning(aws: None, spec: EnvironmentSpec) -> None:
    # GIVEN DynamoDB keeps reporting the new table as CREATING
    ddb = boto3.client("dynamodb", region_name=REGION)
    table = spec.resources.tables[0]
    plan = ResourcePlan("table", TABLE, REGION, "add", [{"field": "keySchema", "before": None, "after": {}}])
    with Stubber(ddb) as stub:
        stub.add_response("create_table", {"TableDescription": {"TableName": TABLE}})
        for _ in range(2):
            stub.add_response("describe_table", {"Table": {"TableName": TABLE, "TableStatus": "CREATING"}})

        # WHEN it is applied with a bounded wait
        # THEN provisioning fails naming the table and its status
        with pytest.raises(ProvisioningFailed, match=rf"table {TABLE}: still CREATING after 2 checks"):
            apply_table(ddb, REGION, table, {}, plan, wait=WaitConfig(delay_seconds=0, max_attempts=2))


def test_failover_resources_are_planned_in_their_region(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Any
) -> None:
    # GIVEN a spec with a failover region and a bucket placed there
    spec_data["regions"]["failover"] = "eu-west-1"
    spec_data["resources"]["buckets"].append({"name": "bbws-test-failover", "region": "failover"})
    spec = build_spec(spec_data)

    # WHEN the environment is planned
    plan = plan_environment(target, spec)

    # THEN the primary region comes first, and the failover region holds only the failover bucket
    assert [(r.region, r.name) for r in plan.resources] == [
        (REGION, BUCKET),
        (REGION, TABLE),
        ("eu-west-1", "bbws-test-failover"),
    ]
