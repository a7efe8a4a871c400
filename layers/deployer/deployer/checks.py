"""Runbook section 7, "Immediate Validation", as code: every check runs and reports on its own."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache, partial
from typing import Any

from botocore.exceptions import ClientError

from deployer import clock
from deployer.aws import TargetSession, error_code, fan_out, transient_errors
from deployer.errors import ValidationFailed
from deployer.resources import pitr_status
from deployer.spec import Bucket, EnvironmentSpec, Table

# A table's DescribeTable answer, read once per validation and shared by its checks.
Describe = Callable[[], dict[str, Any]]
Check = Callable[[], tuple[bool, str]]
VALIDATION_PREFIX = "_deployer/validation/"

# The partition keys of the deployer's own test items, the only ones its role may delete
# (target-account/deployment-role.yaml, ValidationItemsOnly; a unit test keeps them equal).
VALIDATION_ITEM_PREFIX = "_deployer-validation-"
VALIDATION_NUMBER_PREFIX = "-7351000000000000000000000000"
VALIDATION_NUMBER_DIGITS = 8


@dataclass(frozen=True)
class CheckResult:
    name: str
    region: str
    resource: str
    passed: bool
    detail: str
    # Passed, but only after AWS calls were retried: transient connectivity, worth a warning.
    recovered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_check(name: str, region: str, resource: str, check: Check) -> CheckResult:
    """Run one check. An AWS error is a failed check; a retryable one raises TransientAwsError instead."""
    try:
        with transient_errors():
            passed, detail = check()
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", "")
        return CheckResult(name, region, resource, False, f"{error_code(exc)}: {message}".rstrip(": "))
    return CheckResult(name, region, resource, passed, detail)


def validate_region(
    target: TargetSession, spec: EnvironmentSpec, region: str, marker: str, *, shard: int = 0, of: int = 1
) -> list[CheckResult]:
    """Run every post-deployment check for the resources the spec places in ``region`` (one shard of them).

    ``marker`` (e.g. the deployment id) names the test object and item, so concurrent or
    leftover validations are told apart. Resources are checked side by side, each one's
    checks in order.
    """
    s3 = target.client("s3", region)
    ddb = target.client("dynamodb", region)
    cloudwatch = target.client("cloudwatch", region)
    threshold_ms = spec.policy.rollback.latency_threshold_ms

    def checked(resource: Bucket | Table) -> list[CheckResult]:
        results = []
        if isinstance(resource, Bucket):
            for name, check in _bucket_checks(s3, resource, spec.tags_for(resource), target.account, marker):
                results.extend(_timed(target, name, region, resource.name, check, threshold_ms=threshold_ms))
            return results
        for name, check in _table_checks(ddb, resource, spec.tags_for(resource), marker):
            results.extend(_timed(target, name, region, resource.name, check, threshold_ms=threshold_ms))
        # After the round trip, whose write CloudWatch counts: the table's metrics must be visible.
        results.append(
            run_check("monitoring.metrics", region, resource.name, partial(_table_metrics, cloudwatch, resource.name))
        )
        return results

    resources = spec.resources_in(region, shard, of)
    return [result for results in fan_out(checked, resources, len(resources)) for result in results]


def _timed(
    target: TargetSession, name: str, region: str, resource: str, check: Check, *, threshold_ms: int
) -> list[CheckResult]:
    """Run a check, noting retried calls; the write-read-delete round trip is also timed."""
    retries, started = target.log.retries, time.perf_counter()
    result = run_check(name, region, resource, check)
    if result.passed and target.log.retries > retries:
        detail = f"{result.detail} (after {target.log.retries - retries} retried call(s))"
        result = CheckResult(name, region, resource, True, detail, recovered=True)
    if not name.endswith(".write-read-delete") or not result.passed:
        return [result]
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    latency = CheckResult(
        "performance.latency",
        region,
        resource,
        elapsed_ms <= threshold_ms,
        f"write, read and delete took {elapsed_ms} ms (threshold {threshold_ms} ms)",
    )
    return [result, latency]


def raise_if_failed(results: list[CheckResult]) -> None:
    """Raise ValidationFailed listing every failed (or only-after-retries) check, one per line.

    A check that passed only after retries is reported too, so the rollback decision can weigh
    it (the runbook fixes transient connectivity forward, with a warning).
    """
    failed = [r for r in results if not r.passed or r.recovered]
    if failed:
        raise ValidationFailed("\n".join(f"{r.region} {r.resource} {r.name}: {r.detail}" for r in failed))


def _tag_problems(desired: dict[str, str], actual: dict[str, str]) -> list[str]:
    problems = []
    for key, value in sorted(desired.items()):
        if key not in actual:
            problems.append(f"tag {key} is missing")
        elif actual[key] != value:
            problems.append(f"tag {key} is {actual[key]!r}, expected {value!r}")
    return problems


def _tags_result(desired: dict[str, str], actual: dict[str, str]) -> tuple[bool, str]:
    problems = _tag_problems(desired, actual)
    return (False, "; ".join(problems)) if problems else (True, f"all {len(desired)} tags present")


# ---------------------------------------------------------------- buckets


def _bucket_checks(s3: Any, bucket: Bucket, tags: dict[str, str], account: str, marker: str) -> list[tuple[str, Check]]:
    name = bucket.name
    checks: list[tuple[str, Check]] = [("bucket.exists", partial(_bucket_exists, s3, name, account))]
    if bucket.versioning:
        checks.append(("bucket.versioning", partial(_bucket_versioning, s3, name)))
    checks += [
        ("bucket.public-access-block", partial(_bucket_public_access_block, s3, bucket)),
        ("bucket.encryption", partial(_bucket_encryption, s3, bucket)),
        ("bucket.tags", partial(_bucket_tags, s3, name, tags)),
        ("bucket.write-read-delete", partial(_bucket_round_trip, s3, name, account, marker)),
    ]
    return checks


def _bucket_exists(s3: Any, name: str, account: str) -> tuple[bool, str]:
    try:
        s3.head_bucket(Bucket=name, ExpectedBucketOwner=account)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False, "bucket does not exist"
        if error_code(exc) in ("403", "AccessDenied", "Forbidden"):
            return False, f"bucket is not accessible as account {account} (403)"
        raise
    return True, f"exists in account {account}"


def _bucket_versioning(s3: Any, name: str) -> tuple[bool, str]:
    status = s3.get_bucket_versioning(Bucket=name).get("Status", "Disabled")
    return status == "Enabled", f"versioning is {status}" + ("" if status == "Enabled" else ", expected Enabled")


def _bucket_public_access_block(s3: Any, bucket: Bucket) -> tuple[bool, str]:
    try:
        actual = s3.get_public_access_block(Bucket=bucket.name)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if error_code(exc) == "NoSuchPublicAccessBlockConfiguration":
            return False, "no public access block is configured"
        raise
    wrong = [
        f"{key} is {actual.get(key, False)}, expected {value}"
        for key, value in bucket.public_access_block.to_aws().items()
        if actual.get(key, False) != value
    ]
    return (False, "; ".join(wrong)) if wrong else (True, "public access block as specified")


def _bucket_encryption(s3: Any, bucket: Bucket) -> tuple[bool, str]:
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket.name)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as exc:
        if error_code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
            return False, "no default encryption is configured"
        raise
    default = rules[0]["ApplyServerSideEncryptionByDefault"]
    expected = bucket.encryption
    if default["SSEAlgorithm"] != expected.algorithm:
        return False, f"encryption is {default['SSEAlgorithm']}, expected {expected.algorithm}"
    if expected.kms_key_id and default.get("KMSMasterKeyID") != expected.kms_key_id:
        return False, f"KMS key is {default.get('KMSMasterKeyID')}, expected {expected.kms_key_id}"
    return True, f"encrypted with {expected.algorithm}"


def _bucket_tags(s3: Any, name: str, desired: dict[str, str]) -> tuple[bool, str]:
    try:
        tag_set = s3.get_bucket_tagging(Bucket=name)["TagSet"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchTagSet":
            raise
        tag_set = []
    return _tags_result(desired, {t["Key"]: t["Value"] for t in tag_set})


def _bucket_round_trip(s3: Any, name: str, account: str, marker: str) -> tuple[bool, str]:
    key = f"{VALIDATION_PREFIX}{marker}.txt"
    body = f"bbws-deployer validation {marker}\n".encode()
    owner = {"Bucket": name, "Key": key, "ExpectedBucketOwner": account}
    put = s3.put_object(**owner, Body=body)
    # Deleting the exact version leaves neither a version nor a delete marker behind. S3 gives
    # objects written while versioning is off or suspended the version id "null".
    version = put.get("VersionId") or "null"
    try:
        read = s3.get_object(**owner)["Body"].read()
    finally:
        s3.delete_object(**owner, VersionId=version)
    if read != body:
        return False, f"read back {len(read)} bytes that differ from the {len(body)} written"
    return True, f"wrote, read back and deleted {key}"


# ---------------------------------------------------------------- tables


def _table_checks(ddb: Any, table: Table, tags: dict[str, str], marker: str) -> list[tuple[str, Check]]:
    # One DescribeTable answers the status, key schema, billing mode and ARN checks.
    describe: Describe = cache(lambda: dict(ddb.describe_table(TableName=table.name)["Table"]))
    checks: list[tuple[str, Check]] = [
        ("table.active", partial(_table_active, describe)),
        ("table.key-schema", partial(_table_key_schema, describe, table)),
        ("table.billing-mode", partial(_table_billing_mode, describe, table)),
    ]
    if table.ttl_attribute:
        checks.append(("table.ttl", partial(_table_ttl, ddb, table.name, table.ttl_attribute)))
    if table.point_in_time_recovery:
        checks.append(("table.point-in-time-recovery", partial(_table_pitr, ddb, table.name)))
    checks += [
        ("table.tags", partial(_table_tags, ddb, describe, tags)),
        ("table.write-read-delete", partial(_table_round_trip, ddb, table, marker)),
    ]
    return checks


def _table_metrics(cloudwatch: Any, name: str) -> tuple[bool, str]:
    """Runbook section 7, extended: the table's CloudWatch metrics are visible."""
    found = cloudwatch.list_metrics(Namespace="AWS/DynamoDB", Dimensions=[{"Name": "TableName", "Value": name}]).get(
        "Metrics", []
    )
    if found:
        return True, f"{len(found)} CloudWatch metric(s) in AWS/DynamoDB for the table"
    return False, "no CloudWatch metrics in AWS/DynamoDB for the table yet (monitoring not visible)"


def _table_active(describe: Describe) -> tuple[bool, str]:
    status = describe()["TableStatus"]
    return status == "ACTIVE", f"table is {status}" + ("" if status == "ACTIVE" else ", expected ACTIVE")


def _describe_keys(desc: dict[str, Any]) -> str:
    types = {a["AttributeName"]: a["AttributeType"] for a in desc["AttributeDefinitions"]}
    return ", ".join(f"{k['KeyType']} {k['AttributeName']} ({types[k['AttributeName']]})" for k in desc["KeySchema"])


def _table_key_schema(describe: Describe, table: Table) -> tuple[bool, str]:
    desc = describe()
    keys = [table.partition_key] + ([table.sort_key] if table.sort_key else [])
    expected = ", ".join(f"{kind} {k.name} ({k.type})" for k, kind in zip(keys, ("HASH", "RANGE"), strict=False))
    actual = _describe_keys(desc)
    return (True, f"keys are {actual}") if actual == expected else (False, f"keys are {actual}, expected {expected}")


def _table_billing_mode(describe: Describe, table: Table) -> tuple[bool, str]:
    desc = describe()
    mode = desc.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
    ok = mode == table.billing_mode
    return ok, f"billing mode is {mode}" + ("" if ok else f", expected {table.billing_mode}")


def _table_ttl(ddb: Any, name: str, attribute: str) -> tuple[bool, str]:
    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    status, actual = ttl.get("TimeToLiveStatus", "DISABLED"), ttl.get("AttributeName")
    if status == "ENABLED" and actual == attribute:
        return True, f"TTL enabled on {attribute}"
    return False, f"TTL is {status}" + (f" on {actual}" if actual else "") + f", expected ENABLED on {attribute}"


def _table_pitr(ddb: Any, name: str) -> tuple[bool, str]:
    status = pitr_status(ddb, name)
    ok = status == "ENABLED"
    return ok, f"point-in-time recovery is {status}" + ("" if ok else ", expected ENABLED")


def _table_tags(ddb: Any, describe: Describe, desired: dict[str, str]) -> tuple[bool, str]:
    arn = describe()["TableArn"]
    actual: dict[str, str] = {}
    kwargs: dict[str, Any] = {"ResourceArn": arn}
    while True:
        page = ddb.list_tags_of_resource(**kwargs)
        actual.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
        if not page.get("NextToken"):
            return _tags_result(desired, actual)
        kwargs["NextToken"] = page["NextToken"]


def validation_key(table: Table, marker: str) -> dict[str, dict[str, Any]]:
    """The key of the item the write-read-delete check uses, built from the table's key schema.

    Its partition key is one that the deployment role's ``ValidationItemsOnly`` grant lets it
    delete (``dynamodb:LeadingKeys``, which sees a key as text: a number as written, binary in
    base64): ``VALIDATION_ITEM_PREFIX`` then the marker for S and B (the prefix is 21 bytes, so its
    base64 is the same 28 characters whatever follows), ``VALIDATION_NUMBER_PREFIX`` then
    digits of the marker's hash for N (a 36-digit negative number, far from any real id).
    """
    text = f"{VALIDATION_ITEM_PREFIX}{marker}"
    digits = str(int(hashlib.sha256(marker.encode()).hexdigest(), 16))[:VALIDATION_NUMBER_DIGITS]
    values: dict[str, dict[str, Any]] = {
        "S": {"S": text},
        "N": {"N": f"{VALIDATION_NUMBER_PREFIX}{digits}"},
        "B": {"B": text.encode()},
    }
    key = {table.partition_key.name: values[table.partition_key.type]}
    if table.sort_key:
        key[table.sort_key.name] = values[table.sort_key.type]
    return key


def put_test_item(ddb: Any, table: Table, key: dict[str, Any], marker: str) -> dict[str, Any] | None:
    """Write a test item under ``key`` and return it; None if an item already has that key (it is never touched)."""
    item = {**key, "deployerValidation": {"S": marker}}
    if table.ttl_attribute:
        # If cleanup fails, TTL removes the item (in every replica) within a couple of days.
        item[table.ttl_attribute] = {"N": str(int(clock.now().timestamp()) + 86400)}
    try:
        ddb.put_item(
            TableName=table.name,
            Item=item,
            ConditionExpression="attribute_not_exists(#pk)",
            ExpressionAttributeNames={"#pk": table.partition_key.name},
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return None
        raise
    return item


def _table_round_trip(ddb: Any, table: Table, marker: str) -> tuple[bool, str]:
    key = validation_key(table, marker)
    item = put_test_item(ddb, table, key, marker)
    if item is None:
        return False, "an item with the validation key already exists; left untouched"
    try:
        read = ddb.get_item(TableName=table.name, Key=key, ConsistentRead=True).get("Item")
    finally:
        ddb.delete_item(TableName=table.name, Key=key)
    if read != item:
        return False, "the item read back differs from the one written"
    return True, "wrote, read back and deleted a test item"
