"""Closing a deployment whose execution ended outside the pipeline (deployer.stopped).

DynamoDB and EventBridge are moto; the execution's history is the one thing handed in (an
AWS-shaped history on a stand-in Step Functions client), so each case can say exactly what was
running when the execution ended. The sandbox test (tests/e2e/test_locks.py) runs the real thing.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from deployer.errors import InputInvalid
from deployer.records import iso
from deployer.resources import WaitConfig
from deployer.stopped import LAMBDA_MAX_SECONDS, MARGIN_SECONDS, close_stopped, in_flight
from deployer.tooling import Tooling
from tests.unit.conftest import records_table

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events" / "close_stopped_aborted.json").read_text())
MACHINE = SAMPLE["detail"]["stateMachineArn"]
ID = SAMPLE["detail"]["name"]
ARN = SAMPLE["detail"]["executionArn"]
BUS = "bbws-deployer-test"


@dataclass
class History:
    """A Step Functions client that answers GetExecutionHistory with ``events``."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def get_execution_history(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["executionArn"] == ARN
        return {"events": self.events}


def entered(id_: int, state: str, at: datetime) -> dict[str, Any]:
    return {"id": id_, "type": "TaskStateEntered", "timestamp": at, "stateEnteredEventDetails": {"name": state}}


def scheduled(id_: int, after: int, at: datetime, timeout: int | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"resource": "arn:aws:lambda:af-south-1:123456789012:function:bbws-deployer-provision"}
    if timeout is not None:
        details["timeoutInSeconds"] = timeout
    return {
        "id": id_,
        "previousEventId": after,
        "type": "LambdaFunctionScheduled",
        "timestamp": at,
        "lambdaFunctionScheduledEventDetails": details,
    }


def event(id_: int, after: int, kind: str, at: datetime) -> dict[str, Any]:
    return {"id": id_, "previousEventId": after, "type": kind, "timestamp": at}


def status_change(status: str = "ABORTED", **detail: Any) -> dict[str, Any]:
    changed = copy.deepcopy(SAMPLE)
    changed["detail"].update(status=status, **detail)
    return changed


@pytest.fixture
def tooling(aws: None) -> Tooling:
    boto3.client("events", region_name="us-east-1").create_event_bus(Name=BUS)
    tooling = Tooling(
        records_table=records_table().name,
        specs_bucket="unused",
        event_bus=BUS,
        wait=WaitConfig(delay_seconds=0, max_attempts=1),
        state_machine_arn=MACHINE,
    )
    tooling.__dict__["sfn"] = History()  # cached_property: the stand-in is what tooling.sfn returns
    return tooling


def open_deployment(tooling: Tooling, lease_seconds: int = 3600) -> datetime:
    now = datetime.now(UTC)
    tooling.records.create(ID, "prod", now, {"executionArn": ARN, "requestedBy": "alice", "changeTicket": "CHG-1"})
    tooling.records.acquire_lock("prod", ID, "alice", lease_seconds, now)
    return now


def history(tooling: Tooling) -> History:
    sfn: History = tooling.sfn
    return sfn


# ---------------------------------------------------------------- what was running


def test_an_invocation_with_no_end_is_in_flight_under_its_state_name() -> None:
    at = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    events = [
        event(1, 0, "ExecutionStarted", at),
        entered(2, "Plan", at),
        scheduled(3, 2, at),
        event(4, 3, "LambdaFunctionStarted", at),
        event(5, 4, "LambdaFunctionSucceeded", at),
        entered(6, "Provision", at),
        scheduled(7, 6, at + timedelta(seconds=5), timeout=300),
        event(8, 7, "LambdaFunctionStarted", at),
    ]
    (running,) = in_flight(events)
    assert (running.state, running.timeout_seconds) == ("Provision", 300)
    assert running.over_by == at + timedelta(seconds=5 + 300 + MARGIN_SECONDS)


def test_side_by_side_invocations_are_told_apart_by_their_links() -> None:
    at = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    # Two shards of a Map: both scheduled, the second to be scheduled ended first
    events = [
        entered(1, "Provision", at),
        scheduled(2, 1, at),
        entered(3, "Provision", at),
        scheduled(4, 3, at + timedelta(seconds=1)),
        event(5, 4, "LambdaFunctionStarted", at),
        event(6, 5, "LambdaFunctionFailed", at),
        event(7, 2, "LambdaFunctionStarted", at),
    ]
    (running,) = in_flight(events)
    assert (running.scheduled, running.timeout_seconds) == (at, LAMBDA_MAX_SECONDS)


def test_a_task_waiting_for_its_token_has_no_invocation_running() -> None:
    at = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    lambda_task = {"resourceType": "lambda", "resource": "invoke.waitForTaskToken"}
    events = [
        entered(1, "RequestApproval", at),
        {
            "id": 2,
            "previousEventId": 1,
            "type": "TaskScheduled",
            "timestamp": at,
            "taskScheduledEventDetails": lambda_task,
        },
        event(3, 2, "TaskStarted", at),
        event(4, 3, "TaskSubmitted", at),
        entered(5, "PublishStarted", at),
        {
            "id": 6,
            "previousEventId": 5,
            "type": "TaskScheduled",
            "timestamp": at,
            "taskScheduledEventDetails": {"resourceType": "events", "resource": "putEvents"},
        },
    ]
    assert in_flight(events) == []


# ---------------------------------------------------------------- closing


def test_an_aborted_deployment_is_closed_aborted_and_its_lock_released(tooling: Tooling) -> None:
    # GIVEN a PROD deployment holding its lock, stopped while it waited for approval (nothing running)
    open_deployment(tooling)
    # WHEN Step Functions reports it ABORTED
    result = close_stopped(status_change(stopDate=1795685405000), tooling)
    # THEN the record says ABORTED with the stop date, the lock is free, and it is announced
    record = tooling.records.get(ID)
    assert record is not None
    assert (record["status"], record["finishedAt"], record["executionStatus"]) == (
        "ABORTED",
        "2026-11-26T09:30:05.000Z",
        "ABORTED",
    )
    assert tooling.records.lock_holder("prod") is None
    assert (result["record"], result["lock"]["outcome"]) == ("closed", "released")
    assert (result["requestedBy"], result["changeTicket"], result["environment"]) == ("alice", "CHG-1", "prod")
    assert result["eventId"]
    # WHEN the same event is delivered again THEN nothing is left to do and nothing is announced twice
    again = close_stopped(status_change(stopDate=1795685405000), tooling)
    assert (again["record"], again["lock"]["outcome"]) == ("already-closed", "not-held")
    assert "eventId" not in again


def test_a_timed_out_deployment_is_closed_timed_out(tooling: Tooling) -> None:
    open_deployment(tooling)
    close_stopped(status_change("TIMED_OUT"), tooling)
    record = tooling.records.get(ID)
    assert record is not None
    assert record["status"] == "TIMED_OUT"


def test_a_failure_past_every_catch_is_closed_failed_with_its_error(tooling: Tooling) -> None:
    open_deployment(tooling)
    result = close_stopped(status_change("FAILED", error="States.Runtime", cause="no $.deployment"), tooling)
    record = tooling.records.get(ID)
    assert record is not None
    assert (record["status"], record["error"], record["cause"]) == ("FAILED", "States.Runtime", "no $.deployment")
    assert result["lock"]["outcome"] == "released"


def test_a_failure_the_pipeline_closed_itself_is_left_alone(tooling: Tooling) -> None:
    # GIVEN the pipeline caught the failure: record FAILED by RecordFailed, lock released by ReleaseLockOnFailure
    open_deployment(tooling)
    tooling.records.update(ID, datetime.now(UTC), {"status": "FAILED", "error": "PreflightFailed"})
    tooling.records.release_lock("prod", ID)
    # WHEN its FAILED status change arrives THEN nothing changes and nothing is announced
    result = close_stopped(status_change("FAILED", error="PreflightFailed"), tooling)
    record = tooling.records.get(ID)
    assert record is not None
    assert (record["status"], record["error"]) == ("FAILED", "PreflightFailed")
    assert "eventId" not in result


def test_a_lock_left_between_closing_the_record_and_releasing_it_is_released(tooling: Tooling) -> None:
    # GIVEN the record was closed but the execution stopped before ReleaseLock ran
    open_deployment(tooling)
    tooling.records.update(ID, datetime.now(UTC), {"status": "SUCCEEDED"})
    result = close_stopped(status_change("ABORTED"), tooling)
    record = tooling.records.get(ID)
    assert record is not None
    assert record["status"] == "SUCCEEDED"
    assert tooling.records.lock_holder("prod") is None
    assert (result["record"], result["lock"]["outcome"]) == ("already-closed", "released")
    assert result["eventId"]


def test_a_lock_another_deployment_took_is_left_to_it(tooling: Tooling) -> None:
    # GIVEN this deployment's lease ran out and another took the lock
    started = open_deployment(tooling, lease_seconds=1)
    tooling.records.acquire_lock("prod", "prod-next", "bob", 3600, started + timedelta(seconds=5))
    result = close_stopped(status_change("ABORTED"), tooling)
    holder = tooling.records.lock_holder("prod")
    assert holder is not None
    assert holder["deploymentId"] == "prod-next"
    assert result["lock"] == {"outcome": "not-held", "holder": "prod-next"}


def test_a_lock_is_kept_while_an_invocation_may_still_be_running(tooling: Tooling) -> None:
    # GIVEN the execution was stopped while Provision ran (scheduled a minute ago, no timeout of its own)
    started = open_deployment(tooling)
    provision_at = started - timedelta(minutes=1)
    history(tooling).events = [entered(1, "Provision", provision_at), scheduled(2, 1, provision_at)]
    # WHEN it is closed
    result = close_stopped(status_change("ABORTED"), tooling)
    # THEN the lock stays with it until Lambda's longest run (and a margin) is over, no longer
    until = provision_at + timedelta(seconds=LAMBDA_MAX_SECONDS + MARGIN_SECONDS)
    holder = tooling.records.lock_holder("prod")
    assert holder is not None
    assert (holder["deploymentId"], holder["lockExpiresAt"]) == (ID, int(until.timestamp()))
    assert result["lock"]["outcome"] == "kept"
    assert result["lock"]["inFlight"] == ["Provision"]
    assert result["lock"]["until"] == iso(until.replace(microsecond=0))
    # ... and the record is closed all the same
    record = tooling.records.get(ID)
    assert record is not None
    assert record["status"] == "ABORTED"
    assert result["eventId"]
    # WHEN the same event is delivered again THEN the lock is as it was and nothing is announced twice
    again = close_stopped(status_change("ABORTED"), tooling)
    assert again["lock"] == result["lock"]
    assert "eventId" not in again


def test_an_invocation_past_its_timeout_does_not_keep_the_lock(tooling: Tooling) -> None:
    started = open_deployment(tooling)
    long_ago = started - timedelta(seconds=LAMBDA_MAX_SECONDS + MARGIN_SECONDS + 5)
    history(tooling).events = [entered(1, "Provision", long_ago), scheduled(2, 1, long_ago)]
    result = close_stopped(status_change("ABORTED"), tooling)
    assert result["lock"] == {"outcome": "released", "inFlight": ["Provision"]}
    assert tooling.records.lock_holder("prod") is None


def test_a_lock_is_never_kept_beyond_the_lease_it_had(tooling: Tooling) -> None:
    started = open_deployment(tooling, lease_seconds=120)
    history(tooling).events = [entered(1, "Provision", started), scheduled(2, 1, started)]
    result = close_stopped(status_change("ABORTED"), tooling)
    holder = tooling.records.lock_holder("prod")
    assert holder is not None
    assert holder["lockExpiresAt"] == int(started.timestamp()) + 120
    assert result["lock"]["outcome"] == "kept"


def test_an_execution_without_a_record_is_announced_from_its_input(tooling: Tooling) -> None:
    # GIVEN the sample: aborted before StartDeployment opened a record
    result = close_stopped(SAMPLE, tooling)
    assert tooling.records.get(ID) is None
    assert (result["record"], result["environment"], result["requestedBy"]) == ("none", "prod", "alice")
    assert result["eventId"]
    # ... and an input that names no valid environment names none (nowhere to post, nothing made up)
    bad = close_stopped(status_change(input='{"environment": "../prod"}'), tooling)
    assert bad["environment"] is None
    assert close_stopped(status_change(input="not json"), tooling)["environment"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "SUCCEEDED"}, "detail.status"),
        ({"executionArn": "prod-1"}, "detail.executionArn"),
        ({"stateMachineArn": MACHINE.replace("deployment", "other")}, "is not of the deployment state machine"),
    ],
)
def test_an_event_that_is_not_an_end_of_the_deployment_machine_is_refused(
    tooling: Tooling, change: dict[str, Any], message: str
) -> None:
    event = copy.deepcopy(SAMPLE)
    event["detail"].update(change)
    with pytest.raises(InputInvalid, match=message):
        close_stopped(event, tooling)
