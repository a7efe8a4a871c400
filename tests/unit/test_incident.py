"""Runbook section 9: classifying failures, deciding rollback or fix forward, and the incident report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deployer.incident import (
    Decision,
    Finding,
    applied_so_far,
    changed_resources,
    classify,
    decide,
    failed_checks,
    incident_report,
    recovered,
    within_grace,
)
from deployer.records import iso
from deployer.spec import Policy, RollbackPolicy

PROD_ACCOUNT = "093646564004"
BUCKET = "bbws-prod-data-bucket"
FAILOVER_BUCKET = "bbws-prod-data-bucket-failover"
TABLE = "Site-Generation-State"
PRIMARY = "af-south-1"
FAILOVER = "eu-west-1"
DEPLOYMENT_ID = "prod-20261126T090000Z-0a1b2c3d"
SECTIONS = [
    "## Summary",
    "## Timeline",
    "## Triggering cause",
    "## Decision",
    "## Rollback actions",
    "## Data counts before/after",
    "## Rollback validation",
    "## Follow-up",
]


def check(name: str, detail: str, resource: str = BUCKET, region: str = PRIMARY, **extra: Any) -> dict[str, Any]:
    return {"name": name, "region": region, "resource": resource, "passed": False, "detail": detail, **extra}


def lambda_cause(error_type: str, message: str) -> str:
    """A Lambda error's cause as Step Functions records it."""
    return json.dumps({"errorType": error_type, "errorMessage": message, "stackTrace": ["  File app.py"]})


def policy(**criteria: str) -> RollbackPolicy:
    return Policy.model_validate({"rollback": {"criteria": criteria}}).rollback


# ---------------------------------------------------------------- classification

CHECK_CASES = [
    pytest.param(
        check("bucket.write-read-delete", "read back 12 bytes that differ from the 40 written"),
        "dataLossRisk",
        id="bucket-write-read-delete-is-data-loss",
    ),
    pytest.param(
        check("table.write-read-delete", "InternalServerError: Internal server error", resource=TABLE),
        "dataLossRisk",
        id="table-write-read-delete-is-data-loss",
    ),
    pytest.param(
        check("bucket.public-access-block", "BlockPublicAcls is False, expected True"),
        "securityExposure",
        id="public-access-block-off",
    ),
    pytest.param(
        check("bucket.public-access-block", "no public access block is configured"),
        "securityExposure",
        id="public-access-block-missing",
    ),
    pytest.param(
        check("bucket.policy", 'statement grants {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}'),
        "securityExposure",
        id="policy-principal-star",
    ),
    pytest.param(
        check("bucket.policy", "bucket policy grants s3:PutObject to unknown account 999999999999"),
        "securityExposure",
        id="policy-unknown-account",
    ),
    pytest.param(
        check("bucket.exists", "EndpointConnectionError: Could not connect to the endpoint URL"),
        "serviceUnavailable",
        id="bucket-unreachable",
    ),
    pytest.param(
        check("bucket.exists", "bucket does not exist"),
        "serviceUnavailable",
        id="bucket-missing",
    ),
    pytest.param(
        check("table.active", "ServiceUnavailable: (503) the service is unavailable", resource=TABLE),
        "serviceUnavailable",
        id="table-5xx",
    ),
    pytest.param(
        check("table.active", "table is CREATING, expected ACTIVE", resource=TABLE),
        "serviceUnavailable",
        id="table-not-active",
    ),
    pytest.param(
        check("replication.object", f"marker object did not reach {FAILOVER_BUCKET} within 120 s"),
        "replicationFailure",
        id="replication-object",
    ),
    pytest.param(
        check("replication.configured", "no replication configuration on the bucket"),
        "replicationFailure",
        id="replication-configured",
    ),
    pytest.param(
        check("replica.active", f"replica in {FAILOVER} is CREATING_FAILED", resource=TABLE),
        "replicationFailure",
        id="replica-active",
    ),
    pytest.param(
        check("replica.item", f"test item not visible in {FAILOVER} after 60 s", resource=TABLE),
        "replicationFailure",
        id="replica-item",
    ),
    pytest.param(
        check("table.key-schema", "LimitExceededException: Subscriber limit exceeded", resource=TABLE),
        "resourceExhaustion",
        id="limit-in-a-check",
    ),
    pytest.param(
        check("bucket.tags", "tag CostCentre is missing"),
        "documentationIssue",
        id="bucket-tags",
    ),
    pytest.param(
        check("table.tags", "tag DataClassification is 'public', expected 'internal'", resource=TABLE),
        "documentationIssue",
        id="table-tags-mentioning-public-is-still-a-label",
    ),
    pytest.param(
        check("monitoring.alarms", "no CloudWatch alarm on ThrottledRequests", resource=TABLE),
        "monitoringGap",
        id="monitoring",
    ),
    pytest.param(
        check("performance.write-latency", "test write took 2400 ms, threshold 1000 ms", resource=TABLE),
        "performanceDegradation",
        id="performance",
    ),
    pytest.param(
        check("table.write-read-delete", "passed on attempt 3 after 40 s", resource=TABLE, passed=True, recovered=True),
        "transientConnectivity",
        id="recovered-on-retry",
    ),
    pytest.param(
        check("bucket.lifecycle", "lifecycle rule ExpireOldVersions is missing"),
        "serviceUnavailable",
        id="unknown-check-fails-safe",
    ),
    pytest.param(
        check("bucket.encryption", "encryption is AES256, expected aws:kms"),
        "serviceUnavailable",
        id="unmapped-known-check-fails-safe",
    ),
]


@pytest.mark.parametrize(("failed", "criterion"), CHECK_CASES)
def test_each_failed_check_maps_to_its_runbook_criterion(failed: dict[str, Any], criterion: str) -> None:
    # GIVEN one failed check, and a deployment that changed no resource's configuration
    # WHEN it is classified
    findings = classify([failed], "ValidationFailed", None, set())

    # THEN there is exactly one finding, for the runbook's criterion, naming the check and resource
    assert findings == [Finding(criterion, failed["name"], failed["resource"], failed["detail"])]  # type: ignore[arg-type]


def test_access_denied_from_a_resource_this_deployment_changed_is_a_configuration_error() -> None:
    # GIVEN writes denied on a bucket whose policy this deployment changed, and on a table it did not touch
    denied = [
        check("bucket.write-read-delete", "AccessDenied: Access Denied"),
        check("bucket.exists", f"bucket is not accessible as account {PROD_ACCOUNT} (403)", resource=FAILOVER_BUCKET),
        check("table.write-read-delete", "AccessDeniedException: not authorized to PutItem", resource=TABLE),
    ]

    # WHEN classified with the changed bucket
    findings = classify(denied, "ValidationFailed", None, {BUCKET})

    # THEN only the changed bucket's denial is ours to roll back as a configuration error;
    # denial elsewhere means the service cannot be used
    assert [(f.resource, f.criterion) for f in findings] == [
        (BUCKET, "configurationError"),
        (FAILOVER_BUCKET, "serviceUnavailable"),
        (TABLE, "serviceUnavailable"),
    ]


def test_access_denied_mentioning_block_public_policy_is_not_a_security_exposure() -> None:
    # GIVEN S3 refusing a policy because public access is blocked (the protection worked)
    denied = check(
        "bucket.write-read-delete",
        "AccessDenied: public policies are blocked by the BlockPublicPolicy block public access setting",
    )

    # WHEN classified for a bucket this deployment changed
    findings = classify([denied], "ValidationFailed", None, {BUCKET})

    # THEN it is a configuration error, not an exposure
    assert [f.criterion for f in findings] == ["configurationError"]


def test_transient_aws_error_after_retries_is_service_unavailability() -> None:
    # GIVEN provisioning gave up on a retryable AWS error, and no check ran
    cause = lambda_cause("TransientAwsError", "ThrottlingException: Rate exceeded (after 10 attempts)")

    # WHEN classified
    findings = classify([], "TransientAwsError", cause, set())

    # THEN the application cannot use S3/DynamoDB: service unavailable, with the error's message
    assert len(findings) == 1
    assert findings[0].criterion == "serviceUnavailable"
    assert findings[0].check is None
    assert "TransientAwsError: ThrottlingException: Rate exceeded" in findings[0].detail


@pytest.mark.parametrize(
    "message",
    [
        "bucket bbws-prod-data-bucket: TooManyBuckets: You have attempted to create more buckets than allowed",
        "table Site-Generation-State: LimitExceededException: too many tables are being created at once",
        "ServiceQuotaExceeded: quota for global tables reached",
    ],
)
def test_provisioning_failed_on_a_limit_is_resource_exhaustion(message: str) -> None:
    # GIVEN provisioning failed because an AWS limit was hit
    cause = lambda_cause("ProvisioningFailed", message)

    # WHEN classified
    findings = classify([], "ProvisioningFailed", cause, {BUCKET, TABLE})

    # THEN it is resource exhaustion
    assert [f.criterion for f in findings] == ["resourceExhaustion"]


def test_provisioning_denied_on_a_changed_resource_is_a_configuration_error() -> None:
    # GIVEN provisioning was denied while changing a resource this deployment changes
    cause = lambda_cause("ProvisioningFailed", f"bucket {BUCKET}: AccessDenied: Access Denied on PutBucketPolicy")

    # WHEN classified
    findings = classify([], "ProvisioningFailed", cause, {BUCKET})

    # THEN the finding blames that resource's configuration
    assert [(f.criterion, f.resource) for f in findings] == [("configurationError", BUCKET)]


def test_an_unexplained_provisioning_failure_fails_safe() -> None:
    # GIVEN provisioning failed for a reason no rule recognises
    findings = classify([], "ProvisioningFailed", "table did not become ACTIVE within 600 s", set())

    # THEN it is treated as service unavailability, which rolls back
    assert [(f.criterion, f.resource) for f in findings] == [("serviceUnavailable", "deployment")]


@pytest.mark.parametrize("error", ["LockHeld", "PreflightFailed", "ApprovalRejected", "OutsideDeploymentWindow"])
def test_errors_before_any_change_have_nothing_to_roll_back(error: str) -> None:
    # GIVEN a deployment stopped before it changed anything
    # WHEN classified
    findings = classify([], error, lambda_cause(error, "stopped"), set())

    # THEN no runbook criterion applies
    assert findings == []


def test_a_refused_plan_after_another_region_changed_is_a_half_applied_configuration_error() -> None:
    # GIVEN the failover region was provisioned, then the primary region's plan was refused
    cause = lambda_cause("PlanRejected", f"{BUCKET}: its replication rule names a bucket of another account")
    # WHEN classified as it stopped before any change, and after one
    assert classify([], "PlanRejected", cause, set()) == []
    (finding,) = classify([], "PlanRejected", cause, set(), applied=True)
    # THEN the half-applied deployment rolls back as a configuration error, saying why
    assert (finding.criterion, finding.resource) == ("configurationError", "deployment")
    assert finding.detail.startswith("the deployment stopped part-way: PlanRejected after changes were applied: ")


def test_a_lost_lock_never_rolls_back_even_after_changes() -> None:
    assert classify([], "LockLost", lambda_cause("LockLost", "locked by deployment x"), set(), applied=True) == []


@pytest.mark.parametrize("error", ["Sandbox.Timedout", "States.Timeout", "Lambda.Unknown", "States.TaskFailed"])
def test_a_function_that_timed_out_or_died_fails_safe_as_service_unavailability(error: str) -> None:
    # GIVEN Provision's function timed out (its changes so far unrecorded)
    findings = classify([], error, "Task timed out after 900.00 seconds", set(), applied=False)
    # THEN it is classified fail-safe, which rolls back what the rollback finds changed
    assert [(f.criterion, f.resource) for f in findings] == [("serviceUnavailable", "deployment")]


def test_applied_so_far_lists_each_regions_changes_and_leaves_unchanged_out() -> None:
    record = {
        "provisioned": {
            FAILOVER: {
                "resources": [
                    {"kind": "bucket", "name": f"{BUCKET}-failover", "action": "add"},
                    {"kind": "table", "name": TABLE, "action": "unchanged"},
                ]
            },
            PRIMARY: {"resources": [{"kind": "table", "name": TABLE, "action": "unchanged"}]},
        }
    }
    assert applied_so_far(record) == {FAILOVER: [f"add bucket {BUCKET}-failover"]}
    assert applied_so_far({}) == {}


def test_validation_failed_without_recorded_checks_is_classified_from_its_message() -> None:
    # GIVEN only the ValidationFailed message survived (one failed check per line)
    message = (
        f"{PRIMARY} {BUCKET} bucket.public-access-block: BlockPublicPolicy is False, expected True\n"
        f"{PRIMARY} {TABLE} table.tags: tag Owner is missing"
    )

    # WHEN classified
    findings = classify([], "ValidationFailed", lambda_cause("ValidationFailed", message), set())

    # THEN each line is classified as the check it names
    assert [(f.check, f.resource, f.criterion) for f in findings] == [
        ("bucket.public-access-block", BUCKET, "securityExposure"),
        ("table.tags", TABLE, "documentationIssue"),
    ]


def test_validation_failed_with_checks_adds_no_second_finding_and_passed_checks_are_ignored() -> None:
    # GIVEN the recorded checks, one failed and one passed, and the ValidationFailed error they caused
    checks = [
        check("bucket.tags", "tag Owner is missing"),
        {**check("bucket.versioning", "versioning is Enabled"), "passed": True},
    ]

    # WHEN classified
    findings = classify(checks, "ValidationFailed", lambda_cause("ValidationFailed", "..."), set())

    # THEN the one failed check is the only finding
    assert [f.check for f in findings] == ["bucket.tags"]


def test_the_same_failure_in_two_regions_is_one_finding() -> None:
    # GIVEN the same replication check failing identically as reported from two regions
    failed = [check("replication.object", "no replica", region=PRIMARY), check("replication.object", "no replica")]

    # THEN it is reported once
    assert len(classify(failed, "ValidationFailed", None, set())) == 1


def test_record_helpers_give_the_failed_checks_and_the_changed_resources() -> None:
    # GIVEN a record with checks in two regions and a plan adding, changing and leaving resources
    record = {
        "checks": {
            PRIMARY: [check("bucket.tags", "tag Owner is missing"), {**check("bucket.exists", "ok"), "passed": True}],
            FAILOVER: [check("replica.item", "missing", resource=TABLE, region=FAILOVER)],
        },
        "plan": {
            "resources": [
                {"kind": "bucket", "name": BUCKET, "action": "change"},
                {"kind": "bucket", "name": FAILOVER_BUCKET, "action": "add"},
                {"kind": "table", "name": TABLE, "action": "unchanged"},
            ]
        },
    }

    # THEN the failed checks carry their region, and only added/changed resources count as changed
    assert [(c["region"], c["name"]) for c in failed_checks(record)] == [
        (PRIMARY, "bucket.tags"),
        (FAILOVER, "replica.item"),
    ]
    assert changed_resources(record) == {BUCKET, FAILOVER_BUCKET}


# ---------------------------------------------------------------- decision


def finding(criterion: str, check_name: str | None = "bucket.tags", resource: str = BUCKET) -> Finding:
    return Finding(criterion, check_name, resource, "detail")  # type: ignore[arg-type]


def test_a_rollback_criterion_rolls_back_by_default() -> None:
    # GIVEN a data-loss finding under the runbook's default policy
    decision = decide([finding("dataLossRisk", "bucket.write-read-delete")], RollbackPolicy())

    # THEN the deployment rolls back, citing the criterion, the grace period, the check and resource
    assert decision.response == "rollback"
    assert decision.criterion == "dataLossRisk"
    assert "5-minute grace period" in decision.reason
    assert f"bucket.write-read-delete on {BUCKET}" in decision.reason


GRACE_START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("criterion", ["serviceUnavailable", "dataLossRisk"])
def test_a_criterion_with_a_grace_period_is_rechecked_until_it_has_lasted_that_long(criterion: str) -> None:
    # GIVEN a rollback decision for a criterion the runbook gives 5 minutes, first seen at GRACE_START
    decision = decide([finding(criterion, "bucket.write-read-delete")], RollbackPolicy())
    # WHEN it has lasted 0 s, 4 min 30 s, then 5 min
    first = within_grace(decision, RollbackPolicy(), GRACE_START, GRACE_START)
    later = within_grace(decision, RollbackPolicy(), GRACE_START, GRACE_START + timedelta(minutes=4, seconds=30))
    last = within_grace(decision, RollbackPolicy(), GRACE_START, GRACE_START + timedelta(minutes=5))
    # THEN it is re-checked (a minute apart, never past the grace period), then rolled back saying how long it lasted
    assert (first["response"], first["waitSeconds"], first["graceSince"]) == ("recheck", 60, iso(GRACE_START))
    assert (later["response"], later["waitSeconds"]) == ("recheck", 30)
    assert f"{criterion} for 270 s, within its 5-minute grace period" in later["reason"]
    assert last["response"] == "rollback"
    assert last["reason"].endswith("still failing after 300 s, beyond the 5-minute grace period")


def test_criteria_without_a_grace_period_and_a_zero_grace_decide_at_once() -> None:
    security = decide([finding("securityExposure", "bucket.public-access-block")], RollbackPolicy())
    assert within_grace(security, RollbackPolicy(), GRACE_START, GRACE_START)["response"] == "rollback"
    unavailable = decide([finding("serviceUnavailable", "bucket.exists")], RollbackPolicy())
    no_grace = RollbackPolicy(transient_grace_minutes=0)
    assert within_grace(unavailable, no_grace, GRACE_START, GRACE_START)["response"] == "rollback"
    # ... and a fix forward is never held back
    slow = decide([finding("performanceDegradation", "performance.latency")], RollbackPolicy())
    assert within_grace(slow, RollbackPolicy(), GRACE_START, GRACE_START)["response"] == "fixForward"


def test_a_failure_that_cleared_within_its_grace_period_is_a_fix_forward_saying_how_long_it_lasted() -> None:
    decision = decide([finding("serviceUnavailable", "bucket.write-read-delete")], RollbackPolicy())
    recheck = {**within_grace(decision, RollbackPolicy(), GRACE_START, GRACE_START), "applied": {PRIMARY: ["x"]}}
    fixed = recovered(recheck, GRACE_START + timedelta(seconds=95))
    assert (fixed["response"], fixed["criterion"]) == ("fixForward", "transientConnectivity")
    assert fixed["reason"].startswith("fix forward: serviceUnavailable cleared after 95 s, within its grace period")
    assert [f["criterion"] for f in fixed["findings"]] == ["transientConnectivity", "serviceUnavailable"]
    assert fixed["applied"] == {PRIMARY: ["x"]}


def test_fix_forward_criteria_only_fix_forward_and_say_why() -> None:
    # GIVEN only a label issue and a monitoring gap
    findings = [finding("monitoringGap", "monitoring.alarms", TABLE), finding("documentationIssue")]

    # WHEN decided under the default policy
    decision = decide(findings, RollbackPolicy())

    # THEN it fixes forward, listing every finding in runbook order
    assert decision.response == "fixForward"
    assert decision.criterion == "monitoringGap"
    assert decision.reason == (
        f"fix forward: monitoringGap (monitoring.alarms on {TABLE}), documentationIssue (bucket.tags on {BUCKET})"
    )


def test_policy_can_turn_a_fix_forward_criterion_into_rollback() -> None:
    # GIVEN an environment whose policy rolls back on documentation issues
    strict = policy(documentationIssue="rollback")

    # WHEN a tag check fails
    decision = decide([finding("documentationIssue")], strict)

    # THEN it rolls back, and the reason says the policy overrode the runbook
    assert decision.response == "rollback"
    assert decision.criterion == "documentationIssue"
    assert "policy override: rollback, runbook: fixForward" in decision.reason


def test_policy_can_turn_a_rollback_criterion_into_fix_forward() -> None:
    # GIVEN a policy that fixes replication forward
    lenient = policy(replicationFailure="fixForward")

    # WHEN replication fails
    decision = decide([finding("replicationFailure", "replication.object")], lenient)

    # THEN it fixes forward
    assert decision.response == "fixForward"
    assert decision.reason.startswith("fix forward: replicationFailure")


def test_mixed_findings_roll_back_on_the_first_criterion_in_runbook_order() -> None:
    # GIVEN fix-forward and rollback findings, in no particular order
    findings = [
        finding("documentationIssue"),
        finding("replicationFailure", "replica.item", TABLE),
        finding("transientConnectivity", "table.write-read-delete", TABLE),
        finding("securityExposure", "bucket.public-access-block"),
        finding("serviceUnavailable", "bucket.exists", FAILOVER_BUCKET),
    ]

    # WHEN decided
    decision = decide(findings, RollbackPolicy())

    # THEN security (before service and replication in the runbook) decides; the others are noted
    assert decision.response == "rollback"
    assert decision.criterion == "securityExposure"
    assert f"also serviceUnavailable (bucket.exists on {FAILOVER_BUCKET}), replicationFailure" in decision.reason
    assert decision.findings == findings


def test_no_findings_means_no_action() -> None:
    decision = decide([], RollbackPolicy())

    assert (decision.response, decision.criterion, decision.findings) == ("none", None, [])


def test_decision_round_trips_through_json() -> None:
    # GIVEN a decision, including an error finding without a check
    decision = decide([finding("serviceUnavailable", None, "deployment")], RollbackPolicy())

    # WHEN it travels through the state machine as JSON
    data = json.loads(json.dumps(decision.to_dict()))

    # THEN it reads back the same
    assert data["response"] == "rollback"
    assert data["findings"] == [
        {"criterion": "serviceUnavailable", "check": None, "resource": "deployment", "detail": "detail"}
    ]
    assert Decision.from_dict(data) == decision


def test_classify_then_decide_for_a_configuration_error_game_day() -> None:
    # GIVEN the checks after a deployment changed a bucket policy that now denies the deployer
    checks = [
        check("bucket.exists", f"bucket is not accessible as account {PROD_ACCOUNT} (403)"),
        check("bucket.write-read-delete", "AccessDenied: Access Denied"),
    ]

    # WHEN classified and decided
    decision = decide(classify(checks, "ValidationFailed", None, {BUCKET}), RollbackPolicy())

    # THEN it rolls back as a configuration error (not a data loss: the cause is our policy)
    assert (decision.response, decision.criterion) == ("rollback", "configurationError")


# ---------------------------------------------------------------- report

T0 = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)


def event(number: int, kind: str, seconds: int, previous: int | None = None, **details: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": number, "type": kind, "timestamp": T0 + timedelta(seconds=seconds), **details}
    if previous is not None:
        data["previousEventId"] = previous
    return data


def entered(number: int, name: str, seconds: int) -> dict[str, Any]:
    return event(number, "TaskStateEntered", seconds, number - 1, stateEnteredEventDetails={"name": name})


def history(final: str = "ExecutionSucceeded") -> list[dict[str, Any]]:
    """An execution that fails validation and then rolls back (Step Functions GetExecutionHistory shape)."""
    failure = {"error": "ValidationFailed", "cause": lambda_cause("ValidationFailed", "bucket.write-read-delete")}
    return [
        event(1, "ExecutionStarted", 0, executionStartedEventDetails={"input": "{}"}),
        entered(2, "Preflight", 1),
        event(3, "TaskScheduled", 1, 2),
        event(4, "TaskSucceeded", 5, 3),
        entered(5, "Provision", 6),
        event(6, "TaskSucceeded", 60, 5),
        entered(7, "Validate", 61),
        event(8, "TaskScheduled", 61, 7),
        event(9, "TaskStarted", 62, 8),
        event(10, "TaskFailed", 90, 9, taskFailedEventDetails=failure),
        entered(11, "Rollback", 91),
        event(12, "TaskSucceeded", 150, 11),
        event(13, final, 151, 12),
    ]


def record(status: str, **changes: Any) -> dict[str, Any]:
    return {
        "deploymentId": DEPLOYMENT_ID,
        "executionArn": f"arn:aws:states:{PRIMARY}:123456789012:execution:bbws-deployer-deployment:{DEPLOYMENT_ID}",
        "environment": "prod",
        "requestedBy": "alice",
        "changeTicket": "JIRA-4321",
        "status": status,
        "error": "ValidationFailed",
        "cause": lambda_cause("ValidationFailed", f"{PRIMARY} {BUCKET} bucket.write-read-delete: InternalError"),
        "startedAt": "2026-11-26T09:00:00.000Z",
        "finishedAt": "2026-11-26T09:02:31.000Z",
        "plan": {"add": 0, "change": 1, "unchanged": 2, "summary": "Plan: 0 to add, 1 to change, 2 unchanged."},
        "checks": {
            PRIMARY: [
                {**check("bucket.exists", "exists"), "passed": True},
                check("bucket.write-read-delete", "InternalError: We encountered an internal error | retry"),
            ]
        },
        **changes,
    }


ROLLBACK_DECISION = decide(
    classify([check("bucket.write-read-delete", "InternalError")], "ValidationFailed", None, {BUCKET}),
    RollbackPolicy(),
).to_dict()
ACTIONS: list[dict[str, Any]] = [
    {"action": "backup", "resource": TABLE, "region": PRIMARY, "result": "ok", "backupArn": "arn:aws:dynamodb:b/1"},
    {"action": "restore-configuration", "resource": BUCKET, "region": PRIMARY, "result": "ok", "detail": "versioning"},
]
COUNTS = {f"table:{TABLE}": 1234, f"bucket:{BUCKET}": 567}
PASSED_VALIDATION = [
    {"name": "bucket.exists", "region": PRIMARY, "resource": BUCKET, "passed": True, "detail": "exists"},
    {"name": "table.active", "region": PRIMARY, "resource": TABLE, "passed": True, "detail": "table is ACTIVE"},
]


def assert_every_section_in_order(report: str) -> None:
    positions = [report.index(section) for section in SECTIONS]
    assert positions == sorted(positions)


def test_report_of_a_rolled_back_deployment_holds_the_whole_incident_record() -> None:
    # GIVEN a deployment whose write check failed, that rolled back and validated
    # WHEN the report is rendered
    report = incident_report(
        record("ROLLED_BACK"), history(), ROLLBACK_DECISION, ACTIONS, COUNTS, dict(COUNTS), PASSED_VALIDATION
    )

    # THEN it names the environment, deployment and outcome, and has every section in order
    assert report.startswith(f"# Incident report: prod · {DEPLOYMENT_ID} · ROLLED_BACK\n")
    assert_every_section_in_order(report)
    # the summary
    assert "| Requested by | alice |" in report
    assert "| Change ticket | JIRA-4321 |" in report
    assert "| Duration | 2m 31s |" in report
    assert "| Error | ValidationFailed: af-south-1 bbws-prod-data-bucket bucket.write-read-delete: InternalError |" in (
        report
    )
    # the timeline, with the failing state found through the event chain
    assert "- `2026-11-26T09:00:00.000Z` execution started" in report
    assert "- `2026-11-26T09:01:01.000Z` entered **Validate**" in report
    assert "- `2026-11-26T09:01:30.000Z` **Validate** failed (TaskFailed): ValidationFailed" in report
    assert "- `2026-11-26T09:01:31.000Z` entered **Rollback**" in report
    # the failed check as the triggering cause (a pipe in a detail does not break the table)
    assert f"| {PRIMARY} | {BUCKET} | bucket.write-read-delete | InternalError: We encountered" in report
    assert "internal error \\| retry |" in report
    assert "bucket.exists | exists" not in report
    # the decision in the runbook's words
    assert "**Criterion applied:** `dataLossRisk`" in report
    assert "*Rollback Immediately If*: **Data Loss Risk**: Write operations failing for more than 5 minutes" in report
    # every action with its result, including the backup taken
    assert f"| 1 | backup | {TABLE} | {PRIMARY} | ok | backup arn:aws:dynamodb:b/1 |" in report
    assert f"| 2 | restore-configuration | {BUCKET} | {PRIMARY} | ok | versioning |" in report
    # the counts, all matching
    assert "2 of 2 count(s) match" in report
    assert f"| table:{TABLE} | 1234 | 1234 | ✓ |" in report
    assert f"| bucket:{BUCKET} | 567 | 567 | ✓ |" in report
    # the validation and the post-incident checklist
    assert "2 of 2 check(s) passed." in report
    assert f"| {PRIMARY} | {TABLE} | table.active | ✓ | table is ACTIVE |" in report
    for item in ("Timeline of events", "Root cause analysis", "Preventive measures", "Implementation timeline"):
        assert f"- [ ] {item}" in report
    assert "- [ ] Why rollback was necessary: Data Loss Risk" in report


def test_report_of_a_fix_forward_says_nothing_was_rolled_back() -> None:
    # GIVEN a deployment whose only failure was a label, fixed forward
    tags = check("bucket.tags", "tag CostCentre is missing")
    decision = decide(classify([tags], "ValidationFailed", None, set()), RollbackPolicy()).to_dict()
    deployment = record("SUCCEEDED_WITH_WARNINGS", error=None, cause=None, checks={PRIMARY: [tags]})

    # WHEN the report is rendered
    report = incident_report(deployment, history(), decision, [], {}, {}, [])

    # THEN it shows the fix-forward decision and why, and says rollback sections do not apply
    assert report.startswith(f"# Incident report: prod · {DEPLOYMENT_ID} · SUCCEEDED_WITH_WARNINGS\n")
    assert_every_section_in_order(report)
    assert "> Fixed forward" in report
    assert "**Response:** Fix forward" in report
    assert "*Fix Forward If*: **Documentation Issues**: Runbook or label inconsistencies" in report
    assert f"**Why:** fix forward: documentationIssue (bucket.tags on {BUCKET})" in report
    assert "None: the decision was to fix forward." in report
    assert "No item or object counts were recorded." in report
    assert "Not applicable: nothing was rolled back." in report
    assert "| Error | — |" in report
    assert "Why rollback was necessary: it was not" in report


def test_report_of_a_failed_rollback_declares_the_incident_and_shows_what_did_not_match() -> None:
    # GIVEN a rollback whose validation found a table count changed and a check failing
    after = {f"table:{TABLE}": 1200, f"bucket:{BUCKET}": 567}
    pitr = check("table.point-in-time-recovery", "point-in-time recovery is DISABLED, expected ENABLED", TABLE)
    validation = [*PASSED_VALIDATION, pitr]
    failed_action: dict[str, Any] = {"action": "restore-pitr", "resource": TABLE, "region": PRIMARY, "ok": False}
    actions = [*ACTIONS, failed_action]

    # WHEN the report is rendered
    report = incident_report(
        record("ROLLBACK_FAILED"), history("ExecutionFailed"), ROLLBACK_DECISION, actions, COUNTS, after, validation
    )

    # THEN the incident is declared up front, with the mismatch and failures visible
    assert report.startswith(f"# Incident report: prod · {DEPLOYMENT_ID} · ROLLBACK_FAILED\n")
    assert_every_section_in_order(report)
    assert "**INCIDENT: the rollback could not be validated.**" in report
    assert f"| 3 | restore-pitr | {TABLE} | {PRIMARY} | failed | — |" in report
    assert "1 of 2 count(s) match" in report
    assert f"| table:{TABLE} | 1234 | 1200 | ✗ |" in report
    assert "2 of 3 check(s) passed." in report
    assert "| table.point-in-time-recovery | ✗ | point-in-time recovery is DISABLED" in report
    assert "- [ ] Restore the last known good state by hand" in report
    assert report.index("Restore the last known good state") < report.index("Timeline of events (see Timeline)")


def test_report_of_a_sparse_record_still_has_every_section_and_says_what_is_missing() -> None:
    # GIVEN a record with almost nothing in it, no history, no decision and nothing rolled back
    report = incident_report(
        {"deploymentId": DEPLOYMENT_ID, "startedAt": "2026-11-26T09:00:00Z"}, [], None, [], {}, {}, []
    )

    # THEN every section is there, saying why it is empty
    assert report.startswith(f"# Incident report: ? · {DEPLOYMENT_ID} · UNKNOWN\n")
    assert_every_section_in_order(report)
    assert "_No execution history was available._" in report
    assert "- `2026-11-26T09:00:00Z` started" in report
    assert "No post-deployment check failed." in report
    assert "No rollback decision was taken" in report
    assert "No rollback action was taken." in report
    assert "| Change ticket | — |" in report


def test_report_counts_a_resource_missing_after_rollback_as_a_mismatch() -> None:
    # GIVEN a bucket counted before the deployment but not after
    report = incident_report(record("ROLLBACK_FAILED"), [], ROLLBACK_DECISION, [], COUNTS, {f"table:{TABLE}": 1234}, [])

    # THEN its row shows no after-count and fails, and the missing validation is called out
    assert f"| bucket:{BUCKET} | 567 | — | ✗ |" in report
    assert "The rollback could not be validated: no validation result was recorded." in report
