"""AWS API calls a deployment makes in its target account, against the minimum its spec requires.

Runs, in one sandbox: DEV's first deployment and an unchanged re-run; SIT's first deployment
(PROD's promotion needs it; one approval); PROD's first deployment and an unchanged re-run
(inside its window, two approvals, both regions, replication). Every call is counted at the
sandbox's endpoint (``sandbox.call_counter``), whichever Lambda made it, and only the target
account's calls are kept (the AssumeRole that opens each session is the tooling account's).

Phases: each Lambda invocation assumes the deployment role afresh, so one access key is one
invocation. A key's calls are attributed to the function whose Lambda Invoke (seen at the same
endpoint, with its start and end) encloses them, and the function names the phase. The
provisioning and replication phases are cross-checked against the calls the functions count
themselves (``CallLog``, recorded as ``provisioned.*.apiCalls``).

The minimum (``minimum()``) is derived from the spec, resource by resource, for the state the
account is in before the run (nothing yet, or everything as specified). It is what an
implementation of the same runbook steps and checks must call, each read made once per
decision and handed on (the plan travels to provisioning in the record, as it already does):

- preflight (runbook section 3): GetCallerIdentity; per bucket HeadBucket (name free or ours,
  and its region from ``x-amz-bucket-region``); per table DescribeContinuousBackups (absent, or
  PITR on), plus ListBackups when PITR is off.
- plan: per bucket HeadBucket, and if it exists one Get per setting the spec manages
  (versioning if on, public access block, encryption, tags if any, replication if any); per
  table DescribeTable (keys, billing, status, ARN, replicas), and if it exists
  DescribeTimeToLive (if a TTL attribute), DescribeContinuousBackups (if PITR), ListTagsOfResource
  (if tags); the data count of runbook section 9 step 4 for what exists: a ListObjectVersions per
  bucket, a Scan per table.
- approval re-plan (approvals required): the plan's state reads once more, after the approval,
  so the approved plan is proven current; provisioning then applies it without reading again.
- provision: per new bucket CreateBucket (ObjectOwnership in it), PutPublicAccessBlock,
  PutBucketEncryption, PutBucketVersioning (if on), PutBucketTagging (if tags); per new table
  CreateTable (tags in it), one DescribeTable until ACTIVE, UpdateTimeToLive (if TTL),
  UpdateContinuousBackups (if PITR). Nothing for a resource already as specified.
- replication (PROD): per new replicated bucket PutBucketReplication; per new replica region an
  UpdateTable(ReplicaUpdates) and one DescribeTable until the replica is ACTIVE.
- validate (runbook section 7): per bucket HeadBucket, one Get per managed setting (versioning
  if on, public access block, encryption, tags if any) and the test PutObject, GetObject,
  DeleteObject; per table one DescribeTable (active, keys, billing), DescribeTimeToLive (if TTL),
  DescribeContinuousBackups (if PITR), ListTagsOfResource (if tags), the test PutItem, GetItem,
  DeleteItem, and ListMetrics (metrics visible).
- replication checks (PROD, section 7): per replicated bucket GetBucketReplication, PutObject,
  HeadObject on the source and on the replica (one poll each), DeleteObject on both; per table
  replica DescribeTable, PutItem, GetItem on the replica (written), DeleteItem, GetItem (gone).

Waits count one poll each: polls beyond that (a replica still CREATING, an object still PENDING,
for as long as the sandbox's emulated replication takes) are reported apart, as "polls", not as
redundant reads; on AWS, where a replica takes minutes, there are more of them.

``measure(sandbox)`` returns the tables: totals per deployment (with the ratio and mutating
calls), calls by phase and by operation (actual / minimum), the calls above the minimum by
cause with the code that makes them, and the minimum per resource. ``python -m bench.api_calls``
starts a sandbox and prints them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bench.tables import Table
from deployer.aws import READ_ONLY_PREFIXES
from deployer.spec import Bucket, EnvironmentSpec, load_spec_file
from deployer.spec import Table as SpecTable
from deployer_cli import client
from deployer_cli.clicks import SandboxSlack, slack_user
from deployer_cli.client import Stack
from sandbox.call_counter import Call
from sandbox.server import Sandbox

REPO = Path(__file__).resolve().parent.parent

Op = tuple[str, str]  # (service, operation)
PHASES = (
    "preflight",
    "plan",
    "approval re-plan",
    "provision",
    "replication",
    "validate",
    "replication checks",
    "other",
)
# The function (its name after "<stack>-") that makes each phase's target-account calls.
FUNCTION_PHASES = {
    "preflight": "preflight",
    "plan": "plan",
    "verify-plan": "approval re-plan",
    "provision": "provision",
    "replicate": "replication",
    "validate": "validate",
    "verify-replication": "replication checks",
}
# The runbook's section 7 test writes: mutating, but data, not configuration.
TEST_WRITE_PHASES = ("validate", "replication checks")


def is_mutating(operation: str) -> bool:
    return not operation.startswith(READ_ONLY_PREFIXES)


# ---------------------------------------------------------------- the minimum


def _s3(*operations: str) -> Counter[Op]:
    return Counter(("s3", o) for o in operations)


def _ddb(*operations: str) -> Counter[Op]:
    return Counter(("dynamodb", o) for o in operations)


def _bucket_settings(bucket: Bucket, tags: Mapping[str, str], verb: str) -> Counter[Op]:
    """One call per setting the spec manages on a bucket: verb "Get" reads them, "Put" sets them."""
    names = ["PublicAccessBlock", "BucketEncryption"]
    names += ["BucketVersioning"] if bucket.versioning else []
    names += ["BucketTagging"] if tags else []
    # S3 names these two without "Bucket" (GetPublicAccessBlock) and the rest with it.
    return _s3(*(f"{verb}{name}" for name in names))


def _table_settings(table: SpecTable, tags: Mapping[str, str]) -> Counter[Op]:
    """One read per table setting DescribeTable does not show."""
    names = (["DescribeTimeToLive"] if table.ttl_attribute else []) + (
        ["DescribeContinuousBackups"] if table.point_in_time_recovery else []
    )
    return _ddb(*names, *(["ListTagsOfResource"] if tags else []))


def _bucket_state(bucket: Bucket, spec: EnvironmentSpec, exists: bool) -> Counter[Op]:
    reads = _s3("HeadBucket")
    if exists:
        reads += _bucket_settings(bucket, spec.tags_for(bucket), "Get")
        reads += _s3("GetBucketReplication") if bucket.replication else Counter()
    return reads


def _table_state(table: SpecTable, spec: EnvironmentSpec, exists: bool) -> Counter[Op]:
    return _ddb("DescribeTable") + (_table_settings(table, spec.tags_for(table)) if exists else Counter())


def minimum(spec: EnvironmentSpec, exists: bool) -> dict[str, Counter[Op]]:
    """The calls, by phase, a deployment of ``spec`` must make in its account.

    ``exists``: every resource is already as specified (an unchanged re-run); else none exists yet.
    """
    phases: dict[str, Counter[Op]] = defaultdict(Counter)
    phases["preflight"][("sts", "GetCallerIdentity")] += 1
    for bucket in spec.resources.buckets:
        tags = spec.tags_for(bucket)
        phases["preflight"] += _s3("HeadBucket")
        phases["plan"] += _bucket_state(bucket, spec, exists) + (_s3("ListObjectVersions") if exists else Counter())
        if spec.policy.approvals.required:
            phases["approval re-plan"] += _bucket_state(bucket, spec, exists)
        if not exists:
            phases["provision"] += _s3("CreateBucket") + _bucket_settings(bucket, tags, "Put")
            phases["replication"] += _s3("PutBucketReplication") if bucket.replication else Counter()
        phases["validate"] += _s3("HeadBucket") + _bucket_settings(bucket, tags, "Get")
        phases["validate"] += _s3("PutObject", "GetObject", "DeleteObject")
        if bucket.replication:
            phases["replication checks"] += _s3(
                "GetBucketReplication", "PutObject", "HeadObject", "HeadObject", "DeleteObject", "DeleteObject"
            )
    for table in spec.resources.tables:
        tags = spec.tags_for(table)
        backups = _ddb("DescribeContinuousBackups")
        if exists and not table.point_in_time_recovery:
            backups += _ddb("ListBackups")
        phases["preflight"] += backups
        phases["plan"] += _table_state(table, spec, exists) + (_ddb("Scan") if exists else Counter())
        if spec.policy.approvals.required:
            phases["approval re-plan"] += _table_state(table, spec, exists)
        if not exists:
            phases["provision"] += _ddb("CreateTable", "DescribeTable")
            phases["provision"] += _ddb(
                *(["UpdateTimeToLive"] if table.ttl_attribute else []),
                *(["UpdateContinuousBackups"] if table.point_in_time_recovery else []),
            )
        phases["validate"] += _ddb("DescribeTable") + _table_settings(table, tags)
        phases["validate"] += _ddb("PutItem", "GetItem", "DeleteItem") + Counter({("cloudwatch", "ListMetrics"): 1})
        for _ in spec.replica_regions_of(table):
            # Each replica's own point-in-time recovery: checked before, planned, and turned on once.
            phases["preflight"] += backups
            phases["plan"] += _ddb("DescribeContinuousBackups")
            if spec.policy.approvals.required:
                phases["approval re-plan"] += _ddb("DescribeContinuousBackups")
            if not exists:
                phases["replication"] += _ddb("UpdateTable", "DescribeTable")
                if table.point_in_time_recovery:
                    phases["replication"] += _ddb("UpdateContinuousBackups")
            phases["replication checks"] += _ddb("DescribeTable", "PutItem", "GetItem", "DeleteItem", "GetItem")
    return {phase: phases[phase] for phase in PHASES if phases[phase]}


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Run:
    environment: str
    label: str
    exists: bool  # every resource already as specified before the run
    requested_by: str = "bench"
    change_ticket: str | None = None
    approvers: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.environment.upper()} {self.label}"


RUNS = (
    Run("dev", "first deployment", exists=False),
    Run("dev", "unchanged re-run", exists=True),
    Run("sit", "first deployment", exists=False, change_ticket="CHG-300", approvers=("sit-lead",)),
    Run(
        "prod",
        "first deployment",
        exists=False,
        requested_by="alice",
        change_ticket="CHG-300",
        approvers=("senior-engineer-1", "senior-engineer-2"),
    ),
    Run(
        "prod",
        "unchanged re-run",
        exists=True,
        requested_by="alice",
        change_ticket="CHG-301",
        approvers=("senior-engineer-1", "senior-engineer-2"),
    ),
)


@dataclass
class Attributed:
    """One account's calls by phase, and each invocation's calls in the order they started."""

    phases: dict[str, Counter[Op]]
    invocations: list[tuple[str, list[Op]]]
    unattributed: int = 0


@dataclass
class Measured:
    run: Run
    spec: EnvironmentSpec
    summary: dict[str, Any]
    attributed: Attributed
    minimum: dict[str, Counter[Op]]
    # What the provision and replicate functions counted themselves (CallLog), for the cross-check.
    self_counted: Counter[Op] = field(default_factory=Counter)

    @property
    def actual(self) -> dict[str, Counter[Op]]:
        return self.attributed.phases

    def calls(self, phases: Mapping[str, Counter[Op]], only: Sequence[str] = PHASES) -> Counter[Op]:
        return sum((ops for phase, ops in phases.items() if phase in only), Counter())

    def mutating(self, phases: Mapping[str, Counter[Op]], *, configuration_only: bool = False) -> int:
        return sum(
            n
            for phase, ops in phases.items()
            if not (configuration_only and phase in TEST_WRITE_PHASES)
            for (_, operation), n in ops.items()
            if is_mutating(operation)
        )

    @property
    def consistent(self) -> bool:
        """The endpoint's count of the provision and replicate phases equals the functions' own (CallLog)."""
        return self.calls(self.actual, ("provision", "replication")) == self.self_counted


def function_of(resource: str | None, stack_name: str) -> str | None:
    """The function's short name ("plan") from an Invoke's FunctionName (name, ARN or partial ARN)."""
    if not resource:
        return None
    name = unquote(resource)
    name = name.split(":function:", 1)[1] if ":function:" in name else name
    return name.split(":", 1)[0].removeprefix(f"{stack_name}-")


def attribute(calls: Sequence[Call], account: str, stack_name: str) -> Attributed:
    """The account's calls by phase: an access key's calls (one invocation's) go to the enclosing Invoke's function."""
    invokes = [
        (c.started, c.finished, function_of(c.resource, stack_name))
        for c in calls
        if (c.service, c.operation) == ("lambda", "Invoke")
    ]
    by_key: dict[str, list[Call]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c.started):
        if call.account == account:
            by_key[call.access_key].append(call)
    phases: dict[str, Counter[Op]] = defaultdict(Counter)
    invocations: list[tuple[str, list[Op]]] = []
    unattributed = 0
    for group in by_key.values():
        votes = Counter(
            function
            for call in group
            for started, finished, function in invokes
            if started <= call.started and call.finished <= finished
        )
        function = votes.most_common(1)[0][0] if votes else None
        phase = FUNCTION_PHASES.get(function or "", "other")
        unattributed += len(group) if phase == "other" else 0
        ops = [(call.service, call.operation) for call in group]
        phases[phase].update(ops)
        invocations.append((phase, ops))
    return Attributed({phase: phases[phase] for phase in PHASES if phases[phase]}, invocations, unattributed)


def _self_counted(record: Mapping[str, Any]) -> Counter[Op]:
    counted: Counter[Op] = Counter()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "apiCalls" and isinstance(inner, dict):
                    for op, n in inner.items():
                        service, _, operation = op.partition(":")
                        counted[(service, operation)] += int(n)
                else:
                    walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(record.get("provisioned", {}))
    return counted


def deploy(sandbox: Sandbox, stack: Stack, run: Run) -> dict[str, Any]:
    """One deployment as `deployer run` makes it, approvals clicked in the fake Slack; its summary."""
    version = client.push_spec(stack, REPO / "environments", run.environment)
    tag = f"v{sandbox.now():%Y.%m.%d}-prod-bench" if run.environment == "prod" else None
    request = client.build_request(run.environment, run.requested_by, run.change_ticket, False, version, releaseTag=tag)
    arn = client.start(stack, request)
    if run.approvers:
        approval = client.open_approval(stack, arn)
        if approval is not None:
            spec, _ = stack.specs.get(run.environment)
            slack = SandboxSlack.discover(sandbox.endpoint)
            for approver in run.approvers:
                user_id, name = slack_user(spec, approver)
                slack.click(approval, user_id, name, "approve")
    client.wait(stack, arn, poll_seconds=0.1, timeout_seconds=600)
    return dict(client.summary(stack, arn))


def measure_run(sandbox: Sandbox, stack: Stack, run: Run) -> Measured:
    spec = load_spec_file(REPO / "environments" / f"{run.environment}.yaml")
    if spec.policy.minimum_notice_hours and run.change_ticket:
        # Announced a day ahead (simulated), outside the counted calls: the deployment is what is measured.
        sandbox.announce_ahead(run.environment, run.change_ticket, run.requested_by)
    sandbox.calls.reset()
    summary = deploy(sandbox, stack, run)
    attributed = attribute(sandbox.calls.log(), spec.account, sandbox.stack_name)
    record = stack.records.get(str(summary["deploymentId"])) or {}
    return Measured(run, spec, summary, attributed, minimum(spec, run.exists), _self_counted(record))


def measure(sandbox: Sandbox) -> list[Table]:
    """Deploy DEV (first, unchanged re-run), SIT, then PROD (first, unchanged re-run); the tables."""
    stack = Stack.discover(sandbox.session(), sandbox.stack_name, sandbox.region, sandbox.endpoint)
    return tables([measure_run(sandbox, stack, run) for run in RUNS])


# ---------------------------------------------------------------- reporting


def _ratio(actual: int, minimum: int) -> str:
    return f"{actual / minimum:.2f}" if minimum else ("-" if not actual else "inf")


def _total(phases: Mapping[str, Counter[Op]]) -> int:
    return sum(sum(ops.values()) for ops in phases.values())


def tables(measured: Sequence[Measured]) -> list[Table]:
    return [
        _totals(measured),
        _by_phase(measured),
        _by_operation(measured),
        _excess(measured),
        _minimum_model(measured),
    ]


def _totals(measured: Sequence[Measured]) -> Table:
    table = Table(
        "AWS API calls to the target account per deployment",
        (
            "deployment",
            "status",
            "plan add/change/unchanged",
            "calls",
            "minimum",
            "ratio",
            "mutating",
            "mutating minimum",
            "configuration changes (target 0 on a re-run)",
            "pipeline's mutatingCalls",
        ),
    )
    for m in measured:
        plan = m.summary.get("plan", {})
        table.add(
            m.run.name,
            m.summary.get("status"),
            f"{plan.get('add')}/{plan.get('change')}/{plan.get('unchanged')}",
            _total(m.actual),
            _total(m.minimum),
            _ratio(_total(m.actual), _total(m.minimum)),
            m.mutating(m.actual),
            m.mutating(m.minimum),
            m.mutating(m.actual, configuration_only=True),
            m.summary.get("mutatingCalls"),
        )
    table.notes += [
        "Counted at the sandbox's endpoint (`sandbox.call_counter`): every call signed with a key moto maps to "
        "the environment's account, whichever function made it; the AssumeRole that opens each session is the "
        "tooling account's and is not included. A retried call counts once per attempt.",
        "Mutating: any operation not Get/Head/List/Describe/Scan/Query (`deployer.aws.READ_ONLY_PREFIXES`). "
        "'Configuration changes' leaves out the runbook section 7 test writes (PutObject/DeleteObject/PutItem/"
        "DeleteItem in validate and the replication checks), which the runbook asks for on every run; the "
        "pipeline's own mutatingCalls (CallLog) counts provisioning and replication only.",
        "Minimum: `bench.api_calls.minimum(spec, exists)`, summed resource by resource from the spec (model in "
        "the last table and the module docstring); a first deployment starts from nothing, a re-run from "
        "everything as specified.",
    ]
    within = [m.run.name for m in measured if _total(m.actual) <= 1.2 * _total(m.minimum)]
    table.notes.append(
        f"Target, within 1.2x of the minimum: met by {', '.join(within) if within else 'none of the runs'}."
    )
    table.notes.append(
        "A stricter minimum (preflight's bucket-name and backup reads folded into the plan's reads; on an unchanged "
        "re-run, validation skipping the configuration reads the plan just found as specified, keeping its test "
        "round trips and metrics) would be: "
        + ", ".join(f"{m.run.name} {_stricter(m)} ({_ratio(_total(m.actual), _stricter(m))}x)" for m in measured)
        + ". The table keeps the generous one: every runbook step reads for itself."
    )
    for m in measured:
        if m.attributed.unattributed:
            table.notes.append(f"{m.run.name}: {m.attributed.unattributed} call(s) not attributed to a function.")
        if not m.consistent:
            endpoint = dict(m.calls(m.actual, ("provision", "replication")))
            table.notes.append(
                f"{m.run.name}: provision+replication at the endpoint {endpoint} "
                f"differs from the functions' CallLog {dict(m.self_counted)}."
            )
    if all(m.consistent and not m.attributed.unattributed for m in measured):
        table.notes.append(
            "Cross-check: every target-account call fell inside one function's invocation, and in every run the "
            "provision and replication phases equal, operation by operation, what those functions counted "
            "themselves (CallLog, `provisioned.*.apiCalls` in the deployment record)."
        )
    return table


def _stricter(m: Measured) -> int:
    folded = len(m.spec.resources.buckets) + len(m.spec.resources.tables)
    round_trips = {("s3", "GetObject"), ("dynamodb", "GetItem"), ("cloudwatch", "ListMetrics")}
    validation_reads = sum(
        n for op, n in m.minimum.get("validate", Counter()).items() if not is_mutating(op[1]) and op not in round_trips
    )
    return _total(m.minimum) - folded - (validation_reads if m.run.exists else 0)


def _by_phase(measured: Sequence[Measured]) -> Table:
    table = Table("Target-account API calls by phase: actual / minimum", ("phase", *(m.run.name for m in measured)))
    for phase in PHASES:
        cells = []
        for m in measured:
            actual, least = sum(m.actual.get(phase, Counter()).values()), sum(m.minimum.get(phase, Counter()).values())
            cells.append(f"{actual} / {least}" if actual or least else "-")
        if any(c != "-" for c in cells):
            table.add(phase, *cells)
    table.add(
        "total (ratio)",
        *(
            f"{_total(m.actual)} / {_total(m.minimum)} ({_ratio(_total(m.actual), _total(m.minimum))})"
            for m in measured
        ),
    )
    table.notes.append(
        "Phase = the function whose Lambda invocation made the call (preflight, plan, verify-plan = approval "
        "re-plan, provision, replicate = replication, validate, verify-replication = replication checks). Each "
        "invocation assumes the deployment role afresh, so its calls share one access key; the counter logs every "
        "Lambda Invoke with its start and end, and a key's calls belong to the invocation that encloses them."
    )
    return table


def _by_operation(measured: Sequence[Measured]) -> Table:
    table = Table(
        "Target-account API calls by service and operation: actual / minimum",
        ("service", "operation", "mutating", *(m.run.name for m in measured)),
    )
    ops = sorted({op for m in measured for phases in (m.actual, m.minimum) for op in m.calls(phases)})
    for service, operation in ops:
        cells = []
        for m in measured:
            actual, least = m.calls(m.actual)[(service, operation)], m.calls(m.minimum)[(service, operation)]
            cells.append(f"{actual} / {least}" if actual or least else "-")
        table.add(service, operation, "yes" if is_mutating(operation) else "", *cells)
    return table


@dataclass(frozen=True)
class Cause:
    finding: str
    code: str


# Why a phase makes more (or fewer) calls of an operation than the minimum: the finding, and the code.
CAUSES = {
    "preflight": Cause(
        "Preflight reads each resource in full to check a bucket name or a table's backups",
        "preflight._bucket_name -> resources.read_bucket (HeadBucket, GetBucketLocation, GetBucketVersioning, "
        "GetPublicAccessBlock, GetBucketEncryption, GetBucketTagging) where HeadBucket answers both name and region "
        "(x-amz-bucket-region); preflight._table_backup -> resources.read_table (DescribeTable, DescribeTimeToLive, "
        "DescribeContinuousBackups, ListTagsOfResource) where DescribeContinuousBackups alone answers (for an absent "
        "table the one DescribeTable stands in for it: no excess on a first deployment)",
    ),
    "location": Cause(
        "GetBucketLocation after HeadBucket, whose answer already carries the region",
        "resources.read_bucket (called by plan.plan_environment in Plan and VerifyPlan)",
    ),
    "count-exists": Cause(
        "The data count checks again that each resource exists, right after the plan read it",
        "pipeline.plan -> rollback.count_data -> count_object_versions/_bucket_exists (HeadBucket) and "
        "count_items/_table_exists (DescribeTable)",
    ),
    "replication-unplanned": Cause(
        "Replication is planned only in Replicate: neither Plan nor VerifyPlan reads it, so replication changes are "
        "not in the approved plan (negative: reads the minimum puts there); Replicate reads it instead",
        "plan.plan_environment covers buckets/tables only; replication.apply_replication -> _planned_buckets "
        "(GetBucketReplication), _planned_tables -> read_table_replicas (DescribeTable)",
    ),
    "provision-replans": Cause(
        "Provisioning re-plans every resource from fresh reads, repeating the reads of Plan (or of VerifyPlan, "
        "seconds earlier after an approval)",
        "pipeline.provision -> plan.apply_region -> _planned -> resources.read_bucket / read_table",
    ),
    "replication-rechecks": Cause(
        "Replicate re-checks what provisioning just did: the destination bucket exists and is versioned, and the "
        "table is ACTIVE before the replica is added",
        "replication._require_destination (HeadBucket, GetBucketVersioning); replication.apply_table_replicas -> "
        "_wait_for(table, None) before UpdateTable",
    ),
    "validate-describes": Cause(
        "Validation describes each table four times",
        "checks._table_checks: table.active, table.key-schema, table.billing-mode and table.tags each call "
        "DescribeTable (tags for the ARN); one answer serves all four",
    ),
    "polls": Cause(
        "Waiting: polls beyond the one the minimum counts, while the sandbox's emulated replication completes "
        "(dynamodb_replicas/s3_replication delay_seconds); not a redundant read, and more on AWS",
        "replication.apply_table_replicas -> _wait_for (DescribeTable); replication._object_replicates (HeadObject) "
        "and _item_replicates (GetItem) -> _poll",
    ),
    "other": Cause("Not classified", ""),
}
# Creates whose completion is then awaited by DescribeTable polls (one poll each in the minimum).
_AWAITED = frozenset({("dynamodb", "CreateTable"), ("dynamodb", "UpdateTable")})


def _cause_of(phase: str, operation: str) -> str:
    if phase == "preflight":
        return "preflight"
    if operation == "GetBucketLocation" and phase in ("plan", "approval re-plan"):
        return "location"
    if phase == "plan" and operation in ("HeadBucket", "DescribeTable"):
        return "count-exists"
    if operation == "GetBucketReplication" and phase in ("plan", "approval re-plan", "replication"):
        return "replication-unplanned"
    if phase == "provision":
        return "provision-replans"
    if phase == "replication":
        return "replication-rechecks" if operation in ("HeadBucket", "GetBucketVersioning") else "replication-unplanned"
    if phase == "validate" and operation == "DescribeTable":
        return "validate-describes"
    if phase == "replication checks" and operation in ("HeadObject", "GetItem"):
        return "polls"
    return "other"


def _excess_polls(m: Measured, phase: str) -> int:
    """DescribeTable polls after a create beyond one per create, in the phase's invocations."""
    extra = 0
    for invocation_phase, ops in m.attributed.invocations:
        if invocation_phase != phase:
            continue
        creates = waits = 0
        for op in ops:
            creates += op in _AWAITED
            waits += bool(creates) and op == ("dynamodb", "DescribeTable")
        extra += max(0, waits - creates)
    return extra


def _replication_prewaits(m: Measured) -> int:
    """DescribeTable calls of Replicate between its first read and its UpdateTable: the table waits."""
    count = 0
    for phase, ops in m.attributed.invocations:
        if phase != "replication" or ("dynamodb", "UpdateTable") not in ops:
            continue
        before = ops[: ops.index(("dynamodb", "UpdateTable"))]
        count += max(0, before.count(("dynamodb", "DescribeTable")) - 1)
    return count


def causes(m: Measured) -> Counter[str]:
    """Actual minus minimum, by cause; the counts add up to the run's excess."""
    out: Counter[str] = Counter()
    for phase in PHASES:
        diff = m.actual.get(phase, Counter()).copy()
        diff.subtract(m.minimum.get(phase, Counter()))
        for op, difference in diff.items():
            n = difference
            if op == ("dynamodb", "DescribeTable") and phase in ("provision", "replication") and n > 0:
                polls = min(n, _excess_polls(m, phase))
                out["polls"] += polls
                n -= polls
                if phase == "replication":
                    prewaits = min(n, _replication_prewaits(m))
                    out["replication-rechecks"] += prewaits
                    n -= prewaits
            out[_cause_of(phase, op[1])] += n
    return Counter({key: n for key, n in out.items() if n})


def _excess(measured: Sequence[Measured]) -> Table:
    table = Table(
        "Calls above the minimum, by cause (extra calls per deployment)",
        ("finding", *(m.run.name for m in measured), "code that makes them"),
    )
    by_run = [causes(m) for m in measured]
    for key, cause in CAUSES.items():
        counts = [c[key] for c in by_run]
        if any(counts):
            table.add(cause.finding, *(f"{n:+d}" if n else "" for n in counts), cause.code)
    table.add(
        "total above the minimum",
        *(f"{_total(m.actual) - _total(m.minimum):+d}" for m in measured),
        "",
    )
    without = [
        _ratio(
            _total(m.minimum) + c["polls"] + c["replication-unplanned"] + c["preflight-substitute"], _total(m.minimum)
        )
        for m, c in zip(measured, by_run, strict=True)
    ]
    table.notes += [
        "Each difference between actual and minimum (by phase and operation) is assigned to one finding; the "
        "findings add up to the total above the minimum. Replicate's and the replication checks' DescribeTable, "
        "HeadObject and GetItem are split into polls (calls after a create, beyond one each) and re-reads.",
        "Ratio once the redundant reads are gone (only polls and the replication-planning shift left): "
        + ", ".join(f"{m.run.name} {r}" for m, r in zip(measured, without, strict=True))
        + ".",
    ]
    return table


def _minimum_model(measured: Sequence[Measured]) -> Table:
    """The minimum per resource of each environment measured, per phase: first deployment / re-run."""
    phases = [p for p in PHASES if p != "other"]
    table = Table(
        "Minimum calls per resource and phase (first deployment / unchanged re-run)",
        ("environment", "resource", *phases),
    )
    seen: set[str] = set()
    for m in measured:
        if m.spec.environment in seen:
            continue
        seen.add(m.spec.environment)
        empty = _only(m.spec, [])
        base = _per_phase(minimum(empty, exists=False)), _per_phase(minimum(empty, exists=True))
        table.add(m.spec.environment, "deployment", *(_pair(base[0][p], base[1][p]) for p in phases))
        resources: list[Bucket | SpecTable] = [*m.spec.resources.buckets, *m.spec.resources.tables]
        for resource in resources:
            alone = _only(m.spec, [resource])
            first, again = _per_phase(minimum(alone, exists=False)), _per_phase(minimum(alone, exists=True))
            first.subtract(base[0])
            again.subtract(base[1])
            table.add(m.spec.environment, _describe(m.spec, resource), *(_pair(first[p], again[p]) for p in phases))
    table.notes.append(
        "'deployment' is what any run needs (GetCallerIdentity); each resource row is what that resource adds, so "
        "an environment's minimum is the sum of its rows. Approval re-plan applies where approvals are required."
    )
    return table


def _per_phase(phases: Mapping[str, Counter[Op]]) -> Counter[str]:
    return Counter({phase: sum(ops.values()) for phase, ops in phases.items()})


def _pair(first: int, again: int) -> str:
    return "-" if not (first or again) else f"{first} / {again}"


def _only(spec: EnvironmentSpec, resources: Sequence[Bucket | SpecTable]) -> EnvironmentSpec:
    buckets = [r for r in resources if isinstance(r, Bucket)]
    tables_ = [r for r in resources if isinstance(r, SpecTable)]
    return spec.model_copy(
        update={"resources": spec.resources.model_copy(update={"buckets": buckets, "tables": tables_})}
    )


def _describe(spec: EnvironmentSpec, resource: Bucket | SpecTable) -> str:
    """The resource with the settings the minimum depends on."""
    if isinstance(resource, Bucket):
        settings = ["versioned"] if resource.versioning else []
        settings += ["PAB", resource.encryption.algorithm]
        settings += ["tagged"] if spec.tags_for(resource) else []
        settings += [f"replicated to {resource.replication.destination}"] if resource.replication else []
        return f"bucket {resource.name} ({', '.join(settings)})"
    settings = [resource.billing_mode]
    settings += ["TTL"] if resource.ttl_attribute else []
    settings += ["PITR"] if resource.point_in_time_recovery else []
    settings += ["tagged"] if spec.tags_for(resource) else []
    settings += [f"replica in {r}" for r in spec.replica_regions_of(resource)]
    return f"table {resource.name} ({', '.join(settings)})"


def main(print_: Callable[[str], None] = print) -> None:
    """Start a sandbox, measure, print the tables as markdown."""
    with Sandbox() as sandbox:
        for table in measure(sandbox):
            print_(table.markdown())


if __name__ == "__main__":
    main()
