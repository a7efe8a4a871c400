"""Runbook section 6 step 6 and section 7 (PROD): cross-region replication, configured and verified.

S3 buckets replicate every object to their failover bucket (one rule, ``bbws-crr``); DynamoDB tables
get global-table replicas of the current version (UpdateTable ``ReplicaUpdates``). As in
``resources``: readers return JSON-serialisable dicts, planning is pure, applying makes only the calls
a plan needs, and nothing is ever removed: a replica the spec does not name is reported and left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from botocore.exceptions import ClientError

from deployer.aws import TargetSession, error_code, transient_errors
from deployer.checks import CheckResult, put_test_item, run_check, validation_key
from deployer.errors import PlanRejected, ProvisioningFailed
from deployer.resources import Action, ResourcePlan, WaitConfig, pitr_status, provisioning
from deployer.spec import Bucket, EnvironmentSpec, Table

ReplicationKind = Literal["bucket-replication", "table-replica"]

RULE_ID = "bbws-crr"
REPLICATION_PREFIX = "_deployer/replication/"
UNMANAGED_NOTE = "unmanaged replica left in place"

# Replica states that waiting will not fix.
_BROKEN_REPLICA_STATES = frozenset(
    {
        "CREATION_FAILED",
        "DELETING",
        "REGION_DISABLED",
        "INACCESSIBLE_ENCRYPTION_CREDENTIALS",
        "ARCHIVING",
        "ARCHIVED",
        "REPLICATION_NOT_AUTHORIZED",
    }
)
_OLD_GLOBAL_TABLES = "2017.11.29"
# S3 has reported both spellings for a replicated source object.
_SOURCE_DONE = frozenset({"COMPLETED", "COMPLETE"})
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


def _resource_plan(
    kind: ReplicationKind,
    name: str,
    region: str,
    *,
    action: Action,
    changes: list[dict[str, Any]],
    prior: dict[str, Any] | None,
) -> ResourcePlan:
    # resources.Kind only names "bucket" and "table"; widening it there makes this ignore unused.
    return ResourcePlan(kind, name, region, action, changes, prior)


def _change(name: str, before: Any, after: Any, **extra: Any) -> dict[str, Any]:
    return {"field": name, "before": before, "after": after, **extra}


# ---------------------------------------------------------------- reading


def _normalise_rule(rule: dict[str, Any]) -> dict[str, Any]:
    # A V1 rule keeps its prefix outside Filter; S3 may answer an empty Filter as {"Prefix": ""}.
    # All of these mean "every object", so they compare equal to the {} we put.
    raw_filter = rule.get("Filter", {"Prefix": rule["Prefix"]} if "Prefix" in rule else {})
    destination = rule.get("Destination", {})
    return {
        "id": rule.get("ID"),
        "status": rule.get("Status"),
        "priority": rule.get("Priority"),
        "filter": {} if raw_filter in ({}, {"Prefix": ""}) else raw_filter,
        "deleteMarkerReplication": rule.get("DeleteMarkerReplication", {}).get("Status") == "Enabled",
        "destination": destination.get("Bucket"),
        "storageClass": destination.get("StorageClass"),
        "sseKmsEncryptedObjects": (
            rule.get("SourceSelectionCriteria", {}).get("SseKmsEncryptedObjects", {}).get("Status") == "Enabled"
        ),
        "replicaKmsKeyId": destination.get("EncryptionConfiguration", {}).get("ReplicaKmsKeyID"),
    }


def _normalise(configuration: dict[str, Any]) -> dict[str, Any]:
    rules = sorted(
        (_normalise_rule(r) for r in configuration.get("Rules", [])),
        key=lambda r: (r["priority"] is None, r["priority"] or 0, r["id"] or ""),
    )
    # The raw configuration is kept so a rollback can put back exactly what was there.
    return {"role": configuration.get("Role"), "rules": rules, "configuration": configuration}


def read_bucket_replication(s3: Any, bucket: str) -> dict[str, Any] | None:
    """A bucket's replication configuration, normalised to JSON, or None when it has none.

    ``{"role", "rules": [{"id", "status", "priority", "filter", "deleteMarkerReplication",
    "destination", "storageClass", "sseKmsEncryptedObjects", "replicaKmsKeyId"}], "configuration"}``;
    ``configuration`` is S3's own document, for restoring it. A bucket that does not exist yet
    (planned before its first provisioning) has no configuration either.
    """
    with transient_errors():
        try:
            configuration = s3.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"]
        except ClientError as exc:
            if error_code(exc) in ("ReplicationConfigurationNotFoundError", "NoSuchBucket"):
                return None
            raise
    return _normalise(configuration)


def read_table_replicas(ddb: Any, table: str) -> list[dict[str, Any]]:
    """The table's global-table replicas as ``[{"region", "status"}]``; none if the table does not exist.

    Raises PlanRejected for a global table of the 2017.11.29 version (the runbook's
    ``create-global-table``), which UpdateTable cannot manage until it is upgraded.
    """
    with transient_errors():
        try:
            desc = ddb.describe_table(TableName=table)["Table"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return []
            raise
    if desc.get("GlobalTableVersion") == _OLD_GLOBAL_TABLES:
        raise PlanRejected(
            f"table {table}: is a global table of version {_OLD_GLOBAL_TABLES}; upgrade it to the current "
            "version (DynamoDB console, 'Update version') before the deployer can manage its replicas"
        )
    return [{"region": r["RegionName"], "status": r.get("ReplicaStatus", "UNKNOWN")} for r in desc.get("Replicas", [])]


# ---------------------------------------------------------------- planning


def _partition(spec: EnvironmentSpec) -> str:
    return spec.deployment_role_arn.split(":")[1]


def _bucket_by_name(spec: EnvironmentSpec, name: str) -> Bucket:
    return next(b for b in spec.resources.buckets if b.name == name)


def desired_bucket_replication(bucket: Bucket, spec: EnvironmentSpec) -> dict[str, Any]:
    """The ReplicationConfiguration the spec asks of ``bucket``, as put_bucket_replication takes it.

    Raises PlanRejected when the bucket has no replication, or its SSE-KMS settings are incomplete.
    """
    replication = bucket.replication
    if replication is None:
        raise PlanRejected(f"bucket {bucket.name}: has no replication in the spec")
    partition = _partition(spec)
    destination_region = spec.region_of(_bucket_by_name(spec, replication.destination))
    rule: dict[str, Any] = {
        "ID": RULE_ID,
        "Status": "Enabled",
        "Priority": 1,
        "Filter": {},
        "DeleteMarkerReplication": {"Status": "Enabled" if replication.delete_marker_replication else "Disabled"},
        "Destination": {"Bucket": f"arn:{partition}:s3:::{replication.destination}", "StorageClass": "STANDARD"},
    }
    key = replication.replica_kms_key_id
    if bucket.encryption.algorithm == "aws:kms":
        # Without SseKmsEncryptedObjects S3 silently skips every SSE-KMS object.
        if not key:
            raise PlanRejected(
                f"bucket {bucket.name}: replication.replicaKmsKeyId is required because the bucket encrypts "
                f"with aws:kms; name a KMS key ARN in {destination_region} for the replicas"
            )
        if not key.startswith(f"arn:{partition}:kms:{destination_region}:"):
            raise PlanRejected(
                f"bucket {bucket.name}: replication.replicaKmsKeyId {key} must be a KMS key or alias ARN "
                f"in the destination region {destination_region}"
            )
        rule["SourceSelectionCriteria"] = {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
        rule["Destination"]["EncryptionConfiguration"] = {"ReplicaKmsKeyID": key}
    elif key:
        raise PlanRejected(
            f"bucket {bucket.name}: replication.replicaKmsKeyId is only used when the bucket encrypts with aws:kms"
        )
    return {"Role": f"arn:{partition}:iam::{spec.account}:role/{replication.role_name}", "Rules": [rule]}


def plan_bucket_replication(bucket: Bucket, spec: EnvironmentSpec, actual: dict[str, Any] | None) -> ResourcePlan:
    """Compare the spec's replication of ``bucket`` with ``actual`` (from read_bucket_replication).

    Replication configuration is one document per bucket, so putting ours would replace every
    other rule: a rule the deployer does not own (any ID but ``bbws-crr``) is refused with
    PlanRejected naming it, never replaced.
    """
    desired = _normalise(desired_bucket_replication(bucket, spec))
    region = spec.region_of(bucket)
    changes: list[dict[str, Any]] = []
    if actual is None:
        changes += [_change("role", None, desired["role"]), _change("rules", None, desired["rules"])]
        return _resource_plan("bucket-replication", bucket.name, region, action="add", changes=changes, prior=None)
    if actual["role"] != desired["role"]:
        changes.append(_change("role", actual["role"], desired["role"]))
    (rule,) = desired["rules"]
    current = actual["rules"]
    foreign = [r["id"] or "(no ID)" for r in current if r["id"] != RULE_ID]
    if foreign:
        raise PlanRejected(
            f"bucket {bucket.name}: replication rule {', '.join(foreign)} is not the deployer's ({RULE_ID}); putting "
            "the spec's replication would replace it. Remove or rename it by hand if it is no longer needed."
        )
    if current:
        changes += [_change(f"rule.{k}", current[0].get(k), v) for k, v in rule.items() if current[0].get(k) != v]
    else:
        changes.append(_change("rules", current, [rule]))
    action: Action = "change" if changes else "unchanged"
    return _resource_plan("bucket-replication", bucket.name, region, action=action, changes=changes, prior=actual)


def read_replica_backups(regional: Callable[[str], Any], table: Table, spec: EnvironmentSpec) -> dict[str, str | None]:
    """Each of the spec's replica regions of ``table``: its replica's point-in-time recovery status (None: no replica).

    ``regional`` gives a DynamoDB client for a region: PITR is each replica's own setting.
    """
    found: dict[str, str | None] = {}
    for replica_region in spec.replica_regions_of(table):
        with transient_errors():
            try:
                found[replica_region] = pitr_status(regional(replica_region), table.name)
            except ClientError as exc:
                if error_code(exc) not in ("TableNotFoundException", "ResourceNotFoundException"):
                    raise
                found[replica_region] = None
    return found


def plan_table_replicas(
    table: Table, spec: EnvironmentSpec, actual_replicas: list[dict[str, Any]], replica_backups: dict[str, str | None]
) -> ResourcePlan:
    """Compare the spec's replica regions of ``table`` with its actual replicas.

    A missing replica is a change ``replica.<region>`` from None to ACTIVE; one that exists but
    is not ACTIVE yet is a change to wait for. A replica the spec does not name is listed with
    the note "unmanaged replica left in place" and never removed; on its own it changes nothing.
    Where the table has point-in-time recovery, each replica must have it too (it is each
    replica's own setting, and the runbook's backups are verified in every region): a change
    ``replica.<region>.pointInTimeRecovery`` to ENABLED; ``replica_backups`` is what
    ``read_replica_backups`` found.
    """
    region = spec.region_of(table)
    desired = spec.replica_regions_of(table)
    status = {r["region"]: r["status"] for r in actual_replicas if r["region"] != region}
    changes = [_change(f"replica.{r}", status.get(r), "ACTIVE", region=r) for r in desired if status.get(r) != "ACTIVE"]
    backups = [
        _change(f"replica.{r}.pointInTimeRecovery", replica_backups.get(r), "ENABLED", region=r)
        for r in desired
        if table.point_in_time_recovery and replica_backups.get(r) != "ENABLED"
    ]
    notes = [
        _change(f"replica.{r}", s, s, region=r, note=UNMANAGED_NOTE)
        for r, s in sorted(status.items())
        if r not in desired
    ]
    action: Action = "unchanged"
    if changes:
        action = "add" if not status else "change"
    elif backups:
        action = "change"
    changes += backups
    return _resource_plan(
        "table-replica", table.name, region, action=action, changes=changes + notes, prior={"replicas": actual_replicas}
    )


# ---------------------------------------------------------------- applying


def apply_bucket_replication(s3: Any, plan: ResourcePlan, bucket: Bucket, spec: EnvironmentSpec) -> None:
    """Put the spec's replication configuration on ``bucket``, unless ``plan`` is unchanged."""
    if plan.action == "unchanged":
        return
    with provisioning("bucket-replication", bucket.name, plan.region):
        s3.put_bucket_replication(Bucket=bucket.name, ReplicationConfiguration=desired_bucket_replication(bucket, spec))


def _wait_for(ddb: Any, table: str, replica_region: str | None, wait: WaitConfig) -> None:
    """Poll until the table is ACTIVE and, if ``replica_region`` is given, that replica too."""
    table_status, replica_status = "unknown", "missing"
    for attempt in range(wait.max_attempts):
        desc = ddb.describe_table(TableName=table)["Table"]
        table_status = desc["TableStatus"]
        replica = next((r for r in desc.get("Replicas", []) if r["RegionName"] == replica_region), None)
        replica_status = replica.get("ReplicaStatus", "UNKNOWN") if replica else "missing"
        if replica_status in _BROKEN_REPLICA_STATES:
            reason = (replica or {}).get("ReplicaStatusDescription", "")
            raise ProvisioningFailed(
                f"table-replica {table}: replica in {replica_region} is {replica_status}"
                + (f": {reason}" if reason else "")
            )
        if table_status == "ACTIVE" and (replica_region is None or replica_status == "ACTIVE"):
            return
        if attempt + 1 < wait.max_attempts:
            time.sleep(wait.delay_seconds)
    what = f"table {table_status}" + (f", replica in {replica_region} {replica_status}" if replica_region else "")
    raise ProvisioningFailed(f"table-replica {table}: still {what} after {wait.max_attempts} checks")


def apply_table_replicas(
    regional: Callable[[str], Any], plan: ResourcePlan, table: Table, spec: EnvironmentSpec, wait: WaitConfig
) -> None:
    """Create the replicas ``plan`` adds, one region at a time, waiting until each is ACTIVE; then
    turn on point-in-time recovery on each replica the plan says lacks it.

    ``regional`` gives a DynamoDB client for a region. DynamoDB takes one replica update at a
    time per table, hence the wait before each create. Replicas the plan only waits for are
    awaited without any call that changes them; nothing is ever deleted. Raises
    ProvisioningFailed when a replica fails or is not ACTIVE in time.
    """
    wanted = set(spec.replica_regions_of(table))
    pending = [c for c in plan.changes if c["region"] in wanted and c["after"] == "ACTIVE" and "note" not in c]
    backups = [c for c in plan.changes if c["field"].endswith(".pointInTimeRecovery")]
    ddb = regional(plan.region)
    with provisioning("table-replica", table.name, plan.region):
        for change in pending:
            if change["before"] is None:
                _wait_for(ddb, table.name, None, wait)
                ddb.update_table(TableName=table.name, ReplicaUpdates=[{"Create": {"RegionName": change["region"]}}])
            _wait_for(ddb, table.name, change["region"], wait)
        for change in backups:
            regional(change["region"]).update_continuous_backups(
                TableName=table.name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )


# ---------------------------------------------------------------- orchestration


def _tables_with_replicas(spec: EnvironmentSpec) -> list[Table]:
    return [t for t in spec.resources.tables if t.replica_regions]


def _planned_buckets(target: TargetSession, spec: EnvironmentSpec) -> list[tuple[Bucket, ResourcePlan]]:
    planned = []
    for bucket in spec.replicated_buckets():
        actual = read_bucket_replication(target.client("s3", spec.region_of(bucket)), bucket.name)
        planned.append((bucket, plan_bucket_replication(bucket, spec, actual)))
    return planned


def _planned_tables(target: TargetSession, spec: EnvironmentSpec) -> list[tuple[Table, ResourcePlan]]:
    planned = []
    for table in _tables_with_replicas(spec):
        actual_replicas = read_table_replicas(target.client("dynamodb", spec.region_of(table)), table.name)
        backups = read_replica_backups(partial(target.client, "dynamodb"), table, spec)
        planned.append((table, plan_table_replicas(table, spec, actual_replicas, backups)))
    return planned


def plan_replication(target: TargetSession, spec: EnvironmentSpec) -> list[ResourcePlan]:
    """Read and plan the replication of every replicated bucket, then every table with replicas.

    Read-only, and possible before anything is provisioned (absent resources plan as "add").
    """
    return [plan for _, plan in _planned_buckets(target, spec)] + [plan for _, plan in _planned_tables(target, spec)]


def _require_destination(target: TargetSession, spec: EnvironmentSpec, source: Bucket) -> None:
    assert source.replication is not None  # only replicated buckets are planned
    destination = _bucket_by_name(spec, source.replication.destination)
    region = spec.region_of(destination)
    s3 = target.client("s3", region)
    where = f"bucket-replication {source.name}: destination bucket {destination.name} in {region}"
    with transient_errors():
        try:
            s3.head_bucket(Bucket=destination.name, ExpectedBucketOwner=target.account)
        except ClientError as exc:
            if error_code(exc) in _NOT_FOUND:
                raise ProvisioningFailed(f"{where} does not exist; provision it before replication is set up") from exc
            if error_code(exc) in ("403", "AccessDenied", "Forbidden"):
                raise ProvisioningFailed(f"{where} is not accessible as account {target.account} (403)") from exc
            raise
        status = s3.get_bucket_versioning(Bucket=destination.name).get("Status", "Disabled")
    if status != "Enabled":
        raise ProvisioningFailed(f"{where} has versioning {status}; replication needs it Enabled")


def apply_replication(target: TargetSession, spec: EnvironmentSpec, wait: WaitConfig) -> list[ResourcePlan]:
    """Re-plan replication from fresh reads and apply what differs; returns the plans.

    Idempotent: once applied, a second call plans everything unchanged and mutates nothing.
    Destination buckets must already exist with versioning (the failover region is provisioned
    first); otherwise raises ProvisioningFailed naming the destination.
    """
    buckets, tables = _planned_buckets(target, spec), _planned_tables(target, spec)
    for bucket, plan in buckets:
        if plan.action != "unchanged":
            _require_destination(target, spec, bucket)
            apply_bucket_replication(target.client("s3", plan.region), plan, bucket, spec)
    for table, plan in tables:
        if plan.action != "unchanged":
            apply_table_replicas(partial(target.client, "dynamodb"), plan, table, spec, wait)
    return [plan for _, plan in buckets] + [plan for _, plan in tables]


# ---------------------------------------------------------------- verification


def _poll(step: Callable[[], bool], timeout_seconds: float, poll_seconds: float) -> bool:
    """Call ``step`` until it returns True (then True) or time is up (then False); at least once.

    The attempt budget bounds the loop even where the clock does not move (a frozen test clock).
    """
    deadline = time.monotonic() + timeout_seconds
    attempts = 1 + int(timeout_seconds // poll_seconds) if poll_seconds > 0 else None
    made = 0
    while True:
        made += 1
        if step():
            return True
        if time.monotonic() >= deadline or (attempts is not None and made >= attempts):
            return False
        if poll_seconds > 0:
            time.sleep(poll_seconds)


def _replication_configured(s3: Any, bucket: Bucket, destination_arn: str) -> tuple[bool, str]:
    try:
        rules = s3.get_bucket_replication(Bucket=bucket.name)["ReplicationConfiguration"].get("Rules", [])
    except ClientError as exc:
        if error_code(exc) == "ReplicationConfigurationNotFoundError":
            return False, f"bucket {bucket.name} has no replication configuration"
        raise
    to_destination = [r for r in rules if r.get("Destination", {}).get("Bucket") == destination_arn]
    if not to_destination:
        found = ", ".join(str(r.get("Destination", {}).get("Bucket")) for r in rules) or "none"
        return False, f"bucket {bucket.name} has no rule replicating to {destination_arn} (destinations: {found})"
    enabled = [r for r in to_destination if r.get("Status") == "Enabled"]
    if not enabled:
        return False, f"bucket {bucket.name}: rule {to_destination[0].get('ID')} to {destination_arn} is Disabled"
    return True, f"rule {enabled[0].get('ID')} replicates {bucket.name} to {destination_arn}"


@dataclass
class _ObjectProgress:
    source_status: str = "none"
    replica_status: str = "not found"
    replica_version: str | None = None


def _head(s3: Any, **kwargs: Any) -> dict[str, Any] | None:
    try:
        response: dict[str, Any] = s3.head_object(**kwargs)
    except ClientError as exc:
        if error_code(exc) in _NOT_FOUND:
            return None
        raise
    return response


def _look_for_replica(dst: Any, destination: str, key: str, account: str, progress: _ObjectProgress) -> None:
    replica = _head(dst, Bucket=destination, Key=key, ExpectedBucketOwner=account)
    if replica is not None:
        progress.replica_status = replica.get("ReplicationStatus", "none")
        # S3 keeps the source's version id on the replica, but the replica's own answer is what counts.
        progress.replica_version = replica.get("VersionId") or "null"


def _object_replicates(
    src: Any, dst: Any, bucket: Bucket, marker: str, *, account: str, timeout: float, poll: float
) -> tuple[bool, str]:
    assert bucket.replication is not None
    destination = bucket.replication.destination
    key = f"{REPLICATION_PREFIX}{marker}.txt"
    put = src.put_object(
        Bucket=bucket.name, Key=key, Body=f"bbws-deployer replication {marker}\n".encode(), ExpectedBucketOwner=account
    )
    version = put.get("VersionId") or "null"
    progress = _ObjectProgress()

    def step() -> bool:
        source = _head(src, Bucket=bucket.name, Key=key, VersionId=version, ExpectedBucketOwner=account) or {}
        progress.source_status = source.get("ReplicationStatus", "none")
        if progress.source_status == "FAILED":
            return True
        if progress.source_status in _SOURCE_DONE:
            _look_for_replica(dst, destination, key, account, progress)
        return progress.source_status in _SOURCE_DONE and progress.replica_status == "REPLICA"

    try:
        _poll(step, timeout, poll)
    finally:
        # Version-specific deletes are not replicated, so each side is cleaned up on its own and
        # neither a version nor a delete marker is left behind.
        try:
            src.delete_object(Bucket=bucket.name, Key=key, VersionId=version, ExpectedBucketOwner=account)
        finally:
            if progress.replica_version is None:
                _look_for_replica(dst, destination, key, account, progress)
            if progress.replica_version is not None:
                dst.delete_object(
                    Bucket=destination, Key=key, VersionId=progress.replica_version, ExpectedBucketOwner=account
                )
    status = f"source status {progress.source_status}, replica in {destination} {progress.replica_status}"
    if progress.source_status in _SOURCE_DONE and progress.replica_status == "REPLICA":
        return True, f"{key} replicated from {bucket.name} to {destination} ({status}) and cleaned up"
    if progress.source_status == "FAILED":
        return False, f"replication of {key} from bucket {bucket.name} FAILED ({status})"
    return False, f"{key} from bucket {bucket.name} not replicated within {timeout:g}s ({status})"


def _replica_active(ddb: Any, table: Table, replica_region: str) -> tuple[bool, str]:
    replicas = ddb.describe_table(TableName=table.name)["Table"].get("Replicas", [])
    replica = next((r for r in replicas if r["RegionName"] == replica_region), None)
    if replica is None:
        listed = ", ".join(r["RegionName"] for r in replicas) or "none"
        return False, f"table {table.name} lists no replica in {replica_region} (replicas: {listed})"
    status = replica.get("ReplicaStatus", "UNKNOWN")
    ok = status == "ACTIVE"
    return ok, f"replica in {replica_region} is {status}" + ("" if ok else ", expected ACTIVE")


def _item_replicates(
    primary: Any, replica: Any, table: Table, marker: str, *, replica_region: str, timeout: float, poll: float
) -> tuple[bool, str]:
    # A key of its own, so this never meets the item of the write-read-delete check.
    key = validation_key(table, f"replication-{marker}")
    if put_test_item(primary, table, key, marker) is None:
        return False, "an item with the replication test key already exists; left untouched"

    def replicated() -> dict[str, Any] | None:
        found: dict[str, Any] | None = replica.get_item(TableName=table.name, Key=key, ConsistentRead=False).get("Item")
        return found

    gone = False
    try:
        if not _poll(lambda: (replicated() or {}).get("deployerValidation") == {"S": marker}, timeout, poll):
            return False, f"test item written to {table.name} not readable in {replica_region} within {timeout:g}s"
        primary.delete_item(TableName=table.name, Key=key)
        gone = _poll(lambda: replicated() is None, timeout, poll)
        if not gone:
            return False, f"test item deleted from {table.name} still readable in {replica_region} after {timeout:g}s"
    finally:
        if not gone:
            # Both sides: the primary's delete may not have happened, or may never reach the replica.
            try:
                primary.delete_item(TableName=table.name, Key=key)
            finally:
                replica.delete_item(TableName=table.name, Key=key)
    return True, f"test item replicated to {replica_region}, then its delete too"


def verify_replication(
    target: TargetSession, spec: EnvironmentSpec, marker: str, timeout_seconds: float, poll_seconds: float
) -> list[CheckResult]:
    """Runbook section 7 (PROD): check every bucket replication and table replica the spec asks for.

    Per replicated bucket: ``replication.configured`` and ``replication.object`` (a marker object
    reaches the destination within ``timeout_seconds``); per table replica region: ``replica.active``
    and ``replica.item``. Checks report region = the source's region and resource = its name; each
    runs on its own, and every test object and item is removed whatever the outcome. ``marker``
    (e.g. the deployment id) names them.
    """
    results = []
    for bucket in spec.replicated_buckets():
        assert bucket.replication is not None
        region = spec.region_of(bucket)
        destination_region = spec.region_of(_bucket_by_name(spec, bucket.replication.destination))
        src, dst = target.client("s3", region), target.client("s3", destination_region)
        destination_arn = f"arn:{_partition(spec)}:s3:::{bucket.replication.destination}"
        object_check = partial(
            _object_replicates,
            src,
            dst,
            bucket,
            marker,
            account=target.account,
            timeout=timeout_seconds,
            poll=poll_seconds,
        )
        results += [
            run_check(
                "replication.configured",
                region,
                bucket.name,
                partial(_replication_configured, src, bucket, destination_arn),
            ),
            run_check("replication.object", region, bucket.name, object_check),
        ]
    for table in _tables_with_replicas(spec):
        region = spec.region_of(table)
        primary = target.client("dynamodb", region)
        for replica_region in spec.replica_regions_of(table):
            replica = target.client("dynamodb", replica_region)
            item_check = partial(
                _item_replicates,
                primary,
                replica,
                table,
                marker,
                replica_region=replica_region,
                timeout=timeout_seconds,
                poll=poll_seconds,
            )
            results += [
                run_check(
                    "replica.active", region, table.name, partial(_replica_active, primary, table, replica_region)
                ),
                run_check("replica.item", region, table.name, item_check),
            ]
    return results
