"""API Gateway's IAM auth (``AWS_IAM``), which moto 5.2.5 lacks: Signature Version 4 checked on each request.

API Gateway authenticates a route with ``AuthorizationType: AWS_IAM`` before it runs the
integration: the caller signs the request with SigV4 for service ``execute-api`` in the
API's region, and API Gateway recomputes the signature over what arrived. This module
does the same for the sandbox's API, with botocore's own SigV4 code recomputing the
canonical request, string to sign and signature (nothing here re-implements the crypto).

What it checks, in the order AWS's front end does (messages as API Gateway words them,
all answered with 403 and API Gateway's ``x-amzn-ErrorType``): a missing signature;
an incomplete ``Authorization`` header; the date's format and its 5-minute skew against
the real clock; ``host`` among the signed headers; the algorithm; the credential scope
(region, service ``execute-api``, terminator, date); the access key; the signature (over
method, path, query, the signed headers only and the SHA-256 of the body); the session
token and its expiry.

Whom it knows (``sandbox_keys``):
- the tooling account's static key (``sandbox.accounts.TOOLING_ACCESS_KEY``), an IAM user
  ``arn:aws:iam::<tooling account>:user/sandbox-operator`` (principal id ``TOOLING_USER_ID``);
- temporary credentials moto's STS issued (AssumeRole, AssumeRoleWithWebIdentity,
  AssumeRoleWithSAML), found in moto's in-process STS backends; the request must carry
  the matching session token, and the caller is
  ``arn:aws:sts::<account>:assumed-role/<role>/<session>``.

Not emulated: the caller's IAM policies (``execute-api:Invoke``) and API resource
policies are not evaluated, so any known caller is let in once authenticated; presigned
(query-string) SigV4 is refused with a message that says so; GetSessionToken and
GetFederationToken credentials are unknown (moto does not keep them).

Clock: signatures are checked against the real wall clock, not the time the sandbox
makes its functions see (``Sandbox.travel``), because clients sign with the real clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import unquote_plus

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from moto.iam.exceptions import NotFoundException
from moto.iam.models import iam_backends
from moto.sts.models import AssumedRole, sts_backends
from moto.utilities.utils import get_partition
from werkzeug.wrappers import Request

from sandbox.accounts import TOOLING_ACCESS_KEY, TOOLING_ACCOUNT, TOOLING_SECRET_KEY

SERVICE = "execute-api"
ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
# API Gateway's allowed skew either way (its messages say "- 5 min." / "+ 5 min.").
MAX_SKEW = timedelta(minutes=5)
TOOLING_USER_ARN = f"arn:aws:iam::{TOOLING_ACCOUNT}:user/sandbox-operator"
TOOLING_USER_ID = "AIDASANDBOXOPERATOR01"  # an IAM user's principal id (AIDA + 17)

MISSING_AUTHENTICATION = "Missing Authentication Token"
UNRECOGNIZED_CLIENT = "The security token included in the request is invalid."
EXPIRED_CREDENTIALS = "The security token included in the request is expired"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")


class AuthError(Exception):
    """A request API Gateway would refuse: its status, message and ``x-amzn-ErrorType``."""

    def __init__(self, message: str, error_type: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status = status


@dataclass(frozen=True)
class Identity:
    """Who signed a request, as API Gateway puts it in ``requestContext.identity``."""

    account_id: str
    arn: str
    principal_id: str  # AIDA... for an IAM user, AROA...:<session> for an assumed role
    access_key: str

    def request_context(self) -> dict[str, str]:
        return {
            "accountId": self.account_id,
            "caller": self.principal_id,
            "user": self.principal_id,
            "userArn": self.arn,
            "accessKey": self.access_key,
        }


@dataclass(frozen=True)
class SigningKey:
    """A key the verifier knows: its secret, session token (temporary keys only) and owner."""

    secret_key: str
    identity: Identity
    session_token: str | None = None
    expiration: datetime | None = None


KeyLookup = Callable[[str], SigningKey | None]


def sandbox_keys(access_key: str) -> SigningKey | None:
    """The tooling account's static key, or temporary credentials moto's STS issued."""
    if access_key == TOOLING_ACCESS_KEY:
        return SigningKey(
            TOOLING_SECRET_KEY, Identity(TOOLING_ACCOUNT, TOOLING_USER_ARN, TOOLING_USER_ID, TOOLING_ACCESS_KEY)
        )
    role = _assumed_role(access_key)
    if role is None:
        return None
    identity = Identity(role.account_id, role.arn, f"{_role_id(role)}:{role.session_name}", access_key)
    expiration = role.expiration if role.expiration.tzinfo else role.expiration.replace(tzinfo=UTC)
    return SigningKey(role.secret_access_key, identity, role.session_token, expiration)


def _assumed_role(access_key: str) -> AssumedRole | None:
    # moto keeps a role's sessions in the STS backend of the role's account. Copies of the
    # dicts: moto's server threads may add accounts while we read.
    for account_id in list(sts_backends.keys()):
        for backend in list(sts_backends[account_id].values()):
            role = backend.get_assumed_role_from_access_key(access_key)
            if role is not None:
                return role
    return None


def _role_id(role: AssumedRole) -> str:
    # moto invents a new random id on every read for a role that does not exist (the
    # bootstrap role); derive a stable one instead so a caller keeps one principal id.
    try:
        return str(iam_backends[role.account_id][get_partition(role.region_name)].get_role_by_arn(role.role_arn).id)
    except NotFoundException:
        digest = base64.b32encode(hashlib.sha256(role.role_arn.encode()).digest()).decode()
        return "AROA" + digest[:17]


class _Recompute(SigV4Auth):
    """botocore's SigV4 over exactly the headers the caller said it signed."""

    def __init__(self, credentials: Credentials, region: str, signed: HTTPHeaders) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:  # noqa: ARG002 - botocore's signature
        return self._signed


@dataclass
class SigV4Verifier:
    """Checks an ``execute-api`` SigV4 signature on a werkzeug request, as API Gateway does."""

    region: str
    keys: KeyLookup = sandbox_keys
    # The real clock: clients sign with it, whatever time the sandbox's functions see.
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def verify(self, request: Request) -> Identity:
        """The signer's identity; raises AuthError with API Gateway's answer otherwise."""
        auth = request.headers.get("Authorization")
        if auth is None:
            if "X-Amz-Algorithm" in request.args:
                raise AuthError(
                    "The sandbox's API Gateway does not accept presigned (query-string) SigV4 requests; "
                    "sign with an Authorization header.",
                    "IncompleteSignatureException",
                )
            raise AuthError(MISSING_AUTHENTICATION, "MissingAuthenticationTokenException")
        algorithm, params = _parse_authorization(auth)
        timestamp = self._timestamp(request, params, auth)
        signed_names = [name.strip().lower() for name in params["SignedHeaders"].split(";") if name.strip()]
        if "host" not in signed_names:
            raise AuthError("'Host' must be a 'SignedHeader' in the AWS Authorization.", "InvalidSignatureException")
        if algorithm != ALGORITHM:
            raise AuthError(
                f"Unsupported AWS 'algorithm': '{algorithm}' (only {ALGORITHM} for now). ",
                "IncompleteSignatureException",
            )
        access_key, region = self._scope(params["Credential"].rstrip("/"), timestamp)
        key = self.keys(access_key)
        if key is None:
            raise AuthError(UNRECOGNIZED_CLIENT, "UnrecognizedClientException")
        token = request.headers.get("X-Amz-Security-Token")
        signer = _Recompute(
            Credentials(access_key, key.secret_key, token), region, _signed_headers(request, signed_names)
        )
        aws_request = _aws_request(request, timestamp)
        canonical = signer.canonical_request(aws_request)
        string_to_sign = signer.string_to_sign(aws_request, canonical)
        expected = signer.signature(string_to_sign, aws_request)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            raise AuthError(
                f"{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n'{canonical}'"
                f"\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n",
                "InvalidSignatureException",
            )
        if not hmac.compare_digest((key.session_token or "").encode(), (token or "").encode()):
            raise AuthError(UNRECOGNIZED_CLIENT, "UnrecognizedClientException")
        if key.expiration is not None and key.expiration <= self.now():
            raise AuthError(EXPIRED_CREDENTIALS, "ExpiredTokenException")
        return key.identity

    def _timestamp(self, request: Request, params: dict[str, str], auth: str) -> str:
        """The signing time (ISO-8601 basic), from X-Amz-Date or else Date, within API Gateway's skew."""
        missing = "".join(
            f"Authorization header requires '{name}' parameter. "
            for name in ("Credential", "Signature", "SignedHeaders")
            if not params.get(name)
        )
        amz_date, date = request.headers.get("X-Amz-Date"), request.headers.get("Date")
        if amz_date is None and date is None:
            missing += "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        if missing:
            raise AuthError(f"{missing}Authorization={auth}", "IncompleteSignatureException")
        if amz_date is not None:
            if not _AMZ_DATE.match(amz_date):
                raise _bad_date(amz_date)
            signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
        else:
            assert date is not None
            try:
                parsed = parsedate_to_datetime(date)
                # botocore writes "-0000", which Python reads as naive; the Date header is GMT.
                signed_at = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            except (TypeError, ValueError):
                raise _bad_date(date) from None
        timestamp, now = signed_at.strftime(SIGV4_TIMESTAMP), self.now()
        if signed_at < now - MAX_SKEW:
            raise AuthError(
                f"Signature expired: {timestamp} is now earlier than {_fmt(now - MAX_SKEW)} ({_fmt(now)} - 5 min.)",
                "InvalidSignatureException",
            )
        if signed_at > now + MAX_SKEW:
            raise AuthError(
                f"Signature not yet current: {timestamp} is still later than {_fmt(now + MAX_SKEW)} "
                f"({_fmt(now)} + 5 min.)",
                "InvalidSignatureException",
            )
        return timestamp

    def _scope(self, credential: str, timestamp: str) -> tuple[str, str]:
        """The access key and region of a credential scoped to this API's region, service and date."""
        parts = credential.split("/")
        if len(parts) != 5:
            raise AuthError(
                "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
                f"got '{credential}'",
                "IncompleteSignatureException",
            )
        access_key, scope_date, region, service, terminator = parts
        problems = ""
        if region != self.region:
            problems += f"Credential should be scoped to a valid region, not '{region}'. "
        if service != SERVICE:
            problems += f"Credential should be scoped to correct service: '{SERVICE}'. "
        if terminator != TERMINATOR:
            problems += f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'. "
        if scope_date != timestamp[:8]:
            problems += (
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{scope_date}' != '{timestamp[:8]}', from '{timestamp}'. "
            )
        if problems:
            raise AuthError(problems, "InvalidSignatureException")
        return access_key, region


def _parse_authorization(auth: str) -> tuple[str, dict[str, str]]:
    algorithm, _, rest = auth.strip().partition(" ")
    params = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            params[name] = value.strip()
    return algorithm, params


def _signed_headers(request: Request, names: list[str]) -> HTTPHeaders:
    headers = HTTPHeaders()
    for name in names:
        for value in request.headers.getlist(name):
            headers[name] = value  # HTTPHeaders appends: a repeated header keeps every value
    return headers


def _aws_request(request: Request, timestamp: str) -> AWSRequest:
    """The request as API Gateway canonicalizes it: the path as sent, the query decoded, the body."""
    raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
    path = raw_uri.split("?", 1)[0]
    # The query as API Gateway reads it (decoded, "+" a space), re-encoded by botocore the
    # canonical way (%20): a client must sign the canonical form, not its own spelling.
    query = []
    for pair in request.query_string.decode("latin-1").split("&"):
        if pair:
            name, _, value = pair.partition("=")
            query.append((unquote_plus(name), unquote_plus(value)))
    # http: botocore always hashes the payload over http (UNSIGNED-PAYLOAD is never accepted).
    aws_request = AWSRequest(method=request.method, url=f"http://{request.host}{path}", data=request.get_data())
    # Pairs, not a dict, so a repeated name keeps every value; botocore canonicalizes either.
    aws_request.params = query  # type: ignore[assignment]
    aws_request.context["timestamp"] = timestamp
    return aws_request


def _bad_date(value: str) -> AuthError:
    return AuthError(
        f"Date must be in ISO-8601 'basic format'. Got '{value}'. See http://en.wikipedia.org/wiki/ISO_8601",
        "IncompleteSignatureException",
    )


def _fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(SIGV4_TIMESTAMP)
