"""Policy changes: the difference from the environment's last success, and whose consent it needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from deployer import policy_change as policy_change_module
from deployer.policy_change import policy_change, policy_diff
from deployer.records import RecordStore
from deployer.spec import Policy, load_spec_file
from deployer.specstore import SpecStore
from tests.unit.conftest import records_table

REPO = Path(__file__).resolve().parents[2]
SIT = load_spec_file(REPO / "environments" / "sit.yaml")
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def records(aws: None) -> RecordStore:
    return RecordStore(records_table())


@pytest.fixture
def specs(aws: None) -> SpecStore:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="specs")
    s3.put_bucket_versioning(Bucket="specs", VersioningConfiguration={"Status": "Enabled"})
    return SpecStore(s3, "specs")


def _policy(**changes: Any) -> Policy:
    return SIT.policy.model_copy(update=changes)


def _deployment(records: RecordStore, n: int, status: str, policy: Policy | None, **fields: Any) -> str:
    deployment_id = f"sit-{n:03d}"
    extra = {"policy": policy.model_dump(mode="json", by_alias=True)} if policy else {}
    records.create(deployment_id, "sit", START + timedelta(minutes=n), {**extra, **fields})
    records.update(deployment_id, START + timedelta(minutes=n), {"status": status})
    return deployment_id


def test_the_diff_names_each_changed_field_with_both_values() -> None:
    # GIVEN SIT's policy with a lower quorum and a new change-ticket pattern
    approvals = SIT.policy.approvals.model_copy(update={"required": 0})
    new = _policy(approvals=approvals, minimum_notice_hours=4.0)
    # WHEN the two are compared THEN each changed leaf is one line, old -> new, sorted
    assert policy_diff(SIT.policy, new) == [
        "policy.approvals.required: 1 -> 0",
        "policy.minimumNoticeHours: 0.0 -> 4.0",
    ]
    assert policy_diff(SIT.policy, SIT.policy) == []


def test_an_added_section_shows_as_unset_before() -> None:
    # GIVEN SIT's policy before it had its promotion rule (from dev), and as it is
    old = Policy.model_validate({**SIT.policy.model_dump(mode="json", by_alias=True), "promotion": None})
    assert SIT.policy.promotion is not None
    assert policy_diff(old, SIT.policy) == [
        "policy.promotion: null -> (unset)",
        'policy.promotion.from: (unset) -> "dev"',
        "policy.promotion.overrideApprovals: (unset) -> 1",
    ]


def test_a_long_diff_is_cut_with_a_count_of_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a diff limit of 2 lines and a policy with 4 changed fields
    monkeypatch.setattr(policy_change_module, "MAX_DIFF_LINES", 2)
    new = _policy(
        lock_lease_minutes=500,
        minimum_notice_hours=2.0,
        backup=SIT.policy.backup.model_copy(update={"max_age_hours": 1}),
    )
    new = new.model_copy(update={"change_ticket": new.change_ticket.model_copy(update={"required": False})})
    # WHEN they are compared THEN two lines are kept and the rest counted
    assert policy_diff(SIT.policy, new) == [
        "policy.backup.maxAgeHours: 24 -> 1",
        "policy.changeTicket.required: true -> false",
        "... and 2 more changed fields",
    ]


def test_the_first_deployment_of_an_environment_has_no_change(records: RecordStore, specs: SpecStore) -> None:
    assert policy_change(records, specs, "sit", SIT.policy) is None


def test_an_unchanged_policy_has_no_change(records: RecordStore, specs: SpecStore) -> None:
    _deployment(records, 1, "SUCCEEDED", SIT.policy)
    assert policy_change(records, specs, "sit", SIT.policy) is None


def test_a_changed_policy_needs_the_last_successful_deployments_quorum(records: RecordStore, specs: SpecStore) -> None:
    # GIVEN SIT succeeded under its policy, then a deployment with a lower bar failed
    succeeded = _deployment(records, 1, "SUCCEEDED", SIT.policy)
    lowered = _policy(approvals=SIT.policy.approvals.model_copy(update={"required": 0}))
    _deployment(records, 2, "FAILED", lowered)
    # WHEN a deployment with the lower bar starts
    change = policy_change(records, specs, "sit", lowered)
    # THEN the change is measured from the success, and needs its quorum and approvers
    assert change is not None
    assert change.since_deployment == succeeded
    assert change.diff == ["policy.approvals.required: 1 -> 0"]
    assert change.previous_required == 1
    assert [a["slackUserId"] for a in change.previous_approvers] == ["U0SITLEAD1", "U0RELMGR01"]
    assert change.previous_channel == "C0DEPLOYSIT"


def test_a_record_without_its_policy_is_read_from_its_pinned_spec(records: RecordStore, specs: SpecStore) -> None:
    # GIVEN a success recorded before records kept their policy, whose spec version is in the store
    version = specs.put("sit", (REPO / "environments" / "sit.yaml").read_text())
    _deployment(records, 1, "SUCCEEDED_WITH_WARNINGS", None, specVersion=version)
    specs.put("sit", (REPO / "environments" / "sit.yaml").read_text().replace("required: 1", "required: 2"))
    # WHEN a changed policy is compared THEN the pinned version's policy is the previous one
    change = policy_change(records, specs, "sit", _policy(minimum_notice_hours=1.0))
    assert change is not None
    assert change.diff == ["policy.minimumNoticeHours: 0.0 -> 1.0"]


def test_the_last_success_is_found_behind_many_failures(records: RecordStore) -> None:
    # GIVEN one success followed by more failures than one page of the index query returns
    _deployment(records, 0, "SUCCEEDED", SIT.policy)
    for n in range(1, 40):
        _deployment(records, n, "FAILED", None)
    # WHEN the last success is looked up THEN it is found
    found = records.last_succeeded("sit")
    assert found is not None
    assert found["deploymentId"] == "sit-000"
    assert records.last_succeeded("prod") is None
