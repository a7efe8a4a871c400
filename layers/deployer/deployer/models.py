"""Events the state machine passes to the functions, and what they return."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from deployer.errors import InputInvalid
from deployer.spec import ENVIRONMENT_NAME


class Event(BaseModel):
    # defer_build (inherited by every event, whose own model_config is merged with this one):
    # each function builds only the events it parses, at their first use, not all of them at import.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", defer_build=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _representable(moment: datetime) -> datetime:
    """A time every window computation can work with: in UTC from 1970 to 8999 (far from datetime's ends)."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the times a deployment can be scheduled for") from None
    if not 1970 <= utc.year <= 8999:
        raise ValueError("must be between 1970 and 8999 (UTC)")
    return moment


# When a window starts (ISO 8601 with a UTC offset).
SCHEDULED_FOR = Annotated[AwareDatetime, AfterValidator(_representable)]

# v<YYYY.MM.DD>-<environment>-<name>; preflight checks the environment and the date.
RELEASE_TAG = r"^v[0-9]{4}\.[0-9]{2}\.[0-9]{2}-[a-z0-9][a-z0-9._-]*$"

# A name, a GitHub login (github:octo) or an AWS principal's ARN (role session names included).
REQUESTED_BY = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\w.@+:/=,-][\w.@+:/=, -]*$")]


class Requester(Event):
    """Who started a deployment: verified by CI's GitHub OIDC token or the API's SigV4 caller, or only claimed."""

    # How messages and the record name them: ``github:<login>``, the caller's ARN, or the claimed name.
    name: str
    verified_by: Literal["github-oidc", "aws-sigv4"] | None = None
    github_login: str | None = None
    aws_principal: str | None = None
    # What the request said (``requestedBy``): recorded, never trusted.
    claimed: str | None = None

    def describe(self) -> str:
        """``github:octo (verified: GitHub OIDC token)``, ``alice (claimed)``, ..."""
        if self.verified_by is None:
            return f"{self.name} (claimed)"
        how = "GitHub OIDC token" if self.verified_by == "github-oidc" else "AWS SigV4"
        claims = f", claims to be {self.claimed}" if self.claimed and self.claimed != self.name else ""
        return f"{self.name} (verified: {how}{claims})"


class RequestFields(Event):
    """What every way of starting a deployment asks for."""

    environment: Annotated[str, Field(pattern=ENVIRONMENT_NAME)]
    requested_by: REQUESTED_BY
    change_ticket: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    dry_run: bool = False
    # Announce now, deploy at this time (ISO 8601 with a UTC offset).
    scheduled_for: SCHEDULED_FOR | None = None
    # Deploy a spec the promotion source never ran; costs extra approvals, recorded as an override.
    promotion_override: Annotated[str, Field(min_length=10, max_length=500)] | None = None
    # Deploy without the policy's notice (minimumNoticeHours): costs the policy's emergency approvals,
    # recorded, and announced in its incident channel.
    emergency: Annotated[str, Field(min_length=10, max_length=500)] | None = None
    # The release tag of the commit deployed (runbook section 6 step 2): v<YYYY.MM.DD>-<environment>-<name>.
    release_tag: Annotated[str, Field(pattern=RELEASE_TAG, max_length=128)] | None = None


class DeploymentRequest(RequestFields):
    """The execution input, as a person, CI or the CLI writes it."""

    spec_version: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    # A manual rollback: deploy again exactly what this earlier successful deployment deployed.
    rollback_to: Annotated[str, Field(min_length=1, max_length=80)] | None = None
    # Only announce the window at scheduledFor for changeTicket (the console's `deployer announce`): no deployment.
    announce_only: bool = False
    # Set by the deployments API: who called it, with which token, for which request. Informational:
    # anyone who can start an execution can write it, so the verified requester is kept elsewhere.
    origin: ApiOrigin | None = None


class ApiOrigin(Event):
    """How a deployment started through the API is told apart from a retry of it."""

    client_token: str
    # SHA-256 of the client's request as validated: the same token with another request is a conflict.
    request_hash: str
    caller: str
    spec_commit: str


class ApiDeploymentRequest(RequestFields):
    """POST /deployments: CI names the spec by its commit and the attempt by a token it reuses on retry.

    Who requested it is what the API verified (the OIDC token's actor, else the SigV4 caller);
    ``requestedBy`` is optional and recorded only as a claim.
    """

    requested_by: REQUESTED_BY | None = None  # type: ignore[assignment]

    spec_version: Annotated[str, Field(pattern=r"^[0-9a-f]{7,40}$", description="git commit of the spec")]
    client_token: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ApiAnnouncementRequest(Event):
    """POST /announcements: the window a change ticket's deployment will apply in, announced now."""

    environment: Annotated[str, Field(pattern=ENVIRONMENT_NAME)]
    change_ticket: Annotated[str, Field(min_length=1, max_length=64)]
    scheduled_for: SCHEDULED_FOR
    # Recorded as a claim only, as for deployments.
    requested_by: REQUESTED_BY | None = None


class StartEvent(Event):
    input: dict[str, Any]
    deployment_id: Annotated[str, Field(min_length=1, max_length=80)]
    execution_arn: str
    # $$.Execution.StartTime: with the ARN, names this execution even if its name is used again later.
    execution_started_at: str | None = None


class PolicySummary(Event):
    """The policy fields the state machine's Choice states branch on."""

    approvals_required: int
    # A policy changed since the last success also needs this quorum of the previous policy's approvers.
    previous_approvals_required: int = 0
    # The first wait for approval: until the first reminder, or the whole timeout.
    approval_first_wait_seconds: int
    lock_lease_seconds: int
    has_window: bool = False
    # Applying waits on an announcement made minimumNoticeHours before (checked with the window).
    needs_notice: bool = False
    has_replication: bool = False


class Schedule(Event):
    scheduled_for: str
    wait_seconds: int


class Shard(Event):
    """One slice of a region's resources: those at positions ``shard``, ``shard + of``, ..."""

    shard: Annotated[int, Field(ge=0)]
    of: Annotated[int, Field(ge=1)]


class RegionWork(Event):
    """A region and the shards its resources are provisioned and validated in, side by side."""

    region: str
    shards: list[Shard]


class DeploymentContext(Event):
    """``$.deployment``: what every later state needs to know about this deployment."""

    deployment_id: str
    execution_arn: str
    execution_started_at: str | None = None
    environment: str
    requested_by: str
    # Who requested it, verified or claimed (requested_by is its name).
    requester: Requester | None = None
    change_ticket: str | None
    dry_run: bool
    spec_version: str
    spec_hash: str
    account: str
    regions: list[str]
    policy: PolicySummary
    schedule: Schedule | None = None
    promotion_override: str | None = None
    emergency: str | None = None
    release_tag: str | None = None
    rollback_to: str | None = None
    # What the Provision and Validate maps fan out over, region by region.
    work: list[RegionWork] = []

    def execution_key(self) -> str:
        """This execution and no other: its ARN and start time (an execution name may be used again)."""
        return f"{self.execution_arn}@{self.execution_started_at or '-'}"

    def who_requested(self) -> Requester:
        """The requester; a context made before requesters were kept has only the claimed name."""
        return self.requester or Requester(name=self.requested_by)


class DeploymentEvent(Event):
    deployment: DeploymentContext


class RegionEvent(Event):
    deployment: DeploymentContext
    region: str
    # None: every resource of the region.
    shard: Shard | None = None


class PlanSummary(Event):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    add: int
    change: int
    unchanged: int
    hash: str
    summary: str


class ApprovalRequestEvent(Event):
    """What the waitForTaskToken task passes to the approval request function."""

    deployment: DeploymentContext
    plan: PlanSummary
    task_token: Annotated[str, Field(min_length=1)]


class ApprovedEvent(Event):
    """``$.approval``: what the task's SendTaskSuccess said. Anyone holding the token can send it,
    so VerifyPlan trusts none of it without the approvals store agreeing."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    decision: str | None = None
    approval_id: str | None = None
    plan_hash: str | None = None
    approvers: list[dict[str, Any]] = []


class VerifyPlanEvent(Event):
    deployment: DeploymentContext
    approval: ApprovedEvent


class StepError(Event):
    """What a Catch puts at ``$.error``."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    error: Annotated[str, Field(alias="Error")]
    # Null when the failure carried no cause (moto's SendTaskFailure drops it, for one).
    cause: Annotated[str | None, Field(alias="Cause")] = None


class FailureEvent(Event):
    """A failed state's deployment and its error, for the rollback decision."""

    deployment: DeploymentContext
    error: StepError


class OutcomeEvent(Event):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    deployment_id: str
    execution_arn: str
    input: dict[str, Any] = {}
    deployment: DeploymentContext | None = None
    status: Literal["SUCCEEDED", "FAILED", "PLANNED", "ROLLED_BACK", "SUCCEEDED_WITH_WARNINGS", "ROLLBACK_FAILED"]
    error: StepError | None = None


def parse_event[M: Event](model: type[M], event: Any) -> M:
    """Validate an event, naming every offending field in one InputInvalid."""
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(input)'}: {err['msg']}" for err in exc.errors()
        )
        raise InputInvalid(f"invalid {model.__name__}: {problems}") from None
