"""Closing a deployment whose execution ended outside the pipeline: aborted, timed out, or failed past every Catch.

Step Functions runs no Catch for StopExecution (ABORTED) or for the state machine's own timeout
(TIMED_OUT), and a failure that gets past every Catch ends the execution FAILED with nothing
closed. CloseStoppedFunction (template.yaml) takes Step Functions' "Execution Status Change"
events for those three ends of the deployment state machine and does what the pipeline's own
end would have done:

- **The record**, if it still says RUNNING, is closed as ABORTED, TIMED_OUT or FAILED with the
  execution's stop date, error and cause. The write is conditional: a record the pipeline closed
  itself (a caught failure, then FAILED) stays as the pipeline wrote it.
- **The environment's lock**, if this deployment still holds it, is released, unless a Lambda
  invocation of the execution was still running when it ended: Step Functions does not stop a
  running function, and one still provisioning must not have a second deployment planning beside
  it. The lock is then kept until that invocation cannot be running any more (when it was
  scheduled plus its timeout: the state's, or Lambda's 15-minute maximum), and frees itself then.
- **"Deployment Closed"** is published when it changed something, or when the execution had no
  record (it ended before StartDeployment, so nobody heard of it); Notify posts it in the
  deployment's thread. A re-delivered event finds nothing left to do and publishes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ConfigDict, Field

from deployer import clock
from deployer.aws import execution_history
from deployer.errors import InputInvalid
from deployer.events import publish
from deployer.incident import state_of
from deployer.models import Event, parse_event
from deployer.records import iso
from deployer.spec import ENVIRONMENT_NAME
from deployer.tooling import Tooling

CLOSED = "Deployment Closed"
# Lambda's longest timeout: how long an invocation whose state set none can still be running.
LAMBDA_MAX_SECONDS = 900
# Beyond an invocation's timeout before its lock frees itself: clocks are not exact.
MARGIN_SECONDS = 60
SCHEDULED = ("LambdaFunctionScheduled", "TaskScheduled")
# An invocation's end: it returned (Submitted, for a task that then waits for its token), failed or never ran.
INVOCATION_ENDS = frozenset(
    {
        "LambdaFunctionSucceeded",
        "LambdaFunctionFailed",
        "LambdaFunctionTimedOut",
        "LambdaFunctionStartFailed",
        "LambdaFunctionScheduleFailed",
        "TaskSucceeded",
        "TaskFailed",
        "TaskTimedOut",
        "TaskStartFailed",
        "TaskSubmitFailed",
        "TaskSubmitted",
    }
)
EXECUTION_ARN = r"^arn:aws[a-z-]*:states:[a-z0-9-]+:[0-9]{12}:execution:[^:]+:[^:]+$"


class StatusChange(Event):
    """The ``detail`` of Step Functions' "Execution Status Change" event (its fields camelCased)."""

    model_config = ConfigDict(extra="ignore")

    execution_arn: str = Field(pattern=EXECUTION_ARN)
    state_machine_arn: str
    name: str = Field(min_length=1, max_length=80)
    status: Literal["ABORTED", "TIMED_OUT", "FAILED"]
    stop_date: int | None = None
    input: str | None = None
    error: str | None = None
    cause: str | None = None

    def request(self) -> dict[str, Any]:
        """The execution input, if it is a JSON object (it says who asked, even without a record)."""
        try:
            request = json.loads(self.input or "{}")
        except ValueError:
            return {}
        return request if isinstance(request, dict) else {}


class ClosingEvent(Event):
    """The EventBridge envelope CloseStoppedFunction gets."""

    model_config = ConfigDict(extra="ignore")

    source: Literal["aws.states"]
    detail: StatusChange


@dataclass(frozen=True)
class InFlight:
    """A Lambda invocation the execution had started and not seen end."""

    state: str
    scheduled: datetime
    timeout_seconds: int

    @property
    def over_by(self) -> datetime:
        """When it can no longer be running (its timeout, and a margin for clocks)."""
        return self.scheduled + timedelta(seconds=self.timeout_seconds + MARGIN_SECONDS)


def in_flight(history: Sequence[Mapping[str, Any]]) -> list[InFlight]:
    """The Lambda invocations an execution's history shows scheduled and not ended, oldest first.

    Each end links back through ``previousEventId`` (Succeeded -> Started -> Scheduled) to the
    invocation it ends; invocations run side by side in a Map interleave, the links keep them apart.
    """
    by_id = {e.get("id"): e for e in history}
    pending: dict[Any, InFlight] = {}
    for event in history:
        kind = str(event.get("type") or "")
        if kind == "LambdaFunctionScheduled" or (
            kind == "TaskScheduled" and (event.get("taskScheduledEventDetails") or {}).get("resourceType") == "lambda"
        ):
            details = event.get("lambdaFunctionScheduledEventDetails") or event.get("taskScheduledEventDetails") or {}
            scheduled = event.get("timestamp")
            pending[event.get("id")] = InFlight(
                state=state_of(event, by_id),
                scheduled=scheduled if isinstance(scheduled, datetime) else clock.now(),
                timeout_seconds=int(details.get("timeoutInSeconds") or LAMBDA_MAX_SECONDS),
            )
        elif kind in INVOCATION_ENDS:
            seen: set[Any] = set()
            current: Mapping[str, Any] | None = event
            while current is not None and current.get("id") not in seen:
                seen.add(current.get("id"))
                if current.get("id") in pending:
                    del pending[current.get("id")]
                    break
                current = by_id.get(current.get("previousEventId"))
    return sorted(pending.values(), key=lambda f: f.scheduled)


def _environment(change: StatusChange, record: Mapping[str, Any] | None) -> str | None:
    """The record's environment, else the execution input's if it is a valid name (only to find a Slack channel)."""
    if record is not None:
        return str(record["environment"])
    environment = change.request().get("environment")
    return environment if isinstance(environment, str) and re.fullmatch(ENVIRONMENT_NAME, environment) else None


def _close_record(tooling: Tooling, change: StatusChange, record: Mapping[str, Any] | None) -> str:
    """``closed`` (it said RUNNING, now the execution's status), ``already-closed`` or ``none``."""
    if record is None:
        return "none"
    ended = datetime.fromtimestamp(change.stop_date / 1000, UTC) if change.stop_date else clock.now()
    fields: dict[str, Any] = {"status": change.status, "finishedAt": iso(ended), "executionStatus": change.status}
    fields |= {k: v for k, v in (("error", change.error), ("cause", change.cause)) if v}
    return "closed" if tooling.records.close(change.name, clock.now(), fields) else "already-closed"


def _free_lock(
    tooling: Tooling, environment: str, deployment_id: str, execution_arn: str
) -> tuple[dict[str, Any], bool]:
    """Release the lock if the deployment holds it, or keep it while one of its invocations may still run.

    Returns what became of the lock, and whether this call changed it.
    """
    holder = tooling.records.lock_holder(environment)
    if holder is None or holder.get("deploymentId") != deployment_id:
        return {"outcome": "not-held", "holder": holder.get("deploymentId") if holder else None}, False
    running = in_flight(execution_history(tooling.sfn, execution_arn))
    states = sorted({f.state for f in running})
    lease = datetime.fromtimestamp(int(holder.get("lockExpiresAt", 0)), UTC)
    # In whole seconds, as the lease is kept, and never beyond the lease it has.
    until = min([max(f.over_by for f in running).replace(microsecond=0), lease]) if running else None
    if until is not None and until > clock.now():
        if not tooling.records.keep_lock_until(environment, deployment_id, until):
            return {"outcome": "not-held", "holder": None}, False
        return {"outcome": "kept", "until": iso(until), "inFlight": states}, until < lease
    released = tooling.records.release_lock(environment, deployment_id)
    return {"outcome": "released" if released else "not-held", "inFlight": states}, released


def close_stopped(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Close the record and free the lock of a deployment whose execution ended outside the pipeline.

    Returns what it did, which is also the "Deployment Closed" detail when it is published.
    """
    change = parse_event(ClosingEvent, event).detail
    if change.state_machine_arn != tooling.state_machine_arn:
        raise InputInvalid(
            f"execution {change.execution_arn} is not of the deployment state machine {tooling.state_machine_arn}"
        )
    record = tooling.records.get(change.name)
    environment = _environment(change, record)
    outcome = _close_record(tooling, change, record)
    lock: dict[str, Any] = {"outcome": "not-held", "holder": None}
    freed = False
    if record is not None:
        lock, freed = _free_lock(tooling, str(record["environment"]), change.name, change.execution_arn)
    asked = record or change.request()
    detail = {
        "deploymentId": change.name,
        "executionArn": change.execution_arn,
        "environment": environment,
        "requestedBy": asked.get("requestedBy"),
        "changeTicket": asked.get("changeTicket"),
        "executionStatus": change.status,
        "error": change.error,
        "cause": change.cause,
        "record": outcome,
        "lock": lock,
    }
    if outcome in ("closed", "none") or freed:  # a re-delivered event changes nothing and says nothing
        detail["eventId"] = publish(tooling.events, tooling.event_bus, CLOSED, detail)
    return detail
