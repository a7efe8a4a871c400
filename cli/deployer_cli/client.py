"""Talks to a deployed bbws-deployer stack (on AWS or in a sandbox) through its public APIs."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from deployer.approvals import Approval, ApprovalStore
from deployer.aws import execution_history
from deployer.incident import incident_report
from deployer.models import DeploymentRequest, parse_event
from deployer.records import RecordStore
from deployer.spec import load_spec_file
from deployer.specstore import SpecStore
from deployer.views import TERMINAL, deployment_view
from deployer_cli.clicks import sandbox_info
from deployer_cli.signing import signed_request
from sandbox.faults import FAULTS_PATH
from sandbox.oidc_issuer import MINT_PATH

# Where CI hands `deployer run --via-api` its GitHub OIDC token (.github/workflows/deploy.yml).
OIDC_TOKEN_VARIABLE = "DEPLOYER_OIDC_TOKEN"  # noqa: S105 - a variable name, not a secret


class StackNotFound(Exception):
    pass


class FaultsUnavailable(Exception):
    pass


@dataclass
class Stack:
    """The deployer stack's resources, discovered from its CloudFormation outputs."""

    session: boto3.Session
    endpoint_url: str | None
    region: str
    outputs: dict[str, str]

    @classmethod
    def discover(cls, session: boto3.Session, stack_name: str, region: str, endpoint_url: str | None) -> Stack:
        cfn = session.client("cloudformation", region_name=region, endpoint_url=endpoint_url)
        try:
            stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
        except ClientError as exc:
            raise StackNotFound(
                f"stack {stack_name} not found in {region}{f' at {endpoint_url}' if endpoint_url else ''}: "
                f"{exc.response['Error'].get('Message', exc)}"
            ) from None
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return cls(session, endpoint_url, region, outputs)

    def client(self, service: str) -> Any:
        return self.session.client(service, region_name=self.region, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]

    @property
    def records(self) -> RecordStore:
        table = self.session.resource("dynamodb", region_name=self.region, endpoint_url=self.endpoint_url)
        return RecordStore(table.Table(self.outputs["RecordsTableName"]))  # type: ignore[attr-defined]

    @property
    def approvals(self) -> ApprovalStore:
        return ApprovalStore(self.records.table)

    @property
    def specs(self) -> SpecStore:
        return SpecStore(self.client("s3"), self.outputs["SpecsBucketName"])

    @property
    def state_machine_arn(self) -> str:
        return self.outputs["StateMachineArn"]


def _sandbox_call(stack: Stack, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sandbox's own fault API; real AWS has no such thing, so game days are sandbox-only."""
    if not stack.endpoint_url:
        raise FaultsUnavailable("faults are injected only in a sandbox, never against real AWS")
    request = urllib.request.Request(  # noqa: S310 - a sandbox on loopback
        stack.endpoint_url.rstrip("/") + FAULTS_PATH,
        data=json.dumps(body).encode() if body else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise FaultsUnavailable(json.loads(exc.read() or b"{}").get("message", str(exc))) from None
    except urllib.error.URLError as exc:
        raise FaultsUnavailable(f"{stack.endpoint_url} is not a deployer sandbox: {exc}") from None


def inject_fault(stack: Stack, name: str) -> dict[str, Any]:
    return _sandbox_call(stack, "POST", {"name": name})


def clear_faults(stack: Stack) -> None:
    _sandbox_call(stack, "DELETE")


def report(stack: Stack, execution_arn: str) -> str:
    """The post-incident report of one deployment (runbook section 9 step 5), as Markdown."""
    deployment_id = execution_arn.rsplit(":", 1)[1]
    record = stack.records.get(deployment_id)
    if record is None:
        raise StackNotFound(f"no deployment record for {deployment_id}")
    return incident_report(
        record,
        history(stack, execution_arn),
        record.get("decision"),
        record.get("rollback", []),
        record.get("countsBefore", {}),
        record.get("countsAfter", {}),
        record.get("rollbackValidation", []),
    )


def last_known_good(stack: Stack, environment: str) -> str:
    """The latest successful deployment before the environment's most recent one."""
    records = stack.records.history(environment, 100)
    good = [r for r in records[1:] if r.get("status") in ("SUCCEEDED", "SUCCEEDED_WITH_WARNINGS")]
    if not good:
        raise StackNotFound(f"no successful deployment of {environment} before its latest one: nothing to roll back to")
    return str(good[0]["deploymentId"])


def build_request(
    environment: str,
    requested_by: str,
    change_ticket: str | None,
    dry_run: bool,
    spec_version: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The execution input, validated here with the same model the state machine uses.

    ``options`` are the request's optional fields in camelCase (scheduledFor, promotionOverride).
    """
    data: dict[str, Any] = {"environment": environment, "requestedBy": requested_by, "dryRun": dry_run}
    given = {"changeTicket": change_ticket, "specVersion": spec_version, **options}
    data.update({k: v.isoformat() if isinstance(v, datetime) else v for k, v in given.items() if v is not None})
    request = parse_event(DeploymentRequest, data).dump()
    return {k: v for k, v in request.items() if v is not None}


def push_spec(stack: Stack, spec_dir: Path, environment: str) -> str:
    """Validate the local spec file and store it; returns the version the deployment will pin."""
    path = spec_dir / f"{environment}.yaml"
    load_spec_file(path)
    return stack.specs.put(environment, path.read_text())


def execution_name(environment: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{environment}-{stamp}-{uuid.uuid4().hex[:8]}"


def start(stack: Stack, request: dict[str, Any], name: str | None = None) -> str:
    sfn = stack.client("stepfunctions")
    response = sfn.start_execution(
        stateMachineArn=stack.state_machine_arn,
        name=name or execution_name(request["environment"]),
        input=json.dumps(request),
    )
    return str(response["executionArn"])


class AnnouncementRefused(Exception):
    """The state machine refused an announceOnly input; the message is its error and cause."""


def announce(
    stack: Stack, spec_dir: Path, environment: str, *, change_ticket: str, at: datetime, requested_by: str
) -> dict[str, Any]:
    """Announce a window as the Step Functions console does: an ``announceOnly`` execution; returns its detail."""
    version = push_spec(stack, spec_dir, environment)
    request = build_request(
        environment, requested_by, change_ticket, False, version, scheduledFor=at, announceOnly=True
    )
    arn = start(stack, request, name=f"announce-{execution_name(environment)}")
    ended = wait(stack, arn, poll_seconds=0.1, timeout_seconds=120)
    if ended["status"] != "SUCCEEDED":
        failed = next(
            (e["executionFailedEventDetails"] for e in history(stack, arn) if e["type"] == "ExecutionFailed"), {}
        )
        cause = failed.get("cause") or ""
        with contextlib.suppress(ValueError, TypeError):
            cause = json.loads(cause).get("errorMessage", cause)
        raise AnnouncementRefused(f"{failed.get('error', ended['status'])}: {cause}")
    return dict(json.loads(ended["output"])["deployment"]["announcement"])


def history(stack: Stack, execution_arn: str) -> list[dict[str, Any]]:
    return execution_history(stack.client("stepfunctions"), execution_arn)


def wait(
    stack: Stack,
    execution_arn: str,
    on_state: Callable[[str], None] | None = None,
    poll_seconds: float = 0.25,
    timeout_seconds: float = 3600,
) -> dict[str, Any]:
    """Wait for the execution to end, reporting each state as it is entered."""
    sfn = stack.client("stepfunctions")
    seen = 0
    deadline = time.monotonic() + timeout_seconds
    while True:
        description = sfn.describe_execution(executionArn=execution_arn)
        if on_state is not None:
            events = history(stack, execution_arn)
            for event in events[seen:]:
                if event["type"].endswith("StateEntered"):
                    on_state(event["stateEnteredEventDetails"]["name"])
            seen = len(events)
        if description["status"] in TERMINAL:
            return dict(description)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still {description['status']} after {timeout_seconds}s")
        time.sleep(poll_seconds)


def open_approval(stack: Stack, execution_arn: str, poll_seconds: float = 0.1) -> Approval | None:
    """The deployment's approval once it is posted to Slack; None if the execution ends without one."""
    sfn = stack.client("stepfunctions")
    deployment_id = execution_arn.rsplit(":", 1)[1]
    while True:
        approval_id = (stack.records.get(deployment_id) or {}).get("approvalId")
        approval = stack.approvals.get(approval_id) if approval_id else None
        if approval is not None and approval.message_ts:
            return approval
        if sfn.describe_execution(executionArn=execution_arn)["status"] in TERMINAL:
            return None
        time.sleep(poll_seconds)


def summary(stack: Stack, execution_arn: str) -> dict[str, Any]:
    """The outcome of one deployment, as `deployer run --json` prints it."""
    description = stack.client("stepfunctions").describe_execution(executionArn=execution_arn)
    deployment_id = execution_arn.rsplit(":", 1)[1]
    record = stack.records.get(deployment_id)
    approval_id = (record or {}).get("approvalId")
    votes = stack.approvals.votes(approval_id) if approval_id else []
    events = history(stack, execution_arn)
    stop = description.get("stopDate")
    return {
        **deployment_view(deployment_id, record, description, votes),
        "stateTransitions": sum(1 for e in events if e["type"].endswith("StateEntered")),
        "durationSeconds": round(((stop or datetime.now(UTC)) - description["startDate"]).total_seconds(), 3),
    }


class ApiRefused(Exception):
    """The deployments API answered with an error; the message is its own, with the fields it named."""


def api_call(stack: Stack, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """One signed call to the stack's deployments API; its JSON answer, or ApiRefused."""
    url = stack.outputs["ApiUrl"].rstrip("/") + path
    answer = signed_request(stack.session, method, url, stack.region, body=body, headers=headers)
    if answer.status >= 400:
        detail = answer.body if isinstance(answer.body, dict) else {"message": str(answer.body)}
        fields = "; ".join(f"{e['field']}: {e['message']}" for e in detail.get("errors", []))
        raise ApiRefused(
            f"{method} {path} answered {answer.status}: {detail.get('message')}" + (f" ({fields})" if fields else "")
        )
    return answer.body


def ci_token(stack: Stack, claims: dict[str, str]) -> str | None:
    """CI's GitHub OIDC token: $DEPLOYER_OIDC_TOKEN (the workflow's), else one a sandbox mints; None on AWS without."""
    if os.environ.get(OIDC_TOKEN_VARIABLE):
        return os.environ[OIDC_TOKEN_VARIABLE]
    if not stack.endpoint_url:
        return None
    try:
        issuer = sandbox_info(stack.endpoint_url)["oidcIssuer"]
        minting = urllib.request.Request(  # noqa: S310 - the sandbox's own issuer, on loopback
            issuer + MINT_PATH, data=json.dumps(claims).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(minting, timeout=10) as response:  # noqa: S310
            return str(json.loads(response.read())["value"])
    except (urllib.error.URLError, ValueError, KeyError):
        return None  # an endpoint that is not a sandbox mints nothing


def push_commit_spec(stack: Stack, spec_dir: Path, environment: str, commit: str) -> str:
    """Push the spec file as it is in ``commit`` (not the working tree); returns the full commit."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(  # noqa: S603 - fixed git arguments
                ["git", *args],  # noqa: S607 - git from PATH, as the user runs it
                cwd=spec_dir,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise StackNotFound(f"git {' '.join(args)} in {spec_dir}: {getattr(exc, 'stderr', '') or exc}") from None

    full = git("rev-parse", "--verify", f"{commit}^{{commit}}").strip()
    stack.specs.put(environment, git("show", f"{full}:./{environment}.yaml"), commit=full)
    return full


def api_wait(
    stack: Stack,
    deployment_id: str,
    on_status: Callable[[str], None] | None = None,
    poll_seconds: float = 1.0,
    timeout_seconds: float = 4 * 3600,
) -> dict[str, Any]:
    """Follow a deployment through GET /deployments/{id} until its execution ends."""
    deadline = time.monotonic() + timeout_seconds
    last = None
    while True:
        view: dict[str, Any] = api_call(stack, "GET", f"/deployments/{deployment_id}")
        if on_status is not None and view["status"] != last:
            on_status(view["status"])
            last = view["status"]
        if view.get("executionStatus") in TERMINAL:
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"deployment {deployment_id} still {view['status']} after {timeout_seconds}s")
        time.sleep(poll_seconds)
