"""Unit-test fixtures: moto in-process, fake credentials, and a small spec to deploy."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

import deployer.guardrails
from deployer.aws import TargetSession
from deployer.guardrails import Guardrails, packaged
from deployer.observability import metrics
from deployer.spec import EnvironmentSpec, parse_spec

ACCOUNT = "123456789012"  # moto's default account
REGION = "af-south-1"
BUCKET = "bbws-test-data-bucket"
TABLE = "Site-Generation-State"

BASE_SPEC: dict[str, Any] = {
    "environment": "test",
    "account": ACCOUNT,
    "deploymentRoleArn": f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer",
    "regions": {"primary": REGION},
    "tags": {"Project": "bbws", "Environment": "test", "ManagedBy": "bbws-deployer"},
    "resources": {
        "buckets": [
            {"name": BUCKET, "encryption": {"algorithm": "AES256"}, "tags": {"DataClassification": "internal"}}
        ],
        "tables": [
            {
                "name": TABLE,
                "partitionKey": {"name": "SiteId", "type": "S"},
                "ttlAttribute": "TTL",
                "pointInTimeRecovery": True,
                "tags": {"DataClassification": "internal"},
            }
        ],
    },
}


@pytest.fixture(autouse=True)
def fake_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never reach a real account or a sandbox endpoint from a unit test.
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


# The unit tests' specs deploy into moto's default account: its guardrails allow them, at no floor.
UNIT_GUARDRAILS: dict[str, Any] = {
    "name": "unit",
    "environments": ["test", "dev", "sit", "prod", "qa"],
    "deploymentRoleArn": f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer",
    "regions": [REGION, "eu-west-1", "us-east-1"],
    "branches": ["main"],
}


@pytest.fixture(autouse=True)
def unit_guardrails(monkeypatch: pytest.MonkeyPatch) -> Guardrails:
    """The packaged guardrails plus the unit tests' account, as the functions read them."""
    guardrails = Guardrails.model_validate(
        {"accounts": {**packaged().document()["accounts"], ACCOUNT: UNIT_GUARDRAILS}}
    )
    monkeypatch.setattr(deployer.guardrails, "packaged", lambda: guardrails)
    return guardrails


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    """Powertools' metrics build up per invocation; domain code called without a handler is never flushed."""
    yield
    metrics.clear_metrics()


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def target(aws: None) -> TargetSession:
    return TargetSession(session=boto3.Session(), account=ACCOUNT)


@pytest.fixture
def s3(aws: None) -> Any:
    """A client outside the deployer's call accounting, for arranging and inspecting state."""
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def ddb(aws: None) -> Any:
    return boto3.client("dynamodb", region_name=REGION)


@pytest.fixture
def spec_data() -> dict[str, Any]:
    return copy.deepcopy(BASE_SPEC)


@pytest.fixture
def build_spec() -> Callable[[dict[str, Any]], EnvironmentSpec]:
    return lambda data: parse_spec(yaml.safe_dump(data), "test.yaml")


@pytest.fixture
def spec(spec_data: dict[str, Any], build_spec: Callable[[dict[str, Any]], EnvironmentSpec]) -> EnvironmentSpec:
    return build_spec(spec_data)


def records_table() -> Any:
    """A table shaped like template.yaml's RecordsTable."""
    return boto3.resource("dynamodb", region_name="us-east-1").create_table(
        TableName="bbws-deployer-records",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "gsi1pk", "gsi1sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "gsi1",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
