"""Environment specs: the sample environments load, and invalid specs say where and what is wrong."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.errors import SpecInvalid
from deployer.spec import EnvironmentSpec, load_spec_file

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "environments"
Mutation = Callable[[dict[str, Any]], None]


def _write(tmp_path: Path, data: dict[str, Any], name: str = "test.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_valid_spec_loads(spec: EnvironmentSpec) -> None:
    # GIVEN the minimal test spec (see conftest)
    # THEN defaults are filled in and resources resolve to the primary region
    bucket = spec.resources.buckets[0]
    assert bucket.versioning is True
    assert bucket.public_access_block.to_aws() == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert spec.buckets_in("af-south-1") == [bucket]
    assert spec.tags_for(bucket)["DataClassification"] == "internal"
    assert spec.tags_for(bucket)["Environment"] == "test"


@pytest.mark.parametrize(
    ("environment", "account", "regions", "approvals", "ticket_required"),
    [
        ("dev", "536580886816", ["af-south-1"], 0, False),
        ("sit", "815856636111", ["af-south-1"], 1, True),
        ("prod", "093646564004", ["af-south-1", "eu-west-1"], 2, True),
    ],
)
def test_sample_environment_loads(
    environment: str, account: str, regions: list[str], approvals: int, ticket_required: bool
) -> None:
    # GIVEN the environment's spec file
    # WHEN it is loaded
    spec = load_spec_file(ENVIRONMENTS / f"{environment}.yaml")

    # THEN it carries the runbook's account, regions and policy
    assert spec.environment == environment
    assert spec.account == account
    assert spec.regions.all() == regions
    assert spec.policy.approvals.required == approvals
    assert spec.policy.change_ticket.required is ticket_required
    assert spec.tables_in("af-south-1")[0].billing_mode == "PAY_PER_REQUEST"


def test_prod_failover_bucket_is_placed_in_the_failover_region() -> None:
    spec = load_spec_file(ENVIRONMENTS / "prod.yaml")
    assert [b.name for b in spec.buckets_in("eu-west-1")] == ["bbws-prod-data-bucket-failover"]


def _bad_bucket_name(d: dict[str, Any]) -> None:
    d["resources"]["buckets"][0]["name"] = "BBWS_Data"


def _reserved_bucket_prefix(d: dict[str, Any]) -> None:
    d["resources"]["buckets"][0]["name"] = "xn--bbws-data"


def _missing_partition_key(d: dict[str, Any]) -> None:
    del d["resources"]["tables"][0]["partitionKey"]


def _typo(d: dict[str, Any]) -> None:
    d["resources"]["buckets"][0]["versionning"] = True


def _role_in_wrong_account(d: dict[str, Any]) -> None:
    d["deploymentRoleArn"] = "arn:aws:iam::111111111111:role/bbws-deployer"


def _failover_without_region(d: dict[str, Any]) -> None:
    d["resources"]["buckets"][0]["region"] = "failover"


def _duplicate_names(d: dict[str, Any]) -> None:
    d["resources"]["buckets"].append(copy.deepcopy(d["resources"]["buckets"][0]))


def _reserved_tag(d: dict[str, Any]) -> None:
    d["resources"]["tables"][0]["tags"]["aws:cloudformation:stack-name"] = "x"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_bad_bucket_name, "resources.buckets[0].name: String should match pattern"),
        (_reserved_bucket_prefix, "resources.buckets[0].name: bucket name uses a prefix or suffix that S3 reserves"),
        (_missing_partition_key, "resources.tables[0].partitionKey: Field required"),
        (_typo, "resources.buckets[0].versionning: Extra inputs are not permitted"),
        (
            _role_in_wrong_account,
            "deploymentRoleArn is in account 111111111111, not the environment's account 123456789012",
        ),
        (
            _failover_without_region,
            "resources placed in the failover region, which is not configured: bbws-test-data-bucket",
        ),
        (_duplicate_names, "resources: duplicate bucket names: bbws-test-data-bucket"),
        (
            _reserved_tag,
            "resources.tables[0].tags: tag keys starting with 'aws:' are reserved: aws:cloudformation:stack-name",
        ),
    ],
)
def test_invalid_spec_names_file_field_and_problem(
    tmp_path: Path, spec_data: dict[str, Any], mutate: Mutation, expected: str
) -> None:
    # GIVEN a spec file with one mistake
    mutate(spec_data)
    path = _write(tmp_path, spec_data)

    # WHEN it is loaded
    # THEN the error names the file, the field and the problem
    with pytest.raises(SpecInvalid) as raised:
        load_spec_file(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert expected in str(raised.value)


def test_every_problem_is_reported_on_its_own_line(tmp_path: Path, spec_data: dict[str, Any]) -> None:
    # GIVEN a spec with two independent mistakes
    _bad_bucket_name(spec_data)
    _missing_partition_key(spec_data)

    # WHEN it is loaded
    with pytest.raises(SpecInvalid) as raised:
        load_spec_file(_write(tmp_path, spec_data))

    # THEN each is listed
    lines = str(raised.value).splitlines()
    assert len(lines) == 2
    assert "resources.buckets[0].name" in lines[0]
    assert "resources.tables[0].partitionKey" in lines[1]


def test_file_must_be_named_after_its_environment(tmp_path: Path, spec_data: dict[str, Any]) -> None:
    # GIVEN the test environment's spec saved as dev.yaml
    path = _write(tmp_path, spec_data, "dev.yaml")

    # WHEN it is loaded
    # THEN the mismatch is reported
    with pytest.raises(SpecInvalid, match=r"environment: is 'test' but the file is for 'dev'"):
        load_spec_file(path)


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "test.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(SpecInvalid, match="expected a mapping at the top level, got list"):
        load_spec_file(path)
