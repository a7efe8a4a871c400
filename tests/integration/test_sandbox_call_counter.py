"""sandbox.call_counter: every API call through the sandbox's endpoint, counted by account, service and operation."""

from __future__ import annotations

import urllib.request
from collections import Counter

import pytest
from botocore.exceptions import ClientError

from sandbox.accounts import TARGET_ACCOUNTS, TOOLING_ACCOUNT
from sandbox.server import Sandbox
from tests.sandbox_fixtures import Deployments

DEV = TARGET_ACCOUNTS["dev"]
BUCKET = "bbws-call-counter-bucket"
TABLE = "Call-Counter-Table"


def in_account(counts: Counter[tuple[str, str, str]], account: str) -> Counter[tuple[str, str]]:
    return Counter({(service, operation): n for (acct, service, operation), n in counts.items() if acct == account})


def test_a_known_sequence_of_calls_in_dev_is_counted_exactly(sandbox: Sandbox, deployments: Deployments) -> None:
    # GIVEN clients acting in DEV through an assumed role (the AssumeRole itself is the tooling account's)
    sandbox.calls.reset()
    s3 = deployments.target_client("s3")
    ddb = deployments.target_client("dynamodb")
    sts = deployments.target_client("sts")
    cloudwatch = deployments.target_client("cloudwatch")

    # WHEN a known sequence of calls is made: REST (S3), JSON (DynamoDB) and query (STS, CloudWatch) protocols
    sts.get_caller_identity()
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": sandbox.region})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_public_access_block(
        Bucket=BUCKET,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "Project", "Value": "bbws"}]})
    s3.head_bucket(Bucket=BUCKET)
    s3.get_bucket_versioning(Bucket=BUCKET)
    s3.get_bucket_versioning(Bucket=BUCKET)
    put = s3.put_object(Bucket=BUCKET, Key="k.txt", Body=b"x")
    s3.get_object(Bucket=BUCKET, Key="k.txt")["Body"].read()
    s3.delete_object(Bucket=BUCKET, Key="k.txt", VersionId=put["VersionId"])
    s3.list_object_versions(Bucket=BUCKET)
    ddb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "Id", "AttributeType": "S"}],
    )
    ddb.describe_table(TableName=TABLE)
    ddb.describe_table(TableName=TABLE)
    ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "TTL"})
    ddb.put_item(TableName=TABLE, Item={"Id": {"S": "1"}})
    ddb.scan(TableName=TABLE, Select="COUNT")
    cloudwatch.list_metrics(Namespace="AWS/DynamoDB")

    # THEN DEV's calls are exactly these, each under its service and operation
    counts = sandbox.calls.snapshot()
    assert in_account(counts, DEV) == Counter(
        {
            ("sts", "GetCallerIdentity"): 1,
            ("s3", "HeadBucket"): 2,
            ("s3", "CreateBucket"): 1,
            ("s3", "PutBucketVersioning"): 1,
            ("s3", "PutPublicAccessBlock"): 1,
            ("s3", "PutBucketTagging"): 1,
            ("s3", "GetBucketVersioning"): 2,
            ("s3", "PutObject"): 1,
            ("s3", "GetObject"): 1,
            ("s3", "DeleteObject"): 1,
            ("s3", "ListObjectVersions"): 1,
            ("dynamodb", "CreateTable"): 1,
            ("dynamodb", "DescribeTable"): 2,
            ("dynamodb", "UpdateTimeToLive"): 1,
            ("dynamodb", "PutItem"): 1,
            ("dynamodb", "Scan"): 1,
            ("cloudwatch", "ListMetrics"): 1,
        }
    )
    # AND the role assumption that made the DEV session is the tooling account's, not DEV's
    assert in_account(counts, TOOLING_ACCOUNT)[("sts", "AssumeRole")] >= 1
    # AND no other target account saw anything
    assert not [key for key in counts if key[0] in set(TARGET_ACCOUNTS.values()) - {DEV}]


def test_the_log_keeps_each_calls_status_access_key_and_resource(sandbox: Sandbox, deployments: Deployments) -> None:
    # GIVEN a fresh count
    sandbox.calls.reset()
    s3 = deployments.target_client("s3")
    # WHEN a call fails (404) and a Lambda Invoke names a function that does not exist
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket="bbws-call-counter-missing")
    with pytest.raises(ClientError):
        sandbox.client("lambda").invoke(FunctionName="call-counter-missing", Payload=b"{}")
    # THEN the log has each with its status, signer and resource, in order (after the AssumeRole for DEV)
    head, invoke = [c for c in sandbox.calls.log() if c.operation != "AssumeRole"]
    assert (head.account, head.service, head.operation, head.status) == (DEV, "s3", "HeadBucket", 404)
    assert head.resource == "bbws-call-counter-missing"
    assert head.region == sandbox.region
    assert (invoke.account, invoke.service, invoke.operation) == (TOOLING_ACCOUNT, "lambda", "Invoke")
    assert invoke.resource == "call-counter-missing"
    assert invoke.status == 404
    assert head.access_key != invoke.access_key
    assert head.finished <= invoke.started


def test_the_sandboxs_own_endpoints_are_not_api_calls(sandbox: Sandbox) -> None:
    # GIVEN a fresh count
    sandbox.calls.reset()
    # WHEN only the sandbox's info endpoint is read (unsigned)
    with urllib.request.urlopen(f"{sandbox.endpoint}/_sandbox/info") as response:
        assert response.status == 200
    # THEN nothing is counted
    assert sandbox.calls.snapshot() == Counter()
    assert sandbox.calls.log() == []
