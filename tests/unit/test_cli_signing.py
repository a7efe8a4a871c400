"""deployer_cli.signing round trip: its signed requests pass the sandbox's API Gateway IAM check over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.credentials import Credentials
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from deployer_cli.signing import ApiResponse, signed_request
from sandbox.accounts import TOOLING_ACCESS_KEY, TOOLING_SECRET_KEY
from sandbox.sigv4 import (
    SIGNATURE_MISMATCH,
    TOOLING_USER_ARN,
    UNRECOGNIZED_CLIENT,
    AuthError,
    Identity,
    SigningKey,
    SigV4Verifier,
    sandbox_keys,
)

REGION = "af-south-1"
TEMP_KEY = "ASIATEMPORARYKEY0001"
TEMP_IDENTITY = Identity("536580886816", "arn:aws:sts::536580886816:assumed-role/ci/run-7", "AROACI:run-7", TEMP_KEY)


def keys(access_key: str) -> SigningKey | None:
    if access_key == TEMP_KEY:
        return SigningKey("temp-secret", TEMP_IDENTITY, "temp-token", datetime.now(UTC) + timedelta(hours=1))
    return sandbox_keys(access_key)


def echo(environ: dict[str, Any], start_response: Any) -> Any:
    """An IAM-protected endpoint that answers with who called and what they sent."""
    request = Request(environ)
    try:
        caller = SigV4Verifier(REGION, keys=keys).verify(request)
    except AuthError as refused:
        response = Response(json.dumps({"message": refused.message}), status=refused.status)
        return response(environ, start_response)
    if request.path.endswith("/text"):
        return Response("plain words", content_type="text/plain")(environ, start_response)
    answer = {
        "caller": caller.arn,
        "method": request.method,
        "query": request.args.to_dict(flat=False),
        "body": request.get_json(silent=True),
        "contentType": request.content_type,
    }
    return Response(json.dumps(answer), status=201, content_type="application/json")(environ, start_response)


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, echo, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


def tooling_session() -> boto3.Session:
    return boto3.Session(aws_access_key_id=TOOLING_ACCESS_KEY, aws_secret_access_key=TOOLING_SECRET_KEY)


def test_a_json_post_from_a_session_passes_iam_auth_and_comes_back_parsed(api: str) -> None:
    # WHEN the CLI posts JSON with query parameters, signed with a boto3 session's credentials
    answer = signed_request(
        tooling_session(), "POST", f"{api}/deployments?dryRun=true&tag=a%2Fb", REGION, body={"environment": "dev"}
    )
    # THEN the API authenticated it and received exactly what was sent
    assert isinstance(answer, ApiResponse)
    assert answer.status == 201
    assert answer.body == {
        "caller": TOOLING_USER_ARN,
        "method": "POST",
        "query": {"dryRun": ["true"], "tag": ["a/b"]},
        "body": {"environment": "dev"},
        "contentType": "application/json",
    }
    assert answer.headers["Content-Type"] == "application/json"


def test_a_query_spelled_with_plus_for_space_is_signed_the_canonical_way(api: str) -> None:
    answer = signed_request(tooling_session(), "GET", f"{api}/deployments?environment=dev+one&tag=x%2By~z", REGION)
    assert answer.status == 201
    assert answer.body["query"] == {"environment": ["dev one"], "tag": ["x+y~z"]}


def test_temporary_credentials_send_their_session_token(api: str) -> None:
    credentials = Credentials(TEMP_KEY, "temp-secret", "temp-token")
    answer = signed_request(credentials, "GET", f"{api}/deployments/d-1", REGION)
    assert (answer.status, answer.body["caller"]) == (201, TEMP_IDENTITY.arn)


def test_a_refusal_is_returned_not_raised(api: str) -> None:
    wrong_secret = Credentials(TOOLING_ACCESS_KEY, "not-the-secret")
    refused = signed_request(wrong_secret, "GET", f"{api}/deployments", REGION)
    assert refused.status == 403
    assert refused.body["message"].startswith(SIGNATURE_MISMATCH)
    unknown = signed_request(Credentials("AKIANOBODY0000000000", "x"), "GET", f"{api}/deployments", REGION)
    assert (unknown.status, unknown.body) == (403, {"message": UNRECOGNIZED_CLIENT})


def test_the_signature_is_scoped_to_the_region_given(api: str) -> None:
    answer = signed_request(tooling_session(), "GET", f"{api}/deployments", "eu-west-1")
    assert answer.status == 403
    assert answer.body == {"message": "Credential should be scoped to a valid region, not 'eu-west-1'. "}


def test_a_text_answer_comes_back_as_text(api: str) -> None:
    answer = signed_request(tooling_session(), "GET", f"{api}/text", REGION)
    assert (answer.status, answer.body) == (200, "plain words")


def test_only_http_urls_are_called() -> None:
    with pytest.raises(ValueError, match="not an HTTP URL"):
        signed_request(tooling_session(), "GET", "file:///etc/passwd", REGION)
