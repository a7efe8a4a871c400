"""Emulates S3 bucket ownership across accounts, which moto 5.2.5 does not enforce.

On AWS a bucket belongs to one account: any request to it from another account
without a bucket policy granting access gets 403 AccessDenied (HeadBucket included),
and so does a request whose ``x-amz-expected-bucket-owner`` names another account.
moto answers such requests as if the caller owned the bucket, which would let
preflight "adopt" a bucket that is not ours. CreateBucket of a taken name already
answers BucketAlreadyExists in moto, so it is left alone.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from werkzeug.wrappers import Request, Response

CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/[^/]+/([^/]+)/")
ACCESS_DENIED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    "<Message>Access Denied</Message><RequestId>sandbox</RequestId></Error>"
)


def _bucket_owner(bucket: str) -> str | None:
    from moto.s3.models import s3_backends

    entry = s3_backends.bucket_accounts.get(bucket)
    return entry[1] if entry else None


def _caller_account(access_key: str) -> str:
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key)


def _bucket_of(request: Request) -> str | None:
    host = urlparse(request.url).hostname or ""
    if host.endswith(".localhost") or ".s3." in host:
        return host.split(".", 1)[0]
    first = request.path.lstrip("/").split("/", 1)[0]
    return first or None


def check(request: Request) -> Response | None:
    """403 for an S3 request on a bucket that another account owns; None to let moto answer."""
    # Signed in the Authorization header, or presigned in the query string.
    credential = request.headers.get("Authorization", "") or "Credential=" + request.args.get("X-Amz-Credential", "")
    match = CREDENTIAL.search(credential + "/")
    if not match or match.group(2) != "s3":
        return None
    bucket = _bucket_of(request)
    if not bucket:
        return None
    owner = _bucket_owner(bucket)
    if owner is None:
        return None
    is_create = request.method == "PUT" and request.path.rstrip("/") == f"/{bucket}" and not request.args
    expected = request.headers.get("x-amz-expected-bucket-owner")
    if (not is_create and _caller_account(match.group(1)) != owner) or (expected and expected != owner):
        return Response(ACCESS_DENIED, status=403, content_type="application/xml")
    return None
