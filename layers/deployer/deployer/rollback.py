"""Runbook section 9: undo a deployment from the prior state recorded at plan time, and prove it.

``plan_rollback`` is pure: it turns the recorded prior state into ordered actions, the reverse of the
deployment (replication first, then tables, then buckets, the failover region last). Each action
carries its targets in ``changes`` so it can travel through Step Functions and be applied alone.
``apply_rollback`` reads before it writes: an action already in its target state is skipped, so a
re-run after a failure resumes where it stopped and a second run makes no mutating call.

Stateful data is never deleted (architecture principle 4): a bucket or table this deployment
created is removed only when it holds nothing, and an empty table is backed up first; anything
holding data is retained and reported. Only configuration is restored or removed otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any, Literal, cast

from botocore.exceptions import BotoCoreError, ClientError

from deployer.aws import READ_WORKERS, TargetSession, error_code, fan_out, transient_errors
from deployer.checks import CheckResult, run_check
from deployer.errors import DeployerError, ProvisioningFailed, RollbackFailed
from deployer.replication import read_bucket_replication, read_table_replicas
from deployer.resources import Kind, WaitConfig, provisioning, read_bucket, read_table
from deployer.spec import Bucket, EnvironmentSpec, Table

ActionName = Literal[
    "restore-replication",
    "remove-replication",
    "remove-replica",
    "restore-bucket",
    "restore-table",
    "backup-table",
    "remove-bucket",
    "remove-table",
    "retain",
]
# "started": the action was under way when the record was last written (a rollback that stopped there, its
# function timed out say, did not get to say how it ended; a re-run reads the resource and finds out).
Status = Literal["planned", "started", "done", "skipped", "failed"]

BACKUP_PREFIX = "bbws-rollback-"
# What S3 reports for a bucket whose default encryption was removed (every bucket is encrypted since 2023).
S3_DEFAULT_ENCRYPTION = {"algorithm": "AES256", "kmsKeyId": None, "bucketKeyEnabled": False}
_NOT_VERSIONED = frozenset({"Disabled", "Suspended"})
_NO_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})


@dataclass
class RollbackAction:
    order: int
    kind: str
    name: str
    region: str
    action: ActionName
    detail: str
    status: Status = "planned"
    changes: list[dict[str, Any]] = field(default_factory=list)
    # Protections the failed deployment added that the rollback keeps: it never weakens security.
    kept: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RollbackAction:
        return cls(
            order=int(data["order"]),
            kind=data["kind"],
            name=data["name"],
            region=data["region"],
            action=data["action"],
            detail=data.get("detail", ""),
            status=data.get("status", "planned"),
            changes=[dict(c) for c in data.get("changes", [])],
            kept=list(data.get("kept", [])),
        )


def _target(name: str, to: Any) -> dict[str, Any]:
    return {"field": name, "from": None, "to": to}


# ---------------------------------------------------------------- planning


def _split_key(key: str) -> tuple[str, str, str]:
    region, kind, name = key.split("/", 2)
    return region, kind, name


def _spec_bucket(spec: EnvironmentSpec, name: str) -> Bucket | None:
    return next((b for b in spec.resources.buckets if b.name == name), None)


def _spec_table(spec: EnvironmentSpec, name: str) -> Table | None:
    return next((t for t in spec.resources.tables if t.name == name), None)


def _our_tag_keys(spec: EnvironmentSpec, resource: Bucket | Table | None, prior_tags: dict[str, str]) -> list[str]:
    # Only the keys the deployer manages are rolled back; without the resource in the spec, the prior keys.
    keys = spec.tags_for(resource) if resource is not None else prior_tags
    return sorted(keys)


def _tag_target(keys: list[str], prior_tags: dict[str, str]) -> dict[str, str | None]:
    # None: the key was absent before, so a value the deployment added is removed.
    return {k: prior_tags.get(k) for k in keys}


def _bucket_targets(spec: EnvironmentSpec, name: str, prior: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The bucket's fields to restore, and the protections kept instead (never turned off by a rollback)."""
    targets, kept = [], []
    bucket = _spec_bucket(spec, name)
    if "versioning" in prior:
        # S3 cannot return a bucket to "Disabled" once versioning was enabled; "Suspended" is the closest.
        targets.append(_target("versioning", "Enabled" if prior["versioning"] == "Enabled" else "Suspended"))
    if "publicAccessBlock" in prior:
        before = dict(prior["publicAccessBlock"] or {})
        added = bucket.public_access_block.model_dump(by_alias=True) if bucket else {}
        # A block the deployment turned on stays on; one it turned off comes back.
        target = {k: bool(before.get(k)) or bool(added.get(k)) for k in {*before, *added}}
        if target != before:
            kept.append("publicAccessBlock")
        targets.append(_target("publicAccessBlock", target))
    if "encryption" in prior:
        if prior["encryption"] is None and bucket is not None:
            kept.append("encryption")  # default encryption the deployment added stays
        else:
            targets.append(_target("encryption", prior["encryption"]))
    if "tags" in prior:
        keys = _our_tag_keys(spec, bucket, prior["tags"])
        targets.append(_target("tags", _tag_target(keys, prior["tags"])))
    return targets, kept


def _table_targets(spec: EnvironmentSpec, name: str, prior: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The table's fields to restore, and the protections kept instead (PITR the deployment turned on)."""
    targets, kept = [], []
    if "billingMode" in prior:
        billing = _target("billingMode", prior["billingMode"])
        if prior.get("provisionedThroughput"):
            billing["capacity"] = prior["provisionedThroughput"]  # {"read", "write"}, when recorded
        targets.append(billing)
    if "ttlAttribute" in prior:
        targets.append(_target("ttlAttribute", prior["ttlAttribute"]))
    if "pointInTimeRecovery" in prior:
        table = _spec_table(spec, name)
        if not prior["pointInTimeRecovery"] and table is not None and table.point_in_time_recovery:
            kept.append("pointInTimeRecovery")
        else:
            targets.append(_target("pointInTimeRecovery", prior["pointInTimeRecovery"]))
    if "tags" in prior:
        keys = _our_tag_keys(spec, _spec_table(spec, name), prior["tags"])
        targets.append(_target("tags", _tag_target(keys, prior["tags"])))
    return targets, kept


def _restore_detail(kind: str, prior: dict[str, Any]) -> str:
    detail = f"restore the {kind}'s managed settings to their prior values"
    if kind == "bucket" and prior.get("versioning") in _NOT_VERSIONED:
        detail += (
            f"; versioning was {prior['versioning']} before: S3 cannot disable versioning once enabled, "
            "so it is restored to Suspended"
        )
    if kind == "table" and prior.get("billingMode") == "PROVISIONED" and not prior.get("provisionedThroughput"):
        detail += "; prior provisioned capacity was not recorded: billingMode PAY_PER_REQUEST is left as is"
    return detail


# (action, detail, changes, kept)
_Planned = tuple[ActionName, str, list[dict[str, Any]], list[str]]


def _restore(kind: str, prior: dict[str, Any], targets_and_kept: tuple[list[dict[str, Any]], list[str]]) -> _Planned:
    targets, kept = targets_and_kept
    detail = _restore_detail(kind, prior)
    if kept:
        detail += f"; kept {', '.join(kept)} as the deployment set it: a rollback never weakens security"
    action: ActionName = "restore-bucket" if kind == "bucket" else "restore-table"
    return (action, detail, targets, kept)


def _replication_actions(spec: EnvironmentSpec, kind: str, name: str, prior: dict[str, Any] | None) -> list[_Planned]:
    if kind == "bucket-replication":
        if prior is None:
            return [("remove-replication", "added by this deployment: remove the configuration (no data)", [], [])]
        return [("restore-replication", "put the prior configuration back", [_target("replication", prior)], [])]
    before = {r["region"] for r in (prior or {}).get("replicas", [])}
    table = _spec_table(spec, name)
    added = [r for r in (spec.replica_regions_of(table) if table else []) if r not in before]
    detail = "replica in {} added by this deployment: remove it only if it holds no items"
    return [("remove-replica", detail.format(r), [_target(f"replica.{r}", None)], []) for r in added]


def _resource_actions(spec: EnvironmentSpec, kind: str, name: str, prior: dict[str, Any] | None) -> list[_Planned]:
    if kind == "bucket":
        if prior is None:
            return [
                ("remove-bucket", "created by this deployment: remove it only if it holds no object versions", [], [])
            ]
        return [_restore(kind, prior, _bucket_targets(spec, name, prior))]
    if prior is None:
        return [
            ("backup-table", "on-demand backup before removing the table this deployment created", [], []),
            ("remove-table", "created by this deployment: remove it only if it holds no items", [], []),
        ]
    return [_restore(kind, prior, _table_targets(spec, name, prior))]


def _actions_for(spec: EnvironmentSpec, key: str, prior: dict[str, Any] | None) -> list[RollbackAction]:
    region, kind, name = _split_key(key)
    if kind in ("bucket-replication", "table-replica"):
        planned = _replication_actions(spec, kind, name, prior)
    elif kind in ("bucket", "table"):
        planned = _resource_actions(spec, kind, name, prior)
    else:
        raise ValueError(f"prior state key {key}: unknown kind {kind}")
    return [
        RollbackAction(0, kind, name, region, action, detail, "planned", changes, kept)
        for action, detail, changes, kept in planned
    ]


def _sort_key(spec: EnvironmentSpec, key: str) -> tuple[Any, ...]:
    region, kind, name = _split_key(key)
    regions = list(reversed(spec.regions.all()))  # last created first
    region_rank = (regions.index(region), "") if region in regions else (len(regions), region)
    names = [t.name for t in spec.resources.tables] if kind in ("table", "table-replica") else []
    names = names or [b.name for b in spec.resources.buckets]
    # Within a kind, the reverse of the spec's order; names the spec does not know come last.
    name_rank = (0, -names.index(name), "") if name in names else (1, 0, name)
    if kind in ("table-replica", "bucket-replication"):
        return (0, 0 if kind == "table-replica" else 1, region_rank, name_rank)
    return (1, region_rank, 0 if kind == "table" else 1, name_rank)


def plan_rollback(prior_state: dict[str, dict[str, Any] | None], spec: EnvironmentSpec) -> list[RollbackAction]:
    """The ordered rollback actions for a deployment's recorded prior state (pure; no AWS call).

    ``prior_state`` maps ``<region>/<kind>/<name>`` to the resource's state before the deployment,
    or None when the deployment created it. Order: table replicas and bucket replication, then per
    region (the reverse of ``spec.regions.all()``) tables before buckets. A created table gets a
    ``backup-table`` action before its ``remove-table``; whether a removal happens or the resource
    is retained is decided at apply time against its contents.
    """
    actions: list[RollbackAction] = []
    for key in sorted(prior_state, key=partial(_sort_key, spec)):
        actions += _actions_for(spec, key, prior_state[key])
    return [replace(a, order=i) for i, a in enumerate(actions, start=1)]


# ---------------------------------------------------------------- reading helpers


def _table_exists(ddb: Any, name: str) -> dict[str, Any] | None:
    try:
        desc: dict[str, Any] = ddb.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    return desc


def _table_has_items(ddb: Any, name: str) -> bool:
    page = ddb.scan(TableName=name, Limit=1, ConsistentRead=True, Select="COUNT")
    # A scan page may count nothing yet still have more to read (a filtered-out or skipped segment).
    return bool(page.get("Count") or page.get("LastEvaluatedKey"))


def count_items(ddb: Any, name: str) -> int:
    """Exact item count (Scan Select=COUNT, consistent, paginated); 0 for a table that does not exist."""
    total = 0
    kwargs: dict[str, Any] = {"TableName": name, "Select": "COUNT", "ConsistentRead": True}
    while True:
        try:
            page = ddb.scan(**kwargs)
        except ClientError as exc:
            # No table, no items: the scan's own answer says so, without a DescribeTable first.
            if error_code(exc) == "ResourceNotFoundException":
                return 0
            raise
        total += int(page.get("Count", 0))
        if not page.get("LastEvaluatedKey"):
            return total
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _bucket_exists(s3: Any, name: str, account: str) -> bool:
    try:
        s3.head_bucket(Bucket=name, ExpectedBucketOwner=account)
    except ClientError as exc:
        if error_code(exc) in _NO_BUCKET:
            return False
        raise
    return True


def count_object_versions(s3: Any, name: str, account: str) -> int:
    """Object versions in a bucket (delete markers not counted; paginated); 0 for a bucket that does not exist."""
    total = 0
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name, ExpectedBucketOwner=account):
            total += len(page.get("Versions", []))
    except ClientError as exc:
        # No bucket, no versions; another account's bucket (403) still raises.
        if error_code(exc) in _NO_BUCKET:
            return 0
        raise
    return total


def _bucket_holds_data(s3: Any, name: str, account: str) -> str | None:
    """Why the bucket must be kept (versions, delete markers or multipart uploads), or None when it is empty."""
    page = s3.list_object_versions(Bucket=name, MaxKeys=1, ExpectedBucketOwner=account)
    if page.get("Versions") or page.get("DeleteMarkers"):
        return f"holds {count_object_versions(s3, name, account)} object versions; retained"
    uploads = s3.list_multipart_uploads(Bucket=name, MaxUploads=1, ExpectedBucketOwner=account)
    if uploads.get("Uploads"):
        return "has multipart uploads in progress; retained"
    return None


def _table_must_stay(ddb: Any, name: str, desc: dict[str, Any]) -> str | None:
    """Why the table must be kept (deletion protection or items), or None when it may be removed."""
    if desc.get("DeletionProtectionEnabled"):
        return "has DeletionProtectionEnabled; retained"
    if _table_has_items(ddb, name):
        return f"holds items (about {desc.get('ItemCount', 0)} by DynamoDB's periodic count); retained"
    return None


def _wait_table(ddb: Any, name: str, wait: WaitConfig, replica_gone: str | None = None) -> None:
    """Poll until the table is ACTIVE (and, with ``replica_gone``, that replica is no longer listed)."""
    status = "unknown"
    for attempt in range(wait.max_attempts):
        desc = _table_exists(ddb, name)
        if desc is None:
            return
        status = desc["TableStatus"]
        replicas = {r["RegionName"]: r.get("ReplicaStatus", "UNKNOWN") for r in desc.get("Replicas", [])}
        if status == "ACTIVE" and (replica_gone is None or replica_gone not in replicas):
            return
        if replica_gone in replicas:
            status += f", replica in {replica_gone} {replicas[replica_gone]}"
        if attempt + 1 < wait.max_attempts:
            time.sleep(wait.delay_seconds)
    raise ProvisioningFailed(f"table {name}: still {status} after {wait.max_attempts} checks")


# ---------------------------------------------------------------- field comparison


def _field_matches(name: str, current: Any, target: Any) -> bool:
    if name == "versioning":
        return bool(current == target or (target == "Suspended" and current in _NOT_VERSIONED))
    if name == "encryption" and target is None:
        return current is None or current == S3_DEFAULT_ENCRYPTION
    if name == "tags":
        tags = current or {}
        return all(tags.get(k) == v for k, v in target.items())
    return bool(current == target)


def _current_field(state: dict[str, Any], name: str) -> Any:
    value = state.get(name)
    if name == "tags":
        return dict(value or {})
    return value


def _mismatches(state: dict[str, Any], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in targets if not _field_matches(t["field"], _current_field(state, t["field"]), t["to"])]


def _with_from(targets: list[dict[str, Any]], state: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in targets:
        current = _current_field(state, t["field"])
        if t["field"] == "tags":
            current = {k: current.get(k) for k in t["to"]}
        out.append({"field": t["field"], "from": current, "to": t["to"]})
    return out


# ---------------------------------------------------------------- applying


@dataclass
class _Outcome:
    status: Status
    detail: str
    action: ActionName | None = None
    changes: list[dict[str, Any]] | None = None


def _merged_tags(current: dict[str, str], wanted: dict[str, str | None]) -> dict[str, str]:
    tags = dict(current)
    for key, value in wanted.items():
        if value is None:
            tags.pop(key, None)
        else:
            tags[key] = value
    return tags


def _put_bucket_fields(s3: Any, owner: dict[str, str], todo: dict[str, Any], current: dict[str, Any]) -> None:
    if "publicAccessBlock" in todo:
        pab = todo["publicAccessBlock"]
        if any(pab.values()):
            s3.put_public_access_block(
                PublicAccessBlockConfiguration={k[0].upper() + k[1:]: v for k, v in pab.items()}, **owner
            )
        else:  # all off: what a bucket without a public access block configuration reads as
            s3.delete_public_access_block(**owner)
    if "encryption" in todo:
        enc = todo["encryption"]
        if enc is None:
            s3.delete_bucket_encryption(**owner)
        else:
            default = {"SSEAlgorithm": enc["algorithm"]}
            if enc.get("kmsKeyId"):
                default["KMSMasterKeyID"] = enc["kmsKeyId"]
            rule = {
                "ApplyServerSideEncryptionByDefault": default,
                "BucketKeyEnabled": bool(enc.get("bucketKeyEnabled")),
            }
            s3.put_bucket_encryption(ServerSideEncryptionConfiguration={"Rules": [rule]}, **owner)
    if "versioning" in todo:
        s3.put_bucket_versioning(VersioningConfiguration={"Status": todo["versioning"]}, **owner)
    if "tags" in todo:
        tags = _merged_tags(current["tags"], todo["tags"])
        if tags:
            s3.put_bucket_tagging(
                Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}, **owner
            )
        else:
            s3.delete_bucket_tagging(**owner)


def _nothing_to_restore(a: RollbackAction) -> str:
    if not a.kept:
        return "already as before the deployment"
    return (
        f"nothing else to restore; kept {', '.join(a.kept)} as the deployment set it: a rollback never weakens security"
    )


def _restore_bucket(target: TargetSession, a: RollbackAction, _wait: WaitConfig, _now: datetime) -> _Outcome:
    s3 = target.client("s3", a.region)
    current = read_bucket(s3, a.name, target.account)
    if current is None:
        raise ProvisioningFailed(f"bucket {a.name} in {a.region}: does not exist; nothing to restore")
    changes = _with_from(a.changes, current)
    todo = {t["field"]: t["to"] for t in _mismatches(current, a.changes)}
    if not todo:
        return _Outcome("skipped", _nothing_to_restore(a), changes=changes)
    _put_bucket_fields(s3, {"Bucket": a.name, "ExpectedBucketOwner": target.account}, todo, current)
    return _Outcome("done", a.detail + f"; restored {', '.join(sorted(todo))}", changes=changes)


def _capacity(a: RollbackAction) -> dict[str, int] | None:
    return next((t.get("capacity") for t in a.changes if t["field"] == "billingMode"), None)


def _put_table_fields(ddb: Any, name: str, todo: dict[str, Any], current: dict[str, Any], wait: WaitConfig) -> None:
    if "billingMode" in todo:
        update: dict[str, Any] = {"TableName": name, "BillingMode": todo["billingMode"]}
        if todo["billingMode"] == "PROVISIONED":
            capacity = todo["capacity"]
            update["ProvisionedThroughput"] = {
                "ReadCapacityUnits": capacity["read"],
                "WriteCapacityUnits": capacity["write"],
            }
        ddb.update_table(**update)
        _wait_table(ddb, name, wait)
    if "ttlAttribute" in todo:
        if current["ttlAttribute"]:
            ddb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": False, "AttributeName": current["ttlAttribute"]}
            )
        if todo["ttlAttribute"]:
            ddb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": todo["ttlAttribute"]}
            )
    if "pointInTimeRecovery" in todo:
        ddb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": bool(todo["pointInTimeRecovery"])},
        )
    if "tags" in todo:
        wanted, tags = todo["tags"], current["tags"]
        put = [{"Key": k, "Value": v} for k, v in sorted(wanted.items()) if v is not None and tags.get(k) != v]
        drop = sorted(k for k, v in wanted.items() if v is None and k in tags)
        if put:
            ddb.tag_resource(ResourceArn=current["arn"], Tags=put)
        if drop:
            ddb.untag_resource(ResourceArn=current["arn"], TagKeys=drop)


def _restore_table(target: TargetSession, a: RollbackAction, wait: WaitConfig, _now: datetime) -> _Outcome:
    ddb = target.client("dynamodb", a.region)
    current = read_table(ddb, a.name)
    if current is None:
        raise ProvisioningFailed(f"table {a.name} in {a.region}: does not exist; nothing to restore")
    changes = _with_from(a.changes, current)
    todo = {t["field"]: t["to"] for t in _mismatches(current, a.changes)}
    notes = []
    if todo.get("billingMode") == "PROVISIONED":
        # Going back to PROVISIONED needs capacities, which only a prior state that recorded them has.
        if capacity := _capacity(a):
            todo["capacity"] = capacity
        else:
            del todo["billingMode"]
            notes.append("billingMode left PAY_PER_REQUEST: the prior provisioned capacity is unknown")
    if not todo:
        return _Outcome("skipped", "; ".join([_nothing_to_restore(a), *notes]), changes=changes)
    _wait_table(ddb, a.name, wait)
    _put_table_fields(ddb, a.name, todo, current, wait)
    restored = ", ".join(sorted(k for k in todo if k != "capacity"))
    return _Outcome("done", "; ".join([f"{a.detail}; restored {restored}", *notes]), changes=changes)


def _restore_replication(target: TargetSession, a: RollbackAction, _wait: WaitConfig, _now: datetime) -> _Outcome:
    s3 = target.client("s3", a.region)
    prior = a.changes[0]["to"]
    current = read_bucket_replication(s3, a.name)
    changes = [{"field": "replication", "from": current, "to": prior}]
    if current is not None and (current["role"], current["rules"]) == (prior["role"], prior["rules"]):
        return _Outcome("skipped", "prior replication configuration already in place", changes=changes)
    s3.put_bucket_replication(
        Bucket=a.name, ReplicationConfiguration=prior["configuration"], ExpectedBucketOwner=target.account
    )
    return _Outcome("done", "prior replication configuration put back", changes=changes)


def _remove_replication(target: TargetSession, a: RollbackAction, _wait: WaitConfig, _now: datetime) -> _Outcome:
    s3 = target.client("s3", a.region)
    current = read_bucket_replication(s3, a.name)
    changes = [{"field": "replication", "from": current, "to": None}]
    if current is None:
        return _Outcome("skipped", "no replication configuration", changes=changes)
    s3.delete_bucket_replication(Bucket=a.name, ExpectedBucketOwner=target.account)
    return _Outcome("done", "replication configuration removed (objects untouched)", changes=changes)


def _remove_replica(target: TargetSession, a: RollbackAction, wait: WaitConfig, _now: datetime) -> _Outcome:
    replica_region = a.changes[0]["field"].split(".", 1)[1]
    ddb = target.client("dynamodb", a.region)
    replicas = {r["region"]: r["status"] for r in read_table_replicas(ddb, a.name)}
    changes = [{"field": f"replica.{replica_region}", "from": replicas.get(replica_region), "to": None}]
    if replica_region not in replicas:
        return _Outcome("skipped", f"no replica in {replica_region}", changes=changes)
    if replicas[replica_region] == "DELETING":
        _wait_table(ddb, a.name, wait, replica_gone=replica_region)
        return _Outcome("skipped", f"replica in {replica_region} was already being removed; now gone", changes=changes)
    if _table_has_items(target.client("dynamodb", replica_region), a.name):
        return _Outcome("skipped", f"replica in {replica_region} holds items; retained", "retain", changes)
    _wait_table(ddb, a.name, wait)
    ddb.update_table(TableName=a.name, ReplicaUpdates=[{"Delete": {"RegionName": replica_region}}])
    _wait_table(ddb, a.name, wait, replica_gone=replica_region)
    return _Outcome("done", f"empty replica in {replica_region} removed", changes=changes)


def _backup_name(table: str, now: datetime) -> str:
    return f"{BACKUP_PREFIX}{table}-{now:%Y%m%d%H%M%S}"


def _existing_backup(ddb: Any, name: str, desc: dict[str, Any]) -> dict[str, Any] | None:
    """A rollback backup already taken of this table instance (not of an earlier table of that name)."""
    created = desc.get("CreationDateTime")
    kwargs: dict[str, Any] = {"TableName": name, "BackupType": "USER"}
    while True:
        page = ddb.list_backups(**kwargs)
        for summary in page.get("BackupSummaries", []):
            if not summary.get("BackupName", "").startswith(f"{BACKUP_PREFIX}{name}-"):
                continue
            if summary.get("BackupStatus") == "DELETED":
                continue
            if created is None or summary.get("BackupCreationDateTime", created) >= created:
                return cast(dict[str, Any], summary)
        if not page.get("LastEvaluatedBackupArn"):
            return None
        kwargs["ExclusiveStartBackupArn"] = page["LastEvaluatedBackupArn"]


def _wait_backup(ddb: Any, arn: str, wait: WaitConfig) -> None:
    status = "unknown"
    for attempt in range(wait.max_attempts):
        details = ddb.describe_backup(BackupArn=arn)["BackupDescription"]["BackupDetails"]
        status = details["BackupStatus"]
        if status == "AVAILABLE":
            return
        if status == "DELETED":
            break
        if attempt + 1 < wait.max_attempts:
            time.sleep(wait.delay_seconds)
    raise ProvisioningFailed(f"backup {arn}: {status}, not AVAILABLE after {wait.max_attempts} checks")


def _backup_table(target: TargetSession, a: RollbackAction, wait: WaitConfig, now: datetime) -> _Outcome:
    ddb = target.client("dynamodb", a.region)
    desc = _table_exists(ddb, a.name)
    if desc is None:
        return _Outcome("skipped", "table does not exist; nothing to back up")
    if reason := _table_must_stay(ddb, a.name, desc):
        return _Outcome("skipped", f"no backup needed: the table {reason}")
    existing = _existing_backup(ddb, a.name, desc)
    if existing is not None:
        _wait_backup(ddb, existing["BackupArn"], wait)
        change = {"field": "backup", "from": None, "to": existing["BackupArn"]}
        return _Outcome("skipped", f"backup {existing['BackupName']} already taken and AVAILABLE", changes=[change])
    name = _backup_name(a.name, now)
    arn = ddb.create_backup(TableName=a.name, BackupName=name)["BackupDetails"]["BackupArn"]
    _wait_backup(ddb, arn, wait)
    return _Outcome("done", f"backup {name} AVAILABLE", changes=[{"field": "backup", "from": None, "to": arn}])


def _remove_table(target: TargetSession, a: RollbackAction, wait: WaitConfig, _now: datetime) -> _Outcome:
    ddb = target.client("dynamodb", a.region)
    if _table_exists(ddb, a.name) is None:
        return _Outcome("skipped", "table does not exist", changes=[{"field": "exists", "from": False, "to": False}])
    # Wait first: a table still UPDATING may take minutes, and the application may write to it meanwhile.
    # Its emptiness is looked at after that, and nothing but the backup check comes between the look and
    # DeleteTable (DynamoDB has no conditional delete): a write that lands while waiting keeps the table.
    _wait_table(ddb, a.name, wait)
    desc = _table_exists(ddb, a.name)
    if desc is None:
        return _Outcome("skipped", "table does not exist", changes=[{"field": "exists", "from": False, "to": False}])
    if reason := _table_must_stay(ddb, a.name, desc):
        return _Outcome("skipped", reason, "retain")
    if _existing_backup(ddb, a.name, desc) is None:
        # The backup action comes first; a table without one is never deleted.
        raise ProvisioningFailed(f"table {a.name} in {a.region}: no rollback backup found; refusing to delete it")
    try:
        ddb.delete_table(TableName=a.name)
    except ClientError as exc:
        # Deletion protection switched on since we looked: keep the table, as we would have.
        if "deletion protection" in str(exc).lower():
            return _Outcome("skipped", "has DeletionProtectionEnabled; retained", "retain")
        raise
    return _Outcome("done", "empty table removed", changes=[{"field": "exists", "from": True, "to": False}])


def _remove_bucket(target: TargetSession, a: RollbackAction, _wait: WaitConfig, _now: datetime) -> _Outcome:
    s3 = target.client("s3", a.region)
    if not _bucket_exists(s3, a.name, target.account):
        return _Outcome("skipped", "bucket does not exist", changes=[{"field": "exists", "from": False, "to": False}])
    if reason := _bucket_holds_data(s3, a.name, target.account):
        return _Outcome("skipped", reason, "retain")
    try:
        s3.delete_bucket(Bucket=a.name, ExpectedBucketOwner=target.account)
    except ClientError as exc:
        # An object arrived since we looked: S3 refuses, and the bucket is kept.
        if error_code(exc) == "BucketNotEmpty":
            return _Outcome("skipped", "received objects during the rollback; retained", "retain")
        raise
    return _Outcome("done", "empty bucket removed", changes=[{"field": "exists", "from": True, "to": False}])


_Step = Callable[[TargetSession, RollbackAction, WaitConfig, datetime], _Outcome]
_STEPS: dict[str, _Step] = {
    "restore-replication": _restore_replication,
    "remove-replication": _remove_replication,
    "remove-replica": _remove_replica,
    "restore-bucket": _restore_bucket,
    "restore-table": _restore_table,
    "backup-table": _backup_table,
    "remove-bucket": _remove_bucket,
    "remove-table": _remove_table,
}
# A retained resource is looked at again on a re-run: it may have been emptied by hand since.
_RETAINED = {"bucket": "remove-bucket", "table": "remove-table", "table-replica": "remove-replica"}


def _step_for(a: RollbackAction) -> _Step:
    name = _RETAINED.get(a.kind, "retain") if a.action == "retain" else a.action
    if name not in _STEPS:
        raise ValueError(f"rollback action {a.order}: unknown action {a.action} for {a.kind}")
    return _STEPS[name]


def apply_rollback(  # noqa: PLR0917 - the documented call signature
    target: TargetSession,
    spec: EnvironmentSpec,
    actions: list[RollbackAction],
    wait: WaitConfig,
    now: datetime,
    progress: Callable[[list[RollbackAction]], None] | None = None,
) -> list[RollbackAction]:
    """Execute ``actions`` in order; returns them with status, detail and the changes as found.

    Every action reads first and is ``skipped`` when its resource is already as the prior state
    says, so a re-run resumes after a failure and repeats nothing. A created resource that holds
    data becomes ``retain`` (skipped, with the reason). The first failing action is marked
    ``failed`` and RollbackFailed is raised with every action (those after it stay ``planned``).
    ``progress`` is given every action as each one starts (that one ``started``), so what ran is
    kept even if the rollback never gets to say how it ended.
    """
    del spec  # the actions carry their targets; kept in the signature for symmetry with plan_rollback
    done: list[RollbackAction] = []
    ordered = sorted(actions, key=lambda a: a.order)
    for i, planned in enumerate(ordered):
        if progress is not None:
            rest = [replace(a, status="planned") for a in ordered[i + 1 :]]
            progress([*done, replace(planned, status="started"), *rest])
        try:
            with provisioning(cast(Kind, planned.kind), planned.name, planned.region):
                outcome = _step_for(planned)(target, planned, wait, now)
        except (ClientError, BotoCoreError, DeployerError, ValueError) as exc:
            failed = replace(planned, status="failed", detail=f"{planned.detail}: failed: {exc}")
            rest = [replace(a, status="planned") for a in ordered[i + 1 :]]
            result = [*done, failed, *rest]
            summary = "\n".join(f"{a.order}. {a.action} {a.kind} {a.region}/{a.name}: {a.status}" for a in result)
            raise RollbackFailed(
                f"rollback action {planned.order} ({planned.action} {planned.kind} {planned.name} in "
                f"{planned.region}) failed: {exc}\n{summary}",
                actions=result,
            ) from exc
        done.append(
            replace(
                planned,
                status=outcome.status,
                action=outcome.action or planned.action,
                detail=outcome.detail,
                changes=outcome.changes if outcome.changes is not None else planned.changes,
            )
        )
    return done


# ---------------------------------------------------------------- validation


def _count_key(kind: Literal["table", "bucket"], region: str, name: str) -> str:
    return f"{kind}:{region}/{name}"


def count_data(target: TargetSession, spec: EnvironmentSpec) -> dict[str, int]:
    """Item count of every table and object-version count of every bucket in the spec (0 if absent).

    Keys are ``table:<region>/<name>`` and ``bucket:<region>/<name>``. Taken at plan time, before the
    deployment, and again after a rollback, which must leave them equal (runbook section 9 step 4).
    """

    def count(resource: Bucket | Table) -> tuple[str, int]:
        region = spec.region_of(resource)
        with transient_errors():
            if isinstance(resource, Table):
                return _count_key("table", region, resource.name), count_items(
                    target.client("dynamodb", region), resource.name
                )
            s3 = target.client("s3", region)
            return _count_key("bucket", region, resource.name), count_object_versions(s3, resource.name, target.account)

    resources: list[Bucket | Table] = [*spec.resources.tables, *spec.resources.buckets]
    return dict(fan_out(count, resources, READ_WORKERS))


def _fields_check(state: dict[str, Any] | None, targets: list[dict[str, Any]], what: str) -> tuple[bool, str]:
    if state is None:
        return False, f"{what} does not exist; its prior state cannot be restored"
    problems = [
        f"{t['field']} is {_current_field(state, t['field'])!r}, expected {t['to']!r}"
        for t in _mismatches(state, targets)
    ]
    if problems:
        return False, "; ".join(problems)
    return True, f"{', '.join(t['field'] for t in targets) or 'nothing'} as before the deployment"


def _restored_bucket(
    target: TargetSession, spec: EnvironmentSpec, region: str, name: str, prior: Any
) -> tuple[bool, str]:
    s3 = target.client("s3", region)
    if prior is None:
        if not _bucket_exists(s3, name, target.account):
            return True, "created by the deployment and removed"
        reason = _bucket_holds_data(s3, name, target.account)
        if reason:
            return True, f"created by the deployment, {reason}"
        return False, "created by the deployment and still there although empty"
    return _fields_check(read_bucket(s3, name, target.account), _bucket_targets(spec, name, prior)[0], "bucket")


def _restored_table(
    target: TargetSession, spec: EnvironmentSpec, region: str, name: str, prior: Any
) -> tuple[bool, str]:
    ddb = target.client("dynamodb", region)
    if prior is None:
        desc = _table_exists(ddb, name)
        if desc is None:
            return True, "created by the deployment and removed"
        reason = _table_must_stay(ddb, name, desc)
        if reason:
            return True, f"created by the deployment, {reason}"
        return False, "created by the deployment and still there although empty"
    targets, _ = _table_targets(spec, name, prior)
    if prior.get("billingMode") == "PROVISIONED" and not prior.get("provisionedThroughput"):
        # See _restore_table: without the prior capacity, on-demand is kept and reported.
        targets = [t for t in targets if t["field"] != "billingMode"]
    return _fields_check(read_table(ddb, name), targets, "table")


def _restored_replication(target: TargetSession, region: str, name: str, prior: Any) -> tuple[bool, str]:
    current = read_bucket_replication(target.client("s3", region), name)
    if prior is None:
        return current is None, "no replication configuration" if current is None else "replication still configured"
    if current is not None and (current["role"], current["rules"]) == (prior["role"], prior["rules"]):
        return True, "prior replication configuration in place"
    return False, f"replication is {current and current['rules']!r}, expected {prior['rules']!r}"


def _restored_replicas(target: TargetSession, region: str, name: str, prior: Any) -> tuple[bool, str]:
    before = {r["region"] for r in (prior or {}).get("replicas", [])}
    now = {r["region"] for r in read_table_replicas(target.client("dynamodb", region), name)}
    problems, retained = [], []
    for extra in sorted(now - before - {region}):
        if _table_has_items(target.client("dynamodb", extra), name):
            retained.append(extra)
        else:
            problems.append(f"empty replica in {extra} was added by the deployment and is still there")
    if problems:
        return False, "; ".join(problems)
    return True, "replicas as before the deployment" + (
        f" (retained, holding items: {', '.join(retained)})" if retained else ""
    )


def _restored(target: TargetSession, spec: EnvironmentSpec, key: str, prior: Any) -> tuple[bool, str]:
    region, kind, name = _split_key(key)
    if kind == "bucket":
        return _restored_bucket(target, spec, region, name, prior)
    if kind == "table":
        return _restored_table(target, spec, region, name, prior)
    if kind == "bucket-replication":
        return _restored_replication(target, region, name, prior)
    return _restored_replicas(target, region, name, prior)


def _count_check(expected: int, count: Callable[[], int], unit: str) -> tuple[bool, str]:
    # Not one item or version may be lost; the application may still have written new ones meanwhile.
    found = count()
    if found == expected:
        return True, f"{found} {unit}, as before the deployment"
    if found > expected:
        return True, f"{found} {unit}: all {expected} from before the deployment, and {found - expected} written since"
    return False, f"{found} {unit}, but {expected} before the deployment: {expected - found} missing"


def validate_rollback(
    target: TargetSession,
    spec: EnvironmentSpec,
    prior_state: dict[str, dict[str, Any] | None],
    counts_before: dict[str, int],
) -> list[CheckResult]:
    """Runbook section 9 step 4: prove the rollback; every check reports on its own.

    ``rollback.restored`` per prior-state entry (managed fields equal their prior values, Suspended
    standing for a prior Disabled versioning; a created resource is gone, or retained because it
    holds data); ``rollback.item-count`` per table and ``rollback.object-count`` per bucket, at
    least ``counts_before`` (from count_data; a resource missing there counts 0): nothing lost,
    and writes made meanwhile by the application do not fail the rollback.
    """
    results = [
        run_check(
            "rollback.restored", _split_key(key)[0], _split_key(key)[2], partial(_restored, target, spec, key, prior)
        )
        for key, prior in prior_state.items()
    ]
    keys = set(counts_before)
    keys |= {_count_key("table", spec.region_of(t), t.name) for t in spec.resources.tables}
    keys |= {_count_key("bucket", spec.region_of(b), b.name) for b in spec.resources.buckets}
    for key in sorted(keys):
        kind, _, rest = key.partition(":")
        region, _, name = rest.partition("/")
        expected = counts_before.get(key, 0)
        if kind == "table":
            count = partial(count_items, target.client("dynamodb", region), name)
            results.append(
                run_check("rollback.item-count", region, name, partial(_count_check, expected, count, "items"))
            )
        elif kind == "bucket":
            count = partial(count_object_versions, target.client("s3", region), name, target.account)
            check = partial(_count_check, expected, count, "object versions")
            results.append(run_check("rollback.object-count", region, name, check))
    return results
