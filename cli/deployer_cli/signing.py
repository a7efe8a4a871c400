"""Calls to the deployer's HTTP API, which uses IAM auth: SigV4-signed for ``execute-api``.

The same call works on AWS and in the sandbox (whose API Gateway checks the signature the
same way). botocore signs; urllib carries the request; bodies are JSON both ways.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, NamedTuple
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import NoCredentialsError

SERVICE = "execute-api"


class ApiResponse(NamedTuple):
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON; text when the answer is not JSON; None when empty


def signed_request(
    credentials: boto3.Session | Credentials | ReadOnlyCredentials,
    method: str,
    url: str,
    region: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> ApiResponse:
    """Send one SigV4-signed request (service ``execute-api``) and return the answer, errors included.

    ``body`` is sent as is when it is ``bytes`` or ``str``, as JSON otherwise (``None``: no body).
    An HTTP error status is returned, not raised; network failures raise ``urllib.error.URLError``.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an HTTP URL: {url}")
    send = {"Accept": "application/json", **(headers or {})}
    data: bytes | None
    if body is None:
        data = None
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
        send.setdefault("Content-Type", "application/json")
    url, signed = sign(credentials, method, url, region, data=data, headers=send)
    outgoing = urllib.request.Request(url, data=data, headers=signed, method=method.upper())  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(outgoing, timeout=timeout) as response:  # noqa: S310 - http(s) only
            return _answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return _answer(error.code, error.headers, error.read())


def sign(
    credentials: boto3.Session | Credentials | ReadOnlyCredentials,
    method: str,
    url: str,
    region: str,
    *,
    data: bytes | None,
    headers: dict[str, str],
) -> tuple[str, dict[str, str]]:
    """The URL to send (its query spelled canonically) and the headers with the SigV4 signature added."""
    url = _canonical_query(url)
    request = AWSRequest(method=method.upper(), url=url, data=data, headers=headers)
    # Sign exactly the Host header that is sent (botocore would drop a default port the URL names).
    request.headers["Host"] = urlsplit(url).netloc
    SigV4Auth(_credentials(credentials), SERVICE, region).add_auth(request)
    return url, dict(request.headers.items())


def _canonical_query(url: str) -> str:
    """The URL with its query spelled as SigV4 canonicalizes it (a space is %20, never +).

    botocore signs a query given in the URL as it is spelled, while API Gateway decodes the
    query it receives and signs it re-encoded; sending the canonical spelling makes the two agree.
    """
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = []
    for pair in parts.query.split("&"):
        name, equals, value = pair.partition("=")
        pairs.append(quote(unquote_plus(name), safe="-_.~") + equals + quote(unquote_plus(value), safe="-_.~"))
    return urlunsplit(parts._replace(query="&".join(pairs)))


def _credentials(source: boto3.Session | Credentials | ReadOnlyCredentials) -> Credentials | ReadOnlyCredentials:
    if isinstance(source, boto3.Session):
        found = source.get_credentials()
        if found is None:
            raise NoCredentialsError()
        return found.get_frozen_credentials()
    return source


def _answer(status: int, headers: Any, raw: bytes) -> ApiResponse:
    received = dict(headers.items())
    if not raw:
        return ApiResponse(status, received, None)
    text = raw.decode("utf-8", errors="replace")
    try:
        return ApiResponse(status, received, json.loads(text))
    except json.JSONDecodeError:
        return ApiResponse(status, received, text)
