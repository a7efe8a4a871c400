"""Pipeline health metrics: what the Dashboard reads, as the handlers print it (EMF on stdout).

Each test runs a step through the real handler adapter (step_handler: inject_lambda_context,
log_metrics, capture_lambda_handler), so the flush is the one Lambda does, and reads the EMF
blobs back from stdout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import time_machine
import yaml

from deployer import observability
from deployer.approval_steps import approval_wait_elapsed
from deployer.approvals import ApprovalStore
from deployer.checks import CheckResult
from deployer.errors import ApprovalExpired, ValidationFailed
from deployer.interactions import InteractionContext, slack_interaction
from deployer.models import DeploymentContext
from deployer.observability import logger, metrics, step_handler
from deployer.pipeline import record_outcome, validate
from deployer.resources import WaitConfig
from deployer.rollback_steps import decide_rollback
from deployer.specstore import SpecStore
from deployer.tooling import Tooling
from tests.unit.conftest import ACCOUNT, BASE_SPEC, REGION, records_table
from tests.unit.test_approvals import prod_approval
from tests.unit.test_interactions import SECRET, TEAM, FakeSfn, FakeSlack, World, click, sit_approval

EVENTS = Path(__file__).parents[2] / "events"
NAMESPACE = "BBWS/Deployer"
SERVICE = "bbws-deployer"
STARTED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
SPECS_BUCKET = "bbws-deployer-specs"

# Powertools warns when an invocation flushes no metric, as most steps do: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@dataclass
class FakeLambdaContext:
    function_name: str = "bbws-deployer-step"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:af-south-1:{ACCOUNT}:function:bbws-deployer-step"
    aws_request_id: str = "5e1c0e8a-0000-4000-8000-000000000001"


@dataclass
class Metric:
    """One metric of one EMF blob: its value(s), unit, dimensions (name -> value) and the blob's metadata."""

    name: str
    values: list[float]
    unit: str
    dimensions: dict[str, str]
    blob: dict[str, Any]


class FakeExecutionHistory:
    """The only Step Functions call record_outcome makes, for the post-incident report."""

    def get_execution_history(self, **_: Any) -> dict[str, Any]:
        return {"events": []}


@pytest.fixture
def emf(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The template's Globals for metrics; the shared Metrics resolved them at import, so set them there too."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE)
    monkeypatch.setattr(metrics.provider, "namespace", NAMESPACE)
    monkeypatch.setattr(metrics.provider, "service", SERVICE)
    metrics.clear_metrics()  # whatever other tests added without a handler to flush it
    yield
    metrics.clear_metrics()


@pytest.fixture
def tooling(aws: None, emf: None, monkeypatch: pytest.MonkeyPatch) -> Tooling:
    records_table()
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=SPECS_BUCKET)
    s3.put_bucket_versioning(Bucket=SPECS_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    tooling = Tooling(
        records_table="bbws-deployer-records",
        specs_bucket=SPECS_BUCKET,
        event_bus="",
        wait=WaitConfig(delay_seconds=0, max_attempts=1),
    )
    tooling.__dict__["sfn"] = FakeExecutionHistory()
    monkeypatch.setattr(observability, "tooling", lambda: tooling)
    return tooling


def invoke(step: Any, event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = step_handler(step)(event, FakeLambdaContext())  # type: ignore[arg-type]
    return result


def emitted(capsys: pytest.CaptureFixture[str]) -> list[Metric]:
    """Every metric printed as EMF so far, one entry per metric per blob."""
    found = []
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("{"):
            continue
        blob = json.loads(line)
        if "_aws" not in blob:
            continue  # a log line
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        (dimension_names,) = directive["Dimensions"]  # one dimension set per blob: what the Dashboard searches
        for definition in directive["Metrics"]:
            value = blob[definition["Name"]]
            found.append(
                Metric(
                    name=definition["Name"],
                    values=value if isinstance(value, list) else [value],
                    unit=definition["Unit"],
                    dimensions={name: blob[name] for name in dimension_names},
                    blob=blob,
                )
            )
    return [m for m in found if m.name != "ColdStart"]


def only(found: list[Metric], name: str) -> Metric:
    (metric,) = [m for m in found if m.name == name]
    return metric


def deployment(environment: str = "dev", **changes: Any) -> dict[str, Any]:
    context: dict[str, Any] = load_event("deployment.json")["deployment"]
    return {**context, "environment": environment, **changes}


def open_record(tooling: Tooling, context: dict[str, Any]) -> None:
    tooling.records.create(context["deploymentId"], context["environment"], STARTED, {"regions": context["regions"]})


def outcome_event(context: dict[str, Any], status: str, error: dict[str, str] | None = None) -> dict[str, Any]:
    event = {
        "deploymentId": context["deploymentId"],
        "executionArn": context["executionArn"],
        "deployment": context,
        "status": status,
    }
    return {**event, "error": error} if error else event


# ---------------------------------------------------------------- deployments


def test_a_succeeded_deployment_counts_once_with_its_duration(
    tooling: Tooling, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a DEV deployment whose record was opened at 09:00
    context = deployment("dev")
    open_record(tooling, context)
    capsys.readouterr()
    # WHEN its success is recorded 20 minutes 34.5 seconds later
    with time_machine.travel(STARTED + timedelta(minutes=20, seconds=34.5), tick=False):
        result = invoke(record_outcome, outcome_event(context, "SUCCEEDED"))
    # THEN one Deployments data point, by environment and outcome, and the duration by environment
    assert result["status"] == "SUCCEEDED"
    found = emitted(capsys)
    deployments = only(found, "Deployments")
    assert (deployments.values, deployments.unit) == ([1.0], "Count")
    assert deployments.dimensions == {"environment": "dev", "outcome": "SUCCEEDED", "service": SERVICE}
    duration = only(found, "DeploymentDuration")
    assert (duration.values, duration.unit) == ([1234.5], "Seconds")
    assert duration.dimensions == {"environment": "dev", "service": SERVICE}
    assert "outcome" not in duration.blob  # the outcome dimension stays on its own blob
    # AND every log line of the invocation carried the deployment id
    assert logger.get_correlation_id() == context["deploymentId"]


def test_a_rolled_back_deployment_counts_under_its_own_outcome(
    tooling: Tooling, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a PROD deployment that failed validation and was rolled back
    context = deployment("prod", deploymentId="prod-20261126T090000Z-0a1b2c3d")
    open_record(tooling, context)
    capsys.readouterr()
    error = {"Error": "ValidationFailed", "Cause": "af-south-1 bbws-prod-data bucket.versioning: Suspended"}
    # WHEN the rollback's outcome is recorded an hour after the start
    with time_machine.travel(STARTED + timedelta(hours=1), tick=False):
        result = invoke(record_outcome, outcome_event(context, "ROLLED_BACK", error))
    # THEN it counts as ROLLED_BACK (not SUCCEEDED or FAILED), and its duration is recorded
    assert result["detailType"] == "Rollback Completed"
    found = emitted(capsys)
    deployments = only(found, "Deployments")
    assert deployments.values == [1.0]
    assert deployments.dimensions == {"environment": "prod", "outcome": "ROLLED_BACK", "service": SERVICE}
    assert only(found, "DeploymentDuration").values == [3600.0]


def test_a_rejected_input_counts_under_unknown_not_its_free_text_environment(
    tooling: Tooling, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an execution whose input never validated ("DEV!" is no environment)
    event = load_event("record_outcome_rejected.json")
    # WHEN its failure is recorded
    invoke(record_outcome, event)
    # THEN it counts as FAILED without minting a metric for whatever the input said
    deployments = only(emitted(capsys), "Deployments")
    assert deployments.dimensions == {"environment": "unknown", "outcome": "FAILED", "service": SERVICE}
    assert logger.get_correlation_id() == event["deploymentId"]


# ---------------------------------------------------------------- approvals


@pytest.fixture
def clicks(aws: None, emf: None, monkeypatch: pytest.MonkeyPatch) -> World:
    """A SIT approval (one approver needed) behind the Slack endpoint's handler."""
    table = records_table()
    store = ApprovalStore(table)
    approval = sit_approval()
    store.create(approval)
    sfn, slack, clock = FakeSfn(), FakeSlack(), [approval.created_at]
    ctx = InteractionContext(store, sfn, slack, SECRET, TEAM, now=lambda: clock[0])  # type: ignore[arg-type]

    class SlackTooling:
        def interaction_context(self) -> InteractionContext:
            return ctx

    monkeypatch.setattr(observability, "tooling", SlackTooling)
    return World(table, store, sfn, slack, clock, ctx)


def test_an_approval_reaching_quorum_reports_how_long_it_waited(
    clicks: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a SIT approval opened at 09:00 (so far, no one has clicked)
    approval = clicks.store.get("apv-0123456789abcdef")
    assert approval is not None
    # WHEN its one required approver approves 754 seconds later, through the API Gateway handler
    response = invoke(slack_interaction, click(clicks, "U0SITLEAD1", "approve", seconds_later=754))
    # THEN the click decided it, and the wait from opened to decided is recorded by environment
    assert json.loads(response["body"])["outcome"] == "approved"
    wait = only(emitted(capsys), "ApprovalWait")
    assert (wait.values, wait.unit) == ([754.0], "Seconds")
    assert wait.dimensions == {"environment": "sit", "service": SERVICE}
    assert wait.blob["decision"] == "approved"
    # AND the logs of the Slack request carry the approval's deployment id, not the API request id
    assert logger.get_correlation_id() == approval.deployment_id


def test_a_rejection_reports_its_wait_and_a_mere_vote_reports_nothing(
    clicks: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the SIT approval needs two approvers now
    approval = clicks.store.get("apv-0123456789abcdef")
    assert approval is not None
    clicks.table.delete_item(Key={"pk": f"APPROVAL#{approval.approval_id}", "sk": "APPROVAL"})
    clicks.store.create(replace(approval, required=2))
    # WHEN one approves after a minute (no decision yet), the other rejects after two
    invoke(slack_interaction, click(clicks, "U0SITLEAD1", "approve", seconds_later=60))
    assert emitted(capsys) == []
    invoke(slack_interaction, click(clicks, "U0SITENG02", "reject", seconds_later=60))
    # THEN the rejection made it final: one ApprovalWait of 120 seconds
    wait = only(emitted(capsys), "ApprovalWait")
    assert wait.values == [120.0]
    assert wait.blob["decision"] == "rejected"


def test_a_refused_slack_request_is_correlated_by_its_api_request_id(
    clicks: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a click whose signature does not verify (so its approval is never read)
    event = click(clicks)
    event["headers"] = {**event["headers"], "X-Slack-Signature": "v0=" + "0" * 64}
    # WHEN it arrives / THEN it is refused, no metric, and the logs carry API Gateway's request id
    assert invoke(slack_interaction, event)["statusCode"] == 401
    assert emitted(capsys) == []
    assert logger.get_correlation_id() == event["requestContext"]["requestId"]


def test_an_expired_approval_reports_its_whole_wait(tooling: Tooling, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a PROD approval opened at 09:00 that expires at 13:00, with no message to update
    context = deployment("prod", deploymentId="prod-20261126T090000Z-0a1b2c3d")
    approval = prod_approval(
        deployment_id=context["deploymentId"],
        created_at=STARTED,
        expires_at=STARTED + timedelta(hours=4),
        message_ts=None,
    )
    tooling.approvals.open(approval, DeploymentContext.model_validate(context).execution_key())
    # WHEN the wait elapses a minute past the deadline
    with (
        time_machine.travel(STARTED + timedelta(hours=4, minutes=1), tick=False),
        pytest.raises(ApprovalExpired),
    ):
        invoke(approval_wait_elapsed, {"deployment": context})
    # THEN the handler still flushed the wait from opened to expired
    wait = only(emitted(capsys), "ApprovalWait")
    assert (wait.values, wait.unit) == ([4 * 3600.0 + 60], "Seconds")
    assert wait.dimensions == {"environment": "prod", "service": SERVICE}
    assert wait.blob["decision"] == "expired"


# ---------------------------------------------------------------- checks and rollbacks


def publish_spec(tooling: Tooling) -> dict[str, Any]:
    """The unit tests' small spec, published like CI does; a deployment context pinned to it."""
    version = SpecStore(boto3.client("s3", region_name="us-east-1"), SPECS_BUCKET).put(
        "test", yaml.safe_dump(BASE_SPEC)
    )
    context = deployment("test", specVersion=version, account=ACCOUNT, regions=[REGION])
    open_record(tooling, context)
    return context


def test_failed_validation_counts_each_failed_check(tooling: Tooling, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a deployment whose bucket and table were never created
    context = publish_spec(tooling)
    capsys.readouterr()
    # WHEN the region is validated
    with pytest.raises(ValidationFailed):
        invoke(validate, {"deployment": context, "region": REGION})
    # THEN FailedChecks is the number of checks that failed, by environment, their names as metadata
    record = tooling.records.get(context["deploymentId"])
    assert record is not None
    failed = [c for c in record["checks"][REGION] if not c["passed"]]
    assert failed
    metric = only(emitted(capsys), "FailedChecks")
    assert (metric.values, metric.unit) == ([float(len(failed))], "Count")
    assert metric.dimensions == {"environment": "test", "service": SERVICE}
    assert metric.blob["stage"] == "validation"
    assert metric.blob["checks"] == [f"{c['name']} {c['region']}/{c['resource']}" for c in failed]


def test_a_rollback_counts_when_decided_with_its_criterion_as_metadata(
    tooling: Tooling, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a deployment whose validation found its bucket open to public policies (no grace period: at once)
    context = publish_spec(tooling)
    check = {
        "name": "bucket.public-access-block",
        "region": REGION,
        "resource": BASE_SPEC["resources"]["buckets"][0]["name"],
        "passed": False,
        "detail": "BlockPublicPolicy is False, expected True",
        "recovered": False,
    }
    tooling.records.merge_region(context["deploymentId"], "checks", REGION, [check])
    capsys.readouterr()
    error = {"Error": "ValidationFailed", "Cause": "bucket.public-access-block: BlockPublicPolicy is False"}
    # WHEN the failure is classified
    decision = invoke(decide_rollback, {"deployment": context, "error": error})
    # THEN a rollback that starts counts once, by environment; the criterion is no dimension
    assert decision["response"] == "rollback"
    metric = only(emitted(capsys), "Rollbacks")
    assert (metric.values, metric.unit) == ([1.0], "Count")
    assert metric.dimensions == {"environment": "test", "service": SERVICE}
    assert metric.blob["criterion"] == decision["criterion"]


def test_checks_that_all_pass_emit_no_failed_checks(emf: None) -> None:
    # GIVEN only passing checks / WHEN they are counted / THEN nothing is added to the invocation's metrics
    observability.record_failed_checks("dev", "preflight", [CheckResult("identity", "global", "dev", True, "ok")])
    assert metrics.metric_set == {}
