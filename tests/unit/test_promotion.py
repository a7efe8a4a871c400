"""The promotion gate: PROD only receives a resources spec that already succeeded in SIT and DEV (records in moto)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deployer.checks import CheckResult
from deployer.guardrails import Guardrails
from deployer.promotion import chain, extra_approvals
from deployer.promotion import promotion_check as checked
from deployer.records import RecordStore, iso
from deployer.spec import EnvironmentSpec
from tests.unit.conftest import records_table

BuildSpec = Callable[[dict[str, Any]], EnvironmentSpec]
STARTED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def records(aws: None) -> RecordStore:
    """A RecordStore on a table shaped like template.yaml's RecordsTable."""
    return RecordStore(records_table())


def env_spec(base: dict[str, Any], build: BuildSpec, environment: str, **policy: Any) -> EnvironmentSpec:
    """The base spec's resources, named for ``environment`` (bbws-<env>-data-bucket), with this policy."""
    data = copy.deepcopy(base)
    data["environment"] = environment
    data["tags"]["Environment"] = environment
    data["resources"]["buckets"][0]["name"] = f"bbws-{environment}-data-bucket"
    data["policy"] = policy
    return build(data)


@pytest.fixture
def prod(spec_data: dict[str, Any], build_spec: BuildSpec) -> EnvironmentSpec:
    return env_spec(spec_data, build_spec, "prod", promotion={"from": "sit", "overrideApprovals": 2})


@pytest.fixture
def sit(spec_data: dict[str, Any], build_spec: BuildSpec) -> EnvironmentSpec:
    return env_spec(spec_data, build_spec, "sit")


@pytest.fixture
def dev(spec_data: dict[str, Any], build_spec: BuildSpec) -> EnvironmentSpec:
    return env_spec(spec_data, build_spec, "dev")


@pytest.fixture
def sit_changed(spec_data: dict[str, Any], build_spec: BuildSpec) -> EnvironmentSpec:
    """SIT running a different resources spec: its table without point-in-time recovery."""
    spec_data["resources"]["tables"][0]["pointInTimeRecovery"] = False
    return env_spec(spec_data, build_spec, "sit")


def deployment(
    records: RecordStore, deployment_id: str, spec: EnvironmentSpec, status: str, minutes_later: int = 0
) -> None:
    """A finished deployment of ``spec``, recorded the way the pipeline does: create, then update."""
    started = STARTED + timedelta(minutes=minutes_later)
    records.create(deployment_id, spec.environment, started, {})
    finished = started + timedelta(minutes=20)
    records.update(
        deployment_id,
        finished,
        {"status": status, "promotionHash": spec.promotion_hash(), "finishedAt": iso(finished)},
    )


def promotion_check(records: RecordStore, spec: EnvironmentSpec, override: str | None) -> CheckResult:
    """The gate, with the guardrails the functions read (SIT's account promotes from DEV)."""
    from deployer.guardrails import packaged

    return checked(records, spec, override, packaged())


def test_the_chain_follows_the_spec_then_each_sources_guardrails(
    prod: EnvironmentSpec, spec_data: dict[str, Any], build_spec: BuildSpec, unit_guardrails: Guardrails
) -> None:
    assert chain(prod, unit_guardrails) == ["sit", "dev"]
    sit = env_spec(spec_data, build_spec, "sit", promotion={"from": "dev"})
    assert chain(sit, unit_guardrails) == ["dev"]
    # ... and a loop in the rules ends rather than running on
    looping = env_spec(spec_data, build_spec, "dev", promotion={"from": "sit"})
    assert chain(looping, unit_guardrails) == ["sit"]


def test_no_promotion_rule_passes(records: RecordStore, sit: EnvironmentSpec) -> None:
    # GIVEN an environment without a promotion rule, and no records at all
    # WHEN the gate is checked
    check = promotion_check(records, sit, None)

    # THEN it passes, needing no extra approval
    assert check == CheckResult("promotion", "global", "sit", True, "no promotion rule")
    assert extra_approvals(sit, check) == 0


def test_sit_success_with_the_same_spec_passes(
    records: RecordStore, prod: EnvironmentSpec, sit: EnvironmentSpec, dev: EnvironmentSpec
) -> None:
    # GIVEN DEV and then SIT succeeded with the same resources (names differ only by environment), then a later
    # SIT run failed
    assert sit.promotion_hash() == prod.promotion_hash()
    deployment(records, "dev-1", dev, "SUCCEEDED", minutes_later=-60)
    deployment(records, "sit-1", sit, "SUCCEEDED")
    deployment(records, "sit-2", sit, "FAILED", minutes_later=60)

    # WHEN PROD's gate is checked
    check = promotion_check(records, prod, None)

    # THEN it passes, naming the deployment of each link that succeeded and when it finished
    assert check == CheckResult(
        "promotion",
        "global",
        "prod",
        True,
        f"promotion hash {prod.promotion_hash()} succeeded in sit as deployment sit-1, "
        "finished 2026-11-25T10:20:00.000Z; in dev as deployment dev-1, finished 2026-11-25T09:20:00.000Z",
    )
    assert extra_approvals(prod, check) == 0


def test_sit_success_with_a_different_spec_fails_naming_both_hashes(
    records: RecordStore, prod: EnvironmentSpec, dev: EnvironmentSpec, sit_changed: EnvironmentSpec
) -> None:
    # GIVEN SIT's only success ran different resources, and DEV ran this spec
    deployment(records, "sit-1", sit_changed, "SUCCEEDED")
    deployment(records, "dev-1", dev, "SUCCEEDED")

    # WHEN PROD's gate is checked
    check = promotion_check(records, prod, None)

    # THEN it fails, naming PROD's hash, the missing link and the hash SIT actually ran
    assert not check.passed
    assert check.detail == (
        "prod only receives a resources spec that succeeded in dev and then sit; promotion hash "
        f"{prod.promotion_hash()} is missing in: sit "
        f"(latest sit deployment: sit-1 SUCCEEDED with promotion hash {sit_changed.promotion_hash()})"
    )
    assert prod.promotion_hash() != sit_changed.promotion_hash()


def test_sit_failure_with_the_same_spec_fails(
    records: RecordStore, prod: EnvironmentSpec, sit: EnvironmentSpec
) -> None:
    # GIVEN SIT ran the same resources but failed, and another run of them is still RUNNING
    deployment(records, "sit-1", sit, "FAILED")
    records.create("sit-2", "sit", STARTED + timedelta(hours=1), {"promotionHash": sit.promotion_hash()})

    # WHEN PROD's gate is checked
    check = promotion_check(records, prod, None)

    # THEN it fails: only a SUCCEEDED deployment counts; the latest SIT deployment is named (and DEV's absence)
    assert not check.passed
    assert f"sit (latest sit deployment: sit-2 RUNNING with promotion hash {prod.promotion_hash()})" in check.detail
    assert check.detail.endswith("; dev (no dev deployment yet)")


def test_no_sit_deployment_fails(
    records: RecordStore, prod: EnvironmentSpec, spec_data: dict[str, Any], build_spec: BuildSpec
) -> None:
    # GIVEN SIT never ran, though DEV succeeded with the same resources
    deployment(records, "dev-1", env_spec(spec_data, build_spec, "dev"), "SUCCEEDED")

    # WHEN PROD's gate is checked
    check = promotion_check(records, prod, None)

    # THEN it fails, naming SIT, the one missing link
    assert check == CheckResult(
        "promotion",
        "global",
        "prod",
        False,
        f"prod only receives a resources spec that succeeded in dev and then sit; promotion hash "
        f"{prod.promotion_hash()} is missing in: sit (no sit deployment yet)",
    )
    assert extra_approvals(prod, check) == 0


def test_override_passes_and_needs_extra_approvals(records: RecordStore, prod: EnvironmentSpec) -> None:
    # GIVEN SIT never ran this spec, and PROD's rule asks 2 extra approvals for an override
    # WHEN PROD's gate is checked with an override reason
    check = promotion_check(records, prod, "  hotfix for INC-42  ")

    # THEN it passes, recorded as an override, and needs the extra approvals
    assert check == CheckResult(
        "promotion", "global", "prod", True, "OVERRIDE: hotfix for INC-42; needs 2 extra approval(s)"
    )
    assert extra_approvals(prod, check) == 2


def test_blank_override_reason_is_no_override(records: RecordStore, prod: EnvironmentSpec) -> None:
    # GIVEN SIT never ran this spec WHEN the override reason is blank THEN the gate still fails
    check = promotion_check(records, prod, "   ")
    assert not check.passed
    assert extra_approvals(prod, check) == 0


def test_override_is_unneeded_when_sit_succeeded(
    records: RecordStore, prod: EnvironmentSpec, sit: EnvironmentSpec, dev: EnvironmentSpec
) -> None:
    # GIVEN DEV and SIT succeeded with this spec WHEN an override reason is given anyway
    deployment(records, "dev-1", dev, "SUCCEEDED")
    deployment(records, "sit-1", sit, "SUCCEEDED")
    check = promotion_check(records, prod, "just in case")

    # THEN the gate passes on SIT's success and no extra approval is needed
    assert check.passed
    assert not check.detail.startswith("OVERRIDE")
    assert extra_approvals(prod, check) == 0


def test_sit_without_dev_is_refused_naming_dev(
    records: RecordStore, spec_data: dict[str, Any], build_spec: BuildSpec
) -> None:
    sit = env_spec(spec_data, build_spec, "sit", promotion={"from": "dev"})
    check = promotion_check(records, sit, None)
    assert not check.passed
    assert check.detail == (
        f"sit only receives a resources spec that succeeded in dev; promotion hash {sit.promotion_hash()} "
        "is missing in: dev (no dev deployment yet)"
    )
