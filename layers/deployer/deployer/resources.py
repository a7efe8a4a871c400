"""Desired versus actual state of S3 buckets and DynamoDB tables, and the calls that reconcile them.

Readers return JSON-serialisable dicts so a plan (and its ``prior`` state) can travel through
Step Functions. Planning is pure. Applying makes only the calls a plan's changes need, and
never deletes anything: a difference that would need a delete is rejected at plan time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from deployer.aws import error_code, transient_errors
from deployer.errors import DeployerError, PlanRejected, ProvisioningFailed, TransientAwsError

if TYPE_CHECKING:
    from deployer.spec import Bucket, Table

Kind = Literal["bucket", "table", "bucket-replication", "table-replica"]
Action = Literal["add", "change", "unchanged"]

# Not transient in general, but for these calls they mean "the resource is busy, try later";
# re-running apply is safe because it re-plans from fresh reads.
_BUSY_CODES = frozenset({"ContinuousBackupsUnavailableException", "ResourceInUseException", "OperationAborted"})


class BucketOwnedElsewhere(DeployerError):
    """The bucket name exists but not in the target account (S3 answered 403)."""


@dataclass(frozen=True)
class WaitConfig:
    delay_seconds: float
    max_attempts: int


@dataclass
class ResourcePlan:
    kind: Kind
    name: str
    region: str
    action: Action
    changes: list[dict[str, Any]] = field(default_factory=list)
    prior: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourcePlan:
        return cls(
            kind=data["kind"],
            name=data["name"],
            region=data["region"],
            action=data["action"],
            changes=list(data.get("changes", [])),
            prior=data.get("prior"),
        )

    @property
    def fields(self) -> set[str]:
        return {c["field"] for c in self.changes}


# ---------------------------------------------------------------- reading


def bucket_region(s3: Any, name: str, account: str) -> str | None:
    """The region of a bucket owned by ``account`` (one HeadBucket), or None if no bucket has that name.

    Raises BucketOwnedElsewhere when S3 answers 403 (the name belongs to another account,
    or we may not see it).
    """
    with transient_errors():
        try:
            response = s3.head_bucket(Bucket=name, ExpectedBucketOwner=account)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise BucketOwnedElsewhere(name) from exc
            if code in ("301", "PermanentRedirect"):
                headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                return str(headers.get("x-amz-bucket-region") or exc.response["Error"].get("Region"))
            raise
        if response.get("BucketRegion"):
            return str(response["BucketRegion"])
        # Buckets made before LocationConstraint existed report None (us-east-1) or "EU".
        location = s3.get_bucket_location(Bucket=name).get("LocationConstraint")
        return str({None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location))


def read_bucket(s3: Any, name: str, account: str) -> dict[str, Any] | None:
    """Actual state of a bucket owned by ``account``, or None if no bucket has that name.

    Raises BucketOwnedElsewhere when S3 answers 403 (the name belongs to another account,
    or we may not see it). A bucket in another region is reported with only its region,
    since its configuration has to be read through that region's endpoint.
    """
    region = bucket_region(s3, name, account)
    if region is None:
        return None
    if region != s3.meta.region_name:
        return {"region": region}
    with transient_errors():
        versioning = s3.get_bucket_versioning(Bucket=name).get("Status", "Disabled")
        pab = _or_default(lambda: s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"], {})
        encryption = _or_default(
            lambda: s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0], None
        )
        tag_set = _or_default(lambda: s3.get_bucket_tagging(Bucket=name)["TagSet"], [])
    return {
        "region": region,
        "versioning": versioning,
        "publicAccessBlock": {
            "blockPublicAcls": pab.get("BlockPublicAcls", False),
            "ignorePublicAcls": pab.get("IgnorePublicAcls", False),
            "blockPublicPolicy": pab.get("BlockPublicPolicy", False),
            "restrictPublicBuckets": pab.get("RestrictPublicBuckets", False),
        },
        "encryption": None
        if encryption is None
        else {
            "algorithm": encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
            "kmsKeyId": encryption["ApplyServerSideEncryptionByDefault"].get("KMSMasterKeyID"),
            "bucketKeyEnabled": encryption.get("BucketKeyEnabled", False),
        },
        "tags": {t["Key"]: t["Value"] for t in tag_set},
    }


def _or_default(read: Callable[[], Any], default: Any) -> Any:
    # S3 reports an absent configuration as an error; it means "not configured", not a failure.
    try:
        return read()
    except ClientError as exc:
        if error_code(exc) in (
            "NoSuchPublicAccessBlockConfiguration",
            "ServerSideEncryptionConfigurationNotFoundError",
            "NoSuchTagSet",
        ):
            return default
        raise


def pitr_status(ddb: Any, name: str) -> str:
    """A table's point-in-time recovery status (ENABLED, DISABLED, ...) in ``ddb``'s region; ClientError if none."""
    backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    return str(backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus", "DISABLED"))


def read_table(ddb: Any, name: str) -> dict[str, Any] | None:
    """Actual state of a table, or None if it does not exist."""
    with transient_errors():
        try:
            desc = ddb.describe_table(TableName=name)["Table"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        types = {a["AttributeName"]: a["AttributeType"] for a in desc["AttributeDefinitions"]}
        keys = {
            k["KeyType"]: {"name": k["AttributeName"], "type": types[k["AttributeName"]]} for k in desc["KeySchema"]
        }
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        pitr = pitr_status(ddb, name) == "ENABLED"
        tags: dict[str, str] = {}
        kwargs: dict[str, Any] = {"ResourceArn": desc["TableArn"]}
        while True:
            page = ddb.list_tags_of_resource(**kwargs)
            tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
    return {
        "status": desc["TableStatus"],
        "keySchema": {"partition": keys["HASH"], "sort": keys.get("RANGE")},
        # Tables that were always provisioned may have no BillingModeSummary at all.
        "billingMode": desc.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
        # ENABLING counts too: asking to enable TTL again while it is enabling is an error.
        "ttlAttribute": ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") else None,
        "pointInTimeRecovery": pitr,
        "tags": tags,
        "arn": desc["TableArn"],
        "itemCount": desc.get("ItemCount", 0),
    }


# ---------------------------------------------------------------- planning


def _change(name: str, before: Any, after: Any) -> dict[str, Any]:
    return {"field": name, "before": before, "after": after}


def _tag_change(desired: dict[str, str], actual: dict[str, str] | None) -> dict[str, Any] | None:
    # Only our keys matter: tags someone else added are neither compared nor removed.
    before = None if actual is None else {k: actual[k] for k in desired if k in actual}
    if desired and before != desired:
        return _change("tags", before, desired)
    return None


def _action(actual: dict[str, Any] | None, changes: list[dict[str, Any]]) -> Action:
    if actual is None:
        return "add"
    return "change" if changes else "unchanged"


def plan_bucket(bucket: Bucket, tags: dict[str, str], region: str, actual: dict[str, Any] | None) -> ResourcePlan:
    """Compare a bucket's spec with its actual state; raises PlanRejected for a move between regions."""
    if actual is not None and actual["region"] != region:
        raise PlanRejected(
            f"bucket {bucket.name}: region: exists in {actual['region']} but the spec places it in {region}; "
            "moving a bucket means deleting it, which the deployer never does"
        )
    current = actual or {}
    changes = []
    # versioning: false means "not managed": suspending it is never needed to reach the spec.
    if bucket.versioning and current.get("versioning") != "Enabled":
        changes.append(_change("versioning", current.get("versioning"), "Enabled"))
    desired_pab = bucket.public_access_block.model_dump(by_alias=True)
    if current.get("publicAccessBlock") != desired_pab:
        changes.append(_change("publicAccessBlock", current.get("publicAccessBlock"), desired_pab))
    desired_encryption = bucket.encryption.model_dump(by_alias=True)
    if current.get("encryption") != desired_encryption:
        changes.append(_change("encryption", current.get("encryption"), desired_encryption))
    if tag_change := _tag_change(tags, current.get("tags")):
        changes.append(tag_change)
    return ResourcePlan("bucket", bucket.name, region, _action(actual, changes), changes, actual)


def _key_schema(table: Table) -> dict[str, Any]:
    return {
        "partition": table.partition_key.model_dump(),
        "sort": table.sort_key.model_dump() if table.sort_key else None,
    }


def plan_table(table: Table, tags: dict[str, str], region: str, actual: dict[str, Any] | None) -> ResourcePlan:
    """Compare a table's spec with its actual state; raises PlanRejected for a key schema change."""
    desired_keys = _key_schema(table)
    current = actual or {}
    if actual is not None and actual["keySchema"] != desired_keys:
        raise PlanRejected(
            f"table {table.name}: keySchema: is {actual['keySchema']} but the spec wants {desired_keys}; "
            "changing a table's keys means recreating it, which the deployer never does"
        )
    actual_ttl = current.get("ttlAttribute")
    if table.ttl_attribute and actual_ttl and actual_ttl != table.ttl_attribute:
        raise PlanRejected(
            f"table {table.name}: ttlAttribute: TTL is enabled on {actual_ttl} but the spec wants "
            f"{table.ttl_attribute}; AWS only allows that after disabling TTL, which must be done by hand"
        )
    changes = []
    if actual is None:
        changes.append(_change("keySchema", None, desired_keys))
    if current.get("billingMode") != table.billing_mode:
        changes.append(_change("billingMode", current.get("billingMode"), table.billing_mode))
    # ttlAttribute unset / pointInTimeRecovery false mean "not managed", like bucket versioning.
    if table.ttl_attribute and actual_ttl != table.ttl_attribute:
        changes.append(_change("ttlAttribute", actual_ttl, table.ttl_attribute))
    if table.point_in_time_recovery and not current.get("pointInTimeRecovery"):
        changes.append(_change("pointInTimeRecovery", current.get("pointInTimeRecovery"), True))
    if tag_change := _tag_change(tags, current.get("tags")):
        changes.append(tag_change)
    return ResourcePlan("table", table.name, region, _action(actual, changes), changes, actual)


# ---------------------------------------------------------------- applying


@contextmanager
def provisioning(kind: Kind, name: str, region: str) -> Iterator[None]:
    """Name the resource in any AWS error; busy or throttled calls become TransientAwsError (retried)."""
    try:
        with transient_errors():
            yield
    except ClientError as exc:
        if error_code(exc) in _BUSY_CODES:
            raise TransientAwsError(f"{kind} {name} in {region}: {error_code(exc)}: {exc}") from exc
        message = exc.response.get("Error", {}).get("Message", "")
        raise ProvisioningFailed(
            f"{kind} {name} in {region}: {exc.operation_name}: {error_code(exc)}: {message}"
        ) from exc


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def apply_bucket(s3: Any, region: str, bucket: Bucket, tags: dict[str, str], plan: ResourcePlan) -> None:
    """Make the calls ``plan`` needs (none for an unchanged plan)."""
    fields = plan.fields
    with provisioning("bucket", bucket.name, region):
        if plan.action == "add":
            create: dict[str, Any] = {"Bucket": bucket.name, "ObjectOwnership": "BucketOwnerEnforced"}
            if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
                create["CreateBucketConfiguration"] = {"LocationConstraint": region}
            s3.create_bucket(**create)
        if "publicAccessBlock" in fields:
            s3.put_public_access_block(
                Bucket=bucket.name, PublicAccessBlockConfiguration=bucket.public_access_block.to_aws()
            )
        if "encryption" in fields:
            default: dict[str, Any] = {"SSEAlgorithm": bucket.encryption.algorithm}
            if bucket.encryption.kms_key_id:
                default["KMSMasterKeyID"] = bucket.encryption.kms_key_id
            rule = {
                "ApplyServerSideEncryptionByDefault": default,
                "BucketKeyEnabled": bucket.encryption.bucket_key_enabled,
            }
            s3.put_bucket_encryption(Bucket=bucket.name, ServerSideEncryptionConfiguration={"Rules": [rule]})
        if "versioning" in fields:
            s3.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})
        if "tags" in fields:
            # put_bucket_tagging replaces the whole set; merging keeps tags we do not manage.
            existing = (plan.prior or {}).get("tags") or {}
            s3.put_bucket_tagging(Bucket=bucket.name, Tagging={"TagSet": _tag_list({**existing, **tags})})


def _wait_active(ddb: Any, name: str, wait: WaitConfig) -> None:
    status = "unknown"
    for attempt in range(wait.max_attempts):
        with transient_errors():
            status = ddb.describe_table(TableName=name)["Table"]["TableStatus"]
        if status == "ACTIVE":
            return
        if attempt + 1 < wait.max_attempts:
            time.sleep(wait.delay_seconds)
    raise ProvisioningFailed(f"table {name}: still {status} after {wait.max_attempts} checks")


def apply_table(
    ddb: Any, region: str, table: Table, tags: dict[str, str], plan: ResourcePlan, *, wait: WaitConfig
) -> None:
    """Make the calls ``plan`` needs (none for an unchanged plan), waiting for ACTIVE between them."""
    fields = plan.fields
    with provisioning("table", table.name, region):
        if plan.action == "add":
            keys = [table.partition_key] + ([table.sort_key] if table.sort_key else [])
            create: dict[str, Any] = {
                "TableName": table.name,
                "BillingMode": table.billing_mode,
                "KeySchema": [
                    {"AttributeName": k.name, "KeyType": kind} for k, kind in zip(keys, ("HASH", "RANGE"), strict=False)
                ],
                "AttributeDefinitions": [{"AttributeName": k.name, "AttributeType": k.type} for k in keys],
            }
            if tags:
                create["Tags"] = _tag_list(tags)
            # No SSESpecification: the default (AWS owned key) is what the runbook deploys.
            ddb.create_table(**create)
            _wait_active(ddb, table.name, wait)
        elif plan.action == "change":
            if (plan.prior or {}).get("status") != "ACTIVE":
                _wait_active(ddb, table.name, wait)
            if "billingMode" in fields:
                ddb.update_table(TableName=table.name, BillingMode=table.billing_mode)
                _wait_active(ddb, table.name, wait)
            if "tags" in fields:
                ddb.tag_resource(ResourceArn=(plan.prior or {})["arn"], Tags=_tag_list(tags))
        if "ttlAttribute" in fields:
            ddb.update_time_to_live(
                TableName=table.name, TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute}
            )
        if "pointInTimeRecovery" in fields:
            ddb.update_continuous_backups(
                TableName=table.name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
