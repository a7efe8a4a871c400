"""Counts every AWS API call the sandbox's endpoint serves, by account, service and operation.

A WSGI middleware in front of the whole AWS endpoint (the sandbox's extensions and moto),
so it sees each call whichever Lambda, test or tool made it, as AWS's own request
accounting (CloudTrail) would. It names each call the way moto itself routes it, with
no table of our own:

- service: moto's domain dispatcher infers it from the SigV4 credential scope (signing
  name aliases such as ``monitoring`` -> ``cloudwatch`` included);
- operation: moto's botocore-model router (``moto.core.routing``) matches the request,
  whatever the protocol: ``Action`` for query protocols (STS), ``X-Amz-Target`` for JSON
  ones (DynamoDB), method + path + query + headers for REST ones (S3's
  ``PUT /bucket?versioning`` -> ``PutBucketVersioning``, Lambda's Invoke);
- account: the access key, through moto's own mapping (``x-moto-account-id`` and
  ``MOTO_ACCOUNT_ID`` first, as moto does; then the IAM backends, where moto's STS
  registers the keys AssumeRole issues under the role's account; any other key is the
  default, tooling account).

Only requests signed with SigV4 (header or presigned query) are AWS API calls; the
sandbox's own endpoints (``/moto-api``, ``/_sandbox/info``) are not counted. A call
botocore retried arrives, and is counted, once per attempt. ``snapshot()`` gives the
counts; ``log()`` every call in order with its status, access key and timing, which a
benchmark can use to tell which Lambda invocation made it (each invocation assumes the
deployment role afresh, so its calls share one access key).
"""

from __future__ import annotations

import functools
import io
import os
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

Key = tuple[str, str, str]  # (account, service, operation)
WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/")
# A request's resource worth knowing: the function an Invoke runs, the bucket an S3 call is on.
_RESOURCE_PARAMS = ("FunctionName", "Bucket")
UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Call:
    """One API call as the endpoint saw it (times from ``time.monotonic()``)."""

    account: str
    service: str
    operation: str
    region: str
    access_key: str
    resource: str | None
    # Filled in once the call is answered; identify() leaves them 0.
    status: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def key(self) -> Key:
        return (self.account, self.service, self.operation)


@dataclass
class CallCounter:
    """Counts the calls made through the WSGI app it wraps; thread-safe, resettable."""

    # The log keeps the most recent calls only, so a long-running sandbox stays bounded.
    max_log: int = 200_000
    _counts: Counter[Key] = field(default_factory=Counter)
    _log: deque[Call] = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _accounts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._log = deque(maxlen=self.max_log)

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """``app`` with every AWS API call through it counted."""

        def counted(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            identified = self.identify(environ)
            if identified is None:
                return app(environ, start_response)
            statuses: list[int] = []

            def capture(status: str, headers: Any, exc_info: Any = None) -> Any:
                statuses.append(int(status.split(" ", 1)[0]))
                return start_response(status, headers, exc_info)

            started = time.monotonic()
            try:
                return app(environ, capture)
            finally:
                self._record(identified, statuses[0] if statuses else 500, started, time.monotonic())

        return counted

    def snapshot(self) -> Counter[Key]:
        """Calls so far (since the last reset), by (account, service, operation)."""
        with self._lock:
            return Counter(self._counts)

    def log(self) -> list[Call]:
        """Every call so far (since the last reset, up to ``max_log``), in the order they finished."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()

    def identify(self, environ: dict[str, Any]) -> Call | None:
        """The call a request makes (not yet answered); None if it is not an AWS API call."""
        signed = credential(environ)
        if signed is None:
            return None
        access_key, region, signing_name = signed
        try:
            service = service_of(environ, signed)
        except Exception:  # counting must never fail the call it counts
            service = None
        operation, resource = _operation(environ, service)
        account = self._account(environ, access_key)
        return Call(account, service or signing_name, operation, region, access_key, resource)

    def _record(self, call: Call, status: int, started: float, finished: float) -> None:
        entry = replace(call, status=status, started=started, finished=finished)
        with self._lock:
            self._counts[entry.key] += 1
            self._log.append(entry)

    def _account(self, environ: dict[str, Any], access_key: str) -> str:
        if "MOTO_ACCOUNT_ID" in os.environ:
            return os.environ["MOTO_ACCOUNT_ID"]
        if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
            return str(environ["HTTP_X_MOTO_ACCOUNT_ID"])
        if access_key in self._accounts:
            return self._accounts[access_key]
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.iam.models import get_account_id_from

        account = get_account_id_from(access_key)
        # A key moto does not know (yet) is the default account; only a known key's account is final.
        if account != DEFAULT_ACCOUNT_ID:
            self._accounts[access_key] = account
        return account


def credential(environ: dict[str, Any]) -> tuple[str, str, str] | None:
    """(access key, region, signing name) of a SigV4-signed request, header or presigned."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if not authorization.startswith("AWS4-"):
        query = environ.get("QUERY_STRING", "")
        if "X-Amz-Credential=" not in query:
            return None
        from urllib.parse import parse_qs

        authorization = "Credential=" + parse_qs(query).get("X-Amz-Credential", [""])[0]
    match = _CREDENTIAL.search(authorization + "/")
    return (match.group(1), match.group(2), match.group(3)) if match else None


@functools.cache
def _dispatcher() -> Any:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    # Only its routing tables are used: it creates no backend app until asked to dispatch.
    return DomainDispatcherApplication(create_backend_app)


def service_of(environ: dict[str, Any], signed: tuple[str, str, str]) -> str | None:
    """moto's name of the service a signed request calls (from its SigV4 scope, as moto dispatches)."""
    from moto.backends import ALT_BACKEND_NAMES

    scope = environ
    if "HTTP_AUTHORIZATION" not in environ:
        # A presigned request: moto infers the service from an Authorization header only.
        access_key, region, signing_name = signed
        authorization = f"AWS4-HMAC-SHA256 Credential={access_key}/-/{region}/{signing_name}/aws4_request, x"
        scope = {**environ, "HTTP_AUTHORIZATION": authorization}
    dispatcher = _dispatcher()
    host = dispatcher.infer_service_region_host(scope, environ.get("PATH_INFO", ""))
    backend = dispatcher.get_backend_for_host(host)
    return None if backend is None else str(ALT_BACKEND_NAMES.get(backend, backend))


def route(environ: dict[str, Any], service: str) -> tuple[str, dict[str, Any]]:
    """The operation moto's router matches the request to, with its path parameters; LookupError if none.

    Query protocols name the operation in the form body: it is read, and put back for moto.
    """
    from moto.core.request import Request
    from moto.core.routing import get_service_router
    from werkzeug.exceptions import NotFound

    copy = dict(environ)
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        copy["wsgi.input"] = io.BytesIO(body)
    else:
        copy["wsgi.input"] = io.BytesIO()
        copy["CONTENT_LENGTH"] = "0"
    try:
        operation, params = get_service_router(service).match(Request(copy))
    except (NotFound, NotImplementedError):
        raise LookupError(f"no {service} operation matches") from None
    return str(operation.name), dict(params)


def _operation(environ: dict[str, Any], service: str | None) -> tuple[str, str | None]:
    """The operation moto's router matches the request to, and its resource (function, bucket) if any."""
    if service is None:
        return UNKNOWN, None
    try:
        operation, params = route(environ, service)
    except Exception:  # counting must never fail the call it counts
        return UNKNOWN, None
    resource = next((str(params[p]) for p in _RESOURCE_PARAMS if params.get(p)), None)
    return operation, resource
