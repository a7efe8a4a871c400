"""Runbook section 9 end to end: inject a fault, watch the decision, prove no data was lost."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from werkzeug.wrappers import Response

from deployer_cli import client
from sandbox.faults import Call, Fault
from tests.sandbox_fixtures import Deployments, EventCapture, deployer, wait_for

TABLE = "Site-Rollback-Seeded"


def seeded_environment(deployments: Deployments, environment: str, **resources: Any) -> dict[str, Any]:
    """A DEV-account environment, deployed once, then seeded with items and object versions."""
    bucket = f"bbws-{environment}-bucket"
    deployments.spec(
        environment,
        resources={
            "buckets": [{"name": bucket}],
            "tables": [{"name": f"{TABLE}-{environment}", "partitionKey": {"name": "SiteId"}}],
            **resources,
        },
    )
    assert deployments.run(environment)["status"] == "SUCCEEDED"
    s3, ddb = deployments.target_client("s3"), deployments.target_client("dynamodb")
    for version in range(3):
        s3.put_object(Bucket=bucket, Key="sites/site-001.json", Body=f'{{"version": {version}}}'.encode())
    for site in range(5):
        ddb.put_item(TableName=f"{TABLE}-{environment}", Item={"SiteId": {"S": f"site-{site:03}"}})
    return {"bucket": bucket, "table": f"{TABLE}-{environment}"}


def assert_seeded_data_intact(deployments: Deployments, seeded: dict[str, Any]) -> None:
    s3, ddb = deployments.target_client("s3"), deployments.target_client("dynamodb")
    versions = s3.list_object_versions(Bucket=seeded["bucket"], Prefix="sites/")["Versions"]
    assert len(versions) == 3
    assert ddb.scan(TableName=seeded["table"], Select="COUNT")["Count"] == 5


@pytest.fixture
def fault(deployments: Deployments) -> Any:
    yield deployments.sandbox.faults.inject
    deployments.sandbox.faults.clear()


def test_writes_failing_roll_back_and_keep_every_item_and_version(
    deployments: Deployments, bus_events: EventCapture, fault: Any
) -> None:
    # GIVEN a deployed environment holding data, whose bucket then drifts (versioning suspended)
    seeded = seeded_environment(deployments, "dev-e2e-dataloss")
    s3 = deployments.target_client("s3")
    s3.put_bucket_versioning(Bucket=seeded["bucket"], VersioningConfiguration={"Status": "Suspended"})
    # WHEN the repair deployment runs while every write fails (a disabled KMS key)
    fault("validation-writes-fail")
    result = deployments.run("dev-e2e-dataloss")

    # THEN it is rolled back under the data-loss criterion, to the recorded prior state
    assert result["status"] == "ROLLED_BACK", result
    assert result["error"] == "ValidationFailed"
    assert result["rollback"]["criterion"] == "dataLossRisk"
    restored = [a for a in result["rollback"]["actions"] if a["action"] == "restore-bucket"]
    assert restored
    assert restored[0]["status"] == "done"
    assert s3.get_bucket_versioning(Bucket=seeded["bucket"])["Status"] == "Suspended"
    assert all(c["passed"] for c in result["rollback"]["validation"])
    # AND every seeded item and object version is still there
    assert_seeded_data_intact(deployments, seeded)
    assert deployments.stack.records.lock_holder("dev-e2e-dataloss") is None
    kinds = [e["detail-type"] for e in bus_events.for_deployment(result["deploymentId"])]
    assert "Rollback Completed" in kinds
    # AND the post-incident report is stored with the deployment
    record = deployments.stack.records.get(result["deploymentId"])
    assert record is not None
    assert "dataLossRisk" in record["report"]
    assert "Rollback actions" in record["report"]


def test_rollback_keeps_a_public_access_block_the_deployment_added(deployments: Deployments, fault: Any) -> None:
    # GIVEN a deployed environment holding data, whose bucket's public access block was then removed by hand
    seeded = seeded_environment(deployments, "dev-e2e-keepsafe")
    s3 = deployments.target_client("s3")
    s3.delete_public_access_block(Bucket=seeded["bucket"])
    # WHEN the repair deployment puts the block back, then fails and is rolled back
    fault("validation-writes-fail")
    result = deployments.run("dev-e2e-keepsafe")
    # THEN the rollback keeps the block the deployment added, says so, and its validation passes
    assert result["status"] == "ROLLED_BACK", result
    restored = next(a for a in result["rollback"]["actions"] if a["action"] == "restore-bucket")
    assert restored["status"] == "skipped"  # the block was the only change, and it is kept
    assert restored["kept"] == ["publicAccessBlock"]
    assert "a rollback never weakens security" in restored["detail"]
    block = s3.get_public_access_block(Bucket=seeded["bucket"])["PublicAccessBlockConfiguration"]
    assert all(block.values())
    assert all(c["passed"] for c in result["rollback"]["validation"])
    assert_seeded_data_intact(deployments, seeded)


def test_security_exposure_rolls_back_and_removes_only_what_holds_no_data(deployments: Deployments, fault: Any) -> None:
    # GIVEN a seeded environment that gains a new bucket, whose public access block does not stick
    seeded = seeded_environment(deployments, "dev-e2e-exposed")
    new_bucket = "bbws-e2e-exposed-new"
    deployments.spec(
        "dev-e2e-exposed",
        resources={
            "buckets": [{"name": seeded["bucket"]}, {"name": new_bucket}],
            "tables": [{"name": seeded["table"], "partitionKey": {"name": "SiteId"}}],
        },
    )
    fault("public-access-block-not-applied")
    result = deployments.run("dev-e2e-exposed")

    # THEN the security criterion rolls it back: the new, empty bucket is removed, the rest kept with its data
    assert result["status"] == "ROLLED_BACK", result
    assert result["rollback"]["criterion"] == "securityExposure"
    buckets = [b["Name"] for b in deployments.target_client("s3").list_buckets()["Buckets"]]
    assert new_bucket not in buckets
    assert seeded["bucket"] in buckets
    assert_seeded_data_intact(deployments, seeded)


def test_missing_labels_fix_forward(deployments: Deployments, fault: Any) -> None:
    # GIVEN a seeded environment whose tags change, but tagging does not stick
    seeded = seeded_environment(deployments, "dev-e2e-labels")
    deployments.spec(
        "dev-e2e-labels",
        tags={"Project": "bbws", "Owner": "platform-team"},
        resources={
            "buckets": [{"name": seeded["bucket"]}],
            "tables": [{"name": seeded["table"], "partitionKey": {"name": "SiteId"}}],
        },
    )
    fault("tags-not-applied")
    result = deployments.run("dev-e2e-labels")

    # THEN labels are a documentation issue: fixed forward, the deployment stands, with warnings
    assert result["status"] == "SUCCEEDED_WITH_WARNINGS", result
    assert result["decision"]["response"] == "fixForward"
    assert result["rollback"] is None
    assert_seeded_data_intact(deployments, seeded)


def test_faults_are_listed_with_their_criterion_and_expected_outcome(deployments: Deployments) -> None:
    listed = {f.name: f.describe() for f in deployments.sandbox.faults.catalogue.values()}
    assert listed["validation-writes-fail"]["expected"] == "ROLLED_BACK"
    assert listed["tags-not-applied"]["expected"] == "SUCCEEDED_WITH_WARNINGS"
    assert {d["criterion"] for d in listed.values()} >= {"dataLossRisk", "securityExposure", "documentationIssue"}


def test_game_day_from_the_command_line_and_the_incident_report(deployments: Deployments) -> None:
    # GIVEN the fault catalogue, as operators see it
    listed = subprocess.run(
        [sys.executable, "-m", "deployer_cli.main", "faults", "--json"], capture_output=True, text=True, check=True
    )
    faults = json.loads(listed.stdout)
    assert {"name", "criterion", "expected", "environments"} <= set(faults[0])
    # WHEN a deployment runs with a fault injected through the CLI
    seeded = seeded_environment(deployments, "dev-e2e-gameday")
    deployments.target_client("s3").put_bucket_versioning(
        Bucket=seeded["bucket"], VersioningConfiguration={"Status": "Suspended"}
    )
    deployments.spec(
        "dev-e2e-gameday",
        resources={
            "buckets": [{"name": seeded["bucket"]}],
            "tables": [{"name": seeded["table"], "partitionKey": {"name": "SiteId"}}],
        },
    )
    ran = deployer(
        deployments, "run", "--env", "dev-e2e-gameday", "--spec-dir", str(deployments.spec_dir),
        "--inject", "validation-writes-fail", "--json",
    )  # fmt: skip
    # THEN it is rolled back (exit 1), the fault is cleared afterwards, and the report tells the whole story
    assert ran.returncode == 1, ran.stderr
    result = json.loads(ran.stdout)
    assert result["status"] == "ROLLED_BACK"
    assert deployments.sandbox.faults.active == set()
    report = deployer(deployments, "report", result["executionArn"])
    assert report.returncode == 0, report.stderr
    text = report.stdout
    for section in ("Timeline", "Triggering cause", "Decision", "Rollback actions", "Rollback validation"):
        assert section in text
    assert "dataLossRisk" in text
    assert "bucket.write-read-delete" in text
    assert_seeded_data_intact(deployments, seeded)


def test_injecting_a_fault_against_real_aws_is_refused() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "deployer_cli.main", "run", "--env", "dev", "--aws", "--inject", "tags-not-applied"],
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_REGION": "af-south-1",
        },
        timeout=120,
    )
    assert completed.returncode == 2
    assert "refused against real AWS" in completed.stderr


def test_resource_exhaustion_rolls_back_what_was_created_and_keeps_the_data(
    deployments: Deployments, fault: Any
) -> None:
    # GIVEN a seeded environment that gains a table (created first) and a bucket, with the bucket quota used up
    seeded = seeded_environment(deployments, "dev-e2e-limits")
    new_table = f"{TABLE}-e2e-limits-new"
    deployments.spec(
        "dev-e2e-limits",
        resources={
            "buckets": [{"name": seeded["bucket"]}, {"name": "bbws-e2e-limits-new"}],
            "tables": [
                {"name": seeded["table"], "partitionKey": {"name": "SiteId"}},
                {"name": new_table, "partitionKey": {"name": "SiteId"}},
            ],
        },
    )
    fault("bucket-limit-reached")
    result = deployments.run("dev-e2e-limits")

    # THEN provisioning fails on the quota, which is resource exhaustion: rolled back
    assert result["status"] == "ROLLED_BACK", result
    assert result["error"] == "ProvisioningFailed"
    assert result["rollback"]["criterion"] == "resourceExhaustion"
    assert_seeded_data_intact(deployments, seeded)


def test_a_new_table_that_received_data_is_retained_by_the_rollback(deployments: Deployments, fault: Any) -> None:
    # GIVEN a seeded environment that gains a new table, which receives data before validation runs
    seeded = seeded_environment(deployments, "dev-e2e-retain")
    new_table = f"{TABLE}-e2e-retain-new"
    deployments.spec(
        "dev-e2e-retain",
        resources={
            "buckets": [{"name": seeded["bucket"]}],
            "tables": [
                {"name": seeded["table"], "partitionKey": {"name": "SiteId"}},
                {"name": new_table, "partitionKey": {"name": "SiteId"}},
            ],
        },
    )
    validate = f"{deployments.sandbox.stack_name}-validate"
    with deployments.sandbox.runtime.paused(validate):  # type: ignore[union-attr]
        arn = deployments.start("dev-e2e-retain")
        wait_for(lambda: "ValidateShard" in deployments.states_entered(arn), "validation to start")
        ddb = deployments.target_client("dynamodb")
        ddb.put_item(TableName=new_table, Item={"SiteId": {"S": "early-customer"}})
        fault("validation-writes-fail")
    result = deployments.finish(arn)

    # THEN the rollback keeps the new table, because it holds data, and says so
    assert result["status"] == "ROLLED_BACK", result
    retained = [a for a in result["rollback"]["actions"] if a["name"] == new_table]
    assert [a["action"] for a in retained][-1] == "retain"
    assert "retain" in retained[-1]["detail"]
    assert ddb.get_item(TableName=new_table, Key={"SiteId": {"S": "early-customer"}}).get("Item")
    assert_seeded_data_intact(deployments, seeded)


def test_manual_rollback_to_a_named_deployment(deployments: Deployments) -> None:
    # GIVEN an environment deployed twice: first with versioning, then a spec that changes its tags
    seeded = seeded_environment(deployments, "dev-e2e-manual")
    first = deployments.stack.records.history("dev-e2e-manual", 1)[0]["deploymentId"]
    deployments.spec(
        "dev-e2e-manual",
        tags={"Project": "bbws", "Release": "2026.12"},
        resources={
            "buckets": [{"name": seeded["bucket"]}],
            "tables": [{"name": seeded["table"], "partitionKey": {"name": "SiteId"}}],
        },
    )
    assert deployments.run("dev-e2e-manual")["status"] == "SUCCEEDED"
    # WHEN an operator rolls back to the first deployment
    completed = deployer(deployments, "rollback", "--env", "dev-e2e-manual", "--to", first, "--json")
    # THEN that deployment's spec version is deployed again, through the normal pipeline
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["status"] == "SUCCEEDED"
    first_record = deployments.stack.records.get(first)
    assert first_record is not None
    assert result["specVersion"] == first_record["specVersion"]
    record = deployments.stack.records.get(result["deploymentId"])
    assert record is not None
    assert record["rollbackTo"] == first
    assert_seeded_data_intact(deployments, seeded)


def test_rollback_to_a_failed_or_foreign_deployment_is_refused(deployments: Deployments) -> None:
    completed = deployer(deployments, "rollback", "--env", "dev-e2e-manual", "--to", "no-such-deployment", "--json")
    assert completed.returncode == 1
    result = json.loads(completed.stdout)
    assert result["error"] == "InputInvalid"
    assert "no deployment no-such-deployment" in result["cause"]


@pytest.mark.parametrize(
    ("fault_name", "criterion", "status"),
    [
        ("writes-denied", "configurationError", "ROLLED_BACK"),
        ("storage-unavailable", "serviceUnavailable", "ROLLED_BACK"),
        ("slow-writes", "performanceDegradation", "SUCCEEDED_WITH_WARNINGS"),
        ("flaky-network", "transientConnectivity", "SUCCEEDED_WITH_WARNINGS"),
    ],
)
def test_each_criterion_decides_as_the_runbook_says_and_loses_no_data(
    deployments: Deployments, fault: Any, fault_name: str, criterion: str, status: str
) -> None:
    # GIVEN a seeded environment whose bucket has drifted, so the deployment changes it
    environment = f"dev-e2e-{fault_name}"
    seeded = seeded_environment(deployments, environment)
    deployments.target_client("s3").put_bucket_versioning(
        Bucket=seeded["bucket"], VersioningConfiguration={"Status": "Suspended"}
    )
    # WHEN it is deployed with the fault
    fault(fault_name)
    result = deployments.run(environment)
    # THEN the decision follows the criterion, and every seeded item and object version is there
    assert result["status"] == status, result
    assert result["decision"]["criterion"] == criterion
    assert_seeded_data_intact(deployments, seeded)
    if criterion == "serviceUnavailable":  # its grace period: re-checked, still failing, then rolled back
        assert "WaitBeforeRecheck" in deployments.states_entered(result["executionArn"])
        assert "beyond the 0.02-minute grace period" in result["decision"]["reason"]
    if status == "ROLLED_BACK":
        assert all(c["passed"] for c in result["rollback"]["validation"])
        versioning = deployments.target_client("s3").get_bucket_versioning(Bucket=seeded["bucket"])
        assert versioning["Status"] == "Suspended"  # back to the recorded prior state
    assert deployments.stack.records.lock_holder(environment) is None


def test_a_rollback_that_fails_declares_an_incident_and_can_be_resumed(
    deployments: Deployments, bus_events: EventCapture, fault: Any
) -> None:
    # GIVEN a seeded, drifted environment where writes fail, and restoring versioning is denied too
    seeded = seeded_environment(deployments, "dev-e2e-blocked")
    s3 = deployments.target_client("s3")
    s3.put_bucket_versioning(Bucket=seeded["bucket"], VersioningConfiguration={"Status": "Suspended"})
    deployments.run("dev-e2e-blocked")  # repaired: versioning Enabled again, prior state Suspended recorded next time
    s3.put_bucket_versioning(Bucket=seeded["bucket"], VersioningConfiguration={"Status": "Suspended"})

    def versioning_denied(call: Call) -> Response | None:
        # Provisioning comes first and goes through; once validation has failed, restores are denied.
        validation_failed = any(i["fault"] == "validation-writes-fail" for i in deployments.sandbox.faults.injected)
        if call.s3_subresource("versioning") and validation_failed:
            return Response("<Error><Code>AccessDenied</Code></Error>", status=403)
        return None

    deployments.sandbox.faults.catalogue["versioning-denied"] = Fault(
        "versioning-denied",
        "configurationError",
        "ROLLBACK_FAILED",
        "restores of versioning are denied",
        versioning_denied,
    )
    fault("validation-writes-fail")
    fault("versioning-denied")
    result = deployments.run("dev-e2e-blocked")

    # THEN the rollback fails: ROLLBACK_FAILED, an incident is declared, the lock is released, no data lost
    assert result["status"] == "ROLLBACK_FAILED", result
    kinds = [e["detail-type"] for e in bus_events.for_deployment(result["deploymentId"])]
    assert "Incident Declared" in kinds
    assert deployments.stack.records.lock_holder("dev-e2e-blocked") is None
    assert_seeded_data_intact(deployments, seeded)
    # ... and the record and the incident report say what ran: the restore that failed, and why
    (failed,) = [a for a in result["rollback"]["actions"] if a["status"] == "failed"]
    assert (failed["action"], failed["kind"], failed["name"]) == ("restore-bucket", "bucket", seeded["bucket"])
    assert "AccessDenied" in failed["detail"]
    before = result["rollback"]["actions"][: result["rollback"]["actions"].index(failed)]
    assert {a["status"] for a in before} <= {"done", "skipped"}
    report = deployments.stack.records.get(result["deploymentId"])["report"]  # type: ignore[index]
    assert f"| restore-bucket | bucket {seeded['bucket']} | af-south-1 | failed |" in report

    # WHEN the cause is removed and the rollback is run again for that deployment
    deployments.sandbox.faults.clear()
    del deployments.sandbox.faults.catalogue["versioning-denied"]
    record = deployments.stack.records.get(result["deploymentId"])
    assert record is not None
    event = {"deployment": _context(deployments, result["executionArn"])}
    lam = deployments.stack.client("lambda")
    resumed = lam.invoke(FunctionName=f"{deployments.sandbox.stack_name}-rollback", Payload=json.dumps(event))
    assert "FunctionError" not in resumed, resumed["Payload"].read()
    validated = lam.invoke(
        FunctionName=f"{deployments.sandbox.stack_name}-validate-rollback", Payload=json.dumps(event)
    )
    assert "FunctionError" not in validated, validated["Payload"].read()

    # THEN it completes from where it stopped, and the environment is back at its recorded prior state
    assert s3.get_bucket_versioning(Bucket=seeded["bucket"])["Status"] == "Suspended"
    assert_seeded_data_intact(deployments, seeded)


def _context(deployments: Deployments, execution_arn: str) -> dict[str, Any]:
    """The deployment context the execution carried (from its StartDeployment result)."""
    for event in client.history(deployments.stack, execution_arn):
        details = event.get("stateExitedEventDetails", {})
        if details.get("name") == "StartDeployment":
            return dict(json.loads(details["output"])["deployment"])
    raise AssertionError("no StartDeployment output in the history")


def test_missing_monitoring_fixes_forward(deployments: Deployments, fault: Any) -> None:
    # GIVEN a seeded bucket, and a new table whose CloudWatch metrics never arrive
    bucket = "bbws-e2e-unmonitored-bucket"
    deployments.spec("dev-e2e-unmonitored", resources={"buckets": [{"name": bucket}]})
    assert deployments.run("dev-e2e-unmonitored")["status"] == "SUCCEEDED"
    s3 = deployments.target_client("s3")
    for version in range(3):
        s3.put_object(Bucket=bucket, Key="sites/site-001.json", Body=f'{{"version": {version}}}'.encode())
    deployments.spec(
        "dev-e2e-unmonitored",
        resources={
            "buckets": [{"name": bucket}],
            "tables": [{"name": "Site-E2E-Unmonitored", "partitionKey": {"name": "SiteId"}}],
        },
    )
    fault("metrics-missing")
    result = deployments.run("dev-e2e-unmonitored")
    # THEN monitoring gaps are non-critical: fixed forward, the table stays, the deployment stands with a warning
    assert result["status"] == "SUCCEEDED_WITH_WARNINGS", result
    assert result["decision"]["criterion"] == "monitoringGap"
    failed = [c["name"] for c in result["checks"] if not c["passed"]]
    assert failed == ["monitoring.metrics"]
    tables = deployments.target_client("dynamodb").list_tables()["TableNames"]
    assert "Site-E2E-Unmonitored" in tables
    assert len(s3.list_object_versions(Bucket=bucket, Prefix="sites/")["Versions"]) == 3


def test_an_item_written_into_a_created_table_during_its_removal_survives(deployments: Deployments, fault: Any) -> None:
    # GIVEN a deployment that creates a table and a bucket whose public access block does not take (a rollback)
    environment, new_table = "dev-e2e-late-write", f"{TABLE}-e2e-late-write"
    deployments.spec(
        environment,
        resources={
            "buckets": [{"name": f"bbws-{environment}-bucket"}],
            "tables": [{"name": new_table, "partitionKey": {"name": "SiteId"}}],
        },
    )
    ddb = deployments.target_client("dynamodb")
    looks_since_backup, written = -1, []

    def late_write(call: Call) -> Response | None:
        # The application's first write lands while the rollback removes the table it backed up: after the
        # removal's first look at it, while it waits for the table to be ACTIVE (its second DescribeTable).
        nonlocal looks_since_backup
        if call.dynamodb("CreateBackup"):
            looks_since_backup = 0
        elif call.dynamodb("DescribeTable") and looks_since_backup >= 0 and not written:
            looks_since_backup += 1
            if looks_since_backup == 2:
                written.append(ddb.put_item(TableName=new_table, Item={"SiteId": {"S": "first-customer"}}))
        return None

    deployments.sandbox.faults.catalogue["late-write"] = Fault(
        "late-write", "dataLossRisk", "ROLLED_BACK", "a write lands while the rollback removes a new table", late_write
    )
    try:
        fault("public-access-block-not-applied")
        fault("late-write")
        result = deployments.run(environment)
    finally:
        deployments.sandbox.faults.clear()
        del deployments.sandbox.faults.catalogue["late-write"]

    # THEN the rollback looked again right before deleting: the table is kept, with the item, and says why
    assert result["status"] == "ROLLED_BACK", result
    assert written
    (removal,) = [a for a in result["rollback"]["actions"] if a["name"] == new_table and a["kind"] == "table"][-1:]
    assert (removal["action"], removal["status"]) == ("retain", "skipped")
    assert "holds items" in removal["detail"]
    assert ddb.get_item(TableName=new_table, Key={"SiteId": {"S": "first-customer"}}).get("Item")


def test_storage_unavailable_that_clears_within_the_grace_period_fixes_forward(
    deployments: Deployments, fault: Any
) -> None:
    # GIVEN a seeded, drifted environment whose storage is unreachable, with a 30-second grace period
    environment = "dev-e2e-recovers"
    seeded = seeded_environment(deployments, environment)
    deployments.spec(
        environment,
        policy={"rollback": {"transientGraceMinutes": 0.5}},
        resources={
            "buckets": [{"name": seeded["bucket"]}],
            "tables": [{"name": seeded["table"], "partitionKey": {"name": "SiteId"}}],
        },
    )
    deployments.target_client("s3").put_bucket_versioning(
        Bucket=seeded["bucket"], VersioningConfiguration={"Status": "Suspended"}
    )
    fault("storage-unavailable")
    arn = deployments.start(environment)
    record_id = arn.rsplit(":", 1)[1]

    # WHEN the outage clears while the deployment re-checks within the grace period
    def rechecking() -> bool:
        record = deployments.stack.records.get(record_id) or {}
        return (record.get("decision") or {}).get("response") == "recheck"

    wait_for(rechecking, "the failure to be re-checked within its grace period", seconds=120)
    deployments.sandbox.faults.clear()
    result = deployments.finish(arn)

    # THEN it fixes forward: it succeeded with a warning saying what failed and for how long, nothing rolled back
    assert result["status"] == "SUCCEEDED_WITH_WARNINGS", result
    decision = result["decision"]
    assert (decision["response"], decision["criterion"]) == ("fixForward", "transientConnectivity")
    assert decision["reason"].startswith("fix forward: serviceUnavailable cleared after ")
    states = deployments.states_entered(arn)
    assert states.count("ValidateShard") == 2
    assert "WaitBeforeRecheck" in states
    assert "RollBack" not in states
    assert result["rollback"] is None
    assert deployments.target_client("s3").get_bucket_versioning(Bucket=seeded["bucket"])["Status"] == "Enabled"
    assert_seeded_data_intact(deployments, seeded)
    assert deployments.stack.records.lock_holder(environment) is None


def test_a_rollback_decision_that_fails_rolls_back_fail_safe(deployments: Deployments, fault: Any) -> None:
    # GIVEN a seeded, drifted environment whose writes fail (a rollback), and a decision function that
    # cannot even start (its handler is missing, as after a broken release)
    seeded = seeded_environment(deployments, "dev-e2e-undecided")
    deployments.target_client("s3").put_bucket_versioning(
        Bucket=seeded["bucket"], VersioningConfiguration={"Status": "Suspended"}
    )
    runtime = deployments.sandbox.runtime
    assert runtime is not None
    decide = f"{deployments.sandbox.stack_name}-decide-rollback"
    configured = runtime.functions[decide]
    runtime.functions[decide] = dataclasses.replace(configured, handler="missing.lambda_handler")
    fault("validation-writes-fail")
    try:
        result = deployments.run("dev-e2e-undecided")
    finally:
        runtime.functions[decide] = configured
    # THEN the deployment is rolled back anyway, saying why, and no data is lost
    assert result["status"] == "ROLLED_BACK", result
    states = deployments.states_entered(result["executionArn"])
    assert states.index("DecisionFailed") < states.index("RollBack")
    assert all(c["passed"] for c in result["rollback"]["validation"])
    assert deployments.target_client("s3").get_bucket_versioning(Bucket=seeded["bucket"])["Status"] == "Suspended"
    assert_seeded_data_intact(deployments, seeded)
