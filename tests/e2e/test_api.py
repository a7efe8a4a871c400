"""The deployments API over HTTP with SigV4, as CI calls it: starts, retries, refusals, status."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import requests
import schemathesis
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from deployer_cli import client
from deployer_cli.client import Stack
from deployer_cli.signing import ApiResponse, sign, signed_request
from sandbox.accounts import TOOLING_ACCESS_KEY, TOOLING_SECRET_KEY
from sandbox.server import Sandbox
from tests.sandbox_fixtures import REPO, Deployments, deployer, wait_for

CREDENTIALS = Credentials(TOOLING_ACCESS_KEY, TOOLING_SECRET_KEY)
HEAD = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def api(sandbox: Sandbox, stack: Stack) -> str:
    # CI pushes the spec of the commit it deploys before asking for the deployment.
    client.push_commit_spec(stack, REPO / "environments", "dev", HEAD)
    return sandbox.api


def call(api: str, method: str, path: str, body: Any = None, region: str = "af-south-1") -> ApiResponse:
    return signed_request(CREDENTIALS, method, api + path, region, body=body)


def request(token: str, **changes: Any) -> dict[str, Any]:
    return {
        "environment": "dev",
        "requestedBy": "ci:octo-org/bbws",
        "specVersion": HEAD,
        "clientToken": token,
    } | changes


def executions(stack: Stack) -> list[dict[str, Any]]:
    sfn = stack.client("stepfunctions")
    return list(sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"])


def test_an_unsigned_request_is_refused_before_anything_runs(api: str, stack: Stack) -> None:
    before = len(executions(stack))

    response = requests.post(f"{api}/deployments", json=request("unsigned-1"), timeout=10)

    assert response.status_code == 403
    assert response.json() == {"message": "Missing Authentication Token"}
    assert len(executions(stack)) == before


def test_ci_starts_a_deployment_retries_idempotently_and_follows_it_to_success(api: str, stack: Stack) -> None:
    # WHEN CI asks for a DEV deployment of the commit
    started = call(api, "POST", "/deployments", request("ci-run-1"))

    # THEN a deployment named after its token starts, with a status URL to follow
    assert started.status == 202, started.body
    assert started.body["deploymentId"] == "api-ci-run-1"
    assert started.body["created"] is True
    assert started.headers["Location"] == started.body["statusUrl"]
    assert started.body["statusUrl"] == f"{api}/deployments/api-ci-run-1"

    # WHEN CI retries the same request (say, its first answer was lost)
    retried = call(api, "POST", "/deployments", request("ci-run-1"))

    # THEN it gets the same deployment, and no second one exists
    assert retried.status == 200
    assert retried.body["executionArn"] == started.body["executionArn"]
    assert retried.body["created"] is False
    assert [e["name"] for e in executions(stack)].count("api-ci-run-1") == 1

    # AND following the status URL ends in SUCCEEDED with the plan, checks and the commit
    def finished() -> Any:
        view = call(api, "GET", "/deployments/api-ci-run-1").body
        return view if view["executionStatus"] in ("SUCCEEDED", "FAILED") else None

    view = wait_for(finished, "the API deployment to finish", 120)
    assert view["status"] == "SUCCEEDED", view
    assert view["specCommit"] == HEAD
    # (the caller signed without a GitHub OIDC token: its SigV4 identity is the requester, the body's only a claim)
    assert view["requestedBy"] == "arn:aws:iam::123456789012:user/sandbox-operator"
    assert view["checks"]
    assert all(c["passed"] for c in view["checks"])
    assert view["startedAt"] < view["finishedAt"]
    # AND the record says who called the API, as API Gateway authenticated them
    record = stack.records.get("api-ci-run-1")
    assert record is not None
    assert record["origin"]["caller"].startswith("arn:aws:")
    assert record["requester"]["claimed"] == "ci:octo-org/bbws"
    assert record["requester"]["verifiedBy"] == "aws-sigv4"
    assert record["origin"]["clientToken"] == "ci-run-1"

    # AND the environment's history lists it
    listed = call(api, "GET", "/deployments?environment=dev&limit=5")
    assert listed.status == 200
    assert "api-ci-run-1" in [d["deploymentId"] for d in listed.body["deployments"]]


def test_the_same_token_for_another_request_is_409_and_starts_nothing(api: str, stack: Stack) -> None:
    assert call(api, "POST", "/deployments", request("ci-run-2", dryRun=True)).status == 202
    before = len(executions(stack))

    conflict = call(api, "POST", "/deployments", request("ci-run-2", dryRun=False))

    assert conflict.status == 409
    assert "ci-run-2" in conflict.body["message"]
    assert len(executions(stack)) == before


def test_bad_requests_are_refused_with_what_is_wrong(api: str, stack: Stack) -> None:
    before = len(executions(stack))

    bad = call(api, "POST", "/deployments", {"environment": "dev", "specVersion": "main", "clientToken": "x y"})
    unknown = call(api, "POST", "/deployments", request("ci-run-3", environment="qa"))
    huge = call(api, "POST", "/deployments", request("ci-run-4", changeTicket="C" * 20000))
    missing = call(api, "GET", "/deployments/api-never-started")

    assert bad.status == 400
    assert {e["field"] for e in bad.body["errors"]} == {"specVersion", "clientToken"}
    assert unknown.status == 404
    assert "known environments are dev, prod, sit" in unknown.body["message"]
    assert huge.status == 413
    assert missing.status == 404
    assert len(executions(stack)) == before


def test_a_request_signed_for_another_region_is_refused(api: str) -> None:
    response = call(api, "GET", "/deployments?environment=dev", region="eu-west-1")

    assert response.status == 403
    assert response.body["message"] != "Missing Authentication Token"


def test_the_cli_deploys_through_the_api_and_a_rerun_with_its_token_deploys_nothing_new(
    deployments: Deployments, stack: Stack
) -> None:
    args = (
        *("run", "--env", "dev", "--via-api", "--client-token", "cli-via-api-1", "--poll-seconds", "0.2", "--json"),
        *("--requested-by", "github:octo-dev"),
    )

    first = deployer(deployments, *args)
    again = deployer(deployments, *args)

    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["status"] == "SUCCEEDED"
    assert result["deploymentId"] == "api-cli-via-api-1"
    assert result["specCommit"] == HEAD
    # AND, as CI would, it sent a GitHub OIDC token (the sandbox's issuer minted it): the requester is verified
    assert result["requestedBy"] == "github:octo-dev"
    assert again.returncode == 0, again.stderr
    assert "already started by this client token" in again.stderr
    assert json.loads(again.stdout)["executionArn"] == result["executionArn"]
    assert [e["name"] for e in executions(stack)].count("api-cli-via-api-1") == 1


class SigV4(requests.auth.AuthBase):
    """requests' auth hook for schemathesis' calls, signing as `deployer run --via-api` does."""

    def __call__(self, prepared: requests.PreparedRequest) -> requests.PreparedRequest:
        assert prepared.url is not None
        headers = {k: v for k, v in prepared.headers.items() if k.lower() == "content-type"}
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        prepared.url, signed = sign(
            CREDENTIALS, str(prepared.method), prepared.url, "af-south-1", data=body, headers=headers
        )
        prepared.headers.update(signed)
        return prepared


def test_the_api_keeps_to_its_openapi_document(api: str) -> None:
    # positive_data_acceptance is left out: the document cannot say that an environment must
    # have a spec, or a commit must have been pushed, so schema-valid requests may be 400/404.
    # Negative cases (data the document forbids) must be refused with a 4xx, never a 5xx.
    schema = schemathesis.openapi.from_path(REPO / "openapi.yaml")
    operations = {result.ok().label: result.ok() for result in schema.get_all_operations()}
    assert set(operations) == {
        "POST /deployments",
        "POST /announcements",
        "GET /deployments",
        "GET /deployments/{id}",
        "GET /guardrails",
        "POST /environments/{environment}/unlock",
    }
    excluded = [schemathesis.checks.positive_data_acceptance]
    for operation in operations.values():
        # An operation without parameters or body (GET /guardrails) has no data to get wrong but its
        # signature, which the auth hook always adds: it has no negative cases.
        takes_input = operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody")
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def conforms(case: Any) -> None:
                case.call_and_validate(base_url=api, auth=SigV4(), excluded_checks=excluded)

            conforms()

    # AND the inputs that once answered 500: a Unicode digit as the limit, a body nested 10,000 deep
    unicode_digit = operations["GET /deployments"].Case(query={"environment": "dev", "limit": "²"})
    deep = b"[" * 10_000  # 10,000 deep within the 16 KiB limit
    nested = operations["POST /deployments"].Case(body=deep, media_type="application/octet-stream")
    for case in (unicode_digit, nested):
        response = case.call(base_url=api, auth=SigV4())
        assert response.status_code == 400, response.text
        case.validate_response(response, excluded_checks=excluded)
