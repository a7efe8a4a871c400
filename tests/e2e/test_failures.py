"""Failure paths: every one is recorded, releases the lock and ends with the domain error's name."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.sandbox_fixtures import REPO, TARGET_ACCOUNTS, Deployments, EventCapture, deployer, wait_for


def test_sit_that_dev_never_ran_is_refused_naming_dev(deployments: Deployments) -> None:
    # GIVEN a fresh sandbox: DEV never ran this resources spec (this test runs before any DEV deployment here)
    assert deployments.stack.records.history("dev", 1) == []
    # WHEN SIT is deployed
    refused = deployments.run("sit", requested_by="alice", change_ticket="CHG-98")
    # THEN preflight refuses it, naming DEV as the missing link, before any approval is asked for
    assert (refused["status"], refused["error"]) == ("FAILED", "PreflightFailed"), refused
    (promotion,) = [c for c in refused["preflight"] if c["name"] == "promotion"]
    assert not promotion["passed"]
    assert "sit only receives a resources spec that succeeded in dev;" in promotion["detail"]
    assert promotion["detail"].endswith("is missing in: dev (no dev deployment yet)")
    assert "RequestApproval" not in deployments.states_entered(refused["executionArn"])


def test_concurrent_deployment_of_one_environment_fails_with_lock_held(deployments: Deployments) -> None:
    # GIVEN a DEV deployment that is provisioning (held there by a slow provisioning function)
    provision = f"{deployments.sandbox.stack_name}-provision"
    with deployments.sandbox.runtime.paused(provision):  # type: ignore[union-attr]
        first = deployments.start("dev", requested_by="first")
        wait_for(lambda: "ProvisionShard" in deployments.states_entered(first), "provisioning to start")
        # WHEN a second DEV deployment starts
        second = deployments.finish(deployments.start("dev", requested_by="second"))
    first_result = deployments.finish(first)

    # THEN the second fails with LockHeld naming the holder, and the first is unaffected
    assert second["status"] == "FAILED"
    assert second["error"] == "LockHeld"
    assert first_result["deploymentId"] in second["cause"]
    assert "first" in second["cause"]
    assert "Preflight" not in deployments.states_entered(second["executionArn"])
    assert first_result["status"] == "SUCCEEDED"
    assert deployments.stack.records.lock_holder("dev") is None


def test_stale_lock_lease_expires(deployments: Deployments) -> None:
    # GIVEN a lock left behind by a crashed deployment whose lease has run out
    from datetime import UTC, datetime, timedelta

    records = deployments.stack.records
    records.acquire_lock("dev", "crashed-deployment", "ghost", 60, datetime.now(UTC) - timedelta(hours=2))
    # WHEN a new DEV deployment runs
    result = deployments.run("dev")
    # THEN it takes the expired lease and succeeds
    assert result["status"] == "SUCCEEDED", result
    assert records.lock_holder("dev") is None


def test_a_lease_taken_over_mid_deployment_stops_the_next_step_with_lock_lost(deployments: Deployments) -> None:
    # GIVEN a deployment waiting for approval, whose lease then ran out and another deployment took the lock
    from datetime import UTC, datetime, timedelta

    deployments.approval_spec("dev-e2e-lease", "U0LEASE001", "C0DEVLEASE")
    arn = deployments.start("dev-e2e-lease")
    approval = deployments.approval(arn)
    records = deployments.stack.records
    records.release_lock("dev-e2e-lease", arn.rsplit(":", 1)[1])  # as if its lease had run out and been taken
    records.acquire_lock("dev-e2e-lease", "dev-e2e-lease-other", "bob", 3600, datetime.now(UTC) + timedelta(hours=1))
    # WHEN it is approved and takes its next step
    deployments.click(approval, "U0LEASE001")
    result = deployments.finish(arn)
    # THEN that step stops it with LockLost, naming the holder, before anything is applied
    assert (result["status"], result["error"]) == ("FAILED", "LockLost"), result
    assert "locked by deployment dev-e2e-lease-other (requested by bob)" in result["cause"]
    assert "Provision" not in deployments.states_entered(arn)
    assert result["mutatingCalls"] == 0
    # AND the other deployment still holds the lock
    holder = records.lock_holder("dev-e2e-lease")
    assert holder is not None
    assert holder["deploymentId"] == "dev-e2e-lease-other"


def test_deployer_unlock_refuses_a_running_holder_and_frees_a_dead_one(deployments: Deployments) -> None:
    from datetime import UTC, datetime

    # GIVEN a deployment waiting for its approval: RUNNING, holding its environment's lock
    deployments.approval_spec("dev-e2e-unlock", "U0UNLOCK01", "C0DEVUNLOCK")
    arn = deployments.start("dev-e2e-unlock")
    approval = deployments.approval(arn)
    # WHEN someone unlocks it THEN `deployer unlock` refuses, naming the running deployment
    refused = deployer(deployments, "unlock", "--env", "dev-e2e-unlock", "--reason", "it looks stuck to me")
    assert refused.returncode == 2
    assert "answered 409" in refused.stderr
    assert "which is still RUNNING" in refused.stderr
    deployments.click(approval, "U0UNLOCK01", "reject")
    assert deployments.finish(arn)["error"] == "ApprovalRejected"
    # GIVEN a lock a crashed deployment left behind (its execution never existed here)
    records = deployments.stack.records
    records.acquire_lock("dev-e2e-unlock", "dev-e2e-unlock-crashed", "ghost", 3600, datetime.now(UTC))
    # WHEN it is unlocked with a reason
    freed = deployer(deployments, "unlock", "--env", "dev-e2e-unlock", "--reason", "crashed worker, INC-77", "--json")
    # THEN the lock is free, the release is kept with who and why, and announced in the environment's channel
    assert freed.returncode == 0, freed.stderr
    assert json.loads(freed.stdout)["released"] == "dev-e2e-unlock-crashed"
    assert records.lock_holder("dev-e2e-unlock") is None
    (kept,) = records.unlocks("dev-e2e-unlock")
    assert (kept["deploymentId"], kept["reason"]) == ("dev-e2e-unlock-crashed", "crashed worker, INC-77")
    assert kept["releasedBy"].startswith("arn:aws:iam::123456789012:")

    def announced() -> list[dict[str, Any]]:
        return [
            m
            for m in deployments.slack_messages()
            if m.get("channel") == "C0DEVUNLOCK" and "lock released by hand" in json.dumps(m)
        ]

    (message,) = wait_for(announced, "the release announced in Slack")
    assert "crashed worker, INC-77" in json.dumps(message)


def test_failing_write_check_rolls_back_and_releases_the_lock(
    deployments: Deployments, bus_events: EventCapture
) -> None:
    # GIVEN an environment whose existing bucket has a policy denying object writes
    bucket = "bbws-e2e-denied-bucket"
    deployments.spec(
        "dev-e2e-denied",
        resources={"buckets": [{"name": bucket}]},
    )
    s3 = deployments.target_client("s3")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "af-south-1"})
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                    }
                ],
            }
        ),
    )

    # WHEN it is deployed
    result = deployments.run("dev-e2e-denied")

    # THEN the write check fails with AccessDenied on a bucket this deployment changed: a configuration
    # error (runbook section 9), so it is rolled back, and the lock is free
    assert result["status"] == "ROLLED_BACK"
    assert result["error"] == "ValidationFailed"
    assert result["rollback"]["criterion"] == "configurationError"
    failed = [c for c in result["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["bucket.write-read-delete"]
    assert re.search("AccessDenied|Forbidden", failed[0]["detail"])
    assert "bucket.write-read-delete" in result["cause"]
    assert any(c["passed"] for c in result["checks"])  # the other checks still ran
    assert deployments.stack.records.lock_holder("dev-e2e-denied") is None
    events = bus_events.for_deployment(result["deploymentId"])
    assert [e["detail-type"] for e in events] == ["Deployment Started", "Rollback Started", "Rollback Completed"]
    assert events[2]["detail"]["error"] == "ValidationFailed"


def test_bucket_owned_by_another_account_fails_preflight_naming_it(deployments: Deployments) -> None:
    # GIVEN a bucket name already taken in the SIT account
    bucket = "bbws-e2e-taken-bucket"
    deployments.target_client("s3", account=TARGET_ACCOUNTS["sit"]).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "af-south-1"}
    )
    deployments.spec(
        "dev-e2e-taken",
        resources={
            "buckets": [{"name": bucket}],
            "tables": [{"name": "Site-E2E-Taken", "partitionKey": {"name": "SiteId"}}],
        },
    )

    # WHEN a DEV-account environment that wants that name is deployed
    result = deployments.run("dev-e2e-taken")

    # THEN preflight fails naming the bucket, and nothing was created
    assert result["status"] == "FAILED"
    assert result["error"] == "PreflightFailed"
    assert f"bucket {bucket} exists in another AWS account" in result["cause"]
    failed = [c for c in result["preflight"] if not c["passed"]]
    assert [(c["name"], c["resource"]) for c in failed] == [("bucket.name-available", bucket)]
    assert "Plan" not in deployments.states_entered(result["executionArn"])
    tables = deployments.target_client("dynamodb").list_tables()["TableNames"]
    assert "Site-E2E-Taken" not in tables
    assert deployments.stack.records.lock_holder("dev-e2e-taken") is None


def test_approval_quorum_out_of_reach_without_the_requester_fails_preflight(deployments: Deployments) -> None:
    # GIVEN an environment whose one approver is also the one requesting the deployment
    approvals = {
        "required": 1,
        "approvers": [{"slackUserId": "U0ONLY0001", "name": "only-approver"}],
        "channel": "C0E2E",
    }
    deployments.spec(
        "dev-e2e-quorum",
        policy={"approvals": approvals, "lockLeaseMinutes": 90},
        resources={"buckets": [{"name": "bbws-e2e-quorum"}]},
    )
    # WHEN that approver requests it
    result = deployments.run("dev-e2e-quorum", requested_by="only-approver")
    # THEN preflight refuses before any approval is asked for
    assert result["error"] == "PreflightFailed"
    assert "other than the requester only-approver" in result["cause"]
    assert "RequestApproval" not in deployments.states_entered(result["executionArn"])


def test_missing_change_ticket_fails_preflight(deployments: Deployments) -> None:
    # GIVEN an environment whose policy requires a change ticket
    deployments.spec(
        "dev-e2e-ticket",
        policy={"changeTicket": {"required": True}},
        resources={"buckets": [{"name": "bbws-e2e-ticket"}]},
    )
    # WHEN it is deployed without one
    result = deployments.run("dev-e2e-ticket")
    # THEN preflight names the missing ticket
    assert result["error"] == "PreflightFailed"
    failed = [c["name"] for c in result["preflight"] if not c["passed"]]
    assert failed == ["change-ticket"]


def test_invalid_execution_input_fails_with_input_invalid_naming_the_fields(deployments: Deployments) -> None:
    # GIVEN someone starts an execution from the console with a bad input
    sfn = deployments.stack.client("stepfunctions")
    bad = {"environment": "DEV!", "dryRun": "sometimes", "colour": "blue"}
    arn = sfn.start_execution(stateMachineArn=deployments.stack.state_machine_arn, input=json.dumps(bad))[
        "executionArn"
    ]
    # WHEN it runs
    result = deployments.finish(arn)
    # THEN it fails with InputInvalid, naming every offending field, and the failure is recorded
    assert result["status"] == "FAILED"
    assert result["error"] == "InputInvalid"
    for field in ("environment", "requestedBy", "dryRun", "colour"):
        assert field in result["cause"]
    record = deployments.stack.records.get(result["deploymentId"])
    assert record is not None
    assert record["error"] == "InputInvalid"
    assert record["input"] == bad


def test_unknown_environment_fails_with_spec_not_found(deployments: Deployments) -> None:
    sfn = deployments.stack.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=deployments.stack.state_machine_arn,
        input=json.dumps({"environment": "qa", "requestedBy": "pytest"}),
    )["executionArn"]
    result = deployments.finish(arn)
    assert result["error"] == "SpecNotFound"
    assert "'qa'" in result["cause"]


def test_invalid_spec_in_the_store_fails_with_spec_invalid_naming_file_and_field(deployments: Deployments) -> None:
    # GIVEN a spec put into the store by hand (bypassing the CLI's validation) with a bad field
    s3 = deployments.stack.client("s3")
    bucket = deployments.stack.outputs["SpecsBucketName"]
    text = (REPO / "environments" / "dev.yaml").read_text().replace("environment: dev", "environment: dev-e2e-broken")
    s3.put_object(Bucket=bucket, Key="environments/dev-e2e-broken.yaml", Body=text.replace("type: S", "type: STRING"))
    # WHEN a deployment of it is started from the console
    sfn = deployments.stack.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=deployments.stack.state_machine_arn,
        input=json.dumps({"environment": "dev-e2e-broken", "requestedBy": "pytest"}),
    )["executionArn"]
    result = deployments.finish(arn)
    # THEN it fails with SpecInvalid naming the stored file and the field
    assert result["error"] == "SpecInvalid"
    assert f"s3://{bucket}/environments/dev-e2e-broken.yaml" in result["cause"]
    assert "resources.tables[0].partitionKey.type:" in result["cause"]


def test_stopping_a_deployment_during_its_approval_wait_frees_the_lock_and_closes_it_aborted(
    deployments: Deployments,
) -> None:
    # GIVEN a deployment waiting for its approval: RUNNING, holding its environment's lock
    deployments.approval_spec("dev-e2e-abort", "U0ABORT001", "C0DEVABORT")
    arn = deployments.start("dev-e2e-abort")
    approval = deployments.approval(arn)
    records, deployment_id = deployments.stack.records, arn.rsplit(":", 1)[1]
    holder = records.lock_holder("dev-e2e-abort")
    assert holder is not None
    assert holder["deploymentId"] == deployment_id
    # WHEN someone stops its execution (the console's "Stop execution")
    deployments.sandbox.client("stepfunctions").stop_execution(executionArn=arn, cause="wrong change ticket")
    # THEN the lock is freed and the record closed as ABORTED, without waiting out the lease
    wait_for(lambda: records.lock_holder("dev-e2e-abort") is None, "the lock to be released")
    record = records.get(deployment_id)
    assert record is not None
    assert (record["status"], record["executionStatus"], record["cause"]) == (
        "ABORTED",
        "ABORTED",
        "wrong change ticket",
    )
    assert record["mutatingCalls"] == 0

    # ... announced in the deployment's thread in the environment's channel
    def announced() -> list[dict[str, Any]]:
        return [
            m
            for m in deployments.slack_messages()
            if m.get("channel") == "C0DEVABORT" and "dev-e2e-abort deployment aborted" in m.get("text", "")
        ]

    (message,) = wait_for(announced, "the abort announced in Slack")
    assert message["thread_ts"] == record["notifyThreadTs"]
    text = json.dumps(message)
    assert "Its record is closed as `ABORTED`." in text
    assert "The dev-e2e-abort lock it held is released." in text
    # ... `deployer status` says ABORTED
    status = deployer(deployments, "status", arn, "--json")
    assert status.returncode == 1
    assert (json.loads(status.stdout)["status"], json.loads(status.stdout)["executionStatus"]) == ("ABORTED", "ABORTED")
    # ... a late approval click approves nothing
    deployments.click(approval, "U0ABORT001")
    assert deployments.stack.client("stepfunctions").describe_execution(executionArn=arn)["status"] == "ABORTED"
    # AND the next deployment of the environment takes the lock (it used to fail LockHeld until the lease ran out)
    following = deployments.start("dev-e2e-abort")
    deployments.click(deployments.approval(following), "U0ABORT001", "reject")
    assert deployments.finish(following)["error"] == "ApprovalRejected"


def test_stopping_a_deployment_while_it_provisions_keeps_the_lock_while_the_function_may_run(
    deployments: Deployments,
) -> None:
    # GIVEN a deployment provisioning (its provisioning function held, as a slow AWS would)
    environment = "dev-e2e-inflight"
    deployments.spec(environment, resources={"buckets": [{"name": f"bbws-{environment}-bucket"}]})
    records, sfn = deployments.stack.records, deployments.sandbox.client("stepfunctions")
    with deployments.sandbox.runtime.paused(f"{deployments.sandbox.stack_name}-provision"):  # type: ignore[union-attr]
        arn = deployments.start(environment)
        wait_for(lambda: "ProvisionShard" in deployments.states_entered(arn), "provisioning to start")
        deployment_id = arn.rsplit(":", 1)[1]
        lease = records.lock_holder(environment)
        assert lease is not None
        # WHEN its execution is stopped while the function still runs (Step Functions does not stop it)
        stopped = sfn.stop_execution(executionArn=arn)["stopDate"]

        def announced() -> list[dict[str, Any]]:
            return [m for m in deployments.slack_messages() if f"{environment} deployment aborted" in m.get("text", "")]

        (message,) = wait_for(announced, "the abort announced in Slack")
        # THEN the record is closed ABORTED, but the lock stays with it until the function cannot be running
        record = records.get(deployment_id)
        assert record is not None
        assert record["status"] == "ABORTED"
        holder = records.lock_holder(environment)
        assert holder is not None
        assert holder["deploymentId"] == deployment_id
        assert stopped.timestamp() + 900 <= holder["lockExpiresAt"] < lease["lockExpiresAt"]
        assert "ProvisionShard was still running when the execution ended" in json.dumps(message)
