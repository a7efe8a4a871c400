"""Cross-region replication (runbook section 6 step 6, section 7 PROD): plan, apply, verify.

Replication configuration is read and written through moto. moto 5.2.5 neither replicates
objects nor keeps global-table replicas (it accepts ReplicaUpdates and forgets them), so those
paths run against the small fakes below, which behave as AWS documents it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from deployer.aws import TargetSession
from deployer.checks import CheckResult
from deployer.errors import PlanRejected, ProvisioningFailed, TransientAwsError
from deployer.plan import plan_environment
from deployer.replication import (
    UNMANAGED_NOTE,
    apply_bucket_replication,
    apply_replication,
    apply_table_replicas,
    plan_bucket_replication,
    plan_replication,
    plan_table_replicas,
    read_bucket_replication,
    read_replica_backups,
    read_table_replicas,
    verify_replication,
)
from deployer.resources import ResourcePlan, WaitConfig
from deployer.spec import EnvironmentSpec, Table

ACCOUNT = "123456789012"
PRIMARY = "af-south-1"
FAILOVER = "eu-west-1"
SOURCE = "bbws-test-data-bucket"
DESTINATION = "bbws-test-data-bucket-failover"
TABLE = "Site-Generation-State"
MARKER = "dep-0001"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/bbws-s3-replication"
REPLICA_KEY = f"arn:aws:kms:{FAILOVER}:{ACCOUNT}:key/replica"
NO_WAIT = WaitConfig(delay_seconds=0, max_attempts=3)
QUICK: dict[str, float] = {"timeout_seconds": 0.05, "poll_seconds": 0}

SpecBuilder = Callable[[dict[str, Any]], EnvironmentSpec]


@pytest.fixture
def replicated_data(spec_data: dict[str, Any]) -> dict[str, Any]:
    """The unit-test spec made like PROD: a failover region, a replicated bucket and a table replica."""
    data = copy.deepcopy(spec_data)
    data["regions"]["failover"] = FAILOVER
    data["resources"]["buckets"][0]["replication"] = {"destination": DESTINATION}
    data["resources"]["buckets"].append({"name": DESTINATION, "region": "failover"})
    data["resources"]["tables"][0]["replicaRegions"] = ["failover"]
    return data


@pytest.fixture
def replicated(replicated_data: dict[str, Any], build_spec: SpecBuilder) -> EnvironmentSpec:
    return build_spec(replicated_data)


def _bucket_only(data: dict[str, Any], build_spec: SpecBuilder, **replication: Any) -> EnvironmentSpec:
    """The spec without table replicas (moto cannot hold them), with replication settings overridden."""
    data = copy.deepcopy(data)
    data["resources"]["tables"][0]["replicaRegions"] = []
    data["resources"]["buckets"][0]["replication"].update(replication)
    return build_spec(data)


def _create_buckets(*, source: bool = True, destination: bool = True, destination_versioned: bool = True) -> None:
    for name, region, wanted, versioned in (
        (SOURCE, PRIMARY, source, True),
        (DESTINATION, FAILOVER, destination, destination_versioned),
    ):
        if not wanted:
            continue
        s3 = boto3.client("s3", region_name=region)
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def _fresh(target: TargetSession) -> TargetSession:
    return TargetSession(session=target.session, account=target.account)


def _aws_rule(**overrides: Any) -> dict[str, Any]:
    """A rule as S3 itself answers GetBucketReplication (an empty filter comes back as a prefix)."""
    rule: dict[str, Any] = {
        "ID": "bbws-crr",
        "Priority": 1,
        "Filter": {"Prefix": ""},
        "Status": "Enabled",
        "DeleteMarkerReplication": {"Status": "Enabled"},
        "Destination": {"Bucket": f"arn:aws:s3:::{DESTINATION}", "StorageClass": "STANDARD"},
    }
    rule.update(overrides)
    return rule


def _client_error(code: str, operation: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


# ---------------------------------------------------------------- fakes


@dataclass
class FakeTarget(TargetSession):
    """A moto-backed target whose clients for some (service, region) pairs are fakes."""

    fakes: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, region: str) -> Any:
        return self.fakes.get((service, region)) or super().client(service, region)


class FakeS3:
    """Versioned S3 with replication as AWS does it: the source reports PENDING for ``lag``
    head_object calls, then ``outcome``; on COMPLETED a replica (status REPLICA) is in the destination.
    One instance serves every region, as bucket names are global."""

    def __init__(self, lag: int = 2, outcome: str = "COMPLETED") -> None:
        self.lag, self.outcome = lag, outcome
        self.rules = {SOURCE: DESTINATION}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._versions = count(1)

    def _store(self, bucket: str, key: str, status: str | None) -> str:
        version = f"v{next(self._versions)}"
        self.objects[(bucket, key, version)] = {"status": status, "heads": 0}
        return version

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("put_object", kwargs))
        status = "PENDING" if kwargs["Bucket"] in self.rules else None
        return {"VersionId": self._store(kwargs["Bucket"], kwargs["Key"], status)}

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("head_object", kwargs))
        bucket, key = kwargs["Bucket"], kwargs["Key"]
        versions = [v for (b, k, v) in self.objects if (b, k) == (bucket, key)]
        version = kwargs.get("VersionId") or (max(versions, key=lambda v: int(v[1:])) if versions else None)
        obj = self.objects.get((bucket, key, version or ""))
        if obj is None:
            raise _client_error("404", "HeadObject", "Not Found")
        if obj["status"] == "PENDING":
            obj["heads"] += 1
            if obj["heads"] > self.lag:
                obj["status"] = self.outcome
                if self.outcome == "COMPLETED":
                    self._store(self.rules[bucket], key, "REPLICA")
        response: dict[str, Any] = {"VersionId": version}
        if obj["status"]:
            response["ReplicationStatus"] = obj["status"]
        return response

    def delete_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("delete_object", kwargs))
        # Without a VersionId S3 would add a delete marker; the checks must never do that.
        assert "VersionId" in kwargs, "delete without VersionId leaves a delete marker"
        self.objects.pop((kwargs["Bucket"], kwargs["Key"], kwargs["VersionId"]), None)
        return {}

    def get_bucket_replication(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("get_bucket_replication", kwargs))
        if kwargs["Bucket"] not in self.rules:
            raise _client_error("ReplicationConfigurationNotFoundError", "GetBucketReplication")
        return {"ReplicationConfiguration": {"Role": ROLE_ARN, "Rules": [_aws_rule()]}}

    def deletes(self) -> list[tuple[str, str]]:
        return [(c["Bucket"], c["VersionId"]) for op, c in self.calls if op == "delete_object"]


class FakeGlobalTable:
    """One DynamoDB global table (current version) seen from every region.

    ``update_table`` with a Create makes the table UPDATING and the replica CREATING; both are ACTIVE
    after ``settle_after`` more describe_table calls (never, if None). Item writes reach the other
    regions after ``item_lag`` reads there (never, if None: replication paused).
    """

    def __init__(
        self,
        replicas: dict[str, str] | None = None,
        settle_after: int | None = 1,
        item_lag: int | None = 1,
        version: str = "2019.11.21",
    ) -> None:
        self.status = "ACTIVE"
        self.replicas = dict(replicas or {})
        # Each replica's own point-in-time recovery (ENABLED for those given, unless set otherwise).
        self.pitr = dict.fromkeys(self.replicas, "ENABLED")
        self.settle_after, self.item_lag, self.version = settle_after, item_lag, version
        self._countdown: int | None = None
        self.items: dict[str, dict[str, dict[str, Any]]] = {PRIMARY: {}, FAILOVER: {}}
        self.pending: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def client(self, region: str) -> FakeDdb:
        return FakeDdb(self, region)

    def describe(self) -> dict[str, Any]:
        if self._countdown is not None and self._countdown <= 0:
            self.status = "ACTIVE"
            self.replicas = {r: "ACTIVE" if s == "CREATING" else s for r, s in self.replicas.items()}
            self._countdown = None
        desc = {
            "TableName": TABLE,
            "TableStatus": self.status,
            "Replicas": [{"RegionName": r, "ReplicaStatus": s} for r, s in self.replicas.items()],
        }
        if self.replicas:
            desc["GlobalTableVersion"] = self.version
        if self._countdown is not None:
            self._countdown -= 1
        return desc

    def create_replica(self, region: str) -> None:
        if self.status != "ACTIVE":
            raise _client_error("ResourceInUseException", "UpdateTable", "Table is being updated")
        self.status, self.replicas[region] = "UPDATING", "CREATING"
        self._countdown = self.settle_after

    def write(self, region: str, key: dict[str, Any], item: dict[str, Any] | None) -> None:
        ident = json.dumps(key, sort_keys=True)
        if item is None:
            self.items[region].pop(ident, None)
        else:
            self.items[region][ident] = item
        for other in self.items:
            if other != region:
                self.pending.append({"region": other, "ident": ident, "item": item, "reads": 0})

    def read(self, region: str, key: dict[str, Any]) -> dict[str, Any] | None:
        for op in [p for p in self.pending if p["region"] == region]:
            op["reads"] += 1
            if self.item_lag is not None and op["reads"] > self.item_lag:
                self.pending.remove(op)
                if op["item"] is None:
                    self.items[region].pop(op["ident"], None)
                else:
                    self.items[region][op["ident"]] = op["item"]
        return self.items[region].get(json.dumps(key, sort_keys=True))


@dataclass
class FakeDdb:
    table: FakeGlobalTable
    region: str

    def _call(self, operation: str, kwargs: dict[str, Any]) -> None:
        self.table.calls.append((self.region, operation, kwargs))

    def describe_table(self, **kwargs: Any) -> dict[str, Any]:
        self._call("describe_table", kwargs)
        return {"Table": self.table.describe()}

    def describe_continuous_backups(self, **kwargs: Any) -> dict[str, Any]:
        self._call("describe_continuous_backups", kwargs)
        if self.region != PRIMARY and self.region not in self.table.replicas:
            raise _client_error("TableNotFoundException", "DescribeContinuousBackups")
        status = self.table.pitr.get(self.region, "DISABLED")
        return {
            "ContinuousBackupsDescription": {"PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": status}}
        }

    def update_continuous_backups(self, **kwargs: Any) -> dict[str, Any]:
        self._call("update_continuous_backups", kwargs)
        enabled = kwargs["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
        self.table.pitr[self.region] = "ENABLED" if enabled else "DISABLED"
        return {}

    def update_table(self, **kwargs: Any) -> dict[str, Any]:
        self._call("update_table", kwargs)
        for update in kwargs["ReplicaUpdates"]:
            self.table.create_replica(update["Create"]["RegionName"])
        return {}

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self._call("put_item", kwargs)
        key = {"SiteId": kwargs["Item"]["SiteId"]}
        if "ConditionExpression" in kwargs and self.table.items[self.region].get(json.dumps(key, sort_keys=True)):
            raise _client_error("ConditionalCheckFailedException", "PutItem")
        self.table.write(self.region, key, kwargs["Item"])
        return {}

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        self._call("get_item", kwargs)
        item = self.table.read(self.region, kwargs["Key"])
        return {"Item": item} if item else {}

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        self._call("delete_item", kwargs)
        self.table.write(self.region, kwargs["Key"], None)
        return {}


def _plan(table: FakeGlobalTable, spec_table: Table, spec: EnvironmentSpec) -> ResourcePlan:
    """The table's replica plan, read through the fake as Plan reads it."""
    replicas = read_table_replicas(table.client(PRIMARY), TABLE)
    return plan_table_replicas(spec_table, spec, replicas, read_replica_backups(table.client, spec_table, spec))


def _operations(table: FakeGlobalTable, region: str | None = None) -> list[str]:
    return [op for r, op, _ in table.calls if region in (None, r)]


def _replica_updates(table: FakeGlobalTable) -> list[dict[str, Any]]:
    return [u for _, op, kw in table.calls if op == "update_table" for u in kw["ReplicaUpdates"]]


def _result(results: list[CheckResult], name: str) -> CheckResult:
    return next(r for r in results if r.name == name)


# ---------------------------------------------------------------- buckets: planning and applying


def test_first_plan_adds_the_replication_rule_read_only(target: TargetSession, replicated: EnvironmentSpec) -> None:
    # GIVEN both buckets exist, without any replication, and the table has no replicas (moto)
    _create_buckets()
    boto3.client("dynamodb", region_name=PRIMARY).create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "SiteId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "SiteId", "AttributeType": "S"}],
    )

    # WHEN replication is planned
    bucket_plan, table_plan = plan_replication(target, replicated)

    # THEN the rule and the replica are to be added, in the source's region, and nothing was changed
    assert (bucket_plan.kind, bucket_plan.name, bucket_plan.region, bucket_plan.action) == (
        "bucket-replication",
        SOURCE,
        PRIMARY,
        "add",
    )
    role, rules = bucket_plan.changes
    assert role == {"field": "role", "before": None, "after": ROLE_ARN}
    assert rules["after"] == [
        {
            "id": "bbws-crr",
            "status": "Enabled",
            "priority": 1,
            "filter": {},
            "deleteMarkerReplication": True,
            "destination": f"arn:aws:s3:::{DESTINATION}",
            "storageClass": "STANDARD",
            "sseKmsEncryptedObjects": False,
            "replicaKmsKeyId": None,
        }
    ]
    assert (table_plan.kind, table_plan.name, table_plan.region, table_plan.action) == (
        "table-replica",
        TABLE,
        PRIMARY,
        "add",
    )
    # AND the new replica gets point-in-time recovery, as the table has (each replica's own setting)
    assert table_plan.changes == [
        {"field": f"replica.{FAILOVER}", "before": None, "after": "ACTIVE", "region": FAILOVER},
        {"field": f"replica.{FAILOVER}.pointInTimeRecovery", "before": None, "after": "ENABLED", "region": FAILOVER},
    ]
    assert target.log.mutating == 0


def test_apply_puts_the_configuration_once_then_nothing(
    target: TargetSession, replicated_data: dict[str, Any], build_spec: SpecBuilder, s3: Any
) -> None:
    # GIVEN both buckets, versioned (moto 5.2.5 always answers DeleteMarkerReplication Disabled,
    # so the spec asks for that here; the Enabled case is shown against S3's real answer below)
    spec = _bucket_only(replicated_data, build_spec, deleteMarkerReplication=False)
    _create_buckets()

    # WHEN replication is applied, then applied again with a fresh session
    first = apply_replication(target, spec, NO_WAIT)
    second_target = _fresh(target)
    second = apply_replication(second_target, spec, NO_WAIT)

    # THEN the first run made exactly one put_bucket_replication, and the second nothing
    assert [p.action for p in first] == ["add"]
    assert target.log.calls["s3:PutBucketReplication"] == 1
    assert target.log.mutating == 1
    assert [p.action for p in second] == ["unchanged"]
    assert second_target.log.mutating == 0
    rule = s3.get_bucket_replication(Bucket=SOURCE)["ReplicationConfiguration"]["Rules"][0]
    assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{DESTINATION}"
    assert rule["Status"] == "Enabled"


def test_toggled_delete_marker_replication_is_a_change(
    target: TargetSession, replicated_data: dict[str, Any], build_spec: SpecBuilder
) -> None:
    # GIVEN replication applied without delete-marker replication
    _create_buckets()
    apply_replication(target, _bucket_only(replicated_data, build_spec, deleteMarkerReplication=False), NO_WAIT)

    # WHEN the spec turns it on and replication is planned
    (plan,) = plan_replication(target, _bucket_only(replicated_data, build_spec, deleteMarkerReplication=True))

    # THEN exactly that field changes, and the prior configuration is recorded for rollback
    assert plan.action == "change"
    assert plan.changes == [{"field": "rule.deleteMarkerReplication", "before": False, "after": True}]
    assert plan.prior is not None
    assert plan.prior["configuration"]["Role"] == ROLE_ARN


def test_s3s_own_answer_plans_unchanged(replicated: EnvironmentSpec) -> None:
    # GIVEN S3 answers with the configuration the spec asks for, in S3's own shape
    s3 = boto3.client("s3", region_name=PRIMARY)
    with Stubber(s3) as stub:
        stub.add_response(
            "get_bucket_replication", {"ReplicationConfiguration": {"Role": ROLE_ARN, "Rules": [_aws_rule()]}}
        )

        # WHEN it is read and planned
        plan = plan_bucket_replication(replicated.resources.buckets[0], replicated, read_bucket_replication(s3, SOURCE))

    # THEN nothing is to change
    assert (plan.action, plan.changes) == ("unchanged", [])


def test_absent_configuration_reads_as_none(aws: None) -> None:
    # GIVEN a source bucket without replication, and a bucket name that does not exist yet
    _create_buckets(destination=False)
    s3 = boto3.client("s3", region_name=PRIMARY)

    # WHEN their replication is read
    # THEN both read as "no configuration"
    assert read_bucket_replication(s3, SOURCE) is None
    assert read_bucket_replication(s3, "bbws-not-created-yet") is None


def test_kms_source_replicates_kms_objects_with_the_replica_key(
    replicated_data: dict[str, Any], build_spec: SpecBuilder
) -> None:
    # GIVEN a source bucket encrypted with KMS and a replica key in the failover region
    replicated_data["resources"]["buckets"][0]["encryption"] = {"algorithm": "aws:kms"}
    replicated_data["resources"]["buckets"][0]["replication"]["replicaKmsKeyId"] = REPLICA_KEY
    spec = build_spec(replicated_data)

    # WHEN it is planned against nothing
    plan = plan_bucket_replication(spec.resources.buckets[0], spec, None)

    # THEN the rule selects SSE-KMS objects and encrypts replicas with the replica key
    (rule,) = plan.changes[1]["after"]
    assert rule["sseKmsEncryptedObjects"] is True
    assert rule["replicaKmsKeyId"] == REPLICA_KEY


@pytest.mark.parametrize(
    ("replica_key", "message"),
    [
        (None, "replicaKmsKeyId is required because the bucket encrypts with aws:kms"),
        (
            f"arn:aws:kms:{PRIMARY}:{ACCOUNT}:key/primary",
            f"must be a KMS key or alias ARN in the destination region {FAILOVER}",
        ),
    ],
)
def test_kms_source_without_a_usable_replica_key_is_rejected(
    replicated_data: dict[str, Any], build_spec: SpecBuilder, replica_key: str | None, message: str
) -> None:
    # GIVEN a KMS-encrypted source whose replication names no replica key, or one in the wrong region
    replicated_data["resources"]["buckets"][0]["encryption"] = {"algorithm": "aws:kms"}
    replicated_data["resources"]["buckets"][0]["replication"]["replicaKmsKeyId"] = replica_key
    spec = build_spec(replicated_data)

    # WHEN it is planned
    # THEN the plan is rejected, naming the bucket and what is missing
    with pytest.raises(PlanRejected, match=rf"bucket {SOURCE}: .*{message}"):
        plan_bucket_replication(spec.resources.buckets[0], spec, None)


def test_a_rule_the_deployer_does_not_own_is_refused_never_replaced(replicated: EnvironmentSpec) -> None:
    # GIVEN the bucket replicates through a rule set up by hand (runbook section 6, step 6), beside ours
    ours = {"id": "bbws-crr", "status": "Enabled", "priority": 1, "filter": {}}
    actual = {
        "role": ROLE_ARN,
        "rules": [{"id": "ReplicateAll", "status": "Enabled", "priority": 0, "filter": {}}, ours],
        "configuration": {},
    }
    # WHEN it is planned THEN the plan is refused, naming the rule: putting ours would replace it
    with pytest.raises(PlanRejected, match="replication rule ReplicateAll is not the deployer's"):
        plan_bucket_replication(replicated.resources.buckets[0], replicated, actual)


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ({"destination": False}, "does not exist; provision it before replication is set up"),
        ({"destination_versioned": False}, "has versioning Disabled"),
    ],
)
def test_missing_or_unversioned_destination_fails_naming_it(
    target: TargetSession,
    replicated_data: dict[str, Any],
    build_spec: SpecBuilder,
    buckets: dict[str, bool],
    message: str,
) -> None:
    # GIVEN the source bucket, but a destination that is missing or not versioned
    _create_buckets(**buckets)

    # WHEN replication is applied
    # THEN provisioning fails naming the destination, and nothing was put
    with pytest.raises(ProvisioningFailed, match=rf"destination bucket {DESTINATION} in {FAILOVER} {message}"):
        apply_replication(target, _bucket_only(replicated_data, build_spec), NO_WAIT)
    assert target.log.mutating == 0


def test_s3_refusal_is_a_provisioning_failure(aws: None, replicated: EnvironmentSpec) -> None:
    # GIVEN S3 refuses the configuration (the role cannot be passed, say)
    s3 = boto3.client("s3", region_name=PRIMARY)
    bucket = replicated.resources.buckets[0]
    plan = plan_bucket_replication(bucket, replicated, None)
    with Stubber(s3) as stub:
        stub.add_client_error("put_bucket_replication", "AccessDenied", "not allowed to pass the role")

        # WHEN it is applied
        # THEN provisioning fails naming the bucket, the call and S3's reason
        with pytest.raises(ProvisioningFailed, match=rf"bucket-replication {SOURCE} in {PRIMARY}: .*AccessDenied"):
            apply_bucket_replication(s3, plan, bucket, replicated)


# ---------------------------------------------------------------- tables: planning and applying


def test_missing_replica_is_created_and_awaited(replicated: EnvironmentSpec) -> None:
    # GIVEN a table without replicas, whose new replica is CREATING for two checks
    table = FakeGlobalTable(settle_after=2)
    spec_table = replicated.resources.tables[0]
    plan = _plan(table, spec_table, replicated)

    # WHEN the plan is applied
    apply_table_replicas(table.client, plan, spec_table, replicated, NO_WAIT)

    # THEN exactly one replica create was sent, and once table and replica were ACTIVE the replica's
    # point-in-time recovery was turned on, in its own region
    assert _replica_updates(table) == [{"Create": {"RegionName": FAILOVER}}]
    assert _operations(table) == [
        "describe_table",
        "describe_continuous_backups",
        "describe_table",
        "update_table",
        *["describe_table"] * 3,
        "update_continuous_backups",
    ]
    assert _operations(table, FAILOVER) == ["describe_continuous_backups", "update_continuous_backups"]
    assert (table.status, table.replicas, table.pitr) == ("ACTIVE", {FAILOVER: "ACTIVE"}, {FAILOVER: "ENABLED"})


def test_unmanaged_replica_is_reported_and_left_in_place(replicated: EnvironmentSpec) -> None:
    # GIVEN a table whose failover replica is missing, with a replica the spec does not name
    table = FakeGlobalTable(replicas={"us-east-1": "ACTIVE"})
    spec_table = replicated.resources.tables[0]
    plan = _plan(table, spec_table, replicated)

    # WHEN the plan is applied
    apply_table_replicas(table.client, plan, spec_table, replicated, NO_WAIT)

    # THEN the extra replica is reported as left in place, only the failover one is created, and
    # no Delete is ever sent
    assert plan.action == "change"
    unmanaged = {
        "field": "replica.us-east-1",
        "before": "ACTIVE",
        "after": "ACTIVE",
        "region": "us-east-1",
        "note": UNMANAGED_NOTE,
    }
    assert unmanaged in plan.changes
    assert _replica_updates(table) == [{"Create": {"RegionName": FAILOVER}}]
    assert table.replicas == {"us-east-1": "ACTIVE", FAILOVER: "ACTIVE"}


def test_unmanaged_replica_alone_changes_nothing(replicated: EnvironmentSpec) -> None:
    # GIVEN the failover replica is ACTIVE and an unmanaged one exists too
    table = FakeGlobalTable(replicas={FAILOVER: "ACTIVE", "us-east-1": "ACTIVE"})
    spec_table = replicated.resources.tables[0]

    # WHEN it is planned and applied
    plan = _plan(table, spec_table, replicated)
    apply_table_replicas(table.client, plan, spec_table, replicated, NO_WAIT)

    # THEN it is unchanged (the note stays visible) and nothing but the first reads was called
    assert plan.action == "unchanged"
    assert [c.get("note") for c in plan.changes] == [UNMANAGED_NOTE]
    assert _operations(table) == ["describe_table", "describe_continuous_backups"]


def test_a_replica_without_point_in_time_recovery_gets_it_and_nothing_else(replicated: EnvironmentSpec) -> None:
    # GIVEN the failover replica is ACTIVE, but its point-in-time recovery was turned off
    table = FakeGlobalTable(replicas={FAILOVER: "ACTIVE"})
    table.pitr[FAILOVER] = "DISABLED"
    spec_table = replicated.resources.tables[0]

    # WHEN it is planned and applied
    plan = _plan(table, spec_table, replicated)
    apply_table_replicas(table.client, plan, spec_table, replicated, NO_WAIT)

    # THEN only that is changed, in the replica's region: no replica is created or awaited
    assert (plan.action, plan.changes) == (
        "change",
        [
            {
                "field": f"replica.{FAILOVER}.pointInTimeRecovery",
                "before": "DISABLED",
                "after": "ENABLED",
                "region": FAILOVER,
            }
        ],
    )
    assert _replica_updates(table) == []
    assert _operations(table, FAILOVER) == ["describe_continuous_backups", "update_continuous_backups"]
    assert table.pitr[FAILOVER] == "ENABLED"


def test_replica_that_never_becomes_active_fails_provisioning(replicated: EnvironmentSpec) -> None:
    # GIVEN a new replica stays CREATING
    table = FakeGlobalTable(settle_after=None)
    spec_table = replicated.resources.tables[0]
    plan = plan_table_replicas(spec_table, replicated, [], {FAILOVER: None})

    # WHEN it is applied with a bounded wait
    # THEN provisioning fails naming the table, the region and the last statuses
    with pytest.raises(
        ProvisioningFailed,
        match=rf"table-replica {TABLE}: still table UPDATING, replica in {FAILOVER} CREATING after 3",
    ):
        apply_table_replicas(table.client, plan, spec_table, replicated, NO_WAIT)


def test_failed_replica_fails_at_once(replicated: EnvironmentSpec) -> None:
    # GIVEN a replica that exists in the failover region but failed to create
    table = FakeGlobalTable(replicas={FAILOVER: "CREATION_FAILED"})
    spec_table = replicated.resources.tables[0]
    plan = _plan(table, spec_table, replicated)

    # WHEN it is applied
    # THEN provisioning fails on the first check, without trying to create it again
    with pytest.raises(ProvisioningFailed, match=rf"replica in {FAILOVER} is CREATION_FAILED"):
        apply_table_replicas(table.client, plan, spec_table, replicated, WaitConfig(0, 10))
    assert _replica_updates(table) == []


def test_busy_table_is_transient(replicated: EnvironmentSpec) -> None:
    # GIVEN DynamoDB answers the replica create with ResourceInUseException (another update runs)
    ddb = boto3.client("dynamodb", region_name=PRIMARY)
    spec_table = replicated.resources.tables[0]
    plan = plan_table_replicas(spec_table, replicated, [], {FAILOVER: None})
    with Stubber(ddb) as stub:
        stub.add_response("describe_table", {"Table": {"TableName": TABLE, "TableStatus": "ACTIVE"}})
        stub.add_client_error("update_table", "ResourceInUseException", "Table is being updated")

        # WHEN it is applied
        # THEN the error is transient, for the state machine to retry
        with pytest.raises(TransientAwsError, match="ResourceInUseException"):
            apply_table_replicas(lambda _: ddb, plan, spec_table, replicated, NO_WAIT)


def test_old_global_table_version_is_rejected() -> None:
    # GIVEN a global table made with the runbook's create-global-table (version 2017.11.29)
    table = FakeGlobalTable(replicas={FAILOVER: "ACTIVE"}, version="2017.11.29")

    # WHEN its replicas are read
    # THEN planning is rejected with what to do
    with pytest.raises(PlanRejected, match=rf"table {TABLE}: is a global table of version 2017.11.29; upgrade"):
        read_table_replicas(table.client(PRIMARY), TABLE)


def test_apply_replication_is_idempotent_for_buckets_and_tables(
    target: TargetSession, replicated_data: dict[str, Any], build_spec: SpecBuilder
) -> None:
    # GIVEN both buckets (moto; deleteMarkerReplication off, see above) and a table without
    # replicas (fake: moto keeps none)
    replicated_data["resources"]["buckets"][0]["replication"]["deleteMarkerReplication"] = False
    spec = build_spec(replicated_data)
    _create_buckets()
    table = FakeGlobalTable()
    fakes = {("dynamodb", PRIMARY): table.client(PRIMARY), ("dynamodb", FAILOVER): table.client(FAILOVER)}
    first = FakeTarget(session=target.session, account=ACCOUNT, fakes=fakes)

    # WHEN replication is applied twice
    applied = apply_replication(first, spec, NO_WAIT)
    calls_after_first = len(table.calls)
    second = FakeTarget(session=target.session, account=ACCOUNT, fakes=fakes)
    again = apply_replication(second, spec, NO_WAIT)

    # THEN the first run configured both, and the second only read
    assert [(p.kind, p.action) for p in applied] == [("bucket-replication", "add"), ("table-replica", "add")]
    assert [p.action for p in again] == ["unchanged", "unchanged"]
    assert second.log.mutating == 0
    assert _operations(table)[calls_after_first:] == ["describe_table", "describe_continuous_backups"]


# ---------------------------------------------------------------- verification


def _verify(replicated: EnvironmentSpec, s3: FakeS3, table: FakeGlobalTable, **timing: float) -> dict[str, CheckResult]:
    clients = {
        ("s3", PRIMARY): s3,
        ("s3", FAILOVER): s3,
        ("dynamodb", PRIMARY): table.client(PRIMARY),
        ("dynamodb", FAILOVER): table.client(FAILOVER),
    }
    target = FakeTarget(session=boto3.Session(), account=ACCOUNT, fakes=clients)
    results = verify_replication(target, replicated, MARKER, **(QUICK | timing))
    assert len(results) == 4
    return {r.name: r for r in results}


def test_replication_verified_and_everything_cleaned_up(replicated: EnvironmentSpec) -> None:
    # GIVEN the marker object replicates after two PENDING answers, and items after one read
    s3, table = FakeS3(lag=2), FakeGlobalTable(replicas={FAILOVER: "ACTIVE"})

    # WHEN replication is verified
    results = _verify(replicated, s3, table, timeout_seconds=5)

    # THEN every check passed, reported against the source region and resource
    assert {name: r.passed for name, r in results.items()} == {
        "replication.configured": True,
        "replication.object": True,
        "replica.active": True,
        "replica.item": True,
    }
    assert {(r.region, r.resource) for r in results.values()} == {(PRIMARY, SOURCE), (PRIMARY, TABLE)}
    # AND the marker's exact versions were deleted on both sides, leaving nothing
    assert s3.deletes() == [(SOURCE, "v1"), (DESTINATION, "v2")]
    assert s3.objects == {}
    put_key = next(c["Key"] for op, c in s3.calls if op == "put_object")
    assert put_key == f"_deployer/replication/{MARKER}.txt"
    # AND the test item was deleted in the primary and that delete reached the replica
    assert table.items == {PRIMARY: {}, FAILOVER: {}}
    assert _operations(table, FAILOVER).count("delete_item") == 0
    reads = [kw for r, op, kw in table.calls if op == "get_item"]
    assert reads
    assert all(kw["ConsistentRead"] is False for kw in reads)


def test_never_replicated_object_fails_naming_the_bucket_and_is_cleaned_up(replicated: EnvironmentSpec) -> None:
    # GIVEN the source object stays PENDING (replication stalled)
    s3, table = FakeS3(lag=10**9), FakeGlobalTable(replicas={FAILOVER: "ACTIVE"})

    # WHEN replication is verified
    result = _verify(replicated, s3, table)["replication.object"]

    # THEN the object check failed naming the bucket and the last status, and the marker is gone
    assert not result.passed
    assert f"bucket {SOURCE}" in result.detail
    assert "source status PENDING" in result.detail
    assert s3.deletes() == [(SOURCE, "v1")]
    assert s3.objects == {}


def test_failed_replication_fails_at_once_and_is_cleaned_up(replicated: EnvironmentSpec) -> None:
    # GIVEN S3 reports the marker's replication FAILED
    s3, table = FakeS3(lag=0, outcome="FAILED"), FakeGlobalTable(replicas={FAILOVER: "ACTIVE"})

    # WHEN replication is verified with time to spare
    result = _verify(replicated, s3, table, timeout_seconds=1)["replication.object"]

    # THEN it failed on the first answer, without polling on, and the marker is gone
    assert not result.passed
    assert [op for op, _ in s3.calls].count("head_object") == 2  # the source once, the replica at cleanup
    assert f"from bucket {SOURCE} FAILED" in result.detail
    assert s3.objects == {}


def test_a_failing_check_does_not_stop_the_others(replicated: EnvironmentSpec) -> None:
    # GIVEN reading the replication configuration is denied
    s3, table = FakeS3(), FakeGlobalTable(replicas={FAILOVER: "ACTIVE"})

    def denied(**_: Any) -> dict[str, Any]:
        raise _client_error("AccessDenied", "GetBucketReplication", "Access Denied")

    s3.get_bucket_replication = denied  # type: ignore[method-assign]

    # WHEN replication is verified
    results = _verify(replicated, s3, table, timeout_seconds=5)

    # THEN that check failed with S3's code and message, and the others ran and passed
    assert results["replication.configured"].detail == "AccessDenied: Access Denied"
    assert not results["replication.configured"].passed
    assert all(r.passed for name, r in results.items() if name != "replication.configured")


def test_missing_configuration_and_inactive_replica_fail_with_details(replicated: EnvironmentSpec) -> None:
    # GIVEN no replication rule on the bucket, and the failover replica still CREATING
    s3, table = FakeS3(), FakeGlobalTable(replicas={FAILOVER: "CREATING"})
    s3.rules = {}

    # WHEN replication is verified
    results = _verify(replicated, s3, table)

    # THEN both fail saying what is wrong
    assert results["replication.configured"].detail == f"bucket {SOURCE} has no replication configuration"
    assert results["replica.active"].detail == f"replica in {FAILOVER} is CREATING, expected ACTIVE"
    assert not results["replication.configured"].passed
    assert not results["replica.active"].passed


def test_unreplicated_item_fails_and_is_cleaned_up_in_both_regions(replicated: EnvironmentSpec) -> None:
    # GIVEN global-table replication is paused
    s3, table = FakeS3(), FakeGlobalTable(replicas={FAILOVER: "ACTIVE"}, item_lag=None)

    # WHEN replication is verified
    result = _verify(replicated, s3, table)["replica.item"]

    # THEN the item check failed naming the table and the replica region, and the item was deleted in both
    assert not result.passed
    assert result.detail == f"test item written to {TABLE} not readable in {FAILOVER} within 0.05s"
    assert "delete_item" in _operations(table, PRIMARY)
    assert "delete_item" in _operations(table, FAILOVER)
    assert table.items[PRIMARY] == {}
    assert table.items[FAILOVER] == {}


def test_existing_item_with_the_test_key_is_left_untouched(replicated: EnvironmentSpec) -> None:
    # GIVEN an item already holds the replication test key in the primary region
    s3, table = FakeS3(), FakeGlobalTable(replicas={FAILOVER: "ACTIVE"})
    _verify(replicated, s3, table, timeout_seconds=5)
    key = next(kw["Item"]["SiteId"] for _, op, kw in table.calls if op == "put_item")
    table.items[PRIMARY][json.dumps({"SiteId": key})] = {"SiteId": key, "real": {"S": "data"}}
    table.calls.clear()

    # WHEN replication is verified again
    result = _verify(replicated, s3, table)["replica.item"]

    # THEN the check fails and the item is neither overwritten nor deleted
    assert not result.passed
    assert "already exists; left untouched" in result.detail
    assert "delete_item" not in _operations(table)
    assert table.items[PRIMARY][json.dumps({"SiteId": key})]["real"] == {"S": "data"}


def test_spec_without_replication_plans_and_verifies_nothing(target: TargetSession, spec: EnvironmentSpec) -> None:
    # GIVEN a spec (like DEV's) with no replication at all
    # WHEN replication is planned, applied and verified
    # THEN there is nothing to do and no call is made
    assert plan_replication(target, spec) == []
    assert apply_replication(target, spec, NO_WAIT) == []
    assert verify_replication(target, spec, MARKER, **QUICK) == []
    assert sum(target.log.calls.values()) == 0


def test_replication_is_in_the_approved_plan_and_its_hash(
    target: TargetSession, replicated_data: dict[str, Any], build_spec: SpecBuilder
) -> None:
    # GIVEN PROD-like spec not yet deployed
    spec = _bucket_only(replicated_data, build_spec)
    # WHEN the environment is planned (what approvers approve)
    plan = plan_environment(target, spec)
    # THEN the bucket's replication is a planned resource of its own, shown with what it adds
    (replication,) = [r for r in plan.resources if r.kind == "bucket-replication"]
    assert (replication.name, replication.region, replication.action) == (SOURCE, PRIMARY, "add")
    assert [c["field"] for c in replication.changes] == ["role", "rules"]
    # AND a change of replication alone changes the plan's hash
    without_delete_markers = _bucket_only(replicated_data, build_spec, deleteMarkerReplication=False)
    changed = plan_environment(target, without_delete_markers)
    assert changed.hash != plan.hash
    assert [r.kind for r in changed.resources] == [r.kind for r in plan.resources]
