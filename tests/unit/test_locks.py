"""The environment lock: a lease every step renews, lost to nobody while its deployment lives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deployer.errors import LockHeld, LockLost
from deployer.records import RecordStore
from deployer.spec import Policy
from tests.unit.conftest import records_table

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def records(aws: None) -> RecordStore:
    return RecordStore(records_table())


def test_a_step_renews_the_lease_of_the_deployment_that_holds_it(records: RecordStore) -> None:
    records.acquire_lock("sit", "sit-1", "alice", 600, NOW)
    records.renew_lock("sit", "sit-1", "alice", 600, NOW + timedelta(minutes=9))
    holder = records.lock_holder("sit")
    assert holder is not None
    assert holder["lockExpiresAt"] == int((NOW + timedelta(minutes=19)).timestamp())
    # AND a second deployment still cannot take it
    with pytest.raises(LockHeld):
        records.acquire_lock("sit", "sit-2", "bob", 600, NOW + timedelta(minutes=15))


def test_a_lease_taken_over_after_it_ran_out_is_lost_naming_the_new_holder(records: RecordStore) -> None:
    # GIVEN sit-1's lease ran out and sit-2 took the lock
    records.acquire_lock("sit", "sit-1", "alice", 60, NOW)
    records.acquire_lock("sit", "sit-2", "bob", 600, NOW + timedelta(minutes=2))
    # WHEN sit-1's next step renews THEN it is told who holds the lock, and sit-2 keeps it
    with pytest.raises(LockLost, match="locked by deployment sit-2 \\(requested by bob\\), not by sit-1"):
        records.renew_lock("sit", "sit-1", "alice", 600, NOW + timedelta(minutes=3))
    holder = records.lock_holder("sit")
    assert holder is not None
    assert holder["deploymentId"] == "sit-2"


def test_a_lapsed_lease_nobody_took_is_simply_renewed(records: RecordStore) -> None:
    records.acquire_lock("dev", "dev-1", "alice", 60, NOW)
    records.renew_lock("dev", "dev-1", "alice", 60, NOW + timedelta(hours=1))
    holder = records.lock_holder("dev")
    assert holder is not None
    assert (holder["deploymentId"], holder["requestedBy"]) == ("dev-1", "alice")


@pytest.mark.parametrize(
    ("policy", "valid"),
    [
        ({"approvals": {"required": 1, "approvers": [{"slackUserId": "U0A1", "name": "a"}], "channel": "C0A"}}, True),
        ({"window": {"maxWaitHours": 2}, "lockLeaseMinutes": 134}, False),
        ({"window": {"maxWaitHours": 2}, "lockLeaseMinutes": 135}, True),
    ],
)
def test_the_lease_outlives_the_waits_for_approval_and_the_window(policy: dict[str, Any], valid: bool) -> None:
    if valid:
        Policy.model_validate(policy)
        return
    with pytest.raises(ValueError, match=r"window.maxWaitHours in minutes \(120\) \+ 15"):
        Policy.model_validate(policy)
