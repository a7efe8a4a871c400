"""Sign an API Gateway proxy event the way Slack signs its requests, for tests and e2e clicks.

Written with hmac rather than slack_sdk so the tests check the verifier against an
independent implementation of Slack's v0 scheme, and so raw non-UTF-8 bodies can be signed.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
from typing import Any

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Slack's v0 signature: HMAC-SHA256 over ``v0:<timestamp>:<body>``."""
    return "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()


def raw_body(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else str(body).encode()


def sign(event: dict[str, Any], secret: str, timestamp: int) -> dict[str, Any]:
    """A copy of ``event`` with both Slack headers set for its body (any existing spelling replaced)."""
    signed = copy.deepcopy(event)
    values = {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, raw_body(event))}
    replaced = {name.lower() for name in values}
    headers = {k: v for k, v in (signed.get("headers") or {}).items() if k.lower() not in replaced}
    signed["headers"] = {**headers, **values}
    # API Gateway sends both maps; keep them agreeing when the event has the multi-value one.
    if signed.get("multiValueHeaders") is not None:
        multi = {k: v for k, v in signed["multiValueHeaders"].items() if k.lower() not in replaced}
        signed["multiValueHeaders"] = {**multi, **{k: [v] for k, v in values.items()}}
    return signed
