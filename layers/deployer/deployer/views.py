"""What a deployment looks like from outside: the API's and the CLI's one shape for it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from deployer.approvals import Vote
from deployer.records import iso

# Step Functions' terminal statuses; a deployment ended TIMED_OUT or ABORTED keeps that status.
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


def _rollback(record: dict[str, Any]) -> dict[str, Any] | None:
    """The rollback's criterion, actions and validation; None when nothing was rolled back."""
    if "rollback" not in record:
        return None
    return {
        "criterion": (record.get("decision") or {}).get("criterion"),
        "actions": record.get("rollback", []),
        "validation": record.get("rollbackValidation", []),
        "countsBefore": record.get("countsBefore", {}),
    }


def _execution_time(execution: dict[str, Any] | None, key: str) -> str | None:
    moment = (execution or {}).get(key)
    return iso(moment) if isinstance(moment, datetime) else None


def deployment_view(
    deployment_id: str,
    record: dict[str, Any] | None,
    execution: dict[str, Any] | None,
    votes: Sequence[Vote] = (),
) -> dict[str, Any]:
    """One deployment's status, plan, approvals, checks, rollback and timestamps.

    ``record`` is the deployment record (None before StartDeployment wrote it);
    ``execution`` is DescribeExecution's answer (None if the execution is unknown).
    """
    record = record or {}
    execution_status = (execution or {}).get("status")
    status = record.get("status") or execution_status or "UNKNOWN"
    if execution_status in ("TIMED_OUT", "ABORTED") and status == "RUNNING":
        status = execution_status  # until CloseStoppedFunction closes the record as that
    plan = record.get("plan", {})
    return {
        "deploymentId": deployment_id,
        "status": status,
        "executionStatus": execution_status,
        "executionArn": record.get("executionArn") or (execution or {}).get("executionArn"),
        "environment": record.get("environment"),
        "requestedBy": record.get("requestedBy"),
        "changeTicket": record.get("changeTicket"),
        "error": (execution or {}).get("error") or record.get("error"),
        "cause": record.get("cause"),
        "regions": record.get("regions", []),
        "specVersion": record.get("specVersion"),
        "specHash": record.get("specHash"),
        "specCommit": (record.get("origin") or {}).get("specCommit"),
        "plan": {
            "add": plan.get("add", 0),
            "change": plan.get("change", 0),
            "unchanged": plan.get("unchanged", 0),
            "summary": plan.get("summary"),
            "hash": plan.get("hash"),
            "resources": plan.get("resources", []),
        },
        "mutatingCalls": record.get("mutatingCalls", 0),
        "decision": record.get("decision"),
        "rollback": _rollback(record),
        "approvalId": record.get("approvalId"),
        "approvals": [{"user": v.user_id, "name": v.name, "decision": v.decision, "at": iso(v.at)} for v in votes],
        "preflight": record.get("preflight", []),
        "checks": [
            c for group in [*record.get("regions", []), "replication"] for c in record.get("checks", {}).get(group, [])
        ],
        "scheduledFor": record.get("scheduledFor"),
        "promotionOverride": record.get("promotionOverride"),
        "emergency": record.get("emergency"),
        "releaseTag": record.get("releaseTag"),
        "announcement": record.get("announcement"),
        "startedAt": record.get("startedAt") or _execution_time(execution, "startDate"),
        "updatedAt": record.get("updatedAt"),
        "finishedAt": record.get("finishedAt") or _execution_time(execution, "stopDate"),
    }


def history_item(record: dict[str, Any]) -> dict[str, Any]:
    """A deployment as one line of an environment's history."""
    return {
        "deploymentId": record["deploymentId"],
        "status": record.get("status"),
        "environment": record.get("environment"),
        "requestedBy": record.get("requestedBy"),
        "changeTicket": record.get("changeTicket"),
        "specVersion": record.get("specVersion"),
        "specCommit": (record.get("origin") or {}).get("specCommit"),
        "startedAt": record.get("startedAt"),
        "finishedAt": record.get("finishedAt"),
    }
