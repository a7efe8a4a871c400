"""The sandbox's API Gateway enforces the template's AWS_IAM auth, over HTTP, as API Gateway does.

Against a running sandbox: its ``api`` URL serves the template's routes, the deployments
routes behind ``DefaultAuthorizer: AWS_IAM`` and the Slack route open (``Authorizer: NONE``).
Whether the deployments function answers 2xx is its own tests' business; here a request
"passes auth" when the answer is not one of API Gateway's 403s.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from botocore.credentials import Credentials
from werkzeug.serving import make_server

from deployer_cli.signing import ApiResponse, signed_request
from sandbox.accounts import TARGET_ACCOUNTS, TOOLING_ACCESS_KEY, TOOLING_ACCOUNT, TOOLING_SECRET_KEY, account_session
from sandbox.api_gateway import ApiGateway, Route
from sandbox.lambda_runtime import FunctionConfig
from sandbox.server import Sandbox
from sandbox.sigv4 import (
    MISSING_AUTHENTICATION,
    SIGNATURE_MISMATCH,
    TOOLING_USER_ARN,
    TOOLING_USER_ID,
    UNRECOGNIZED_CLIENT,
)

TOOLING = Credentials(TOOLING_ACCESS_KEY, TOOLING_SECRET_KEY)
DEV = TARGET_ACCOUNTS["dev"]
ECHO_IDENTITY = """
import json

def handler(event, context):
    identity = event["requestContext"]["identity"]
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(identity)}
"""


def unsigned(method: str, url: str, body: bytes | None = None) -> ApiResponse:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return ApiResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return ApiResponse(error.code, dict(error.headers.items()), json.loads(error.read() or b"null"))


def passed_auth(answer: ApiResponse) -> bool:
    """Not refused by API Gateway's IAM check (the function's own answer may be anything else)."""
    if answer.status != 403:
        return True
    message = answer.body.get("message", "") if isinstance(answer.body, dict) else ""
    auth_messages = (MISSING_AUTHENTICATION, SIGNATURE_MISMATCH, UNRECOGNIZED_CLIENT, "Credential should be scoped")
    return not any(message.startswith(m) for m in auth_messages)


@pytest.fixture(scope="module")
def role_credentials(sandbox: Sandbox) -> Callable[[str], Credentials]:
    """Temporary credentials from the sandbox's STS for a role created in the tooling account."""
    iam = sandbox.client("iam")
    iam.create_role(RoleName="api-caller", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))

    def assume(session_name: str) -> Credentials:
        creds = sandbox.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{TOOLING_ACCOUNT}:role/api-caller", RoleSessionName=session_name
        )["Credentials"]
        return Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])

    return assume


def test_the_deployments_routes_refuse_an_unsigned_caller(sandbox: Sandbox) -> None:
    for method, path in (("GET", "/deployments"), ("POST", "/deployments"), ("GET", "/deployments/d-1")):
        # WHEN a caller without a signature calls an IAM route
        answer = unsigned(method, sandbox.api + path, b"{}" if method == "POST" else None)
        # THEN API Gateway's answer, before any function runs
        assert answer.status == 403, (method, path)
        assert answer.body == {"message": MISSING_AUTHENTICATION}
        assert answer.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_the_deployments_routes_let_a_caller_signed_with_the_tooling_key_through(sandbox: Sandbox) -> None:
    # The same routes exist and open up to a signature: the unsigned 403 above was auth's.
    for method, path in (("GET", "/deployments"), ("GET", "/deployments/d-1")):
        answer = signed_request(TOOLING, method, sandbox.api + path, sandbox.region)
        assert passed_auth(answer), (method, path, answer)


def test_the_deployments_routes_refuse_a_bad_signature(sandbox: Sandbox) -> None:
    url = f"{sandbox.api}/deployments"
    wrong_secret = signed_request(Credentials(TOOLING_ACCESS_KEY, "guessed"), "GET", url, sandbox.region)
    assert wrong_secret.status == 403
    assert wrong_secret.body["message"].startswith(SIGNATURE_MISMATCH)

    wrong_region = signed_request(TOOLING, "GET", url, "eu-west-1")
    assert (wrong_region.status, wrong_region.body) == (
        403,
        {"message": "Credential should be scoped to a valid region, not 'eu-west-1'. "},
    )

    unknown_key = signed_request(Credentials("AKIAUNKNOWN000000000", "x"), "GET", url, sandbox.region)
    assert (unknown_key.status, unknown_key.body) == (403, {"message": UNRECOGNIZED_CLIENT})


def test_temporary_credentials_from_the_sandboxs_sts_pass_with_their_session_token(
    sandbox: Sandbox, role_credentials: Callable[[str], Credentials]
) -> None:
    url = f"{sandbox.api}/deployments"
    credentials = role_credentials("ci-run")
    assert passed_auth(signed_request(credentials, "GET", url, sandbox.region))

    # ... a target account's bootstrap role (assumed, never created in IAM) too
    frozen = account_session(sandbox.client("sts"), DEV).get_credentials().get_frozen_credentials()
    assert passed_auth(signed_request(frozen, "GET", url, sandbox.region))

    # ... but not with another session's token
    stolen = Credentials(credentials.access_key, credentials.secret_key, role_credentials("other").token)
    refused = signed_request(stolen, "GET", url, sandbox.region)
    assert (refused.status, refused.body) == (403, {"message": UNRECOGNIZED_CLIENT})


def test_the_slack_route_stays_open(sandbox: Sandbox) -> None:
    # Slack cannot sign with SigV4: its route (Authorizer: NONE) reaches the function, which
    # checks Slack's own signature instead.
    answer = unsigned("POST", f"{sandbox.api}/slack/interactions", b"payload=%7B%7D")
    assert passed_auth(answer)


@pytest.fixture(scope="module")
def identity_api(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An IAM route to a function that answers with its requestContext.identity, on the sandbox's runtime."""
    assert sandbox.runtime is not None
    code: Path = tmp_path_factory.mktemp("identity-echo")
    (code / "echo.py").write_text(ECHO_IDENTITY)
    sandbox.runtime.register(
        FunctionConfig(
            name="identity-echo",
            arn=f"arn:aws:lambda:{sandbox.region}:{TOOLING_ACCOUNT}:function:identity-echo",
            handler="echo.handler",
            code_dir=code,
            layer_dirs=(),
            environment={},
            timeout_seconds=10,
            memory_mb=128,
        )
    )
    api = ApiGateway(sandbox.runtime, TOOLING_ACCOUNT, region=sandbox.region)
    api.add_route(Route("GET", "/whoami", "identity-echo", "AWS_IAM"))
    server = make_server("127.0.0.1", 0, api, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1/whoami"
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_function_learns_who_signed_from_request_context_identity(
    sandbox: Sandbox, identity_api: str, role_credentials: Callable[[str], Credentials]
) -> None:
    operator = signed_request(TOOLING, "GET", identity_api, sandbox.region)
    assert operator.status == 200
    assert {k: operator.body[k] for k in ("accountId", "caller", "user", "userArn", "accessKey")} == {
        "accountId": TOOLING_ACCOUNT,
        "caller": TOOLING_USER_ID,
        "user": TOOLING_USER_ID,
        "userArn": TOOLING_USER_ARN,
        "accessKey": TOOLING_ACCESS_KEY,
    }
    assert operator.body["sourceIp"] == "127.0.0.1"

    credentials = role_credentials("whoami")
    role_id = sandbox.client("iam").get_role(RoleName="api-caller")["Role"]["RoleId"]
    assumed = signed_request(credentials, "GET", identity_api, sandbox.region)
    assert assumed.status == 200
    assert assumed.body["userArn"] == f"arn:aws:sts::{TOOLING_ACCOUNT}:assumed-role/api-caller/whoami"
    assert assumed.body["caller"] == assumed.body["user"] == f"{role_id}:whoami"
    assert assumed.body["accessKey"] == credentials.access_key
