"""The `deployer` command as users run it, against a running sandbox (`--endpoint-url`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from deployer_cli import main
from tests.sandbox_fixtures import REPO, Deployments, deployer

# SIT only receives what DEV ran (its promotion rule): DEV deploys first, once per module.
pytestmark = pytest.mark.usefixtures("promoted_to_sit")


def test_run_json_prints_exactly_one_object_and_exits_zero_on_success(deployments: Deployments) -> None:
    completed = deployer(deployments, "run", "--env", "dev", "--requested-by", "ci-bot", "--json")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)  # the whole of stdout is one JSON object
    assert result["status"] == "SUCCEEDED"
    assert result["error"] is None
    assert result["environment"] == "dev"
    assert result["regions"] == ["af-south-1"]
    assert set(result["plan"]) >= {"add", "change", "unchanged", "resources"}
    assert result["stateTransitions"] > 10
    assert result["durationSeconds"] > 0
    assert all({"name", "region", "resource", "passed", "detail"} <= set(c) for c in result["checks"])
    assert "StartDeployment" in completed.stderr  # progress, state by state, on stderr


def test_run_exits_one_and_names_the_error_when_the_deployment_fails(deployments: Deployments) -> None:
    completed = deployer(
        deployments, "run", "--env", "sit", "--change-ticket", "CHG-1", "--reject-as", "sit-lead", "--json"
    )
    assert completed.returncode == 1
    result = json.loads(completed.stdout)
    assert result["status"] == "FAILED"
    assert result["error"] == "ApprovalRejected"
    assert [(a["name"], a["decision"]) for a in result["approvals"]] == [("sit-lead", "reject")]


def test_sit_approved_from_the_command_line(deployments: Deployments) -> None:
    completed = deployer(
        deployments, "run", "--env", "sit", "--change-ticket", "CHG-2", "--requested-by", "alice",
        "--approve-as", "sit-lead", "--json",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["status"] == "SUCCEEDED"
    assert result["approvalId"].startswith("apv-")
    assert [(a["user"], a["decision"]) for a in result["approvals"]] == [("U0SITLEAD1", "approve")]
    assert "approve as sit-lead: approved" in completed.stderr


def test_prod_with_two_approvers_from_the_command_line(deployments: Deployments) -> None:
    # GIVEN SIT succeeded with this spec (above), and change CHG-4 is announced for the first window a day ahead
    at = deployments.sandbox.first_announceable("prod")
    announced = deployer(
        deployments, "announce", "--env", "prod", "--change-ticket", "CHG-4", "--at", at.isoformat(),
        "--requested-by", "alice",
    )  # fmt: skip
    assert announced.returncode == 0, announced.stderr
    assert announced.stdout.startswith("prod change CHG-4 announced: ")
    # AND that window has come (simulated)
    deployments.sandbox.travel(at)
    # WHEN PROD runs with two approvers clicking
    completed = deployer(
        deployments, "run", "--env", "prod", "--change-ticket", "CHG-4", "--requested-by", "alice",
        "--release-tag", f"v{at:%Y.%m.%d}-prod-cli",
        "--approve-as", "senior-engineer-1", "--approve-as", "senior-engineer-2", "--json",
    )  # fmt: skip
    # THEN it succeeds in both regions with replication checked
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["status"] == "SUCCEEDED"
    assert result["regions"] == ["af-south-1", "eu-west-1"]
    assert {c["region"] for c in result["checks"]} == {"eu-west-1", "af-south-1"}
    replication = [c for c in result["checks"] if c["name"].startswith(("replication.", "replica."))]
    assert len(replication) == 4
    assert all(c["passed"] for c in replication)
    assert [a["name"] for a in result["approvals"]] == ["senior-engineer-1", "senior-engineer-2"]


def test_approve_command_clicks_through_the_api(deployments: Deployments) -> None:
    # GIVEN a PROD deployment (inside its window; SIT ran this spec above) waiting for its two approvals
    deployments.announce("prod", "CHG-3")
    arn = deployments.start("prod", requested_by="alice", change_ticket="CHG-3")
    approval = deployments.approval(arn)
    # WHEN two approvers approve with `deployer approve`
    first = deployer(deployments, "approve", approval.approval_id, "--as", "senior-engineer-1")
    second = deployer(deployments, "approve", approval.approval_id, "--as", "U0SENIOR02")
    # THEN each click is reported, and the second reaches the quorum
    assert first.returncode == 0, first.stderr
    assert "recorded" in first.stdout
    assert "approved" in second.stdout
    assert deployments.finish(arn)["status"] == "SUCCEEDED"
    # AND a click from someone who is not an approver fails
    outsider = deployer(deployments, "reject", approval.approval_id, "--as", "U0NOBODY01")
    assert outsider.returncode == 1


def test_invalid_spec_is_refused_before_anything_starts(deployments: Deployments, tmp_path: Path) -> None:
    spec = (REPO / "environments" / "dev.yaml").read_text().replace("name: SiteId", "name: ''")
    (tmp_path / "dev.yaml").write_text(spec.replace("versioning: true", "versioning: sometimes"))
    before = deployments.stack.records.history("dev", 100)

    completed = deployer(deployments, "run", "--env", "dev", "--spec-dir", str(tmp_path))

    assert completed.returncode == 2
    assert f"{tmp_path / 'dev.yaml'}: resources.buckets[0].versioning:" in completed.stderr
    assert "resources.tables[0].partitionKey.name:" in completed.stderr
    assert deployments.stack.records.history("dev", 100) == before


def test_invalid_request_is_refused_with_the_field_named(deployments: Deployments) -> None:
    completed = deployer(deployments, "run", "--env", "dev", "--requested-by", "bad\nname")
    assert completed.returncode == 2
    assert "InputInvalid" in completed.stderr
    assert "requestedBy" in completed.stderr


def test_plan_status_and_history(deployments: Deployments) -> None:
    planned = deployer(deployments, "plan", "--env", "dev", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["status"] == "PLANNED"
    assert plan["mutatingCalls"] == 0

    status = deployer(deployments, "status", plan["executionArn"], "--json")
    assert json.loads(status.stdout)["deploymentId"] == plan["deploymentId"]

    history = deployer(deployments, "history", "--env", "dev", "--json")
    assert history.returncode == 0
    assert json.loads(history.stdout)[0]["deploymentId"] == plan["deploymentId"]  # newest first


def test_unknown_stack_is_a_clear_error(deployments: Deployments) -> None:
    completed = deployer(deployments, "history", "--env", "dev", "--stack-name", "no-such-stack")
    assert completed.returncode == 2
    assert "stack no-such-stack not found" in completed.stderr


def test_cli_requires_an_environment() -> None:
    with pytest.raises(SystemExit) as exit_:
        main.main(["run"])
    assert exit_.value.code == 2


def test_sandbox_command_serves_until_interrupted(tmp_path: Path) -> None:
    # GIVEN `deployer sandbox` started as a server on a free port
    # (its log goes to a file: an unread pipe would block the server once its buffer filled)
    log = tmp_path / "sandbox.log"
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "deployer_cli.main", "sandbox", "--port", "0", "--slack-signing-secret", "s3cr3t"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=REPO,
        )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())  # one JSON line
        assert info["slackSigningSecret"] == "s3cr3t"
        assert {"endpoint", "api", "slack"} <= set(info)
        # WHEN a client uses the endpoint it printed
        session = boto3.Session(
            aws_access_key_id=info["credentials"]["accessKeyId"],
            aws_secret_access_key=info["credentials"]["secretAccessKey"],
        )
        cfn = session.client("cloudformation", endpoint_url=info["endpoint"], region_name=info["region"])
        outputs = cfn.describe_stacks(StackName=info["stackName"])["Stacks"][0]["Outputs"]
        # THEN the stack is installed there, and an interrupt stops the server cleanly
        assert {o["OutputKey"] for o in outputs} >= {"StateMachineArn", "RecordsTableName", "SpecsBucketName"}
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0, log.read_text()[-2000:]
