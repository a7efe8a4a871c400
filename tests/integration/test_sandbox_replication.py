"""The sandbox's replication emulations on their own, over HTTP with boto3 as PROD would use them.

sandbox/s3_replication.py (S3 replication of objects) and sandbox/dynamodb_replicas.py
(global tables, version 2019.11.21) fill gaps of moto 5.2.5. If a moto upgrade changes
what they patch, these tests say which one broke.

Replication is asynchronous, as on AWS: tests poll with a bound and never assert on how
long anything took. To show that something did *not* happen, a test makes a later
change that replication applies after it (replication keeps the order of writes) and
waits for that one instead.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from sandbox.accounts import TARGET_ACCOUNTS, account_session
from sandbox.server import Sandbox
from tests.sandbox_fixtures import wait_for

PROD = TARGET_ACCOUNTS["prod"]
PRIMARY, FAILOVER = "af-south-1", "eu-west-1"
ROLE = f"arn:aws:iam::{PROD}:role/bbws-replication"
SETTLE_SECONDS = 30  # an upper bound for polling, never asserted on


def _wait_for(condition: Callable[[], Any], what: str) -> Any:
    return wait_for(condition, what, SETTLE_SECONDS)


def _error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


@pytest.fixture(scope="module")
def prod(sandbox: Sandbox) -> boto3.Session:
    return account_session(sandbox.client("sts"), PROD)


@pytest.fixture(scope="module")
def client(sandbox: Sandbox, prod: boto3.Session) -> Callable[[str, str], Any]:
    def make(service: str, region: str) -> Any:
        return prod.client(service, endpoint_url=sandbox.endpoint, region_name=region)  # type: ignore[call-overload]

    return make


# --- S3 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(client: Callable[[str, str], Any]) -> Any:
    return client("s3", PRIMARY)


@pytest.fixture(scope="module")
def s3_failover(client: Callable[[str, str], Any]) -> Any:
    return client("s3", FAILOVER)


def _bucket(s3: Any, region: str, *, versioned: bool = True) -> str:
    name = f"bbws-replication-{region}-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def _rule(destination: str, prefix: str = "", *, delete_markers: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "ID": f"to-{destination}",
        "Priority": 1,
        "Status": "Enabled",
        "Filter": {"Prefix": prefix},
        "DeleteMarkerReplication": {"Status": "Enabled" if delete_markers else "Disabled"},
        "Destination": {"Bucket": f"arn:aws:s3:::{destination}"},
        **extra,
    }


def _replicated_pair(s3: Any, s3_failover: Any, **rule: Any) -> tuple[str, str]:
    """A versioned bucket in the primary region replicating to one in the failover region."""
    source, destination = _bucket(s3, PRIMARY), _bucket(s3_failover, FAILOVER)
    s3.put_bucket_replication(
        Bucket=source, ReplicationConfiguration={"Role": ROLE, "Rules": [_rule(destination, **rule)]}
    )
    return source, destination


def _status(s3: Any, bucket: str, key: str) -> str | None:
    return s3.head_object(Bucket=bucket, Key=key).get("ReplicationStatus")  # type: ignore[no-any-return]


def _settled(s3: Any, bucket: str, key: str) -> str:
    """The source's replication status once S3 is done with the version (COMPLETED or FAILED)."""
    return str(_wait_for(lambda: _status(s3, bucket, key) in {"COMPLETED", "FAILED"} and _status(s3, bucket, key), key))


def _keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _sentinel(s3: Any, source: str) -> None:
    """Write an object that replicates after everything written before it, and wait until it has."""
    key = f"zz-sentinel-{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=source, Key=key, Body=b"sentinel")
    assert _settled(s3, source, key) == "COMPLETED"


def test_s3_object_is_replicated_with_body_and_metadata(s3: Any, s3_failover: Any) -> None:
    # GIVEN a bucket in the primary region replicating everything to one in the failover region
    source, destination = _replicated_pair(s3, s3_failover)

    # WHEN an object is put into it
    put = s3.put_object(
        Bucket=source, Key="site/index.html", Body=b"<h1>hi</h1>", ContentType="text/html", Metadata={"build": "42"}
    )

    # THEN it is PENDING at first, then COMPLETED
    assert _status(s3, source, "site/index.html") in {"PENDING", "COMPLETED"}
    assert _settled(s3, source, "site/index.html") == "COMPLETED"
    # AND the failover bucket holds a REPLICA of that version: same body, type, metadata and version id
    replica = s3_failover.get_object(Bucket=destination, Key="site/index.html")
    assert replica["Body"].read() == b"<h1>hi</h1>"
    assert replica["ContentType"] == "text/html"
    assert replica["Metadata"] == {"build": "42"}
    assert replica["ReplicationStatus"] == "REPLICA"
    assert replica["VersionId"] == put["VersionId"]


def test_s3_multipart_and_copied_objects_are_replicated(s3: Any, s3_failover: Any) -> None:
    # GIVEN a replicated bucket
    source, destination = _replicated_pair(s3, s3_failover)

    # WHEN an object is uploaded in parts, and another is copied from it
    upload = s3.create_multipart_upload(Bucket=source, Key="big.bin", Metadata={"parts": "1"})
    part = s3.upload_part(Bucket=source, Key="big.bin", UploadId=upload["UploadId"], PartNumber=1, Body=b"b" * 64)
    s3.complete_multipart_upload(
        Bucket=source,
        Key="big.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    s3.copy_object(Bucket=source, Key="copy.bin", CopySource={"Bucket": source, "Key": "big.bin"})

    # THEN both are replicated with their metadata
    for key in ("big.bin", "copy.bin"):
        assert _settled(s3, source, key) == "COMPLETED"
        replica = s3_failover.get_object(Bucket=destination, Key=key)
        assert replica["Body"].read() == b"b" * 64
        assert replica["Metadata"] == {"parts": "1"}


def test_s3_only_keys_matching_the_rule_prefix_are_replicated(s3: Any, s3_failover: Any) -> None:
    # GIVEN a rule for the prefix "site/" only
    source, destination = _replicated_pair(s3, s3_failover, prefix="site/")

    # WHEN one object is put outside the prefix, then one inside it
    s3.put_object(Bucket=source, Key="logs/today.log", Body=b"log")
    s3.put_object(Bucket=source, Key="site/page.html", Body=b"page")

    # THEN the one inside is replicated (and so anything put before it would have been)
    assert _settled(s3, source, "site/page.html") == "COMPLETED"
    # AND the one outside has no replication status and no replica
    assert _status(s3, source, "logs/today.log") is None
    assert _keys(s3_failover, destination) == ["site/page.html"]


@pytest.mark.parametrize("enabled", [True, False])
def test_s3_delete_marker_is_replicated_only_when_the_rule_says_so(s3: Any, s3_failover: Any, *, enabled: bool) -> None:
    # GIVEN a replicated object, under a rule with delete-marker replication enabled or disabled
    source, destination = _replicated_pair(s3, s3_failover, delete_markers=enabled)
    s3.put_object(Bucket=source, Key="gone.txt", Body=b"soon gone")
    assert _settled(s3, source, "gone.txt") == "COMPLETED"

    # WHEN the object is deleted (a delete marker on the source)
    marker = s3.delete_object(Bucket=source, Key="gone.txt")
    assert marker["DeleteMarker"]
    _sentinel(s3, source)

    # THEN the failover bucket has the same delete marker, or still shows the object
    markers = s3_failover.list_object_versions(Bucket=destination, Prefix="gone.txt").get("DeleteMarkers", [])
    if enabled:
        assert [m["VersionId"] for m in markers] == [marker["VersionId"]]
        assert "gone.txt" not in _keys(s3_failover, destination)
    else:
        assert markers == []
        assert s3_failover.get_object(Bucket=destination, Key="gone.txt")["Body"].read() == b"soon gone"


def test_s3_missing_destination_bucket_fails_the_replication(s3: Any) -> None:
    # GIVEN a rule whose destination bucket does not exist
    source = _bucket(s3, PRIMARY)
    missing = f"bbws-replication-missing-{uuid.uuid4().hex[:12]}"
    s3.put_bucket_replication(Bucket=source, ReplicationConfiguration={"Role": ROLE, "Rules": [_rule(missing)]})

    # WHEN an object is put
    s3.put_object(Bucket=source, Key="orphan.txt", Body=b"x")

    # THEN its replication status ends FAILED
    assert _settled(s3, source, "orphan.txt") == "FAILED"


def test_s3_destination_without_versioning_fails_the_replication(s3: Any, s3_failover: Any) -> None:
    # GIVEN a rule whose destination bucket is not versioned
    source, destination = _bucket(s3, PRIMARY), _bucket(s3_failover, FAILOVER, versioned=False)
    s3.put_bucket_replication(Bucket=source, ReplicationConfiguration={"Role": ROLE, "Rules": [_rule(destination)]})

    # WHEN an object is put
    s3.put_object(Bucket=source, Key="unversioned.txt", Body=b"x")

    # THEN its replication fails and nothing reaches the destination
    assert _settled(s3, source, "unversioned.txt") == "FAILED"
    assert _keys(s3_failover, destination) == []


def test_s3_sse_kms_object_is_replicated_with_the_replica_key(s3: Any, s3_failover: Any) -> None:
    # GIVEN a rule that replicates SSE-KMS objects, encrypting replicas with a key of the failover region
    replica_key = f"arn:aws:kms:{FAILOVER}:{PROD}:key/{uuid.uuid4()}"
    source, destination = _bucket(s3, PRIMARY), _bucket(s3_failover, FAILOVER)
    rule = _rule(destination, SourceSelectionCriteria={"SseKmsEncryptedObjects": {"Status": "Enabled"}})
    rule["Destination"]["EncryptionConfiguration"] = {"ReplicaKmsKeyID": replica_key}
    s3.put_bucket_replication(Bucket=source, ReplicationConfiguration={"Role": ROLE, "Rules": [rule]})

    # WHEN an SSE-KMS object is put
    s3.put_object(Bucket=source, Key="secret.txt", Body=b"s", ServerSideEncryption="aws:kms")

    # THEN its replica is encrypted with the replica key
    assert _settled(s3, source, "secret.txt") == "COMPLETED"
    replica = s3_failover.head_object(Bucket=destination, Key="secret.txt")
    assert (replica["ServerSideEncryption"], replica["SSEKMSKeyId"]) == ("aws:kms", replica_key)


def test_s3_replica_is_not_replicated_back(s3: Any, s3_failover: Any) -> None:
    # GIVEN two buckets replicating to each other
    source, destination = _replicated_pair(s3, s3_failover)
    s3_failover.put_bucket_replication(
        Bucket=destination, ReplicationConfiguration={"Role": ROLE, "Rules": [_rule(source)]}
    )

    # WHEN an object is put into one of them
    s3.put_object(Bucket=source, Key="once.txt", Body=b"once")
    assert _settled(s3, source, "once.txt") == "COMPLETED"
    _sentinel(s3, source)

    # THEN the other holds a REPLICA, and the first still has exactly the one version
    assert _status(s3_failover, destination, "once.txt") == "REPLICA"
    assert len(s3.list_object_versions(Bucket=source, Prefix="once.txt")["Versions"]) == 1


def test_s3_get_bucket_replication_answers_the_rules_as_put(s3: Any, s3_failover: Any) -> None:
    # GIVEN a configuration with a prefix filter, delete-marker replication and KMS selection
    source, destination = _bucket(s3, PRIMARY), _bucket(s3_failover, FAILOVER)
    rule = _rule(
        destination,
        "site/",
        SourceSelectionCriteria={"SseKmsEncryptedObjects": {"Status": "Enabled"}},
    )
    rule["Destination"]["EncryptionConfiguration"] = {"ReplicaKmsKeyID": f"arn:aws:kms:{FAILOVER}:{PROD}:alias/r"}

    # WHEN it is put and read back
    s3.put_bucket_replication(Bucket=source, ReplicationConfiguration={"Role": ROLE, "Rules": [rule]})
    config = s3.get_bucket_replication(Bucket=source)["ReplicationConfiguration"]

    # THEN S3 answers the rule as it was put (moto alone answers an empty filter and Disabled)
    assert config == {"Role": ROLE, "Rules": [rule]}


@pytest.fixture
def s3_paused(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.s3_replication.pause()
    try:
        yield sandbox
    finally:
        sandbox.s3_replication.resume()


def test_s3_paused_replication_keeps_objects_pending_until_resumed(
    s3: Any, s3_failover: Any, s3_paused: Sandbox
) -> None:
    # GIVEN a replicated bucket, and replication paused (as a fault test would)
    source, destination = _replicated_pair(s3, s3_failover)

    # WHEN an object is put and its replication falls due
    s3.put_object(Bucket=source, Key="held.txt", Body=b"held")
    _wait_for(lambda: s3_paused.s3_replication.held, "the copy to fall due")

    # THEN it stays PENDING and nothing reaches the destination
    assert _status(s3, source, "held.txt") == "PENDING"
    assert _keys(s3_failover, destination) == []

    # WHEN replication resumes
    s3_paused.s3_replication.resume()

    # THEN the held copy is made, not lost
    assert _settled(s3, source, "held.txt") == "COMPLETED"
    assert s3_failover.get_object(Bucket=destination, Key="held.txt")["Body"].read() == b"held"


# --- DynamoDB ---------------------------------------------------------------------------------------

TABLE = "bbws-replication-global-probe"


@pytest.fixture(scope="module")
def ddb(client: Callable[[str, str], Any]) -> Any:
    return client("dynamodb", PRIMARY)


@pytest.fixture(scope="module")
def ddb_failover(client: Callable[[str, str], Any]) -> Any:
    return client("dynamodb", FAILOVER)


def _create_table(ddb: Any, name: str) -> None:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def _replicas(ddb: Any, name: str) -> list[dict[str, Any]]:
    return list(ddb.describe_table(TableName=name)["Table"].get("Replicas", []))


def _active(ddb: Any, name: str, region: str) -> bool:
    return {"RegionName": region, "ReplicaStatus": "ACTIVE"} in _replicas(ddb, name)


@pytest.fixture(scope="module")
def global_table(ddb: Any) -> str:
    """A table in the primary region with an item, made global with a replica in the failover region."""
    _create_table(ddb, TABLE)
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "before"}, "sk": {"S": "0"}, "v": {"S": "old"}})
    ddb.update_table(TableName=TABLE, ReplicaUpdates=[{"Create": {"RegionName": FAILOVER}}])
    _wait_for(lambda: _active(ddb, TABLE, FAILOVER), "the replica to be ACTIVE")
    return TABLE


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "0"}}


def _item(ddb: Any, pk: str) -> dict[str, Any] | None:
    return ddb.get_item(TableName=TABLE, Key=_key(pk)).get("Item")  # type: ignore[no-any-return]


def test_ddb_replica_table_exists_in_the_failover_region_and_both_list_each_other(
    ddb: Any, ddb_failover: Any, global_table: str
) -> None:
    # GIVEN a table given a replica with UpdateTable ReplicaUpdates (the fixture)
    primary = ddb.describe_table(TableName=global_table)["Table"]

    # WHEN the failover region is asked about it
    failover = ddb_failover.describe_table(TableName=global_table)["Table"]

    # THEN the same table exists there, and each region lists the other as an ACTIVE replica
    assert failover["KeySchema"] == primary["KeySchema"]
    assert failover["AttributeDefinitions"] == primary["AttributeDefinitions"]
    assert failover["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert failover["StreamSpecification"] == primary["StreamSpecification"]
    assert f":{FAILOVER}:" in failover["TableArn"]
    assert primary["Replicas"] == [{"RegionName": FAILOVER, "ReplicaStatus": "ACTIVE"}]
    assert failover["Replicas"] == [{"RegionName": PRIMARY, "ReplicaStatus": "ACTIVE"}]
    assert primary["GlobalTableVersion"] == failover["GlobalTableVersion"] == "2019.11.21"
    assert primary["TableStatus"] == failover["TableStatus"] == "ACTIVE"


def test_ddb_replica_starts_with_the_items_the_table_had(ddb_failover: Any, global_table: str) -> None:
    # GIVEN an item written before the replica was created (the fixture)
    # WHEN it is read in the failover region
    item = ddb_failover.get_item(TableName=global_table, Key=_key("before")).get("Item")

    # THEN it is there
    assert item == {**_key("before"), "v": {"S": "old"}}


def test_ddb_put_in_the_primary_is_readable_in_the_failover_region(
    ddb: Any, ddb_failover: Any, global_table: str
) -> None:
    # GIVEN a global table
    # WHEN an item is put in the primary region
    ddb.put_item(TableName=global_table, Item={**_key("put"), "v": {"N": "1"}})

    # THEN it can be read in the failover region
    assert _wait_for(lambda: _item(ddb_failover, "put"), "the item in the failover region") == {
        **_key("put"),
        "v": {"N": "1"},
    }


def test_ddb_update_batch_and_transaction_writes_are_mirrored(ddb: Any, ddb_failover: Any, global_table: str) -> None:
    # GIVEN a global table
    # WHEN items are written with UpdateItem, BatchWriteItem and TransactWriteItems
    ddb.update_item(
        TableName=global_table,
        Key=_key("updated"),
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"S": "u"}},
    )
    ddb.batch_write_item(RequestItems={global_table: [{"PutRequest": {"Item": {**_key("batched"), "v": {"S": "b"}}}}]})
    ddb.transact_write_items(
        TransactItems=[{"Put": {"TableName": global_table, "Item": {**_key("tx"), "v": {"S": "t"}}}}]
    )

    # THEN each arrives in the failover region as written
    for pk, value in (("updated", "u"), ("batched", "b"), ("tx", "t")):
        item = _wait_for(functools.partial(_item, ddb_failover, pk), f"{pk} in the failover region")
        assert item["v"] == {"S": value}


def test_ddb_delete_in_the_primary_is_mirrored(ddb: Any, ddb_failover: Any, global_table: str) -> None:
    # GIVEN an item in both regions
    ddb.put_item(TableName=global_table, Item=_key("doomed"))
    _wait_for(lambda: _item(ddb_failover, "doomed"), "the item in the failover region")

    # WHEN it is deleted in the primary region
    ddb.delete_item(TableName=global_table, Key=_key("doomed"))

    # THEN it is gone from the failover region too
    _wait_for(lambda: _item(ddb_failover, "doomed") is None, "the delete in the failover region")


def test_ddb_writes_in_the_failover_region_are_mirrored_back(ddb: Any, ddb_failover: Any, global_table: str) -> None:
    # GIVEN a global table
    # WHEN an item is put in the failover region
    ddb_failover.put_item(TableName=global_table, Item={**_key("from-failover"), "v": {"S": "f"}})

    # THEN it can be read in the primary region
    assert _wait_for(lambda: _item(ddb, "from-failover"), "the item in the primary region")["v"] == {"S": "f"}


@pytest.fixture
def ddb_paused(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.dynamodb_replicas.pause()
    try:
        yield sandbox
    finally:
        sandbox.dynamodb_replicas.resume()


def test_ddb_paused_replication_mirrors_nothing_until_resumed(
    ddb: Any, ddb_failover: Any, global_table: str, ddb_paused: Sandbox
) -> None:
    # GIVEN a global table, and its replication paused (as AWS FIS can)
    # WHEN an item is put in the primary region and its mirroring falls due
    ddb.put_item(TableName=global_table, Item=_key("paused"))
    _wait_for(lambda: ddb_paused.dynamodb_replicas.held, "the mirrored write to fall due")

    # THEN the failover region does not have it, and still lists the replica ACTIVE
    assert _item(ddb_failover, "paused") is None
    assert _active(ddb_failover, global_table, PRIMARY)

    # WHEN replication resumes
    ddb_paused.dynamodb_replicas.resume()

    # THEN the held write arrives, not lost
    _wait_for(lambda: _item(ddb_failover, "paused"), "the held write in the failover region")


def test_ddb_replica_updates_that_aws_refuses_are_refused(ddb: Any, global_table: str) -> None:
    # GIVEN a global table with a replica in the failover region
    # WHEN a replica is asked for in its own region, or again in the failover region, or removed where there is none
    own = _error_code(
        lambda: ddb.update_table(TableName=global_table, ReplicaUpdates=[{"Create": {"RegionName": PRIMARY}}])
    )
    again = _error_code(
        lambda: ddb.update_table(TableName=global_table, ReplicaUpdates=[{"Create": {"RegionName": FAILOVER}}])
    )
    absent = _error_code(
        lambda: ddb.update_table(TableName=global_table, ReplicaUpdates=[{"Delete": {"RegionName": "eu-central-1"}}])
    )

    # THEN each is a ValidationException and the replicas are unchanged
    assert own == again == absent == "ValidationException"
    assert _replicas(ddb, global_table) == [{"RegionName": FAILOVER, "ReplicaStatus": "ACTIVE"}]


def test_ddb_deleting_the_replica_removes_its_table_and_the_listing(ddb: Any, ddb_failover: Any) -> None:
    # GIVEN another global table with an ACTIVE replica
    name = f"bbws-replication-{uuid.uuid4().hex[:8]}"
    _create_table(ddb, name)
    ddb.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": FAILOVER}}])
    _wait_for(lambda: _active(ddb, name, FAILOVER), "the replica to be ACTIVE")

    # WHEN the replica is deleted
    ddb.update_table(TableName=name, ReplicaUpdates=[{"Delete": {"RegionName": FAILOVER}}])

    # THEN the table no longer exists in the failover region, and the primary lists no replicas
    assert name not in ddb_failover.list_tables()["TableNames"]
    assert _replicas(ddb, name) == []
    # AND writes in the primary stay there
    ddb.put_item(TableName=name, Item=_key("alone"))
    assert ddb.get_item(TableName=name, Key=_key("alone"))["Item"] == _key("alone")
