"""PROD end to end: promotion from SIT, two approvers, both regions, replication, windows, schedules."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml

from deployer.spec import DeploymentWindow
from deployer.windows import first_opening
from deployer_cli import client
from tests.sandbox_fixtures import REPO, TARGET_ACCOUNTS, TEST_GRACE, Deployments, EventCapture, wait_for

# SIT only receives what DEV ran (its promotion rule): DEV deploys first, once per module.
pytestmark = pytest.mark.usefixtures("promoted_to_sit")

PROD = TARGET_ACCOUNTS["prod"]


def next_local(deployments: Deployments, weekday: str, clock: str, after: timedelta = timedelta(0)) -> datetime:
    """The next ``weekday`` at ``clock`` in Johannesburg, at least ``after`` past the sandbox's now."""
    window: dict[str, Any] = {"timeZone": "Africa/Johannesburg", "weekdays": [weekday], "start": clock}
    moment = first_opening(DeploymentWindow.model_validate(window), deployments.sandbox.now() + after)
    assert moment is not None
    return moment


def deploy_prod(deployments: Deployments, ticket: str = "CHG-300", **kwargs: object) -> dict[str, object]:
    """Announce a PROD change 24 hours ahead (simulated), then deploy it then with two approvals."""
    deployments.announce("prod", ticket)
    arn = deployments.start("prod", requested_by="alice", change_ticket=ticket, **kwargs)
    deployments.approve(deployments.approval(arn), "senior-engineer-1", "senior-engineer-2")
    return deployments.finish(arn)


def test_unannounced_prod_is_refused_notice_too_short_before_anyone_is_asked(deployments: Deployments) -> None:
    # GIVEN PROD's window is open, and change CHG-290 was never announced
    deployments.sandbox.travel_to_window("prod")
    calls_before = deployments.calls_into(PROD)
    # WHEN PROD is deployed for it
    refused = deployments.run("prod", requested_by="alice", change_ticket="CHG-290")
    # THEN it is refused at once, naming the ticket and how to announce it; nothing is asked, locked or created
    assert (refused["status"], refused["error"]) == ("FAILED", "NoticeTooShort"), refused
    assert "CHG-290 was never announced for prod" in refused["cause"]
    assert "deployer announce --env prod --change-ticket CHG-290" in refused["cause"]
    states = deployments.states_entered(refused["executionArn"])
    assert "AcquireLock" not in states
    assert "RequestApproval" not in states
    assert deployments.calls_into(PROD) == calls_before

    # GIVEN CHG-291 announced just now, for the first window 24 hours ahead
    at = deployments.sandbox.first_announceable("prod")
    client.announce(
        deployments.stack, REPO / "environments", "prod", change_ticket="CHG-291", at=at, requested_by="alice"
    )
    # WHEN it is deployed before then
    early = deployments.run("prod", requested_by="alice", change_ticket="CHG-291")
    # THEN the notice is too short, by how much
    assert (early["status"], early["error"]) == ("FAILED", "NoticeTooShort"), early
    assert "CHG-291 was announced at" in early["cause"]
    assert "needs 24 hours' notice" in early["cause"]
    assert deployments.calls_into(PROD) == calls_before


def test_prod_is_refused_until_sit_ran_the_same_spec(deployments: Deployments) -> None:
    deployments.announce("prod", "CHG-299")
    # GIVEN SIT never ran this resources spec
    # WHEN PROD is deployed
    refused = deployments.run("prod", requested_by="alice", change_ticket="CHG-299")
    # THEN preflight refuses it, naming what is missing
    assert refused["error"] == "PreflightFailed"
    promotion = next(c for c in refused["preflight"] if c["name"] == "promotion")
    assert not promotion["passed"]
    assert "sit" in promotion["detail"]
    assert "RequestApproval" not in deployments.states_entered(refused["executionArn"])


def test_promotion_override_passes_preflight_but_needs_an_extra_approval(deployments: Deployments) -> None:
    # GIVEN SIT still never ran this spec
    # WHEN PROD is deployed with a promotion override
    deployments.announce("prod", "CHG-298")
    arn = deployments.start(
        "prod", requested_by="alice", change_ticket="CHG-298", promotion_override="CAB-approved emergency fix CHG-298"
    )
    approval = deployments.approval(arn)
    # THEN preflight lets it through as an override, and it needs one more approval than usual, recorded as such
    record = deployments.stack.records.get(arn.rsplit(":", 1)[1])
    assert record is not None
    assert record["promotionOverride"] == "CAB-approved emergency fix CHG-298"
    promotion = next(c for c in record["preflight"] if c["name"] == "promotion")
    assert promotion["passed"]
    assert promotion["detail"].startswith("OVERRIDE: ")
    assert approval.required == 3
    deployments.click(approval, "senior-engineer-1", "reject")
    assert deployments.finish(arn)["error"] == "ApprovalRejected"


def test_full_prod_deployment_after_sit(deployments: Deployments, bus_events: EventCapture) -> None:
    # GIVEN SIT deployed the same resources spec
    sit = deployments.start("sit", requested_by="alice", change_ticket="CHG-300")
    deployments.click(deployments.approval(sit), "sit-lead")
    assert deployments.finish(sit)["status"] == "SUCCEEDED"

    # WHEN PROD is deployed inside its window with two approvals
    result = deploy_prod(deployments)

    # THEN it applied inside the window announced a day before, which its record keeps
    assert result["status"] == "SUCCEEDED", result
    record = deployments.stack.records.get(str(result["deploymentId"]))
    assert record is not None
    announced = record["announcement"]
    assert announced["changeTicket"] == "CHG-300"
    applied_from = datetime.fromisoformat(announced["windowStart"])
    assert applied_from - datetime.fromisoformat(announced["announcedAt"]) >= timedelta(hours=24)
    assert datetime.fromisoformat(str(result["startedAt"])) >= applied_from
    # AND both regions are provisioned and validated, and replication is configured and verified
    assert result["regions"] == ["af-south-1", "eu-west-1"]
    assert {c["region"] for c in result["checks"]} == {"eu-west-1", "af-south-1"}
    names = {c["name"] for c in result["checks"]}
    assert {"replication.configured", "replication.object", "replica.active", "replica.item"} <= names
    assert all(c["passed"] for c in result["checks"]), [c for c in result["checks"] if not c["passed"]]
    promotion = next(c for c in result["preflight"] if c["name"] == "promotion")
    assert promotion["passed"]
    s3 = deployments.target_client("s3", account=PROD)
    rules = s3.get_bucket_replication(Bucket="bbws-prod-data-bucket")["ReplicationConfiguration"]["Rules"]
    assert rules[0]["Destination"]["Bucket"] == "arn:aws:s3:::bbws-prod-data-bucket-failover"
    failover_ddb = deployments.target_client("dynamodb", account=PROD, region="eu-west-1")
    replica = failover_ddb.describe_table(TableName="Site-Generation-State")
    assert replica["Table"]["TableStatus"] == "ACTIVE"
    # AND the replica has point-in-time recovery of its own, as the table has
    backups = failover_ddb.describe_continuous_backups(TableName="Site-Generation-State")
    assert backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == (
        "ENABLED"
    )
    # AND the replication checks left nothing behind in either bucket
    for bucket, region in (("bbws-prod-data-bucket", "af-south-1"), ("bbws-prod-data-bucket-failover", "eu-west-1")):
        client = deployments.target_client("s3", account=PROD, region=region)
        versions = client.list_object_versions(Bucket=bucket, Prefix="_deployer/")
        assert not versions.get("Versions")
        assert not versions.get("DeleteMarkers")


def test_unchanged_prod_rerun_changes_nothing(deployments: Deployments) -> None:
    result = deploy_prod(deployments)
    assert result["status"] == "SUCCEEDED", result
    assert (result["plan"]["add"], result["plan"]["change"]) == (0, 0)
    assert result["mutatingCalls"] == 0


def test_a_replica_without_backups_in_the_failover_region_is_refused_naming_the_region(
    deployments: Deployments,
) -> None:
    # GIVEN PROD deployed, and someone turned off point-in-time recovery on the eu-west-1 replica (and it has no
    # on-demand backup)
    failover_ddb = deployments.target_client("dynamodb", account=PROD, region="eu-west-1")
    off = {"PointInTimeRecoveryEnabled": False}
    failover_ddb.update_continuous_backups(TableName="Site-Generation-State", PointInTimeRecoverySpecification=off)
    try:
        # WHEN PROD is deployed again, announced
        deployments.announce("prod", "CHG-305")
        result = deployments.run("prod", requested_by="alice", change_ticket="CHG-305")
    finally:
        on = {"PointInTimeRecoveryEnabled": True}
        failover_ddb.update_continuous_backups(TableName="Site-Generation-State", PointInTimeRecoverySpecification=on)
    # THEN preflight refuses it, the backup check passing in af-south-1 and failing in eu-west-1, which it names
    assert (result["status"], result["error"]) == ("FAILED", "PreflightFailed"), result
    backups = [(c["region"], c["passed"]) for c in result["preflight"] if c["name"] == "table.backup"]
    assert backups == [("af-south-1", True), ("eu-west-1", False)]
    assert "table Site-Generation-State in eu-west-1 has neither point-in-time recovery" in str(result["cause"])
    # AND nobody was asked to approve it, and nothing was changed
    assert "RequestApproval" not in deployments.states_entered(str(result["executionArn"]))
    assert result["mutatingCalls"] == 0


def test_an_emergency_skips_the_notice_for_an_extra_approval_and_tells_the_incident_channel(
    deployments: Deployments,
) -> None:
    # GIVEN PROD's window is open and change CHG-310 was never announced
    deployments.sandbox.travel_to_window("prod")
    # WHEN it is deployed as an emergency
    reason = "Sev-1 INC-42: the site cannot write generation state"
    arn = deployments.start("prod", requested_by="alice", change_ticket="CHG-310", emergency=reason)
    approval = deployments.approval(arn)
    # THEN it needs the policy's extra approval (three, not two), and #incidents is told why
    assert approval.required == 3
    incident = wait_for(
        lambda: [m for m in deployments.slack_messages() if m.get("channel") == "#incidents"], "the incident post"
    )
    assert reason in incident[0]["text"] or reason in json.dumps(incident[0]["blocks"])
    assert "Emergency prod deployment" in incident[0]["text"]
    # AND two approvals are not enough
    deployments.click(approval, "senior-engineer-1")
    deployments.click(approval, "senior-engineer-2")
    assert deployments.stack.approvals.get(approval.approval_id).status == "PENDING"  # type: ignore[union-attr]
    # WHEN the third approves, it deploys, recorded as an emergency
    deployments.click(approval, "senior-engineer-3")
    result = deployments.finish(arn)
    assert result["status"] == "SUCCEEDED", result
    record = deployments.stack.records.get(arn.rsplit(":", 1)[1])
    assert record is not None
    assert (record["emergency"], record["announcement"]) == (reason, None)


def test_paused_replication_fails_the_replication_checks_naming_the_resource(deployments: Deployments) -> None:
    # GIVEN PROD holds data, and replication is paused (the game-day fault, as AWS FIS can pause it)
    s3 = deployments.target_client("s3", account=PROD)
    for version in range(3):
        s3.put_object(Bucket="bbws-prod-data-bucket", Key="sites/site-001.json", Body=f"{version}".encode())
    ddb = deployments.target_client("dynamodb", account=PROD)
    ddb.put_item(TableName="Site-Generation-State", Item={"SiteId": {"S": "site-001"}})
    deployments.sandbox.faults.inject("replication-stalled")
    assert deployments.sandbox.s3_replication.is_paused
    try:
        result = deploy_prod(deployments)
    finally:
        deployments.sandbox.faults.clear()
    assert not deployments.sandbox.dynamodb_replicas.is_paused
    # THEN the replication checks fail, each naming its resource, and PROD is rolled back for it
    assert result["status"] == "ROLLED_BACK"
    assert result["error"] == "ValidationFailed"
    assert result["rollback"]["criterion"] == "replicationFailure"
    failed = {(c["name"], c["resource"]) for c in result["checks"] if not c["passed"]}
    assert ("replication.object", "bbws-prod-data-bucket") in failed
    assert ("replica.item", "Site-Generation-State") in failed
    assert "bbws-prod-data-bucket" in result["cause"]
    # AND not one object version or item was lost
    assert len(s3.list_object_versions(Bucket="bbws-prod-data-bucket", Prefix="sites/")["Versions"]) == 3
    assert ddb.get_item(TableName="Site-Generation-State", Key={"SiteId": {"S": "site-001"}}).get("Item")


def test_outside_the_window_beyond_max_wait_fails_even_for_an_emergency(deployments: Deployments) -> None:
    # GIVEN it is Saturday in Johannesburg; the window opens Monday, beyond maxWaitHours (2). No window can
    # be announced for a Saturday, so only an emergency (which skips the notice, never the window) gets this far
    deployments.sandbox.travel(next_local(deployments, "sat", "11:00"))
    try:
        arn = deployments.start(
            "prod", requested_by="alice", change_ticket="CHG-311", emergency="Sev-1 INC-43 on a Saturday"
        )
        approval = deployments.approval(arn)
        deployments.approve(approval, "senior-engineer-1", "senior-engineer-2", "senior-engineer-3")
        result = deployments.finish(arn)
    finally:
        deployments.sandbox.travel_to_window("prod")
    # THEN it ends OutsideDeploymentWindow after approval, having changed nothing
    assert result["status"] == "FAILED"
    assert result["error"] == "OutsideDeploymentWindow"
    assert result["mutatingCalls"] == 0
    assert "Provision" not in deployments.states_entered(str(result["executionArn"]))


def test_inside_the_wait_limit_waits_for_the_window_then_proceeds(deployments: Deployments) -> None:
    # GIVEN an environment whose window opens a few seconds from now (simulated), within maxWaitHours
    opens = next_local(deployments, "mon", "09:00", after=timedelta(minutes=1))
    window = {"timeZone": "Africa/Johannesburg", "weekdays": ["mon"], "start": "09:00", "end": "10:00"}
    deployments.spec(
        "dev-e2e-window",
        policy={"window": {**window, "maxWaitHours": 1}},
        resources={"buckets": [{"name": "bbws-e2e-window-bucket"}]},
    )
    deployments.sandbox.travel(opens - timedelta(seconds=12))
    try:
        result = deployments.run("dev-e2e-window")
    finally:
        deployments.sandbox.travel_to_window("prod")
    # THEN it waited for the window, checked again, and deployed
    assert result["status"] == "SUCCEEDED", result
    states = deployments.states_entered(result["executionArn"])
    assert "WaitForWindow" in states
    assert states.count("CheckWindow") >= 2
    assert states.index("WaitForWindow") < states.index("Provision")


def test_a_change_made_during_the_window_wait_is_never_applied_unapproved(deployments: Deployments) -> None:
    # GIVEN an environment needing one approval, whose window opens half a minute from now (simulated)
    opens = next_local(deployments, "tue", "09:00", after=timedelta(minutes=1))
    window = {"timeZone": "Africa/Johannesburg", "weekdays": ["tue"], "start": "09:00", "end": "10:00"}
    bucket = "bbws-dev-e2e-window-drift-bucket"
    deployments.approval_spec(
        "dev-e2e-window-drift",
        "U0APPROVEW",
        "C0DEVWINDOW",
        lockLeaseMinutes=150,
        window={**window, "maxWaitHours": 1},
    )
    deployments.sandbox.travel(opens - timedelta(seconds=30))
    try:
        # WHEN it is approved, and while it waits for the window someone creates its bucket by hand
        arn = deployments.start("dev-e2e-window-drift")
        deployments.click(deployments.approval(arn), "U0APPROVEW")
        wait_for(lambda: "WaitForWindow" in deployments.states_entered(arn), "the wait for the window")
        deployments.target_client("s3").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": deployments.sandbox.region}
        )
        result = deployments.finish(arn)
    finally:
        deployments.sandbox.travel_to_window("prod")
    # THEN the plan is verified after the wait, right before Provision, and the changed plan stops it
    assert (result["status"], result["error"]) == ("FAILED", "PlanChangedSinceApproval"), result
    states = deployments.states_entered(arn)
    assert states.index("WaitForWindow") < states.index("VerifyPlan")
    assert "Provision" not in states
    assert result["mutatingCalls"] == 0


def test_schedule_with_too_little_notice_is_refused(deployments: Deployments) -> None:
    soon = deployments.sandbox.now() + timedelta(hours=1)
    result = deployments.run("prod", requested_by="alice", change_ticket="CHG-301", scheduled_for=soon)
    assert result["status"] == "FAILED"
    assert result["error"] == "ScheduleRefused"
    assert "24 hours" in result["cause"]


def test_scheduled_deployment_is_announced_then_waits_for_its_time(
    deployments: Deployments, bus_events: EventCapture
) -> None:
    # GIVEN an environment that needs no notice, scheduled a few seconds ahead
    deployments.spec("dev-e2e-scheduled", resources={"buckets": [{"name": "bbws-e2e-scheduled-bucket"}]})
    # Far enough ahead (on the functions' clock) that a slow, loaded machine still starts it before its time.
    at = deployments.sandbox.now() + timedelta(seconds=10)
    # WHEN it is started
    arn = deployments.start("dev-e2e-scheduled", scheduled_for=at, change_ticket="CHG-302")
    # THEN the window is announced at once, and nothing is applied before the scheduled time
    wait_for(lambda: "WaitForSchedule" in deployments.states_entered(arn), "the wait for the scheduled time")
    assert "AcquireLock" not in deployments.states_entered(arn)
    result = deployments.finish(arn)
    assert result["status"] == "SUCCEEDED", result
    events = bus_events.for_deployment(result["deploymentId"])
    announced = [e for e in events if e["detail-type"] == "Deployment Window Announced"]
    assert announced
    assert announced[0]["detail"]["changeTicket"] == "CHG-302"
    assert announced[0]["detail"]["expectedDowntime"] == "none"


def test_a_provisioning_timeout_in_the_second_region_rolls_back_the_first(deployments: Deployments) -> None:
    # GIVEN a PROD change adding a bucket in each region (primary first), whose failover-region create hangs
    # until the provisioning function times out (the game-day fault; the function's timeout cut to seconds)
    spec = yaml.safe_load((REPO / "environments" / "prod.yaml").read_text())
    spec["policy"].setdefault("rollback", {}).update(TEST_GRACE)
    spec["resources"]["buckets"] += [
        {"name": "bbws-prod-timeout-bucket"},
        {"name": "bbws-prod-timeout-bucket-failover", "region": "failover"},
    ]
    path = deployments.spec_dir / "prod.yaml"
    path.write_text(yaml.safe_dump(spec))
    deployments.announce("prod", "CHG-303")
    runtime = deployments.sandbox.runtime
    assert runtime is not None
    provision = f"{deployments.sandbox.stack_name}-provision"
    configured = runtime.functions[provision]
    runtime.functions[provision] = dataclasses.replace(configured, timeout_seconds=3)
    deployments.sandbox.faults.inject("provisioning-hangs")
    try:
        arn = deployments.start(
            "prod", requested_by="alice", change_ticket="CHG-303", promotion_override="CAB-approved test CHG-303"
        )
        approval = deployments.approval(arn)
        deployments.approve(approval, "senior-engineer-1", "senior-engineer-2", "senior-engineer-3")
        result = deployments.finish(arn)
    finally:
        deployments.sandbox.faults.clear()
        runtime.functions[provision] = configured
        path.unlink()
    # THEN the timeout reached the rollback decision with what the failover region had applied
    assert result["status"] == "ROLLED_BACK", result
    assert result["error"] == "Sandbox.Timedout"
    decision = result["decision"]
    assert decision["criterion"] == "serviceUnavailable"
    assert decision["applied"] == {"af-south-1": ["add bucket bbws-prod-timeout-bucket"]}
    states = deployments.states_entered(arn)
    assert states.index("DecideRollback") > states.index("ProvisionShard")
    assert "Validate" not in states
    # AND the primary region is as it was: its new, empty bucket removed; the failover one never created
    removed = [a for a in result["rollback"]["actions"] if a["name"] == "bbws-prod-timeout-bucket"]
    assert [(a["action"], a["status"]) for a in removed] == [("remove-bucket", "done")]
    buckets = [b["Name"] for b in deployments.target_client("s3", account=PROD).list_buckets()["Buckets"]]
    assert "bbws-prod-timeout-bucket-failover" not in buckets
    assert "bbws-prod-timeout-bucket" not in buckets
