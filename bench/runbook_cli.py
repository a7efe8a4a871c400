"""Side by side with the runbook: section 7's validation commands, run with the AWS CLI as a person
pastes them, against our validation of the same resources in the same sandbox.

The runbook's side runs every "Immediate Validation" command of section 7 as written, one
``bash -c`` per command, in order, with only ``--profile bbws-$ENVIRONMENT`` taken out: the
credentials of a role assumed in the environment's account come in through the environment
instead (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, with
``AWS_ENDPOINT_URL`` pointing at the sandbox). Each command's exit status and output are checked
against what the runbook expects, so both sides do work that really succeeded. The "Extended
Validation" CloudWatch commands that run as written get a row of their own.

Our side is ``deployer.checks.validate_region``: in this process, with the Validate function's
own environment and code path (``Tooling.target_for``, then ``validate_region``), and end to
end, as the Validate state's duration in the execution history of real deployments.

Precondition: the environment has been deployed successfully in the sandbox. ``measure`` leaves
it as it found it: the test object's versions that the runbook's ``aws s3 rm`` leaves behind in
a versioned bucket are deleted afterwards, outside the timings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.tables import Table, median
from deployer.aws import execution_history
from deployer.checks import CheckResult, validate_region
from deployer.spec import EnvironmentSpec, load_spec_file
from deployer.tooling import Tooling
from deployer_cli.client import Stack
from sandbox.accounts import account_session
from sandbox.server import Sandbox

REPO = Path(__file__).resolve().parent.parent
AWS_BIN = REPO / ".venv-awscli" / "bin"
# The runbook lives in shared/, beside the repository; where it is, the commands are checked against it.
RUNBOOK = REPO.parent / "shared" / "runbook.md"
ASL = REPO / "statemachine" / "deployment.asl.json"
VALIDATE_RESOURCE = "${ValidateFunctionArn}"
PROFILE = re.compile(r"[ \t]*(?:\\\n[ \t]*)?--profile bbws-\$ENVIRONMENT")
TARGET_RATIO = 20.0
RUNBOOK_BUCKET = "bbws-{environment}-data-bucket"
RUNBOOK_TABLE = "Site-Generation-State"
RUNBOOK_KEY = "test-write.txt"
RUNBOOK_ITEM = "test-site-001"


@dataclass(frozen=True)
class Expected:
    """What the runbook's commands should show for this environment, from its spec."""

    bucket: str
    table: str
    sse_algorithm: str
    partition_key: str


# A command's expectation: None when its output is as the runbook expects, else what is wrong.
Expectation = Callable[[str, Expected], str | None]


@dataclass(frozen=True)
class RunbookCommand:
    check: str
    # Exactly as section 7 writes it, --profile included (taken out when run).
    text: str
    expect: Expectation
    # Our checks that cover the same ground.
    ours: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        return PROFILE.sub("", self.text)


def _json(out: str) -> Any:
    return json.loads(out) if out.strip() else {}


def _bucket_listed(out: str, e: Expected) -> str | None:
    return None if e.bucket in out.split() else f"{e.bucket} is not listed"


def _versioning(out: str, _: Expected) -> str | None:
    status = _json(out).get("Status")
    return None if status == "Enabled" else f"versioning is {status}, expected Enabled"


def _public_access_block(out: str, _: Expected) -> str | None:
    config = _json(out).get("PublicAccessBlockConfiguration", {})
    flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    off = [f for f in flags if config.get(f) is not True]
    return f"not true: {', '.join(off)}" if off else None


def _encryption(out: str, e: Expected) -> str | None:
    rules = _json(out).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    algorithm = rules[0].get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") if rules else None
    return None if algorithm == e.sse_algorithm else f"encryption is {algorithm}, expected {e.sse_algorithm}"


def _object_listed(out: str, _: Expected) -> str | None:
    return None if out.split()[-1:] == [RUNBOOK_KEY] else f"{RUNBOOK_KEY} is not listed"


def _deleted(out: str, e: Expected) -> str | None:
    return None if f"delete: s3://{e.bucket}/{RUNBOOK_KEY}" in out else "no delete line"


def _table_listed(out: str, e: Expected) -> str | None:
    return None if e.table in _json(out).get("TableNames", []) else f"{e.table} is not listed"


def _table_active(out: str, e: Expected) -> str | None:
    table = _json(out).get("Table", {})
    ok = table.get("TableName") == e.table and table.get("TableStatus") == "ACTIVE"
    return None if ok else f"table is {table.get('TableStatus')}, expected ACTIVE"


def _table_keys(out: str, e: Expected) -> str | None:
    shown = _json(out)
    keys = [(k["AttributeName"], k["KeyType"]) for k in shown.get("Keys") or []]
    ok = shown.get("Name") == e.table and keys == [(e.partition_key, "HASH")] and shown.get("Attributes")
    return None if ok else f"keys are {keys}, expected {e.partition_key} HASH"


def _on_demand(out: str, _: Expected) -> str | None:
    mode = (_json(out) or {}).get("BillingMode")
    return None if mode == "PAY_PER_REQUEST" else f"billing mode is {mode}, expected PAY_PER_REQUEST"


def _no_output(out: str, _: Expected) -> str | None:
    return None if not out.strip() else f"unexpected output {out.strip()[:80]!r}"


def _item_read(out: str, e: Expected) -> str | None:
    item = _json(out).get("Item", {})
    ok = item.get(e.partition_key) == {"S": RUNBOOK_ITEM} and item.get("Status") == {"S": "ACTIVE"}
    return None if ok else f"{RUNBOOK_ITEM} was not read back"


def _log_groups(out: str, _: Expected) -> str | None:
    return None if "logGroups" in _json(out) else "no logGroups in the answer"


def _write_metrics(out: str, _: Expected) -> str | None:
    shown = _json(out)
    ok = shown.get("Label") == "ConsumedWriteCapacityUnits" and shown.get("Datapoints")
    return None if ok else "no ConsumedWriteCapacityUnits datapoints in the last 10 minutes"


# Runbook section 7, "Immediate Validation": S3 bucket validation, then DynamoDB table validation.
IMMEDIATE = (
    RunbookCommand(
        "S3: bucket listed in the account", "aws s3 ls --profile bbws-$ENVIRONMENT", _bucket_listed, ("bucket.exists",)
    ),
    RunbookCommand(
        "S3: versioning is Enabled",
        "aws s3api get-bucket-versioning \\\n  --bucket bbws-$ENVIRONMENT-data-bucket \\\n"
        "  --profile bbws-$ENVIRONMENT",
        _versioning,
        ("bucket.versioning",),
    ),
    RunbookCommand(
        "S3: all four public access block flags true",
        "aws s3api get-public-access-block \\\n  --bucket bbws-$ENVIRONMENT-data-bucket \\\n"
        "  --profile bbws-$ENVIRONMENT",
        _public_access_block,
        ("bucket.public-access-block",),
    ),
    RunbookCommand(
        "S3: default encryption configured",
        "aws s3api get-bucket-encryption \\\n  --bucket bbws-$ENVIRONMENT-data-bucket \\\n"
        "  --profile bbws-$ENVIRONMENT",
        _encryption,
        ("bucket.encryption",),
    ),
    RunbookCommand(
        "S3: test object written (`aws s3 cp -`)",
        'echo "test-$(date +%s)" | aws s3 cp - \\\n  s3://bbws-$ENVIRONMENT-data-bucket/test-write.txt \\\n'
        "  --profile bbws-$ENVIRONMENT",
        # A streamed upload prints nothing; the `aws s3 ls` after it shows the object.
        _no_output,
        ("bucket.write-read-delete",),
    ),
    RunbookCommand(
        "S3: test object listed (`aws s3 ls` of it)",
        "aws s3 ls s3://bbws-$ENVIRONMENT-data-bucket/test-write.txt \\\n  --profile bbws-$ENVIRONMENT",
        _object_listed,
        ("bucket.write-read-delete",),
    ),
    RunbookCommand(
        "S3: test object removed (`aws s3 rm`)",
        "aws s3 rm s3://bbws-$ENVIRONMENT-data-bucket/test-write.txt \\\n  --profile bbws-$ENVIRONMENT",
        _deleted,
        ("bucket.write-read-delete",),
    ),
    RunbookCommand(
        "DynamoDB: table listed (`list-tables`)",
        "aws dynamodb list-tables --profile bbws-$ENVIRONMENT",
        _table_listed,
        ("table.active",),
    ),
    RunbookCommand(
        "DynamoDB: table described, ACTIVE (`describe-table`)",
        "aws dynamodb describe-table \\\n  --table-name Site-Generation-State \\\n  --profile bbws-$ENVIRONMENT",
        _table_active,
        ("table.active",),
    ),
    RunbookCommand(
        "DynamoDB: key schema and attributes (`describe-table --query`)",
        "aws dynamodb describe-table \\\n  --table-name Site-Generation-State \\\n  --profile bbws-$ENVIRONMENT \\\n"
        "  --query 'Table.{Name:TableName, Keys:KeySchema, Attributes:AttributeDefinitions}'",
        _table_keys,
        ("table.key-schema",),
    ),
    RunbookCommand(
        "DynamoDB: billing mode PAY_PER_REQUEST (`describe-table --query`)",
        "aws dynamodb describe-table \\\n  --table-name Site-Generation-State \\\n  --profile bbws-$ENVIRONMENT \\\n"
        "  --query 'Table.BillingModeSummary'",
        _on_demand,
        ("table.billing-mode",),
    ),
    RunbookCommand(
        "DynamoDB: test item written (`put-item`)",
        "aws dynamodb put-item \\\n  --table-name Site-Generation-State \\\n"
        """  --item '{"SiteId":{"S":"test-site-001"},"Status":{"S":"ACTIVE"},"CreatedAt":{"N":"'$(date +%s)'"},"""
        """"TTL":{"N":"'$(($(date +%s) + 86400))'"},"Metadata":{"M":{"Version":{"S":"1.0"}}}}' \\\n"""
        "  --profile bbws-$ENVIRONMENT",
        _no_output,
        ("table.write-read-delete",),
    ),
    RunbookCommand(
        "DynamoDB: test item read back (`get-item`)",
        "aws dynamodb get-item \\\n  --table-name Site-Generation-State \\\n"
        """  --key '{"SiteId":{"S":"test-site-001"}}' \\\n  --profile bbws-$ENVIRONMENT""",
        _item_read,
        ("table.write-read-delete",),
    ),
    RunbookCommand(
        "DynamoDB: test item deleted (`delete-item`)",
        "aws dynamodb delete-item \\\n  --table-name Site-Generation-State \\\n"
        """  --key '{"SiteId":{"S":"test-site-001"}}' \\\n  --profile bbws-$ENVIRONMENT""",
        _no_output,
        ("table.write-read-delete",),
    ),
)

# "Extended Validation", CloudWatch monitoring: the commands that run as written.
EXTENDED = (
    RunbookCommand(
        "Extended: log groups under /aws/s3/ listed (`logs describe-log-groups`)",
        "aws logs describe-log-groups \\\n  --log-group-name-prefix /aws/s3/ \\\n  --profile bbws-$ENVIRONMENT",
        _log_groups,
    ),
    RunbookCommand(
        "Extended: table's ConsumedWriteCapacityUnits visible (`cloudwatch get-metric-statistics`)",
        "aws cloudwatch get-metric-statistics \\\n  --namespace AWS/DynamoDB \\\n"
        "  --metric-name ConsumedWriteCapacityUnits \\\n"
        "  --dimensions Name=TableName,Value=Site-Generation-State \\\n  --statistics Sum,Average \\\n"
        "  --start-time $(date -u -d '10 minutes ago' +%Y-%m-%dT%H:%M:%S) \\\n"
        "  --end-time $(date -u +%Y-%m-%dT%H:%M:%S) \\\n  --period 60 \\\n  --profile bbws-$ENVIRONMENT",
        _write_metrics,
        ("monitoring.metrics",),
    ),
)

# `aws logs tail` is an AWS CLI v2 command (v1 has no `tail`), and `--log-group-name-prefix` is not
# one of its options in v2 either: run once to show how it fails, never timed.
LOGS_TAIL = RunbookCommand(
    "Extended: Lambda logs of the last 10 minutes (`logs tail`): fails as written",
    "aws logs tail /aws/lambda/ \\\n  --log-group-name-prefix /aws/lambda/ \\\n  --profile bbws-$ENVIRONMENT \\\n"
    "  --since 10m",
    _no_output,
)

# What each of our checks verifies, for the coverage table.
OUR_CHECKS = {
    "bucket.exists": "S3: bucket exists, owned by the environment's account (head-bucket)",
    "bucket.versioning": "S3: versioning Enabled",
    "bucket.public-access-block": "S3: public access block exactly as the spec says",
    "bucket.encryption": "S3: default encryption algorithm (and KMS key) as the spec says",
    "bucket.tags": "S3: the spec's tags present with their values",
    "bucket.write-read-delete": "S3: write, read back (bytes compared), delete that exact version",
    "table.active": "DynamoDB: table ACTIVE",
    "table.key-schema": "DynamoDB: key schema and attribute types as the spec says",
    "table.billing-mode": "DynamoDB: billing mode as the spec says",
    "table.ttl": "DynamoDB: TTL enabled on the spec's attribute",
    "table.point-in-time-recovery": "DynamoDB: point-in-time recovery enabled",
    "table.tags": "DynamoDB: the spec's tags present with their values",
    "table.write-read-delete": "DynamoDB: conditional write, consistent read (item compared), delete",
    "performance.latency": "write-read-delete round trips within the spec's latency threshold",
    "monitoring.metrics": "CloudWatch: AWS/DynamoDB metrics visible for the table",
}


class RunbookStepFailed(Exception):
    """A runbook command failed or showed other than what the runbook expects."""


class OurValidationFailed(Exception):
    """One of our checks failed: the two sides would not be doing equal, successful work."""


def measure(sandbox: Sandbox, environment: str = "dev", runs: int = 3) -> list[Table]:
    """Time the runbook's section 7 CLI sequence and our validation of ``environment``; cover both.

    The environment must already be deployed in ``sandbox``. Raises RunbookStepFailed if a runbook
    command fails, and OurValidationFailed if one of our checks does: both sides must really succeed.
    """
    if not (AWS_BIN / "aws").is_file():
        raise FileNotFoundError(f"{AWS_BIN / 'aws'} is missing: run `make .venv-awscli/.installed`")
    # The deployment's own asynchronous work (notifications) is done before anything is timed.
    sandbox.eventbridge.drain()
    spec = load_spec_file(REPO / "environments" / f"{environment}.yaml")
    region = spec.regions.primary
    expected = _expected(spec, environment)
    cli = _RunbookCli(sandbox, spec, environment, region, expected)
    timings = _CliTimings([], [], os.getloadavg()[0])
    fresh: list[float] = []
    reused: list[float] = []
    try:
        # One untimed pass on each side first: the CLI's files in the OS cache, our modules imported.
        cli.sequence(IMMEDIATE + EXTENDED)
        ours = _Ours(sandbox, spec, region)
        # Interleaved, so whatever else loads the machine weighs on both sides alike.
        for _ in range(runs):
            timings.immediate.append(cli.sequence(IMMEDIATE))
            timings.extended.append(cli.sequence(EXTENDED))
            fresh.append(ours.fresh())
            reused.append(ours.reused())
        timings.load_after = os.getloadavg()[0]
        tail = cli.run(LOGS_TAIL)
    finally:
        cli.close()
    states = _validate_state_seconds(sandbox, environment, region, runs)
    names = list(dict.fromkeys(r.name for r in ours.results))
    return [
        _timing_table(environment, region, runs, timings, fresh, reused, ours.calls, states),
        _ratio_table(timings, fresh, reused, states),
        _coverage_table(environment, names, tail),
    ]


def _expected(spec: EnvironmentSpec, environment: str) -> Expected:
    """The runbook names its bucket and table; this environment's spec must hold both."""
    bucket_name = RUNBOOK_BUCKET.format(environment=environment)
    bucket = next((b for b in spec.resources.buckets if b.name == bucket_name), None)
    table = next((t for t in spec.resources.tables if t.name == RUNBOOK_TABLE), None)
    if bucket is None or table is None:
        raise ValueError(f"environments/{environment}.yaml lacks the runbook's {bucket_name} or {RUNBOOK_TABLE}")
    return Expected(bucket_name, RUNBOOK_TABLE, bucket.encryption.algorithm, table.partition_key.name)


@dataclass
class _CliTimings:
    immediate: list[float]
    extended: list[float]
    # The machine's 1-minute load average before and after: both sides slow down under load, the CLI more.
    load_before: float = 0.0
    load_after: float = 0.0

    @property
    def both(self) -> list[float]:
        return [a + b for a, b in zip(self.immediate, self.extended, strict=True)]


class _RunbookCli:
    """A person's shell: credentials of a role in the environment's account, one `aws` per command."""

    def __init__(self, sandbox: Sandbox, spec: EnvironmentSpec, environment: str, region: str, e: Expected) -> None:
        self.expected = e
        self.home = tempfile.TemporaryDirectory(prefix="bbws-runbook-cli-")
        # Assumed once, up front, as `--profile bbws-$ENVIRONMENT` would resolve a role profile.
        self.session = account_session(sandbox.client("sts"), spec.account)
        assumed = self.session.get_credentials()
        creds = assumed.get_frozen_credentials() if assumed else None
        key, secret, token = (creds.access_key, creds.secret_key, creds.token) if creds else (None, None, None)
        if key is None or secret is None or token is None:
            raise RunbookStepFailed(f"no session credentials from assuming a role in {spec.account}")
        nowhere = str(Path(self.home.name) / "absent")
        self.env: dict[str, str] = {
            "PATH": f"{AWS_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            # Nothing from the machine's own AWS configuration.
            "HOME": self.home.name,
            "AWS_CONFIG_FILE": nowhere,
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SESSION_TOKEN": token,
            "AWS_ENDPOINT_URL": sandbox.endpoint,
            # Section 2 exports AWS_REGION (read by CLI v2); CLI v1 reads AWS_DEFAULT_REGION.
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "ENVIRONMENT": environment,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        self.s3 = self.session.client("s3", endpoint_url=sandbox.endpoint, region_name=region)
        ddb = self.session.client("dynamodb", endpoint_url=sandbox.endpoint, region_name=region)
        # The runbook's put-item overwrites whatever item has its key: never run it over a real one.
        if ddb.get_item(TableName=e.table, Key={e.partition_key: {"S": RUNBOOK_ITEM}}).get("Item"):
            raise RunbookStepFailed(f"{e.table} already holds {RUNBOOK_ITEM}; the runbook's put-item would replace it")
        self.versions_before = self._test_object_versions()

    def run(self, command: RunbookCommand) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command.command], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )

    def run_checked(self, command: RunbookCommand) -> None:
        done = self.run(command)
        problem = f"exit status {done.returncode}" if done.returncode else command.expect(done.stdout, self.expected)
        if problem:
            raise RunbookStepFailed(f"{command.command!r}: {problem}\n{done.stdout[-400:]}{done.stderr[-400:]}")

    def sequence(self, commands: tuple[RunbookCommand, ...]) -> float:
        started = time.perf_counter()
        for command in commands:
            self.run_checked(command)
        return time.perf_counter() - started

    def _test_object_versions(self) -> set[tuple[str, str]]:
        bucket, found = self.expected.bucket, set()
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=RUNBOOK_KEY):
            for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if entry["Key"] == RUNBOOK_KEY:
                    found.add((entry["Key"], entry["VersionId"]))
        return found

    def close(self) -> None:
        """Delete what the runbook's `aws s3 rm` leaves in a versioned bucket: the version and a delete marker."""
        try:
            for key, version in self._test_object_versions() - self.versions_before:
                self.s3.delete_object(Bucket=self.expected.bucket, Key=key, VersionId=version)
        finally:
            self.home.cleanup()


@contextmanager
def _function_environment(sandbox: Sandbox) -> Iterator[None]:
    """The Validate function's environment variables in this process, as its Lambda container has them.

    Its role's credentials included, as Lambda gives them: the sandbox evaluates IAM for its calls.
    """
    assert sandbox.runtime is not None
    config = next(c for c in sandbox.runtime.functions.values() if c.code_dir.name == "validate")
    overlay = {**sandbox.runtime.base_env, **sandbox.runtime.credentials(config), **config.environment}
    saved = {k: os.environ.get(k) for k in overlay}
    os.environ.update(overlay)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _passed(results: list[CheckResult]) -> list[CheckResult]:
    failed = [f"{r.resource} {r.name}: {r.detail}" for r in results if not r.passed]
    if failed:
        raise OurValidationFailed("; ".join(failed))
    return results


class _Ours:
    """validate_region in this process, as the Validate function runs it in a warm container."""

    def __init__(self, sandbox: Sandbox, spec: EnvironmentSpec, region: str) -> None:
        self.sandbox, self.spec, self.region = sandbox, spec, region
        with _function_environment(sandbox):
            self.tooling = Tooling.from_environment()  # once per container
            self.warm = self.tooling.target_for(spec, _marker())
            self.results = _passed(validate_region(self.warm, spec, region, _marker()))
        self.calls = sum(self.warm.log.calls.values())

    def fresh(self) -> float:
        """A new target session (sts:AssumeRole, new clients), as each Validate invocation builds one."""
        marker = _marker()
        with _function_environment(self.sandbox):
            started = time.perf_counter()
            target = self.tooling.target_for(self.spec, marker)
            _passed(validate_region(target, self.spec, self.region, marker))
            return time.perf_counter() - started

    def reused(self) -> float:
        """The checks alone: the warm target session and its clients again."""
        marker = _marker()
        with _function_environment(self.sandbox):
            started = time.perf_counter()
            _passed(validate_region(self.warm, self.spec, self.region, marker))
            return time.perf_counter() - started


def _marker() -> str:
    return f"bench-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class _StateRun:
    deployment_id: str
    seconds: float
    invocations: int
    first: bool


def _validate_task_states() -> set[str]:
    """The names of the ASL's Task states that invoke the Validate function, however it is nested."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, state in (node.get("States") or {}).items():
                if isinstance(state, dict) and state.get("Resource") == VALIDATE_RESOURCE:
                    names.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(ASL.read_text()))
    return names


def _validate_state_seconds(sandbox: Sandbox, environment: str, region: str, runs: int) -> list[_StateRun]:
    """The Validate task's time in ``region`` in the newest successful deployments, from their histories."""
    stack = Stack.discover(sandbox.session(), sandbox.stack_name, sandbox.region, sandbox.endpoint)
    records = stack.records.history(environment, 100)
    oldest = records[-1]["deploymentId"] if records else None
    sfn, states, found = stack.client("stepfunctions"), _validate_task_states(), []
    for record in records:
        if not str(record.get("status", "")).startswith("SUCCEEDED") or not record.get("executionArn"):
            continue
        span = _task_span(execution_history(sfn, record["executionArn"]), states, region)
        if span is not None:
            found.append(_StateRun(record["deploymentId"], span[0], span[1], record["deploymentId"] == oldest))
        if len(found) == runs:
            break
    return found


def _task_span(events: list[dict[str, Any]], states: set[str], region: str) -> tuple[float, int] | None:
    """First TaskStateEntered to last TaskStateExited of ``states`` for ``region`` (invocations side by side
    count once), and how many were entered."""
    entered: list[datetime] = []
    exited: list[datetime] = []
    for event in events:
        kind = {"TaskStateEntered": "stateEnteredEventDetails", "TaskStateExited": "stateExitedEventDetails"}
        details = event.get(kind.get(event["type"], ""))
        if not details or details["name"] not in states:
            continue
        payload = details.get("input" if event["type"] == "TaskStateEntered" else "output") or "{}"
        if json.loads(payload).get("region") != region:
            continue
        (entered if event["type"] == "TaskStateEntered" else exited).append(event["timestamp"])
    if not entered or len(exited) != len(entered):
        return None
    return float((max(exited) - min(entered)).total_seconds()), len(entered)


def _spread(values: list[float]) -> tuple[float, float, float]:
    return median(values), min(values), max(values)


def _timing_table(
    environment: str,
    region: str,
    runs: int,
    cli: _CliTimings,
    fresh: list[float],
    reused: list[float],
    calls: int,
    states: list[_StateRun],
) -> Table:
    table = Table(
        f"Runbook section 7 validation of {environment} ({region}): AWS CLI vs validate_region",
        ["side", "what", "work", "runs", "median s", "min s", "max s"],
    )
    immediate, extended = len(IMMEDIATE), len(EXTENDED)
    table.add(
        "runbook CLI", "Immediate Validation, as written", f"{immediate} aws processes", runs, *_spread(cli.immediate)
    )
    table.add(
        "runbook CLI",
        "Extended: CloudWatch commands that run",
        f"{extended} aws processes",
        runs,
        *_spread(cli.extended),
    )
    both = immediate + extended
    table.add("runbook CLI", "Immediate + Extended", f"{both} aws processes", runs, *_spread(cli.both))
    table.add(
        "ours", "in process: Tooling.target_for + validate_region", f"{calls + 1} API calls", runs, *_spread(fresh)
    )
    table.add(
        "ours", "in process: validate_region, target session reused", f"{calls} API calls", runs, *_spread(reused)
    )
    if states:
        invocations = max(s.invocations for s in states)
        table.add(
            "ours",
            "end to end: Validate task state(s) (Step Functions + Lambda)",
            f"{invocations} Lambda invocation(s)",
            len(states),
            *_spread([s.seconds for s in states]),
        )
    per_state = ", ".join(
        f"{s.deployment_id}{' (first, cold Lambda)' if s.first else ''} {s.seconds:.3f} s" for s in states
    )
    table.notes += [
        "The CLI side is one `bash -c` per runbook command, in order, each starting an AWS CLI v1 process. "
        "Ours ran warm in this process (modules imported), with the Validate function's environment variables. "
        f"One untimed pass on each side, then {runs} timed passes, the two sides interleaved. Load average "
        f"{cli.load_before:.2f} before, {cli.load_after:.2f} after ({os.cpu_count()} CPUs).",
        f"End to end: first TaskStateEntered to last TaskStateExited of the Task states that invoke the Validate "
        f"function ({', '.join(sorted(_validate_task_states()))}) for {region}, in the newest successful "
        f"deployments: {per_state or 'none found'}.",
    ]
    return table


def _ratio_table(cli: _CliTimings, fresh: list[float], reused: list[float], states: list[_StateRun]) -> Table:
    table = Table(
        "Runbook CLI time / our validation time (medians)",
        ["runbook CLI", "ours", "CLI s", "ours s", "ratio (CLI / ours)", f"{TARGET_RATIO:.0f}x target"],
    )
    ours = [
        ("in process, target_for + validate_region", median(fresh)),
        ("in process, session reused", median(reused)),
    ]
    if states:
        ours.append(("end to end, Validate task state(s)", median([s.seconds for s in states])))
    for cli_name, cli_seconds in (("Immediate", median(cli.immediate)), ("Immediate + Extended", median(cli.both))):
        for our_name, our_seconds in ours:
            ratio = cli_seconds / our_seconds
            table.add(
                cli_name,
                our_name,
                cli_seconds,
                our_seconds,
                f"{ratio:.1f}x",
                "met" if ratio >= TARGET_RATIO else "not met",
            )
    table.notes.append(
        "Like for like: Immediate vs ours is the runbook's checks against ours (ours also does more, see the "
        "coverage table); Immediate + Extended adds the CloudWatch commands, whose counterpart "
        "(monitoring.metrics) ours always runs."
    )
    return table


def _coverage_table(environment: str, ours: list[str], tail: subprocess.CompletedProcess[str]) -> Table:
    table = Table(f"What each side checks ({environment})", ["check", "runbook CLI", "ours"])
    covered: set[str] = set()
    for command in IMMEDIATE + EXTENDED:
        mine = [n for n in command.ours if n in ours]
        covered.update(mine)
        table.add(f"{command.check}; ours: {', '.join(mine) or 'none'}", "yes", "yes" if mine else "no")
    table.add(f"{LOGS_TAIL.check}; ours: none", "no", "no")
    for name in ours:
        if name not in covered:
            table.add(f"{name}: {OUR_CHECKS.get(name, name)}", "no", "yes")
    error = next((line for line in tail.stderr.splitlines() if line.startswith("aws: error")), tail.stderr.strip())
    table.notes += [
        f"`aws logs tail` exited {tail.returncode} ({error[:100]}): it is a CLI v2 command, and "
        "`--log-group-name-prefix` is not one of its options in v2 either.",
        "Ours covers all the runbook's immediate checks, against the spec rather than fixed names: e.g. all four "
        "public access block flags as specified (the runbook's comment names three), the encryption algorithm "
        "and KMS key. Its round trips clean up fully: the runbook's `aws s3 rm` leaves a noncurrent version and "
        "a delete marker in the versioned bucket, and its unconditional put-item would replace a real "
        f"{RUNBOOK_ITEM}.",
        _runbook_note(),
    ]
    return table


def _runbook_note() -> str:
    if not RUNBOOK.is_file():
        return f"{RUNBOOK} not found: the commands are as copied from section 7."
    text = RUNBOOK.read_text()
    drifted = [c.check for c in (*IMMEDIATE, *EXTENDED, LOGS_TAIL) if c.text not in text]
    if drifted:
        return f"The runbook's section 7 has changed since these commands were copied: {'; '.join(drifted)}."
    return "Every command was checked verbatim against the runbook (only `--profile bbws-$ENVIRONMENT` is taken out)."
