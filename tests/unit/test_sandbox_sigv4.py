"""The sandbox's API Gateway IAM auth (sandbox.sigv4), on requests botocore signed, and its use by ApiGateway."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request

from sandbox.accounts import TOOLING_ACCESS_KEY, TOOLING_ACCOUNT, TOOLING_SECRET_KEY
from sandbox.api_gateway import MAX_BODY_BYTES, ApiGateway, Route
from sandbox.sigv4 import (
    EXPIRED_CREDENTIALS,
    MISSING_AUTHENTICATION,
    SIGNATURE_MISMATCH,
    TOOLING_USER_ARN,
    TOOLING_USER_ID,
    UNRECOGNIZED_CLIENT,
    AuthError,
    Identity,
    SigningKey,
    SigV4Verifier,
)
from sandbox.template import TemplateError

REGION = "af-south-1"
BASE = "http://127.0.0.1:3000"
TOOLING = Credentials(TOOLING_ACCESS_KEY, TOOLING_SECRET_KEY)


def signed(
    method: str = "GET",
    path: str = "/v1/deployments",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    credentials: Credentials = TOOLING,
    region: str = REGION,
    service: str = "execute-api",
) -> AWSRequest:
    """A request as a client's botocore signs it (now, on the real clock)."""
    request = AWSRequest(method=method, url=BASE + path, data=body, headers=headers or {})
    SigV4Auth(credentials, service, region).add_auth(request)
    return request


def arrived(request: AWSRequest, **changes: Any) -> Request:
    """What the API receives for ``request`` (optionally changed on the way)."""
    path = changes.get("path", request.url[len(BASE) :])
    headers = {**dict(request.headers.items()), **changes.get("headers", {})}
    body = changes.get("body", request.body)
    builder = EnvironBuilder(method=request.method, base_url=BASE, path=path, headers=headers, data=body)
    return Request(builder.get_environ())


def refusal(request: Request, verifier: SigV4Verifier | None = None) -> AuthError:
    with pytest.raises(AuthError) as refused:
        (verifier or SigV4Verifier(REGION)).verify(request)
    assert refused.value.status == 403
    return refused.value


# --- accepted -------------------------------------------------------------------------------


def test_a_request_signed_with_the_tooling_key_is_the_sandbox_operator() -> None:
    # GIVEN a GET signed by botocore with the tooling account's key
    # WHEN the API checks it
    identity = SigV4Verifier(REGION).verify(arrived(signed()))
    # THEN the caller is the tooling account's operator user
    assert identity == Identity(TOOLING_ACCOUNT, TOOLING_USER_ARN, TOOLING_USER_ID, TOOLING_ACCESS_KEY)
    assert identity.request_context() == {
        "accountId": TOOLING_ACCOUNT,
        "caller": TOOLING_USER_ID,
        "user": TOOLING_USER_ID,
        "userArn": f"arn:aws:iam::{TOOLING_ACCOUNT}:user/sandbox-operator",
        "accessKey": TOOLING_ACCESS_KEY,
    }


def test_a_post_with_a_body_an_encoded_path_and_a_repeated_query_is_accepted() -> None:
    body = b'{"environment": "dev"}'
    request = signed(
        "POST",
        "/v1/deployments/dev%20one?b=2&a=x%2Fy&a=1",
        body=body,
        headers={"Content-Type": "application/json", "X-Amz-Content-Sha256": hashlib.sha256(body).hexdigest()},
    )
    assert SigV4Verifier(REGION).verify(arrived(request)).access_key == TOOLING_ACCESS_KEY


def test_a_content_hash_header_must_be_the_bodys_hash() -> None:
    # API Gateway signs over the body it received; an unsigned or made-up payload hash does not do.
    request = signed("POST", body=b"{}", headers={"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD"})
    assert refusal(arrived(request)).message.startswith(SIGNATURE_MISMATCH)


def test_a_space_in_the_query_is_signed_as_percent_20_however_it_is_sent() -> None:
    # API Gateway decodes the query ("+" is a space) and re-encodes it canonically (%20).
    canonical = signed(path="/v1/deployments?environment=dev%20one")
    sent_with_plus = arrived(canonical, path="/v1/deployments?environment=dev+one")
    assert SigV4Verifier(REGION).verify(sent_with_plus).arn == TOOLING_USER_ARN
    # ... so a client that signs its own "+" spelling does not match
    plus_signed = signed(path="/v1/deployments?environment=dev+one")
    assert refusal(arrived(plus_signed)).message.startswith(SIGNATURE_MISMATCH)


def test_a_request_dated_with_the_date_header_is_accepted() -> None:
    # botocore signs with Date (not X-Amz-Date) when the request carries one.
    request = signed(headers={"Date": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert "X-Amz-Date" not in request.headers
    assert SigV4Verifier(REGION).verify(arrived(request)).arn == TOOLING_USER_ARN


def test_a_clock_within_five_minutes_of_the_signers_is_accepted() -> None:
    later = SigV4Verifier(REGION, now=lambda: datetime.now(UTC) + timedelta(minutes=4))
    assert later.verify(arrived(signed())).arn == TOOLING_USER_ARN


# --- refused --------------------------------------------------------------------------------


def test_an_unsigned_request_misses_its_authentication_token() -> None:
    refused = refusal(arrived(AWSRequest(method="GET", url=BASE + "/v1/deployments")))
    assert (refused.message, refused.error_type) == (MISSING_AUTHENTICATION, "MissingAuthenticationTokenException")


def test_an_authorization_header_that_is_not_sigv4_is_incomplete() -> None:
    request = AWSRequest(method="GET", url=BASE + "/v1/deployments", headers={"Authorization": "Bearer abc.def"})
    refused = refusal(arrived(request))
    assert refused.message == (
        "Authorization header requires 'Credential' parameter. "
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        "Authorization=Bearer abc.def"
    )
    assert refused.error_type == "IncompleteSignatureException"


def test_a_tampered_body_does_not_match_the_signature() -> None:
    request = signed("POST", "/v1/deployments", body=b'{"environment": "dev"}')
    refused = refusal(arrived(request, body=b'{"environment": "prod"}'))
    assert refused.message.startswith(SIGNATURE_MISMATCH + "\n\nThe Canonical String for this request should have been")
    assert "POST\n/v1/deployments\n" in refused.message
    assert refused.error_type == "InvalidSignatureException"


def test_a_tampered_path_does_not_match_the_signature() -> None:
    refused = refusal(arrived(signed(path="/v1/deployments/abc"), path="/v1/deployments/xyz"))
    assert refused.message.startswith(SIGNATURE_MISMATCH)
    assert "\n/v1/deployments/xyz\n" in refused.message


def test_a_tampered_query_does_not_match_the_signature() -> None:
    refused = refusal(arrived(signed(path="/v1/deployments?limit=5"), path="/v1/deployments?limit=500"))
    assert refused.message.startswith(SIGNATURE_MISMATCH)


def test_a_wrong_secret_does_not_match_the_signature() -> None:
    refused = refusal(arrived(signed(credentials=Credentials(TOOLING_ACCESS_KEY, "not-the-secret"))))
    assert refused.message.startswith(SIGNATURE_MISMATCH)


def test_an_unsigned_header_can_change_but_a_signed_one_cannot() -> None:
    request = signed(headers={"X-Team": "platform"})
    assert SigV4Verifier(REGION).verify(arrived(request, headers={"X-Other": "added"}))
    assert refusal(arrived(request, headers={"X-Team": "intruder"})).message.startswith(SIGNATURE_MISMATCH)


def test_a_signature_for_another_region_is_refused() -> None:
    refused = refusal(arrived(signed(region="us-east-1")))
    assert refused.message == "Credential should be scoped to a valid region, not 'us-east-1'. "
    assert refused.error_type == "InvalidSignatureException"


def test_a_signature_for_another_service_is_refused() -> None:
    refused = refusal(arrived(signed(service="lambda")))
    assert refused.message == "Credential should be scoped to correct service: 'execute-api'. "


def test_a_scope_dated_another_day_is_refused() -> None:
    request = signed()
    auth = request.headers["Authorization"]
    day = request.headers["X-Amz-Date"][:8]
    refused = refusal(arrived(request, headers={"Authorization": auth.replace(f"/{day}/", "/20200101/")}))
    assert refused.message == (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
        f"'20200101' != '{day}', from '{request.headers['X-Amz-Date']}'. "
    )


def test_a_signature_older_than_five_minutes_has_expired() -> None:
    request = signed()
    now = datetime.now(UTC) + timedelta(minutes=6)
    refused = refusal(arrived(request), SigV4Verifier(REGION, now=lambda: now))
    earliest, current = (now - timedelta(minutes=5)).strftime(SIGV4_TIMESTAMP), now.strftime(SIGV4_TIMESTAMP)
    assert refused.message == (
        f"Signature expired: {request.headers['X-Amz-Date']} is now earlier than {earliest} ({current} - 5 min.)"
    )
    assert refused.error_type == "InvalidSignatureException"


def test_a_signature_from_more_than_five_minutes_ahead_is_not_yet_current() -> None:
    request = signed()
    now = datetime.now(UTC) - timedelta(minutes=6)
    refused = refusal(arrived(request), SigV4Verifier(REGION, now=lambda: now))
    assert refused.message.startswith(f"Signature not yet current: {request.headers['X-Amz-Date']} is still later than")
    assert refused.message.endswith(f"({now.strftime(SIGV4_TIMESTAMP)} + 5 min.)")


def test_a_date_not_in_iso_basic_format_is_refused() -> None:
    refused = refusal(arrived(signed(), headers={"X-Amz-Date": "2026-12-01T10:00:00Z"}))
    assert refused.message.startswith("Date must be in ISO-8601 'basic format'. Got '2026-12-01T10:00:00Z'.")


def test_an_unknown_access_key_is_an_invalid_security_token() -> None:
    refused = refusal(arrived(signed(credentials=Credentials("AKIAUNKNOWNKEY000000", TOOLING_SECRET_KEY))))
    assert (refused.message, refused.error_type) == (UNRECOGNIZED_CLIENT, "UnrecognizedClientException")


def test_host_must_be_signed() -> None:
    request = signed()
    auth = request.headers["Authorization"].replace("SignedHeaders=host;", "SignedHeaders=")
    refused = refusal(arrived(request, headers={"Authorization": auth}))
    assert refused.message == "'Host' must be a 'SignedHeader' in the AWS Authorization."


def test_a_session_token_with_the_static_key_is_invalid() -> None:
    refused = refusal(arrived(signed(credentials=Credentials(TOOLING_ACCESS_KEY, TOOLING_SECRET_KEY, "a-token"))))
    assert refused.message == UNRECOGNIZED_CLIENT


def test_presigned_query_auth_is_refused_with_a_reason() -> None:
    refused = refusal(arrived(AWSRequest(method="GET", url=BASE + "/v1/deployments?X-Amz-Algorithm=AWS4-HMAC-SHA256")))
    assert "presigned" in refused.message


def test_expired_temporary_credentials_are_refused() -> None:
    # GIVEN temporary credentials that expired a second ago (the signature itself is fresh)
    identity = Identity(
        "536580886816", "arn:aws:sts::536580886816:assumed-role/r/s", "AROAEXAMPLE:s", "ASIAEXAMPLE000000001"
    )
    key = SigningKey("secret", identity, "token", datetime.now(UTC) - timedelta(seconds=1))
    verifier = SigV4Verifier(REGION, keys={"ASIAEXAMPLE000000001": key}.get)
    request = arrived(signed(credentials=Credentials("ASIAEXAMPLE000000001", "secret", "token")))
    # WHEN the API checks a request signed with them
    refused = refusal(request, verifier)
    # THEN API Gateway's expired-token answer
    assert (refused.message, refused.error_type) == (EXPIRED_CREDENTIALS, "ExpiredTokenException")
    # (and the same credentials, not yet expired, would pass)
    fresh = SigningKey("secret", identity, "token", datetime.now(UTC) + timedelta(minutes=1))
    assert SigV4Verifier(REGION, keys={"ASIAEXAMPLE000000001": fresh}.get).verify(request) == identity


# --- temporary credentials from moto's STS --------------------------------------------------


@pytest.fixture
def assumed(aws: None) -> tuple[Credentials, str]:
    iam = boto3.client("iam", region_name=REGION)
    role_id = iam.create_role(RoleName="ci-caller", AssumeRolePolicyDocument="{}")["Role"]["RoleId"]
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{TOOLING_ACCOUNT}:role/ci-caller", RoleSessionName="pipeline-42"
    )["Credentials"]
    return Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]), role_id


def test_assumed_role_credentials_are_the_assumed_role(assumed: tuple[Credentials, str]) -> None:
    credentials, role_id = assumed
    identity = SigV4Verifier(REGION).verify(arrived(signed(credentials=credentials)))
    assert identity == Identity(
        TOOLING_ACCOUNT,
        f"arn:aws:sts::{TOOLING_ACCOUNT}:assumed-role/ci-caller/pipeline-42",
        f"{role_id}:pipeline-42",
        credentials.access_key,
    )


def test_assumed_role_credentials_need_their_own_session_token(assumed: tuple[Credentials, str]) -> None:
    credentials, _ = assumed
    wrong = Credentials(credentials.access_key, credentials.secret_key, "someone-elses-token")
    assert refusal(arrived(signed(credentials=wrong))).message == UNRECOGNIZED_CLIENT
    without = Credentials(credentials.access_key, credentials.secret_key)
    assert refusal(arrived(signed(credentials=without))).message == UNRECOGNIZED_CLIENT


def test_a_role_in_another_account_that_iam_does_not_know_keeps_one_principal_id(aws: None) -> None:
    # The sandbox's bootstrap role is assumed without existing in IAM; its caller must stay stable.
    sts = boto3.client("sts", region_name=REGION)
    creds = sts.assume_role(RoleArn="arn:aws:iam::536580886816:role/Bootstrap", RoleSessionName="setup")["Credentials"]
    credentials = Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    first = SigV4Verifier(REGION).verify(arrived(signed(credentials=credentials)))
    second = SigV4Verifier(REGION).verify(arrived(signed(credentials=credentials)))
    assert first.account_id == "536580886816"
    assert first.arn == "arn:aws:sts::536580886816:assumed-role/Bootstrap/setup"
    assert first.principal_id == second.principal_id
    assert first.principal_id.startswith("AROA")
    assert first.principal_id.endswith(":setup")


# --- the API Gateway routes -----------------------------------------------------------------


@dataclass
class FakeRuntime:
    """Answers every invocation with the identity API Gateway handed the function."""

    base_env: dict[str, str] = field(default_factory=lambda: {"AWS_REGION": REGION})
    functions: dict[str, Any] = field(default_factory=lambda: {"echo": "echo-config"})
    events: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, config: Any, event: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.events.append(event)
        return {"statusCode": 200, "body": json.dumps(event["requestContext"]["identity"])}, False


def gateway(authorizer: str = "AWS_IAM", method: str = "GET") -> tuple[ApiGateway, FakeRuntime]:
    runtime = FakeRuntime()
    api = ApiGateway(runtime, TOOLING_ACCOUNT, REGION)  # type: ignore[arg-type]
    api.add_route(Route(method, "/deployments/{id}", "echo", authorizer))
    return api, runtime


def call(api: ApiGateway, request: AWSRequest, body: bytes | None = None) -> Any:
    path = request.url[len(BASE) :]
    headers = dict(request.headers.items())
    data = body or request.body
    overrides = {"REMOTE_ADDR": "198.51.100.7"}
    return Client(api).open(
        EnvironBuilder(
            method=request.method, base_url=BASE, path=path, headers=headers, data=data, environ_overrides=overrides
        )
    )


def test_the_api_refuses_an_authorizer_it_cannot_check() -> None:
    api, _ = gateway()
    with pytest.raises(TemplateError, match="COGNITO_USER_POOLS"):
        api.add_route(Route("GET", "/deployments", "echo", "COGNITO_USER_POOLS"))
    assert [r.authorizer for r in api.routes] == ["AWS_IAM"]


def test_an_iam_route_runs_its_function_for_a_signed_caller_with_the_callers_identity() -> None:
    api, runtime = gateway()
    response = call(api, signed(path="/v1/deployments/d-1"))
    assert response.status_code == 200
    identity = runtime.events[0]["requestContext"]["identity"]
    assert identity["userArn"] == TOOLING_USER_ARN
    assert identity["caller"] == identity["user"] == TOOLING_USER_ID
    assert identity["accountId"] == TOOLING_ACCOUNT
    assert identity["accessKey"] == TOOLING_ACCESS_KEY
    assert identity["sourceIp"] == "198.51.100.7"
    assert runtime.events[0]["pathParameters"] == {"id": "d-1"}


def test_an_iam_route_refuses_an_unsigned_caller_without_running_the_function() -> None:
    api, runtime = gateway()
    response = call(api, AWSRequest(method="GET", url=BASE + "/v1/deployments/d-1"))
    assert response.status_code == 403
    assert response.json == {"message": MISSING_AUTHENTICATION}
    assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert runtime.events == []


def test_an_iam_route_refuses_a_badly_signed_caller() -> None:
    api, runtime = gateway()
    response = call(api, signed(path="/v1/deployments/d-1", region="eu-west-1"))
    assert response.status_code == 403
    assert response.json == {"message": "Credential should be scoped to a valid region, not 'eu-west-1'. "}
    assert runtime.events == []


def test_an_open_route_runs_for_anyone_and_names_nobody() -> None:
    api, runtime = gateway(authorizer="NONE")
    response = call(api, AWSRequest(method="GET", url=BASE + "/v1/deployments/d-1"))
    assert response.status_code == 200
    assert "userArn" not in runtime.events[0]["requestContext"]["identity"]


def test_the_api_checks_the_caller_before_the_body_limit() -> None:
    api, runtime = gateway(method="POST")
    too_big = b"x" * (MAX_BODY_BYTES + 1)
    unsigned = call(api, AWSRequest(method="POST", url=BASE + "/v1/deployments/d-1"), body=too_big)
    assert (unsigned.status_code, unsigned.json) == (403, {"message": MISSING_AUTHENTICATION})
    big = call(api, signed("POST", "/v1/deployments/d-1", body=too_big))
    assert (big.status_code, big.json) == (413, {"message": "Request Too Long"})
    assert runtime.events == []


def test_the_api_checks_signatures_against_its_own_region() -> None:
    explicit = ApiGateway(FakeRuntime(), TOOLING_ACCOUNT, region="us-east-2")  # type: ignore[arg-type]
    explicit.add_route(Route("GET", "/deployments/{id}", "echo", "AWS_IAM"))
    assert call(explicit, signed(path="/v1/deployments/d-1", region="us-east-2")).status_code == 200
    assert call(explicit, signed(path="/v1/deployments/d-1")).status_code == 403
