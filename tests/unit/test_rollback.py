"""Rollback (runbook section 9): restore the prior state, never delete data, resume, and prove it.

Buckets and tables are real moto resources. The prior state is read with the same readers the
plan step uses, before a deployment changes anything; the deployment itself is ``apply_region``.
moto keeps no global-table replicas, so replica removal runs against the small fake below.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from deployer.aws import TargetSession
from deployer.checks import CheckResult
from deployer.errors import RollbackFailed
from deployer.plan import apply_region
from deployer.replication import read_bucket_replication, read_table_replicas
from deployer.resources import WaitConfig, read_bucket, read_table
from deployer.rollback import (
    RollbackAction,
    apply_rollback,
    count_data,
    plan_rollback,
    validate_rollback,
)
from deployer.spec import EnvironmentSpec

ACCOUNT = "123456789012"
REGION = "af-south-1"
FAILOVER = "eu-west-1"
BUCKET = "bbws-test-data-bucket"  # exists before the deployment, which changes it
TABLE = "Site-Generation-State"
NEW_BUCKET = "bbws-test-new-bucket"  # created by the deployment
NEW_TABLE = "Site-Audit-Log"
NO_WAIT = WaitConfig(delay_seconds=0, max_attempts=3)
NOW = datetime(2026, 3, 4, 10, 30, 15, tzinfo=UTC)
OLD_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/old"
FOREIGN_TAGS = {"Project": "legacy", "Owner": "team-x"}

SpecBuilder = Callable[[dict[str, Any]], EnvironmentSpec]


@dataclass
class Deployed:
    spec: EnvironmentSpec
    prior: dict[str, dict[str, Any] | None]
    counts: dict[str, int]
    versions: list[tuple[str, str]]


def _key(kind: str, name: str, region: str = REGION) -> str:
    return f"{region}/{kind}/{name}"


def _fresh(target: TargetSession) -> TargetSession:
    return TargetSession(session=target.session, account=target.account)


def _versions(s3: Any, bucket: str) -> list[tuple[str, str]]:
    page = s3.list_object_versions(Bucket=bucket)
    return sorted((v["Key"], v["VersionId"]) for v in page.get("Versions", []))


def _items(ddb: Any, table: str) -> list[dict[str, Any]]:
    return sorted(ddb.scan(TableName=table)["Items"], key=lambda i: i["SiteId"]["S"])


def _by(actions: list[RollbackAction], kind: str, name: str) -> list[RollbackAction]:
    return [a for a in actions if a.kind == kind and a.name == name]


def _check(results: list[CheckResult], name: str, resource: str) -> CheckResult:
    (found,) = [r for r in results if r.name == name and r.resource == resource]
    return found


def _create_existing(s3: Any, ddb: Any) -> None:
    """What was there before the deployment: unversioned, SSE-KMS, foreign tags, no TTL or PITR, holding data."""
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    rule = {
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": OLD_KEY},
        "BucketKeyEnabled": True,
    }
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [rule]})
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in FOREIGN_TAGS.items()]})
    for key in ("a.txt", "b.txt"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"data")
    ddb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "SiteId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "SiteId", "AttributeType": "S"}],
        Tags=[{"Key": k, "Value": v} for k, v in FOREIGN_TAGS.items()],
    )
    for site in ("s1", "s2", "s3"):
        ddb.put_item(TableName=TABLE, Item={"SiteId": {"S": site}})


@pytest.fixture
def two_of_each(spec_data: dict[str, Any], build_spec: SpecBuilder) -> EnvironmentSpec:
    data = copy.deepcopy(spec_data)
    data["resources"]["buckets"].append({"name": NEW_BUCKET})
    data["resources"]["tables"].append({"name": NEW_TABLE, "partitionKey": {"name": "SiteId", "type": "S"}})
    return build_spec(data)


@pytest.fixture
def deployed(target: TargetSession, two_of_each: EnvironmentSpec, s3: Any, ddb: Any) -> Deployed:
    """GIVEN a bucket and a table with data, prior state and counts recorded, and a deployment applied."""
    _create_existing(s3, ddb)
    spec = two_of_each
    prior: dict[str, dict[str, Any] | None] = {
        _key("bucket", BUCKET): read_bucket(s3, BUCKET, ACCOUNT),
        _key("bucket", NEW_BUCKET): read_bucket(s3, NEW_BUCKET, ACCOUNT),
        _key("table", TABLE): read_table(ddb, TABLE),
        _key("table", NEW_TABLE): read_table(ddb, NEW_TABLE),
    }
    counts = count_data(target, spec)
    versions = _versions(s3, BUCKET)
    apply_region(target, spec, REGION, NO_WAIT)
    return Deployed(spec, prior, counts, versions)


def _rollback(target: TargetSession, d: Deployed) -> list[RollbackAction]:
    return apply_rollback(target, d.spec, plan_rollback(d.prior, d.spec), NO_WAIT, NOW)


# ---------------------------------------------------------------- planning


def test_plan_is_the_reverse_of_the_deployment(replicated_spec: EnvironmentSpec) -> None:
    # GIVEN prior state for replication and resources in both regions, as the plan step records it
    prior: dict[str, dict[str, Any] | None] = {
        _key("bucket", BUCKET): {"versioning": "Disabled", "tags": {}},
        _key("bucket", f"{BUCKET}-failover", FAILOVER): None,
        _key("table", TABLE): {"billingMode": "PAY_PER_REQUEST", "tags": {}},
        _key("bucket-replication", BUCKET): None,
        _key("table-replica", TABLE): {"replicas": []},
    }
    # WHEN it is planned
    actions = plan_rollback(prior, replicated_spec)
    # THEN replication goes first, then the failover region (deployed last), the primary region last
    # (tables, then buckets)
    assert [(a.order, a.action, a.region) for a in actions] == [
        (1, "remove-replica", REGION),
        (2, "remove-replication", REGION),
        (3, "remove-bucket", FAILOVER),
        (4, "restore-table", REGION),
        (5, "restore-bucket", REGION),
    ]
    assert actions[0].changes == [{"field": f"replica.{FAILOVER}", "from": None, "to": None}]
    # AND versioning that was disabled is restored to Suspended, saying why
    bucket = actions[4]
    assert {"field": "versioning", "from": None, "to": "Suspended"} in bucket.changes
    assert "Suspended" in bucket.detail
    assert all(a.status == "planned" for a in actions)
    assert RollbackAction.from_dict(bucket.to_dict()) == bucket


@pytest.fixture
def replicated_spec(spec_data: dict[str, Any], build_spec: SpecBuilder) -> EnvironmentSpec:
    data = copy.deepcopy(spec_data)
    data["regions"]["failover"] = FAILOVER
    data["resources"]["buckets"][0]["replication"] = {"destination": f"{BUCKET}-failover"}
    data["resources"]["buckets"].append({"name": f"{BUCKET}-failover", "region": "failover"})
    data["resources"]["tables"][0]["replicaRegions"] = ["failover"]
    return build_spec(data)


def test_a_rollback_restores_a_weaker_prior_protection_only_where_the_deployment_did_not_add_it(
    spec_data: dict[str, Any], build_spec: SpecBuilder
) -> None:
    # GIVEN a bucket that blocked public ACLs before; the deployment blocked everything and added encryption
    prior = {
        "versioning": "Enabled",
        "publicAccessBlock": {
            "blockPublicAcls": True,
            "ignorePublicAcls": False,
            "blockPublicPolicy": False,
            "restrictPublicBuckets": False,
        },
        "encryption": None,
        "tags": {},
    }
    # WHEN its rollback is planned
    (action,) = plan_rollback({_key("bucket", BUCKET): prior}, build_spec(spec_data))
    # THEN every block stays on and the encryption stays, reported as kept; nothing asks to turn them off
    assert action.kept == ["publicAccessBlock", "encryption"]
    pab = next(c for c in action.changes if c["field"] == "publicAccessBlock")
    assert all(pab["to"].values())
    assert not [c for c in action.changes if c["field"] == "encryption"]
    # AND a table whose PITR the spec does not manage gets its prior PITR back
    data = copy.deepcopy(spec_data)
    data["resources"]["tables"][0]["pointInTimeRecovery"] = False
    (table,) = plan_rollback({_key("table", TABLE): {"pointInTimeRecovery": True, "tags": {}}}, build_spec(data))
    assert table.kept == []
    assert {"field": "pointInTimeRecovery", "from": None, "to": True} in table.changes


def test_created_table_is_backed_up_before_removal(two_of_each: EnvironmentSpec) -> None:
    # GIVEN a table the deployment created WHEN planned THEN a backup comes before the removal
    actions = plan_rollback({_key("table", NEW_TABLE): None}, two_of_each)
    assert [a.action for a in actions] == ["backup-table", "remove-table"]


# ---------------------------------------------------------------- applying


def test_changed_resources_are_restored_and_no_data_is_lost(
    target: TargetSession, deployed: Deployed, s3: Any, ddb: Any
) -> None:
    # WHEN the deployment is rolled back
    actions = _rollback(target, deployed)
    # THEN the bucket's managed settings are back: versioning Suspended (S3 cannot disable it), the prior KMS
    # key, our tag keys removed or back to their old values, tags we do not manage kept
    bucket = read_bucket(s3, BUCKET, ACCOUNT)
    prior_bucket = deployed.prior[_key("bucket", BUCKET)]
    assert bucket is not None
    assert prior_bucket is not None
    assert bucket["versioning"] == "Suspended"
    assert bucket["encryption"] == {"algorithm": "aws:kms", "kmsKeyId": OLD_KEY, "bucketKeyEnabled": True}
    assert bucket["tags"] == FOREIGN_TAGS
    # BUT the public access block the deployment turned on stays on: a rollback never weakens security
    assert not any(prior_bucket["publicAccessBlock"].values())
    assert all(bucket["publicAccessBlock"].values())
    (restore_bucket,) = _by(actions, "bucket", BUCKET)
    assert restore_bucket.status == "done"
    assert "Suspended" in restore_bucket.detail
    assert restore_bucket.kept == ["publicAccessBlock"]
    assert "kept publicAccessBlock as the deployment set it: a rollback never weakens security" in (
        restore_bucket.detail
    )
    # AND the table's TTL is off again and its tags as before, while the PITR the deployment turned on stays on
    table = read_table(ddb, TABLE)
    assert table is not None
    assert (table["ttlAttribute"], table["pointInTimeRecovery"], table["tags"]) == (None, True, FOREIGN_TAGS)
    (restore_table,) = _by(actions, "table", TABLE)
    assert restore_table.kept == ["pointInTimeRecovery"]
    # AND every object version and item is still there
    assert _versions(s3, BUCKET) == deployed.versions
    assert [i["SiteId"]["S"] for i in _items(ddb, TABLE)] == ["s1", "s2", "s3"]
    assert count_data(target, deployed.spec) == deployed.counts


def test_created_empty_resources_are_removed_the_table_after_a_backup(
    target: TargetSession, deployed: Deployed, s3: Any, ddb: Any
) -> None:
    # WHEN the deployment that created an empty bucket and table is rolled back
    actions = _rollback(target, deployed)
    # THEN both are gone, the table after an on-demand backup that is AVAILABLE
    assert read_bucket(s3, NEW_BUCKET, ACCOUNT) is None
    assert read_table(ddb, NEW_TABLE) is None
    backup, remove = _by(actions, "table", NEW_TABLE)
    assert (backup.action, backup.status, remove.action, remove.status) == (
        "backup-table",
        "done",
        "remove-table",
        "done",
    )
    assert backup.order < remove.order
    (summary,) = ddb.list_backups(TableName=NEW_TABLE)["BackupSummaries"]
    assert summary["BackupName"] == f"bbws-rollback-{NEW_TABLE}-20260304103015"
    assert summary["BackupStatus"] == "AVAILABLE"
    assert backup.changes == [{"field": "backup", "from": None, "to": summary["BackupArn"]}]
    # AND tables were rolled back before buckets
    (remove_bucket,) = _by(actions, "bucket", NEW_BUCKET)
    assert remove_bucket.status == "done"
    assert remove_bucket.order > remove.order


def test_created_resources_holding_data_are_retained(
    target: TargetSession, deployed: Deployed, s3: Any, ddb: Any
) -> None:
    # GIVEN data written to what the deployment created: two versions of one object and a delete marker
    s3.put_object(Bucket=NEW_BUCKET, Key="k", Body=b"1")
    s3.put_object(Bucket=NEW_BUCKET, Key="k", Body=b"2")
    s3.delete_object(Bucket=NEW_BUCKET, Key="k")
    versions = _versions(s3, NEW_BUCKET)
    ddb.put_item(TableName=NEW_TABLE, Item={"SiteId": {"S": "new"}})
    # WHEN rolled back
    actions = _rollback(target, deployed)
    # THEN both are retained and reported, with every version and item still there and no backup taken
    (bucket,) = _by(actions, "bucket", NEW_BUCKET)
    assert (bucket.action, bucket.status, bucket.detail) == ("retain", "skipped", "holds 2 object versions; retained")
    backup, table = _by(actions, "table", NEW_TABLE)
    assert (backup.status, table.action, table.status) == ("skipped", "retain", "skipped")
    assert "holds items" in table.detail
    assert _versions(s3, NEW_BUCKET) == versions
    assert [i["SiteId"]["S"] for i in _items(ddb, NEW_TABLE)] == ["new"]
    assert ddb.list_backups(TableName=NEW_TABLE)["BackupSummaries"] == []
    # AND validation accepts the retained resources as restored
    results = validate_rollback(target, deployed.spec, deployed.prior, deployed.counts)
    assert _check(results, "rollback.restored", NEW_BUCKET).passed
    assert _check(results, "rollback.restored", NEW_TABLE).passed


def test_deletion_protected_table_is_retained(target: TargetSession, two_of_each: EnvironmentSpec, ddb: Any) -> None:
    # GIVEN an empty table the deployment created, with deletion protection switched on since
    prior: dict[str, dict[str, Any] | None] = {_key("table", NEW_TABLE): None}
    apply_region(target, two_of_each, REGION, NO_WAIT)
    ddb.update_table(TableName=NEW_TABLE, DeletionProtectionEnabled=True)
    # WHEN rolled back
    actions = apply_rollback(target, two_of_each, plan_rollback(prior, two_of_each), NO_WAIT, NOW)
    # THEN it is retained and reported, without a backup
    assert [(a.action, a.status) for a in actions] == [("backup-table", "skipped"), ("retain", "skipped")]
    assert "DeletionProtectionEnabled" in actions[1].detail
    assert read_table(ddb, NEW_TABLE) is not None


def test_second_rollback_skips_everything_without_mutating(target: TargetSession, deployed: Deployed) -> None:
    # GIVEN a completed rollback
    _rollback(target, deployed)
    # WHEN it runs again
    again = _fresh(target)
    actions = _rollback(again, deployed)
    # THEN every action is skipped and no mutating call is made
    assert {a.status for a in actions} == {"skipped"}
    assert again.log.mutating == 0, again.log.as_dict()


@dataclass
class FailingTarget(TargetSession):
    """A moto-backed target whose clients raise AccessDenied for the named operations."""

    fail: set[str] = field(default_factory=set)

    def client(self, service: str, region: str) -> Any:
        real = super().client(service, region)
        fail = self.fail

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                if name in fail:

                    def refuse(**_: Any) -> Any:
                        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, name)

                    return refuse
                return getattr(real, name)

        return Proxy()


def test_failed_rollback_reports_and_resumes(target: TargetSession, deployed: Deployed, ddb: Any) -> None:
    # GIVEN a rollback whose table removal is refused
    failing = FailingTarget(session=target.session, account=ACCOUNT, fail={"delete_table"})
    planned = plan_rollback(deployed.prior, deployed.spec)
    # WHEN applied
    with pytest.raises(RollbackFailed) as raised:
        apply_rollback(failing, deployed.spec, planned, NO_WAIT, NOW)
    # THEN the error lists every action: done ones, the failed one, and those not reached
    statuses = {(a.kind, a.name, a.action): a.status for a in raised.value.actions}
    assert statuses[("table", NEW_TABLE, "backup-table")] == "done"
    assert statuses[("table", NEW_TABLE, "remove-table")] == "failed"
    assert statuses[("bucket", NEW_BUCKET, "remove-bucket")] == "planned"
    assert "AccessDenied" in str(raised.value)
    assert read_table(ddb, NEW_TABLE) is not None
    # WHEN re-run
    actions = apply_rollback(_fresh(target), deployed.spec, planned, NO_WAIT, NOW)
    # THEN it completes where it stopped, reusing the backup already taken
    by_action = {(a.name, a.action): a.status for a in actions}
    assert by_action[(NEW_TABLE, "backup-table")] == "skipped"
    assert by_action[(NEW_TABLE, "remove-table")] == "done"
    assert by_action[(NEW_BUCKET, "remove-bucket")] == "done"
    assert len(ddb.list_backups(TableName=NEW_TABLE)["BackupSummaries"]) == 1
    assert all(r.passed for r in validate_rollback(target, deployed.spec, deployed.prior, deployed.counts))


def test_progress_says_which_action_was_under_way_at_every_step(target: TargetSession, deployed: Deployed) -> None:
    # GIVEN a rollback whose table removal is refused, watched as it goes
    failing = FailingTarget(session=target.session, account=ACCOUNT, fail={"delete_table"})
    planned = plan_rollback(deployed.prior, deployed.spec)
    seen: list[list[tuple[str, str]]] = []
    # WHEN applied
    with pytest.raises(RollbackFailed):
        apply_rollback(
            failing,
            deployed.spec,
            planned,
            NO_WAIT,
            NOW,
            progress=lambda now: seen.append([(a.action, a.status) for a in now]),
        )
    # THEN before each action, the ones before it had ended, it was started, the rest were planned
    assert len(seen) == [a.action for a in sorted(planned, key=lambda a: a.order)].index("remove-table") + 1
    for step, actions in enumerate(seen):
        assert [status for _, status in actions[:step]] == [s for _, s in actions[:step] if s in ("done", "skipped")]
        assert actions[step][1] == "started"
        assert {status for _, status in actions[step + 1 :]} <= {"planned"}
    assert seen[-1][len(seen) - 1] == ("remove-table", "started")


# ---------------------------------------------------------------- replication


def _versioned_bucket(name: str, region: str) -> Any:
    s3: Any = boto3.client("s3", region_name=region)
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3


def _config(destination: str, status: str = "Enabled") -> dict[str, Any]:
    return {
        "Role": f"arn:aws:iam::{ACCOUNT}:role/old-replication",
        "Rules": [
            {
                "ID": "old-rule",
                "Priority": 1,
                "Filter": {"Prefix": "logs/"},
                "Status": status,
                "DeleteMarkerReplication": {"Status": "Disabled"},
                "Destination": {"Bucket": f"arn:aws:s3:::{destination}"},
            }
        ],
    }


def test_replication_is_removed_or_put_back_exactly(target: TargetSession, replicated_spec: EnvironmentSpec) -> None:
    # GIVEN one bucket whose replication the deployment added and one whose configuration it replaced
    destination = f"{BUCKET}-failover"
    _versioned_bucket(destination, FAILOVER)
    s3 = _versioned_bucket(BUCKET, REGION)
    other = "bbws-test-other-bucket"
    _versioned_bucket(other, REGION)
    s3.put_bucket_replication(Bucket=other, ReplicationConfiguration=_config(destination))
    s3.put_object(Bucket=BUCKET, Key="kept.txt", Body=b"x")
    prior = {
        _key("bucket-replication", BUCKET): read_bucket_replication(s3, BUCKET),
        _key("bucket-replication", other): read_bucket_replication(s3, other),
    }
    assert prior[_key("bucket-replication", BUCKET)] is None
    s3.put_bucket_replication(Bucket=BUCKET, ReplicationConfiguration=_config(destination))
    s3.put_bucket_replication(Bucket=other, ReplicationConfiguration=_config(destination, status="Disabled"))
    # WHEN rolled back
    actions = apply_rollback(target, replicated_spec, plan_rollback(prior, replicated_spec), NO_WAIT, NOW)
    # THEN the added configuration is gone (objects untouched) and the replaced one is back as it was
    assert [(a.name, a.action, a.status) for a in actions] == [
        (BUCKET, "remove-replication", "done"),
        (other, "restore-replication", "done"),
    ]
    assert read_bucket_replication(s3, BUCKET) is None
    assert s3.list_object_versions(Bucket=BUCKET)["Versions"][0]["Key"] == "kept.txt"
    restored = read_bucket_replication(s3, other)
    original = prior[_key("bucket-replication", other)]
    assert restored is not None
    assert original is not None
    assert (restored["role"], restored["rules"]) == (original["role"], original["rules"])
    results = validate_rollback(target, replicated_spec, prior, {})
    assert all(r.passed for r in results if r.name == "rollback.restored")


@dataclass
class FakeReplicatedTable:
    """One global table: the primary's describe_table lists replicas; each region scans its own items."""

    replicas: dict[str, str]
    items: dict[str, int]
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def client(self, region: str) -> FakeDdb:
        return FakeDdb(self, region)


@dataclass
class FakeDdb:
    table: FakeReplicatedTable
    region: str

    def describe_table(self, **kwargs: Any) -> dict[str, Any]:
        self.table.calls.append((self.region, "describe_table", kwargs))
        replicas = [{"RegionName": r, "ReplicaStatus": s} for r, s in self.table.replicas.items()]
        desc: dict[str, Any] = {"TableName": TABLE, "TableStatus": "ACTIVE", "Replicas": replicas}
        if replicas:
            desc["GlobalTableVersion"] = "2019.11.21"
        return {"Table": desc}

    def scan(self, **kwargs: Any) -> dict[str, Any]:
        self.table.calls.append((self.region, "scan", kwargs))
        return {"Count": min(self.table.items.get(self.region, 0), kwargs.get("Limit", 10**6))}

    def update_table(self, **kwargs: Any) -> dict[str, Any]:
        self.table.calls.append((self.region, "update_table", kwargs))
        for update in kwargs["ReplicaUpdates"]:
            del self.table.replicas[update["Delete"]["RegionName"]]
        return {}


@dataclass
class FakeTarget(TargetSession):
    fakes: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, region: str) -> Any:
        return self.fakes.get((service, region)) or super().client(service, region)


def _replica_target(target: TargetSession, table: FakeReplicatedTable) -> FakeTarget:
    fakes = {("dynamodb", r): table.client(r) for r in (REGION, FAILOVER)}
    return FakeTarget(session=target.session, account=ACCOUNT, fakes=fakes)


@pytest.mark.parametrize(("items", "expected"), [(0, "remove-replica"), (4, "retain")])
def test_added_replica_is_removed_only_when_empty(
    target: TargetSession, replicated_spec: EnvironmentSpec, items: int, expected: str
) -> None:
    # GIVEN a replica the deployment added, holding ``items`` items
    table = FakeReplicatedTable(replicas={FAILOVER: "ACTIVE"}, items={REGION: items, FAILOVER: items})
    fake = _replica_target(target, table)
    prior: dict[str, dict[str, Any] | None] = {_key("table-replica", TABLE): {"replicas": []}}
    # WHEN rolled back
    (action,) = apply_rollback(fake, replicated_spec, plan_rollback(prior, replicated_spec), NO_WAIT, NOW)
    # THEN an empty replica is deleted through ReplicaUpdates; one holding items is retained and reported
    updates = [kw for _, op, kw in table.calls if op == "update_table"]
    assert action.action == expected
    if expected == "retain":
        assert (action.status, updates) == ("skipped", [])
        assert "holds items" in action.detail
        assert read_table_replicas(fake.client("dynamodb", REGION), TABLE) == [{"region": FAILOVER, "status": "ACTIVE"}]
    else:
        assert action.status == "done"
        assert updates == [{"TableName": TABLE, "ReplicaUpdates": [{"Delete": {"RegionName": FAILOVER}}]}]
    check = _check(validate_rollback(fake, replicated_spec, prior, {}), "rollback.restored", TABLE)
    assert check.passed, check.detail


# ---------------------------------------------------------------- validation


def test_counts_before_and_after_are_equal(target: TargetSession, deployed: Deployed) -> None:
    # WHEN rolled back
    _rollback(target, deployed)
    # THEN every check passes, counts included (0 for what did not exist)
    results = validate_rollback(target, deployed.spec, deployed.prior, deployed.counts)
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert _check(results, "rollback.item-count", TABLE).detail.startswith("3 items")
    assert _check(results, "rollback.object-count", BUCKET).detail.startswith("2 object versions")
    assert deployed.counts[f"table:{REGION}/{NEW_TABLE}"] == 0


def test_validation_fails_for_an_unrestored_field_and_a_missing_item(
    target: TargetSession, deployed: Deployed, ddb: Any, s3: Any
) -> None:
    # GIVEN a rollback after which TTL is switched on again, an item is lost and an object deleted
    _rollback(target, deployed)
    ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "TTL"})
    ddb.delete_item(TableName=TABLE, Key={"SiteId": {"S": "s2"}})
    key, version = deployed.versions[0]
    s3.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    # WHEN validated
    results = validate_rollback(target, deployed.spec, deployed.prior, deployed.counts)
    # THEN the restore, item-count and object-count checks fail, naming what differs
    restored = _check(results, "rollback.restored", TABLE)
    assert not restored.passed
    assert "ttlAttribute is 'TTL', expected None" in restored.detail
    items = _check(results, "rollback.item-count", TABLE)
    assert (items.passed, items.detail) == (False, "2 items, but 3 before the deployment: 1 missing")
    objects = _check(results, "rollback.object-count", BUCKET)
    assert (objects.passed, objects.detail) == (False, "1 object versions, but 2 before the deployment: 1 missing")
    assert _check(results, "rollback.restored", BUCKET).passed
