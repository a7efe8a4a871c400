"""Game-day faults: make one thing go wrong during a deployment, so operators can rehearse rollback.

Faults live here, in the sandbox, never in the functions: each one changes how the
emulated AWS answers (an error, or a write that is acknowledged but does not stick),
only for the target accounts, never for the deployer's own tooling account. One fault
per runbook section 9 criterion and fix-forward case; `deployer faults --json` lists them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.accounts import TARGET_ACCOUNTS

CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/")
ALL_ENVIRONMENTS = sorted(TARGET_ACCOUNTS)
FAULTS_PATH = "/_sandbox/faults"
SLOW_WRITE_SECONDS = 1.5  # above the default latencyThresholdMs (1000)
# The runbook's failover region, which PROD deploys second.
FAILOVER_REGION = "eu-west-1"
# A hung create is answered (503) after this long at most: past Lambda's longest timeout and its margin.
HANG_SECONDS = 960


@dataclass(frozen=True)
class Call:
    """What a fault needs to know about one AWS request."""

    service: str
    account: str
    region: str
    method: str
    path: str
    args: dict[str, str]
    target: str  # X-Amz-Target for JSON protocols (DynamoDB_20120810.PutItem)

    def s3_subresource(self, name: str) -> bool:
        return self.service == "s3" and self.method == "PUT" and name in self.args

    def s3_object_put(self, key_prefix: str) -> bool:
        parts = self.path.lstrip("/").split("/", 1)
        return (
            self.service == "s3"
            and self.method == "PUT"
            and len(parts) == 2
            and parts[1].startswith(key_prefix)
            and not self.args
        )

    def s3_create_bucket(self) -> bool:
        return self.service == "s3" and self.method == "PUT" and "/" not in self.path.strip("/") and not self.args

    def dynamodb(self, operation: str) -> bool:
        return self.service == "dynamodb" and self.target.endswith(f".{operation}")


def _s3_error(code: str, message: str, status: int) -> Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(body, status=status, content_type="application/xml")


def _dynamodb_error(code: str, message: str, status: int = 400) -> Response:
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
    return Response(body, status=status, content_type="application/x-amz-json-1.0")


def _swallowed(call: Call) -> Response:
    """Acknowledged as AWS would, but not applied: the kind of drift that only validation catches."""
    if call.service == "dynamodb":
        return Response("{}", status=200, content_type="application/x-amz-json-1.0")
    return Response("", status=200)


@dataclass(frozen=True)
class Fault:
    name: str
    criterion: str
    expected: str  # ROLLED_BACK or SUCCEEDED_WITH_WARNINGS
    description: str
    answer: Callable[[Call], Response | None] = lambda _: None
    environments: tuple[str, ...] = tuple(ALL_ENVIRONMENTS)
    # A fault of emulations themselves rather than of one answer: the emulations it pauses until cleared.
    pauses: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "criterion": self.criterion,
            "expected": self.expected,
            "environments": list(self.environments),
            "description": self.description,
        }


def _validation_writes_fail(call: Call) -> Response | None:
    if call.s3_object_put("_deployer/validation/"):
        return _s3_error("KMS.DisabledException", "The KMS key used to encrypt this bucket is disabled", 400)
    if call.dynamodb("PutItem"):
        return _dynamodb_error("KMSAccessDeniedException", "The KMS key that protects this table is disabled")
    return None


def _public_access_block_not_applied(call: Call) -> Response | None:
    return _swallowed(call) if call.s3_subresource("publicAccessBlock") else None


def _bucket_limit_reached(call: Call) -> Response | None:
    if call.s3_create_bucket():
        return _s3_error("TooManyBuckets", "You have attempted to create more buckets than allowed", 400)
    return None


def _bucket_writes_denied(call: Call) -> Response | None:
    if call.s3_object_put("_deployer/validation/"):
        return _s3_error("AccessDenied", "Access Denied", 403)
    return None


def _reads_unavailable(call: Call) -> Response | None:
    if call.service == "s3" and call.method == "GET" and "/_deployer/validation/" in call.path:
        return _s3_error("ServiceUnavailable", "Service is unable to handle request", 503)
    if call.dynamodb("GetItem"):
        return _dynamodb_error("InternalServerError", "Internal server error", 500)
    return None


def _slow_writes(call: Call) -> Response | None:
    if call.s3_object_put("_deployer/validation/") or call.dynamodb("PutItem"):
        time.sleep(SLOW_WRITE_SECONDS)  # then answered normally: slow, not broken
    return None


@dataclass
class _FirstAttemptFails:
    """The first attempt at each validation write is dropped (503); botocore's retry gets through."""

    seen: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, call: Call) -> Response | None:
        if not call.s3_object_put("_deployer/validation/"):
            return None
        with self.lock:
            if call.path in self.seen:
                return None
            self.seen.add(call.path)
        return _s3_error("SlowDown", "Please reduce your request rate", 503)


@dataclass
class _CreatesHang:
    """Creating a bucket or a table in the failover region hangs until the fault is cleared, then answers 503.

    The provisioning function times out first (Lambda stops it; nothing was created). PROD
    provisions the primary region first, so its changes are what the rollback has to undo. At
    most HANG_SECONDS, so a forgotten fault cannot hold a thread forever.
    """

    released: threading.Event = field(default_factory=threading.Event)

    def __call__(self, call: Call) -> Response | None:
        if call.region != FAILOVER_REGION:
            return None
        if call.s3_create_bucket():
            self.released.wait(HANG_SECONDS)
            return _s3_error("ServiceUnavailable", "Service is unable to handle request", 503)
        if call.dynamodb("CreateTable"):
            self.released.wait(HANG_SECONDS)
            return _dynamodb_error("InternalServerError", "Internal server error", 500)
        return None

    def arm(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()


def _tags_not_applied(call: Call) -> Response | None:
    if call.s3_subresource("tagging") or call.dynamodb("TagResource"):
        return _swallowed(call)
    return None


CATALOGUE = [
    Fault(
        name="validation-writes-fail",
        criterion="dataLossRisk",
        expected="ROLLED_BACK",
        description="every write to the managed bucket and table fails (a disabled KMS key) beyond the grace period",
        answer=_validation_writes_fail,
    ),
    Fault(
        name="public-access-block-not-applied",
        criterion="securityExposure",
        expected="ROLLED_BACK",
        description="S3 acknowledges PutPublicAccessBlock but the bucket stays open to public policies and ACLs",
        answer=_public_access_block_not_applied,
    ),
    Fault(
        name="writes-denied",
        criterion="configurationError",
        expected="ROLLED_BACK",
        description="writes to the bucket this deployment changed are denied (AccessDenied from a wrong policy)",
        answer=_bucket_writes_denied,
    ),
    Fault(
        name="storage-unavailable",
        criterion="serviceUnavailable",
        expected="ROLLED_BACK",
        description="S3 and DynamoDB reads answer 503/500 through every retry: the application cannot read its data",
        answer=_reads_unavailable,
    ),
    Fault(
        name="slow-writes",
        criterion="performanceDegradation",
        expected="SUCCEEDED_WITH_WARNINGS",
        description="writes succeed but take longer than the policy's latency threshold",
        answer=_slow_writes,
    ),
    Fault(
        name="flaky-network",
        criterion="transientConnectivity",
        expected="SUCCEEDED_WITH_WARNINGS",
        description="a request is dropped once and goes through on retry (a network glitch that clears)",
        answer=_FirstAttemptFails(),
    ),
    Fault(
        name="bucket-limit-reached",
        criterion="resourceExhaustion",
        expected="ROLLED_BACK",
        description="the account's bucket quota is used up: creating a bucket fails with TooManyBuckets",
        answer=_bucket_limit_reached,
    ),
    Fault(
        name="provisioning-hangs",
        criterion="serviceUnavailable",
        expected="ROLLED_BACK",
        description=(
            "creating a bucket or table in the failover region hangs until the provisioning function times out, "
            "after the primary region changed"
        ),
        answer=_CreatesHang(),
        environments=("prod",),
    ),
    Fault(
        name="replication-stalled",
        criterion="replicationFailure",
        expected="ROLLED_BACK",
        description="S3 replication and global-table replication stop (as AWS FIS pauses them)",
        environments=("prod",),
        pauses=("s3_replication", "dynamodb_replicas"),
    ),
    Fault(
        name="metrics-missing",
        criterion="monitoringGap",
        expected="SUCCEEDED_WITH_WARNINGS",
        description="CloudWatch receives no DynamoDB metrics for the tables (a monitoring gap, not an outage)",
        pauses=("dynamodb_metrics",),
    ),
    Fault(
        name="tags-not-applied",
        criterion="documentationIssue",
        expected="SUCCEEDED_WITH_WARNINGS",
        description="tagging calls are acknowledged but the labels are missing",
        answer=_tags_not_applied,
    ),
]


@dataclass
class FaultInjector:
    """The faults in force; requests from the target accounts pass through ``check``."""

    catalogue: dict[str, Fault] = field(default_factory=lambda: {f.name: f for f in CATALOGUE})
    active: set[str] = field(default_factory=set)
    # The emulations that faults may pause, by name (sandbox attributes with pause() and resume()).
    switched: dict[str, Any] = field(default_factory=dict)
    injected: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, name: str) -> Fault:
        fault = self.catalogue.get(name)
        if fault is None:
            raise KeyError(f"no fault named {name!r}; known: {', '.join(sorted(self.catalogue))}")
        with self._lock:
            self.active.add(name)
        if isinstance(fault.answer, _CreatesHang):
            fault.answer.arm()
        for emulation in fault.pauses:
            self.switched[emulation].pause()
        return fault

    def clear(self) -> None:
        with self._lock:
            paused = [name for fault in self.active for name in self.catalogue[fault].pauses]
            self.active.clear()
            self.injected.clear()
        for fault in self.catalogue.values():
            if isinstance(fault.answer, _CreatesHang):
                fault.answer.release()  # hung requests are answered now
        for name in paused:
            self.switched[name].resume()

    def handle(self, request: Request) -> Response | None:
        """The sandbox's fault API, or a faulty answer to an AWS call; None lets the call through."""
        if request.path == FAULTS_PATH:
            return self._api(request)
        if not self.active:
            return None
        match = CREDENTIAL.search(request.headers.get("Authorization", ""))
        if not match:
            return None
        from moto.iam.models import get_account_id_from

        account = get_account_id_from(match.group(1))
        if account not in TARGET_ACCOUNTS.values():
            return None
        call = Call(
            service=match.group(3),
            account=account,
            region=match.group(2),
            method=request.method,
            path=request.path,
            args={k: request.args[k] for k in request.args},
            target=request.headers.get("X-Amz-Target", ""),
        )
        with self._lock:
            faults = [self.catalogue[name] for name in sorted(self.active)]
        for fault in faults:
            response = fault.answer(call)
            if response is not None:
                with self._lock:
                    self.injected.append({"fault": fault.name, "service": call.service, "path": call.path})
                return response
        return None

    def _api(self, request: Request) -> Response:
        if request.method == "GET":
            body: Any = {"faults": [f.describe() for f in self.catalogue.values()], "active": sorted(self.active)}
            return Response(json.dumps(body), content_type="application/json")
        if request.method == "DELETE":
            self.clear()
            return Response(json.dumps({"active": []}), content_type="application/json")
        name = (request.get_json(silent=True) or {}).get("name", "")
        try:
            fault = self.inject(name)
        except KeyError as exc:
            return Response(json.dumps({"message": str(exc.args[0])}), status=404, content_type="application/json")
        return Response(json.dumps(fault.describe()), content_type="application/json")
