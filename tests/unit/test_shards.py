"""Fan-out: shards split a region's resources exactly once, apply side by side, and record in parts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from deployer.aws import TargetSession, fan_out
from deployer.plan import apply_region, unchanged_in
from deployer.records import RecordStore
from deployer.resources import WaitConfig
from deployer.spec import EnvironmentSpec
from tests.unit.conftest import REGION, records_table

NO_WAIT = WaitConfig(delay_seconds=0, max_attempts=3)


def many(spec_data: dict[str, Any], count: int) -> dict[str, Any]:
    """The base spec with ``count`` buckets and ``count`` tables."""
    bucket, table = spec_data["resources"]["buckets"][0], spec_data["resources"]["tables"][0]
    spec_data["resources"] = {
        "buckets": [{**bucket, "name": f"bbws-test-bucket-{i:03d}"} for i in range(count)],
        "tables": [{**table, "name": f"Table-{i:03d}"} for i in range(count)],
    }
    return spec_data


@pytest.mark.parametrize("of", [1, 3, 7, 40])
def test_shards_cover_every_resource_exactly_once_and_spread_tables(
    spec_data: dict[str, Any], build_spec: Callable[[dict[str, Any]], EnvironmentSpec], of: int
) -> None:
    spec = build_spec(many(spec_data, 10))

    shards = [spec.resources_in(REGION, shard, of) for shard in range(of)]

    names = [r.name for shard in shards for r in shard]
    assert sorted(names) == sorted(r.name for r in spec.resources_in(REGION))
    assert len(names) == len(set(names)) == 20
    # Every non-empty shard of a mixed region gets tables, not just the last one.
    tables_per_shard = [sum(1 for r in shard if r.name.startswith("Table-")) for shard in shards if shard]
    assert max(tables_per_shard) - min(tables_per_shard) <= 1


def test_a_shard_applies_only_its_own_resources(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Callable[[dict[str, Any]], EnvironmentSpec]
) -> None:
    spec = build_spec(many(spec_data, 3))

    applied = apply_region(target, spec, REGION, NO_WAIT, shard=1, of=2)

    expected = {r.name for r in spec.resources_in(REGION, 1, 2)}
    assert {p.name for p in applied} == expected
    existing = {b["Name"] for b in boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]}
    existing |= set(boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"])
    assert existing == expected


def test_fan_out_keeps_order_runs_side_by_side_and_reraises() -> None:
    running, peak, lock = 0, 0, threading.Lock()
    barrier = threading.Barrier(4)

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        barrier.wait(timeout=10)  # only returns once four are running at the same time
        with lock:
            running -= 1
        return n * n

    assert fan_out(work, [1, 2, 3, 4], workers=4) == [1, 4, 9, 16]
    assert peak == 4

    def fail_on_two(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        return n

    with pytest.raises(ValueError, match="two"):
        fan_out(fail_on_two, [1, 2, 3], workers=3)


def test_shard_results_are_stored_apart_and_read_back_combined_in_order(aws: None) -> None:
    records = RecordStore(records_table())
    records.create("d-1", "dev", datetime(2026, 11, 27, tzinfo=UTC), {})
    # Shards finish in any order; each writes its own part.
    for part, names in ((1, ["b"]), (0, ["a"]), (2, ["c"])):
        records.merge_region("d-1", "checks", REGION, [{"resource": n} for n in names], part=part)
        records.merge_region(
            "d-1",
            "provisioned",
            REGION,
            {"resources": names, "mutatingCalls": 2, "apiCalls": {"s3:CreateBucket": 1}},
            mutating_calls=2,
            part=part,
        )
    records.merge_region("d-1", "checks", "replication", [{"resource": "r"}])

    record = records.get("d-1")

    assert record is not None
    assert [c["resource"] for c in record["checks"][REGION]] == ["a", "b", "c"]
    assert record["checks"]["replication"] == [{"resource": "r"}]
    assert record["provisioned"][REGION] == {
        "resources": ["a", "b", "c"],
        "mutatingCalls": 6,
        "apiCalls": {"s3:CreateBucket": 3},
    }
    assert record["mutatingCalls"] == 6
    # The environment's history lists the record alone, never its parts.
    assert [r["deploymentId"] for r in records.history("dev")] == ["d-1"]


def test_a_plan_too_big_for_one_item_is_kept_in_pieces_and_read_back_whole(aws: None) -> None:
    table = records_table()
    records = RecordStore(table)
    records.create("d-2", "dev", datetime(2026, 11, 27, tzinfo=UTC), {})
    plan = {"summary": "Plan: 400 to add", "resources": [{"name": f"r-{i:03d}", "pad": "x" * 900} for i in range(400)]}

    records.update("d-2", datetime(2026, 11, 27, 0, 1, tzinfo=UTC), {"plan": plan, "status": "RUNNING"})

    assert records.get("d-2")["plan"] == plan  # type: ignore[index]
    item = table.get_item(Key={"pk": "DEPLOYMENT#d-2", "sk": "RECORD"})["Item"]
    assert len(str(item)) < 20_000  # the record itself stays small; the pieces live beside it


def test_resources_the_plan_found_unchanged_are_not_read_again(
    target: TargetSession, spec_data: dict[str, Any], build_spec: Callable[[dict[str, Any]], EnvironmentSpec]
) -> None:
    spec = build_spec(many(spec_data, 2))
    apply_region(target, spec, REGION, NO_WAIT)
    plan = {"resources": [{"kind": "bucket", "name": "bbws-test-bucket-000", "region": REGION, "action": "unchanged"}]}
    again = TargetSession(session=target.session, account=target.account)

    applied = apply_region(again, spec, REGION, NO_WAIT, unchanged=unchanged_in(plan, REGION))

    assert "bbws-test-bucket-000" not in {p.name for p in applied}
    assert {p.action for p in applied} == {"unchanged"}
    assert again.log.calls["s3:HeadBucket"] == 1  # the other bucket only
    assert again.log.mutating == 0
