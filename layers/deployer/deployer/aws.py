"""AWS sessions and clients: role assumption, retry policy, call accounting.

Clients are built from an injected ``boto3.Session`` so tests and the sandbox decide
where calls go (``AWS_ENDPOINT_URL`` is honoured by boto3 itself); nothing here knows
which endpoint it talks to.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, EndpointConnectionError

from deployer.errors import TransientAwsError

READ_ONLY_PREFIXES = ("Get", "Head", "List", "Describe", "Scan", "Query", "BatchGet", "TransactGet")
# Error codes that mean "try again later", after botocore's own retries gave up.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "SlowDown",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "InternalServerError",
        "RequestTimeout",
    }
)
# Not among them: LimitExceededException, a limit reached (runbook section 9: resource exhaustion).


def retry_config() -> Config:
    """botocore's standard retry mode; attempts are configurable per function."""
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "5"))
    return Config(retries={"mode": "standard", "total_max_attempts": attempts})


@dataclass
class CallLog:
    """Counts every AWS API call made through clients it is attached to (from any thread)."""

    calls: Counter[str] = field(default_factory=Counter)
    # Calls botocore had to retry (throttling, 5xx, dropped connections) before they succeeded or gave up.
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def attach(self, client: BaseClient) -> BaseClient:
        service = client.meta.service_model.service_name

        def count(model: Any, **_: Any) -> None:
            with self._lock:
                self.calls[f"{service}:{model.name}"] += 1

        def retried(parsed: dict[str, Any], **_: Any) -> None:
            with self._lock:
                self.retries += int(parsed.get("ResponseMetadata", {}).get("RetryAttempts", 0))

        client.meta.events.register("before-call.*.*", count)
        client.meta.events.register("after-call.*.*", retried)
        return client

    @property
    def mutating(self) -> int:
        return sum(n for op, n in self.calls.items() if not op.split(":", 1)[1].startswith(READ_ONLY_PREFIXES))

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.calls.items()))


@dataclass
class TargetSession:
    """A session in a target account (the environment's), with call accounting."""

    session: boto3.Session
    account: str
    log: CallLog = field(default_factory=CallLog)
    _clients: dict[tuple[str, str], BaseClient] = field(default_factory=dict)
    # Clients are thread-safe once made, but a boto3 Session must not make two at once.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self.log.attach(
                    self.session.client(service, region_name=region, config=retry_config())  # type: ignore[call-overload]
                )
            return self._clients[key]


# Reads are cheap and independent: planning and counting read this many resources at a time.
READ_WORKERS = 16


def fan_out[T, R](work: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``work`` on every item, up to ``workers`` at a time; results in the items' order.

    AWS calls spend their time waiting (on the network, on a table becoming ACTIVE), so
    threads make a batch of resources take as long as its slowest one, not their sum.
    The first exception raised is re-raised once every started item has finished.
    """
    if workers <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(work, items))


def assume_role(sts: Any, role_arn: str, session_name: str) -> TargetSession:
    """Assume the environment's deployment role and return a session in its account."""
    with transient_errors():
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name[:64], DurationSeconds=3600)[
            "Credentials"
        ]
    session = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    return TargetSession(session=session, account=role_arn.split(":")[4])


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def transient_errors() -> Iterator[None]:
    """Re-raise errors that are worth retrying as TransientAwsError, which the ASL retries."""
    try:
        yield
    except ClientError as exc:
        if error_code(exc) in TRANSIENT_CODES:
            raise TransientAwsError(f"{error_code(exc)}: {exc}") from exc
        raise
    except (EndpointConnectionError, ConnectionError) as exc:
        raise TransientAwsError(str(exc)) from exc


def execution_history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    """Every event of a Step Functions execution, oldest first."""
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        with transient_errors():
            page = sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]
