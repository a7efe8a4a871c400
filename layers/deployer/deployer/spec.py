"""Environment specifications: the desired infrastructure and policy of one environment.

A spec is data (``environments/<env>.yaml``). Everything that differs between dev,
sit and prod lives here, so code and the state machine branch on these fields and
never on an environment's name.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from deployer.errors import SpecInvalid

ENVIRONMENT_NAME = r"^[a-z][a-z0-9-]{1,31}$"
ACCOUNT_ID = r"^[0-9]{12}$"
REGION = r"^[a-z]{2}(-[a-z]+)+-[0-9]$"
BUCKET_NAME = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3")
TABLE_NAME = r"^[A-Za-z0-9_.-]{3,255}$"
ATTRIBUTE_NAME = r"^[A-Za-z0-9_.-]{1,255}$"
SLACK_USER_ID = r"^[UW][A-Z0-9]{2,20}$"
SLACK_CHANNEL = r"^[CGD][A-Z0-9]{2,20}$"
# Notifications may name a channel by id or by "#name" (chat.postMessage takes either).
SLACK_CHANNEL_OR_NAME = r"^([CGD][A-Z0-9]{2,20}|#[a-z0-9_-]{1,80})$"
# Who a failure mentions: users (U..., W...) or user groups (S..., mentioned as subteams).
SLACK_MENTIONABLE = r"^[UWS][A-Z0-9]{2,20}$"
# What a lock's lease must outlast beyond the waits for approval and the window (Policy).
LEASE_MARGIN_MINUTES = 15
# "+" with a length limit, not "{1,128}": the bounded repeat of a Unicode class costs ~40 ms to compile.
TAG_KEY = r"^[\w .:/=+@-]+$"


def _no_aws_prefix(tags: dict[str, str]) -> dict[str, str]:
    reserved = sorted(k for k in tags if k.lower().startswith("aws:"))
    if reserved:
        raise ValueError(f"tag keys starting with 'aws:' are reserved: {', '.join(reserved)}")
    return tags


class Model(BaseModel):
    """Strict camelCase model: unknown keys are errors, so typos never pass silently."""

    # defer_build: a model's validator is built when it is first used, not at import. Functions
    # import this module (through models) that never validate a spec (locks, outcome, API);
    # building every model (two Unicode-class patterns with bounded repeats alone take ~65 ms)
    # would cost each of their cold starts. pydantic builds a deferred model under a lock, so
    # threads may use them.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, defer_build=True
    )


Tags = Annotated[
    dict[Annotated[str, Field(pattern=TAG_KEY, max_length=128)], Annotated[str, Field(max_length=256)]],
    AfterValidator(_no_aws_prefix),
]


class PublicAccessBlock(Model):
    block_public_acls: bool = True
    ignore_public_acls: bool = True
    block_public_policy: bool = True
    restrict_public_buckets: bool = True

    def to_aws(self) -> dict[str, bool]:
        return {
            "BlockPublicAcls": self.block_public_acls,
            "IgnorePublicAcls": self.ignore_public_acls,
            "BlockPublicPolicy": self.block_public_policy,
            "RestrictPublicBuckets": self.restrict_public_buckets,
        }


class Encryption(Model):
    algorithm: Literal["AES256", "aws:kms"] = "AES256"
    kms_key_id: str | None = None
    bucket_key_enabled: bool = False

    @model_validator(mode="after")
    def _kms_key_only_with_kms(self) -> Encryption:
        if self.kms_key_id and self.algorithm != "aws:kms":
            raise ValueError("kmsKeyId is only allowed with algorithm aws:kms")
        return self


class BucketReplication(Model):
    """S3 cross-region replication of every object to another bucket of this spec."""

    destination: Annotated[str, Field(pattern=BUCKET_NAME)]
    delete_marker_replication: bool = True
    # The replication role in the target account (target-account/deployment-role.yaml creates it).
    role_name: Annotated[str, Field(pattern=r"^[\w+=,.@-]+$", max_length=64)] = "bbws-s3-replication"
    # With SSE-KMS on the source, replicas are encrypted with this key in the destination region.
    replica_kms_key_id: str | None = None


class Bucket(Model):
    name: Annotated[str, Field(pattern=BUCKET_NAME)]
    region: Literal["primary", "failover"] = "primary"
    versioning: bool = True
    public_access_block: PublicAccessBlock = PublicAccessBlock()
    encryption: Encryption = Encryption()
    replication: BucketReplication | None = None
    tags: Tags = {}

    @field_validator("name")
    @classmethod
    def _s3_naming_rules(cls, value: str) -> str:
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value) or ".." in value:
            raise ValueError("bucket names may not look like an IP address or contain '..'")
        if value.startswith(RESERVED_BUCKET_PREFIXES) or value.endswith(RESERVED_BUCKET_SUFFIXES):
            raise ValueError("bucket name uses a prefix or suffix that S3 reserves")
        return value


class KeyAttribute(Model):
    name: Annotated[str, Field(pattern=ATTRIBUTE_NAME)]
    type: Literal["S", "N", "B"] = "S"


class Table(Model):
    name: Annotated[str, Field(pattern=TABLE_NAME)]
    region: Literal["primary", "failover"] = "primary"
    partition_key: KeyAttribute
    sort_key: KeyAttribute | None = None
    billing_mode: Literal["PAY_PER_REQUEST"] = "PAY_PER_REQUEST"
    ttl_attribute: Annotated[str, Field(pattern=ATTRIBUTE_NAME)] | None = None
    point_in_time_recovery: bool = True
    # Global-table replicas (current version, UpdateTable ReplicaUpdates) in these regions.
    replica_regions: list[Literal["primary", "failover"]] = []
    tags: Tags = {}

    @model_validator(mode="after")
    def _distinct_keys(self) -> Table:
        if self.sort_key and self.sort_key.name == self.partition_key.name:
            raise ValueError("sortKey must differ from partitionKey")
        return self


class Regions(Model):
    primary: Annotated[str, Field(pattern=REGION)]
    failover: Annotated[str, Field(pattern=REGION)] | None = None

    @model_validator(mode="after")
    def _distinct(self) -> Regions:
        if self.failover == self.primary:
            raise ValueError("failover region must differ from the primary region")
        return self

    def all(self) -> list[str]:
        """Regions in deployment order: the primary, then the failover once the primary has succeeded
        (runbook section 6 steps 3 to 5); replication is configured after both (step 6)."""
        return [r for r in (self.primary, self.failover) if r]

    def resolve(self, role: Literal["primary", "failover"]) -> str:
        region = self.primary if role == "primary" else self.failover
        if region is None:
            raise ValueError("no failover region is configured")
        return region


class Approver(Model):
    """A person who may vote: their Slack user id, and the name they request deployments as."""

    slack_user_id: Annotated[str, Field(pattern=SLACK_USER_ID)]
    name: Annotated[str, Field(min_length=1, max_length=128)]


class Approvals(Model):
    required: Annotated[int, Field(ge=0, le=10)] = 0
    approvers: list[Approver] = []
    # Fractions of a minute are allowed so tests and rehearsals can use seconds.
    timeout_minutes: Annotated[float, Field(ge=0.05, le=7 * 24 * 60)] = 60
    reminder_minutes: Annotated[float, Field(ge=0.05, le=7 * 24 * 60)] | None = None
    escalation_approvers: list[Approver] = []
    # Ask "are you sure?" in Slack before a vote counts.
    confirm: bool = False
    channel: Annotated[str, Field(pattern=SLACK_CHANNEL)] | None = None

    @model_validator(mode="after")
    def _quorum_possible(self) -> Approvals:
        voters = {a.slack_user_id for a in [*self.approvers, *self.escalation_approvers]}
        if self.required > len(voters):
            raise ValueError(f"required is {self.required} but only {len(voters)} distinct approver(s) can vote")
        if self.required and not self.channel:
            raise ValueError("channel is required when approvals are required")
        if self.reminder_minutes is not None and self.reminder_minutes >= self.timeout_minutes:
            raise ValueError("reminderMinutes must be shorter than timeoutMinutes")
        return self

    def voter(self, slack_user_id: str) -> Approver | None:
        """The approver (or escalation approver) with this Slack id, if any."""
        voters = [*self.approvers, *self.escalation_approvers]
        return next((a for a in voters if a.slack_user_id == slack_user_id), None)


class ReleaseTagPolicy(Model):
    # Runbook section 6 step 2: the commit deployed is tagged v<YYYY.MM.DD>-<environment>-<name> first.
    required: bool = False


class ChangeTicketPolicy(Model):
    required: bool = False
    pattern: str = r"^[A-Z][A-Z0-9]+-[0-9]+$"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class BackupPolicy(Model):
    # An existing table passes preflight with PITR on, or a backup no older than this.
    max_age_hours: Annotated[int, Field(ge=1, le=24 * 35)] = 24


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class DeploymentWindow(Model):
    """When changes may be applied: weekdays and hours in a time zone, minus blackout dates."""

    time_zone: str = "UTC"
    weekdays: list[Weekday] = list(WEEKDAYS)
    start: Annotated[str, Field(pattern=CLOCK_TIME)] = "00:00"
    end: Annotated[str, Field(pattern=CLOCK_TIME)] = "23:59"
    blackout_dates: list[date] = []
    # A deployment that reaches provisioning outside the window waits at most this long for it.
    max_wait_hours: Annotated[float, Field(ge=0, le=24 * 14)] = 0

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Africa/Johannesburg)") from None
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> DeploymentWindow:
        if self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        if not self.weekdays:
            raise ValueError("weekdays must name at least one day")
        return self


class Promotion(Model):
    # This environment only receives a resources spec that already succeeded in that one.
    from_: Annotated[str, Field(alias="from", pattern=ENVIRONMENT_NAME)]
    # An override needs this many extra approvals, recorded as an override.
    override_approvals: Annotated[int, Field(ge=1, le=10)] = 1


class Emergency(Model):
    """The only way past minimumNoticeHours: more approvals, and the incident channel told (runbook section 9)."""

    # On top of the policy's approvals (and any promotion override's).
    extra_approvals: Annotated[int, Field(ge=1, le=10)] = 1
    # Where the emergency is announced, as the runbook announces incidents (#incidents).
    channel: Annotated[str, Field(pattern=SLACK_CHANNEL_OR_NAME)]


Criterion = Literal[
    "dataLossRisk",
    "securityExposure",
    "serviceUnavailable",
    "replicationFailure",
    "configurationError",
    "resourceExhaustion",
    "transientConnectivity",
    "monitoringGap",
    "documentationIssue",
    "performanceDegradation",
]
Response = Literal["rollback", "fixForward"]
# Runbook section 9: roll back immediately on the first six, fix forward on the last four.
RUNBOOK_CRITERIA: dict[Criterion, Response] = {
    "dataLossRisk": "rollback",
    "securityExposure": "rollback",
    "serviceUnavailable": "rollback",
    "replicationFailure": "rollback",
    "configurationError": "rollback",
    "resourceExhaustion": "rollback",
    "transientConnectivity": "fixForward",
    "monitoringGap": "fixForward",
    "documentationIssue": "fixForward",
    "performanceDegradation": "fixForward",
}


class RollbackPolicy(Model):
    """Runbook section 9 as data: what each failure criterion calls for, and the grace periods."""

    criteria: dict[Criterion, Response] = dict(RUNBOOK_CRITERIA)
    # Writes failing for longer than this are a data-loss risk (runbook: 5 minutes).
    write_failure_grace_minutes: Annotated[float, Field(ge=0, le=60)] = 5
    # Connectivity that recovers within this is transient (runbook: under 5 minutes).
    transient_grace_minutes: Annotated[float, Field(ge=0, le=60)] = 5
    # A test write or read slower than this is performance degradation (fix forward, investigated).
    latency_threshold_ms: Annotated[int, Field(ge=1, le=60_000)] = 1000

    @field_validator("criteria")
    @classmethod
    def _every_criterion(cls, value: dict[Criterion, Response]) -> dict[Criterion, Response]:
        # A criterion left out would silently get no response: fill in the runbook's.
        return {**RUNBOOK_CRITERIA, **value}


class Notifications(Model):
    """Where the pipeline's events are posted (one thread per deployment), and who a failure mentions."""

    channel: Annotated[str, Field(pattern=SLACK_CHANNEL_OR_NAME)]
    mention_on_failure: Annotated[list[Annotated[str, Field(pattern=SLACK_MENTIONABLE)]], Field(max_length=20)] = []

    @field_validator("mention_on_failure")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        dupes = sorted({m for m in value if value.count(m) > 1})
        if dupes:
            raise ValueError(f"lists {', '.join(dupes)} more than once")
        return value


class Policy(Model):
    approvals: Approvals = Approvals()
    change_ticket: ChangeTicketPolicy = ChangeTicketPolicy()
    release_tag: ReleaseTagPolicy = ReleaseTagPolicy()
    backup: BackupPolicy = BackupPolicy()
    lock_lease_minutes: Annotated[int, Field(ge=1, le=8 * 24 * 60)] = 120
    window: DeploymentWindow | None = None
    # Every deployment applies only inside a window announced (`deployer announce`, or --at) at least
    # this long before; 0 needs no announcement.
    minimum_notice_hours: Annotated[float, Field(ge=0, le=24 * 30)] = 0
    # Deploying without that notice (--emergency REASON); None: there is no way to.
    emergency: Emergency | None = None
    promotion: Promotion | None = None
    rollback: RollbackPolicy = RollbackPolicy()
    notifications: Notifications | None = None

    @model_validator(mode="after")
    def _lease_outlives_the_waits(self) -> Policy:
        # Every step renews the lock's lease; the longest stretches without one are the waits for
        # approval and for the window. The lease outlives both, with a margin, so no second
        # deployment can take the lock while this one waits.
        approval = self.approvals.timeout_minutes if self.approvals.required else 0
        window = self.window.max_wait_hours * 60 if self.window else 0
        if (approval or window) and self.lock_lease_minutes < approval + window + LEASE_MARGIN_MINUTES:
            raise ValueError(
                f"lockLeaseMinutes ({self.lock_lease_minutes}) must be at least approvals.timeoutMinutes "
                f"({approval:g}) + window.maxWaitHours in minutes ({window:g}) + {LEASE_MARGIN_MINUTES}, "
                "so the lock outlives the waits for approval and for the window"
            )
        return self

    def notification_channel(self) -> str | None:
        """The channel of the environment's notifications: notifications.channel, else approvals.channel."""
        return self.notifications.channel if self.notifications else self.approvals.channel

    def mention_on_failure(self) -> list[str]:
        return list(self.notifications.mention_on_failure) if self.notifications else []


class Resources(Model):
    buckets: list[Bucket] = []
    tables: list[Table] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Resources:
        for kind, names in (
            ("bucket", [b.name for b in self.buckets]),
            ("table", [t.name for t in self.tables]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} names: {', '.join(dupes)}")
        return self


class EnvironmentSpec(Model):
    environment: Annotated[str, Field(pattern=ENVIRONMENT_NAME)]
    account: Annotated[str, Field(pattern=ACCOUNT_ID)]
    deployment_role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$")]
    regions: Regions
    policy: Policy = Policy()
    tags: Tags = {}
    resources: Resources

    @model_validator(mode="after")
    def _consistent(self) -> EnvironmentSpec:
        role_account = self.deployment_role_arn.split(":")[4]
        if role_account != self.account:
            raise ValueError(
                f"deploymentRoleArn is in account {role_account}, not the environment's account {self.account}"
            )
        if not self.regions.failover:
            resources: list[Bucket | Table] = [*self.resources.buckets, *self.resources.tables]
            stray = [r.name for r in resources if r.region == "failover"]
            if stray:
                raise ValueError(
                    f"resources placed in the failover region, which is not configured: {', '.join(stray)}"
                )
        if not self.resources.buckets and not self.resources.tables:
            raise ValueError("resources must declare at least one bucket or table")
        self._check_replication()
        return self

    def _check_replication(self) -> None:
        buckets = {b.name: b for b in self.resources.buckets}
        for bucket in self.resources.buckets:
            if bucket.replication is None:
                continue
            destination = buckets.get(bucket.replication.destination)
            if destination is None:
                raise ValueError(
                    f"bucket {bucket.name}: replication.destination {bucket.replication.destination} "
                    "is not a bucket of this spec"
                )
            if destination.region == bucket.region:
                raise ValueError(f"bucket {bucket.name}: replication.destination must be in the other region")
            if not (bucket.versioning and destination.versioning):
                raise ValueError(f"bucket {bucket.name}: replication needs versioning on both buckets")
        for table in self.resources.tables:
            if table.region in table.replica_regions:
                raise ValueError(f"table {table.name}: replicaRegions may not include the table's own region")
            if "failover" in table.replica_regions and not self.regions.failover:
                raise ValueError(f"table {table.name}: a failover replica needs regions.failover")

    def replica_regions_of(self, table: Table) -> list[str]:
        return [self.regions.resolve(r) for r in table.replica_regions]

    def replicated_buckets(self) -> list[Bucket]:
        return [b for b in self.resources.buckets if b.replication is not None]

    def promotion_hash(self) -> str:
        """The resources spec with this environment's name abstracted, to compare across environments.

        ``bbws-sit-data-bucket`` and ``bbws-prod-data-bucket`` are the same resource in two
        environments; only resources in the primary region and their settings count, since
        the failover copies exist only where there is a failover region. Tags are labels
        (an environment's data classification, say), not behaviour, so they do not count.
        """
        unshared: dict[str, Any] = {"replication": None, "replica_regions": [], "tags": {}}
        data = Resources(
            buckets=[b.model_copy(update=unshared) for b in self.resources.buckets if b.region == "primary"],
            tables=[t.model_copy(update=unshared) for t in self.resources.tables if t.region == "primary"],
        ).model_dump(mode="json", by_alias=True)
        text = json.dumps(data, sort_keys=True).replace(f"-{self.environment}-", "-{environment}-")
        return _hash(json.loads(text))

    def region_of(self, resource: Bucket | Table) -> str:
        return self.regions.resolve(resource.region)

    def buckets_in(self, region: str) -> list[Bucket]:
        return [b for b in self.resources.buckets if self.region_of(b) == region]

    def tables_in(self, region: str) -> list[Table]:
        return [t for t in self.resources.tables if self.region_of(t) == region]

    def resources_in(self, region: str, shard: int = 0, of: int = 1) -> list[Bucket | Table]:
        """The region's buckets, then its tables; with ``of`` > 1, only every ``of``-th from ``shard`` on.

        Taking every ``of``-th rather than a contiguous run spreads the slow ones (tables) over the shards.
        """
        resources: list[Bucket | Table] = [*self.buckets_in(region), *self.tables_in(region)]
        return resources[shard::of]

    def tags_for(self, resource: Bucket | Table) -> dict[str, str]:
        """Environment-wide tags overlaid with the resource's own."""
        return {**self.tags, **resource.tags}

    def resources_hash(self) -> str:
        """A stable hash of the desired resources (not of policy), for audit and promotion."""
        return _hash(self.resources.model_dump(mode="json", by_alias=True))

    def spec_hash(self) -> str:
        return _hash(self.model_dump(mode="json", by_alias=True))


def _hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def parse_spec(text: str, source: str, expected_environment: str | None = None) -> EnvironmentSpec:
    """Parse and validate a spec's YAML text; ``source`` names it in error messages.

    Raises SpecInvalid with one line per problem: ``<source>: <field>: <what is wrong>``.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecInvalid(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecInvalid(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        spec = EnvironmentSpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {_location(err['loc'])}: {message}")
        raise SpecInvalid("\n".join(lines)) from None
    if expected_environment is not None and spec.environment != expected_environment:
        raise SpecInvalid(
            f"{source}: environment: is {spec.environment!r} but the file is for {expected_environment!r}"
        )
    return spec


def load_spec_file(path: Path) -> EnvironmentSpec:
    """Load ``environments/<env>.yaml``; the file's stem must match its ``environment``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecInvalid(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_spec(text, str(path), expected_environment=path.stem)
