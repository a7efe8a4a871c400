"""DEV end to end: the real state machine and functions in the sandbox (runbook 3, 4, 7)."""

from __future__ import annotations

from tests.sandbox_fixtures import DEV, Deployments, EventCapture

BUCKET = "bbws-dev-data-bucket"
TABLE = "Site-Generation-State"


def test_first_dev_deployment_creates_everything_and_passes_every_check(
    deployments: Deployments, bus_events: EventCapture
) -> None:
    # GIVEN a fresh sandbox with nothing in the DEV account
    # WHEN the DEV deployment runs
    result = deployments.run("dev", requested_by="alice")

    # THEN it succeeded, planned both resources as additions and passed every check
    assert result["status"] == "SUCCEEDED", result
    assert result["error"] is None
    assert (result["plan"]["add"], result["plan"]["change"], result["plan"]["unchanged"]) == (2, 0, 0)
    assert {(r["kind"], r["name"]) for r in result["plan"]["resources"]} == {("bucket", BUCKET), ("table", TABLE)}
    assert result["mutatingCalls"] > 0
    names = {(c["resource"], c["name"]) for c in result["checks"]}
    assert (BUCKET, "bucket.write-read-delete") in names
    assert (TABLE, "table.billing-mode") in names
    assert result["checks"]
    assert all(c["passed"] for c in result["checks"])
    assert result["preflight"]
    assert all(c["passed"] for c in result["preflight"])

    # AND the resources really exist in the DEV account as the runbook requires
    s3 = deployments.target_client("s3")
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"].values())
    table = deployments.target_client("dynamodb").describe_table(TableName=TABLE)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "SiteId", "KeyType": "HASH"}]
    # AND the validation left no test data behind
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="_deployer/")
    assert not versions.get("Versions")
    assert not versions.get("DeleteMarkers")
    assert deployments.target_client("dynamodb").scan(TableName=TABLE)["Count"] == 0

    # AND the record holds who, what and the outcome, and the lock is released
    record = deployments.stack.records.get(result["deploymentId"])
    assert record is not None
    assert record["requestedBy"] == "alice"
    assert record["status"] == "SUCCEEDED"
    assert record["account"] == DEV
    assert record["specHash"].startswith("sha256:")
    assert record["plan"]["hash"] == result["plan"]["hash"]
    assert record["finishedAt"] >= record["startedAt"]
    assert deployments.stack.records.lock_holder("dev") is None

    # AND the bus announced the start and the success
    events = bus_events.for_deployment(result["deploymentId"])
    assert [e["detail-type"] for e in events] == ["Deployment Started", "Deployment Succeeded"]
    assert events[1]["detail"]["status"] == "SUCCEEDED"


def test_unchanged_rerun_plans_nothing_and_makes_no_mutating_call(deployments: Deployments) -> None:
    # GIVEN DEV is deployed
    deployments.run("dev")
    # WHEN the same deployment runs again
    result = deployments.run("dev")
    # THEN nothing is planned and nothing is mutated
    assert result["status"] == "SUCCEEDED"
    assert (result["plan"]["add"], result["plan"]["change"], result["plan"]["unchanged"]) == (0, 0, 2)
    assert result["mutatingCalls"] == 0
    assert all(c["passed"] for c in result["checks"])


def test_drifted_bucket_is_planned_as_a_change_and_repaired(deployments: Deployments) -> None:
    # GIVEN DEV is deployed, then someone suspends versioning by hand
    deployments.run("dev")
    s3 = deployments.target_client("s3")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})

    # WHEN DEV is deployed again
    result = deployments.run("dev")

    # THEN the plan shows exactly that change, the prior state is recorded, and it is repaired
    assert result["status"] == "SUCCEEDED", result
    assert (result["plan"]["add"], result["plan"]["change"], result["plan"]["unchanged"]) == (0, 1, 1)
    changed = next(r for r in result["plan"]["resources"] if r["action"] == "change")
    assert changed["name"] == BUCKET
    assert changed["changes"] == [{"field": "versioning", "before": "Suspended", "after": "Enabled"}]
    record = deployments.stack.records.get(result["deploymentId"])
    assert record is not None
    assert record["priorState"][f"af-south-1/bucket/{BUCKET}"]["versioning"] == "Suspended"
    assert result["mutatingCalls"] == 1
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"


def test_dry_run_plans_without_changing_anything(deployments: Deployments) -> None:
    # GIVEN DEV is deployed and its bucket then drifts
    deployments.run("dev")
    s3 = deployments.target_client("s3")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})

    # WHEN a dry run is requested
    result = deployments.run("dev", dry_run=True)

    # THEN the change is planned, nothing is applied or validated, and the lock is free
    assert result["status"] == "PLANNED"
    assert result["plan"]["change"] == 1
    assert result["mutatingCalls"] == 0
    assert result["checks"] == []
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Suspended"
    assert "Provision" not in deployments.states_entered(result["executionArn"])
    assert deployments.stack.records.lock_holder("dev") is None
    deployments.run("dev")  # leave DEV as specified for the other tests


def test_validation_of_numeric_binary_and_sorted_keys_passes_and_leaves_no_item(deployments: Deployments) -> None:
    # GIVEN tables keyed by a number with a sort key, and by binary (the role may delete only the deployer's items)
    tables = [
        {"name": "Site-Keys-Numbered", "partitionKey": {"name": "SiteNo", "type": "N"}, "sortKey": {"name": "At"}},
        {
            "name": "Site-Keys-Binary",
            "partitionKey": {"name": "Digest", "type": "B"},
            "sortKey": {"name": "N", "type": "N"},
        },
    ]
    deployments.spec("dev-e2e-keys", resources={"tables": tables})
    # WHEN deployed (IAM enforced for the deployment role, as on AWS)
    result = deployments.run("dev-e2e-keys")
    # THEN each table's write-read-delete check passed, nothing was rolled back, and no test item is left behind
    assert result["status"] == "SUCCEEDED", result
    round_trips = {c["resource"]: c for c in result["checks"] if c["name"] == "table.write-read-delete"}
    assert sorted(round_trips) == ["Site-Keys-Binary", "Site-Keys-Numbered"]
    assert all(c["passed"] for c in round_trips.values()), round_trips
    ddb = deployments.target_client("dynamodb")
    for table in tables:
        assert ddb.scan(TableName=table["name"])["Items"] == []
