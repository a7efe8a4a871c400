"""The sandbox's operation -> IAM action map (sandbox/iam_actions.yaml): checked against AWS's IAM database as
policy_sentry ships it offline, and what each kind of call is authorized as."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
from policy_sentry.querying.actions import get_action_data

from sandbox.iam import PLACEHOLDER, ActionMap, ApiCall, Authorization, Unmapped

ACTIONS = ActionMap.load()
ACCOUNT = "536580886816"
# Names in ARN formats that may hold slashes (an object's key, a log group's path).
FREE_FORM = {"ObjectName", "LogGroupName", "LogStreamName"}


def database(action: str) -> list[dict[str, Any]]:
    service, name = action.split(":")
    return list(get_action_data(service, name).get(service, []))


def formats(action: str) -> list[str]:
    return [row["resource_arn_format"] for row in database(action)]


def as_pattern(arn_format: str) -> re.Pattern[str]:
    """policy_sentry's ARN format (arn:${Partition}:s3:::${BucketName}) as a regex over real ARNs."""
    regex, position = "", 0
    for match in re.finditer(r"\$\{([^}]+)\}", arn_format):
        name = match.group(1)
        value = "aws" if name == "Partition" else (".+" if name in FREE_FORM else "[^:/]+")
        regex += re.escape(arn_format[position : match.start()]) + value
        position = match.end()
    return re.compile(regex + re.escape(arn_format[position:]))


def entries() -> list[tuple[str, str, Mapping[str, Any]]]:
    return [(s, op, e) for s, ops in ACTIONS.entries.items() for op, e in ops.items() if not e.get("free")]


@pytest.mark.parametrize("action", sorted(ACTIONS.actions()))
def test_every_action_the_map_asks_for_exists_in_iam(action: str) -> None:
    assert database(action), f"{action} is not an IAM action (policy_sentry's database)"


@pytest.mark.parametrize(("service", "operation", "entry"), entries(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_resource_is_of_a_type_its_action_takes(service: str, operation: str, entry: Mapping[str, Any]) -> None:
    template = str(entry["resource"])
    if PLACEHOLDER.fullmatch(template):
        return  # the request names the ARN itself (RoleArn, ResourceArn, executionArn...)
    sample = PLACEHOLDER.sub(lambda m: {"region": "af-south-1", "account": ACCOUNT}.get(m.group(2), "sample"), template)
    for key in ("action", "versioned"):
        if key not in entry:
            continue
        known = formats(str(entry[key]))
        if sample == "*":
            assert "*" in known, f"{operation}: {entry[key]} takes a resource, the map gives *"
        else:
            assert any(as_pattern(f).fullmatch(sample) for f in known if f != "*"), (operation, sample, known)


@pytest.mark.parametrize(("service", "operation", "entry"), entries(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_condition_key_the_map_sets_is_one_its_action_knows(
    service: str, operation: str, entry: Mapping[str, Any]
) -> None:
    keys = set(entry.get("keys", {})) | ({"dynamodb:LeadingKeys"} if entry.get("leading_keys") else set())
    known = {k.lower() for row in database(str(entry["action"])) for k in row["condition_keys"]}
    assert {k.lower() for k in keys} <= known, operation


class FakeLookups:
    def __init__(self, service_role: bool = False) -> None:
        self.service_role = service_role

    def partition_key(self, account: str, region: str, table: str) -> str | None:
        return {"Site-Generation-State": "SiteId", "bbws-deployer-records": "pk"}.get(table)

    def secret_arn(self, account: str, region: str, secret_id: str) -> str:
        return (
            secret_id
            if secret_id.startswith("arn:")
            else f"arn:aws:secretsmanager:{region}:{account}:secret:{secret_id}-AbCdEf"
        )

    def role_exists(self, arn: str) -> bool:
        return self.service_role


def authorize(
    service: str,
    operation: str,
    lookups: FakeLookups | None = None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> list[Authorization]:
    call = ApiCall(service, operation, "af-south-1", ACCOUNT, params, body, headers or {})
    return ACTIONS.authorizations(call, lookups or FakeLookups())


def pairs(found: list[Authorization]) -> list[tuple[str, str]]:
    return [(a.action, a.resource) for a in found]


def test_s3_operations_whose_action_is_not_their_name() -> None:
    assert pairs(authorize("s3", "HeadBucket", Bucket="b")) == [("s3:ListBucket", "arn:aws:s3:::b")]
    assert pairs(authorize("s3", "GetPublicAccessBlock", Bucket="b")) == [
        ("s3:GetBucketPublicAccessBlock", "arn:aws:s3:::b")
    ]
    assert pairs(authorize("s3", "PutBucketEncryption", Bucket="b")) == [
        ("s3:PutEncryptionConfiguration", "arn:aws:s3:::b")
    ]
    listed = authorize("s3", "ListObjectVersions", Bucket="b", prefix="_deployer/")
    assert pairs(listed) == [("s3:ListBucketVersions", "arn:aws:s3:::b")]
    assert listed[0].keys == {"s3:prefix": ("_deployer/",)}
    # GIVEN no prefix THEN the key is absent from the request context, as on AWS
    assert authorize("s3", "ListObjectsV2", Bucket="b")[0].keys == {}


def test_object_versions_need_the_version_actions() -> None:
    assert pairs(authorize("s3", "GetObject", Bucket="b", Key="k/1")) == [("s3:GetObject", "arn:aws:s3:::b/k/1")]
    assert pairs(authorize("s3", "GetObject", Bucket="b", Key="k", versionId="v1")) == [
        ("s3:GetObjectVersion", "arn:aws:s3:::b/k")
    ]
    assert pairs(authorize("s3", "DeleteObject", Bucket="b", Key="k", versionId="v1")) == [
        ("s3:DeleteObjectVersion", "arn:aws:s3:::b/k")
    ]


def test_put_bucket_replication_passes_its_role_to_s3() -> None:
    body = b"<ReplicationConfiguration xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Role>arn:aws:iam::1:role/r</Role></ReplicationConfiguration>"
    found = authorize("s3", "PutBucketReplication", body=body, Bucket="b")
    assert pairs(found) == [
        ("s3:PutReplicationConfiguration", "arn:aws:s3:::b"),
        ("iam:PassRole", "arn:aws:iam::1:role/r"),
    ]
    assert found[1].keys == {"iam:PassedToService": ("s3.amazonaws.com",)}
    with pytest.raises(Unmapped, match="without a Role"):
        authorize("s3", "PutBucketReplication", body=b"<ReplicationConfiguration/>", Bucket="b")


def test_adding_a_replica_needs_the_replica_actions_in_its_region_and_the_service_role_once() -> None:
    update = {"ReplicaUpdates": [{"Create": {"RegionName": "eu-west-1"}}], "TableName": "Site-Generation-State"}
    first = authorize("dynamodb", "UpdateTable", FakeLookups(service_role=False), **update)
    replica = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/Site-Generation-State"
    assert ("dynamodb:UpdateTable", f"arn:aws:dynamodb:af-south-1:{ACCOUNT}:table/Site-Generation-State") in pairs(
        first
    )
    assert {("dynamodb:CreateTableReplica", replica), ("dynamodb:CreateTable", replica)} <= set(pairs(first))
    linked = [a for a in first if a.action == "iam:CreateServiceLinkedRole"]
    assert linked[0].keys == {"iam:AWSServiceName": ("replication.dynamodb.amazonaws.com",)}
    later = authorize("dynamodb", "UpdateTable", FakeLookups(service_role=True), **update)
    assert not [a for a in later if a.action == "iam:CreateServiceLinkedRole"]
    removed = authorize(
        "dynamodb",
        "UpdateTable",
        ReplicaUpdates=[{"Delete": {"RegionName": "eu-west-1"}}],
        TableName="Site-Generation-State",
    )
    assert {("dynamodb:DeleteTable", replica), ("dynamodb:DeleteTableReplica", replica)} <= set(pairs(removed))


def test_item_calls_carry_their_partition_keys_as_leading_keys() -> None:
    deleted = authorize("dynamodb", "DeleteItem", TableName="Site-Generation-State", Key={"SiteId": {"S": "site-001"}})
    assert deleted[0].keys == {"dynamodb:LeadingKeys": ("site-001",)}
    batch = authorize(
        "dynamodb",
        "BatchWriteItem",
        RequestItems={
            "bbws-deployer-records": [
                {"PutRequest": {"Item": {"pk": {"S": "DEPLOYMENT#1"}, "sk": {"S": "SPILL#plan#0000"}}}},
                {"DeleteRequest": {"Key": {"pk": {"S": "DEPLOYMENT#2"}, "sk": {"S": "RECORD"}}}},
            ]
        },
    )
    assert pairs(batch) == [
        ("dynamodb:BatchWriteItem", f"arn:aws:dynamodb:af-south-1:{ACCOUNT}:table/bbws-deployer-records")
    ]
    assert batch[0].keys == {"dynamodb:LeadingKeys": ("DEPLOYMENT#1", "DEPLOYMENT#2")}


def test_a_query_of_an_index_is_authorized_on_the_index_and_a_table_arn_is_its_own_resource() -> None:
    arn = f"arn:aws:dynamodb:af-south-1:{ACCOUNT}:table/bbws-deployer-records"
    assert pairs(authorize("dynamodb", "Query", TableName="bbws-deployer-records", IndexName="gsi1")) == [
        ("dynamodb:Query", f"{arn}/index/gsi1")
    ]
    assert pairs(authorize("dynamodb", "DescribeTable", TableName=arn)) == [("dynamodb:DescribeTable", arn)]


def test_resources_named_by_url_name_or_default_become_their_arns() -> None:
    assert pairs(authorize("sqs", "SendMessage", QueueUrl=f"http://127.0.0.1:5000/{ACCOUNT}/dlq")) == [
        ("sqs:SendMessage", f"arn:aws:sqs:af-south-1:{ACCOUNT}:dlq")
    ]
    assert pairs(authorize("secretsmanager", "GetSecretValue", SecretId="slack")) == [
        ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:af-south-1:{ACCOUNT}:secret:slack-AbCdEf")
    ]
    events = authorize(
        "events", "PutEvents", Entries=[{"EventBusName": "bus"}, {"Detail": "{}"}, {"EventBusName": "bus"}]
    )
    assert pairs(events) == [
        ("events:PutEvents", f"arn:aws:events:af-south-1:{ACCOUNT}:event-bus/bus"),
        ("events:PutEvents", f"arn:aws:events:af-south-1:{ACCOUNT}:event-bus/default"),
    ]


def test_an_operation_or_parameter_the_map_lacks_is_refused_by_name() -> None:
    with pytest.raises(Unmapped, match=r"s3:GetObjectAcl is not in sandbox/iam_actions.yaml"):
        authorize("s3", "GetObjectAcl", Bucket="b", Key="k")
    with pytest.raises(Unmapped, match="without Bucket"):
        authorize("s3", "CreateBucket")


def test_a_call_aws_authorizes_for_anyone_needs_no_grant() -> None:
    assert authorize("sts", "GetCallerIdentity") == []


def test_creating_a_bucket_with_object_ownership_also_puts_its_ownership_controls() -> None:
    assert pairs(authorize("s3", "CreateBucket", Bucket="b")) == [("s3:CreateBucket", "arn:aws:s3:::b")]
    owned = authorize("s3", "CreateBucket", headers={"x-amz-object-ownership": "BucketOwnerEnforced"}, Bucket="b")
    assert pairs(owned) == [("s3:CreateBucket", "arn:aws:s3:::b"), ("s3:PutBucketOwnershipControls", "arn:aws:s3:::b")]
