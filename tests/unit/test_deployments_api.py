"""The deployments API's routes, over moto: idempotent starts, conflicts and precise refusals."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from deployer.deployments_api import build_api
from deployer.models import ApiAnnouncementRequest, ApiDeploymentRequest
from deployer.oidc import TOKEN_HEADER, OidcVerifier
from deployer.records import RecordStore
from deployer.resources import WaitConfig
from deployer.specstore import SpecStore
from deployer.tooling import Tooling
from sandbox.oidc_issuer import OidcIssuer
from tests.unit.conftest import records_table
from tests.unit.test_oidc import ISSUER, StaticKeys

EVENT = json.loads((Path(__file__).parents[2] / "events" / "api_post_deployment.json").read_text())
REPO = Path(__file__).parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SPECS_BUCKET = "bbws-deployer-specs"
TRIVIAL_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


@pytest.fixture
def tooling(aws: None) -> Tooling:
    table = records_table()
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=SPECS_BUCKET)
    s3.put_bucket_versioning(Bucket=SPECS_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    specs = SpecStore(s3, SPECS_BUCKET)
    for environment in ("dev", "sit"):
        specs.put(environment, (REPO / "environments" / f"{environment}.yaml").read_text(), commit=COMMIT)
    role = boto3.client("iam").create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    machine = boto3.client("stepfunctions", region_name="us-east-1").create_state_machine(
        name="bbws-deployer-deployment", definition=TRIVIAL_MACHINE, roleArn=role
    )
    return Tooling(
        records_table=table.name,
        specs_bucket=SPECS_BUCKET,
        event_bus="",
        wait=WaitConfig(delay_seconds=0, max_attempts=1),
        state_machine_arn=machine["stateMachineArn"],
        api_max_body_bytes=2048,
    )


def call(tooling: Tooling, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
    event = copy.deepcopy(EVENT)
    event.update(httpMethod=method, path=path, queryStringParameters=query)
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    elif method == "GET":
        event["body"] = None
    response = build_api(tooling).resolve(event, None)  # type: ignore[arg-type]
    response["json"] = json.loads(response["body"])
    return response


def request(**changes: Any) -> dict[str, Any]:
    body = {"environment": "dev", "requestedBy": "ci:octo-org/bbws", "specVersion": COMMIT, "clientToken": "run-42"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_a_new_token_starts_one_execution_named_after_it(tooling: Tooling) -> None:
    # WHEN CI posts a deployment request
    response = call(tooling, "POST", "/deployments", request())

    # THEN it is accepted, with where to follow it
    assert response["statusCode"] == 202
    answer = response["json"]
    assert answer["deploymentId"] == "api-run-42"
    assert answer["created"] is True
    assert answer["statusUrl"] == "https://abc123.execute-api.af-south-1.amazonaws.com/v1/deployments/api-run-42"
    assert response["multiValueHeaders"]["Location"] == [answer["statusUrl"]]
    # AND the execution pins the spec version pushed for the commit, and says who asked
    execution = tooling.sfn.describe_execution(executionArn=answer["executionArn"])
    given = json.loads(execution["input"])
    _, version = tooling.specs.resolve_commit("dev", COMMIT)
    assert given["specVersion"] == version
    assert given["origin"]["specCommit"] == COMMIT
    assert given["origin"]["caller"] == EVENT["requestContext"]["identity"]["userArn"]
    assert given["origin"]["clientToken"] == "run-42"


def test_a_retry_with_the_same_token_and_body_finds_the_same_execution(tooling: Tooling) -> None:
    first = call(tooling, "POST", "/deployments", request())
    retry = call(tooling, "POST", "/deployments", request(specVersion=COMMIT))

    assert retry["statusCode"] == 200
    assert retry["json"]["executionArn"] == first["json"]["executionArn"]
    assert retry["json"]["created"] is False
    executions = tooling.sfn.list_executions(stateMachineArn=tooling.state_machine_arn)["executions"]
    assert len(executions) == 1


def test_the_same_token_with_another_body_is_a_conflict(tooling: Tooling) -> None:
    call(tooling, "POST", "/deployments", request())

    response = call(tooling, "POST", "/deployments", request(environment="sit"))

    assert response["statusCode"] == 409
    assert "run-42" in response["json"]["message"]
    assert "api-run-42" in response["json"]["message"]
    executions = tooling.sfn.list_executions(stateMachineArn=tooling.state_machine_arn)["executions"]
    assert len(executions) == 1


def test_bad_fields_are_named_and_nothing_starts(tooling: Tooling) -> None:
    response = call(
        tooling,
        "POST",
        "/deployments",
        request(environment="DEV!", specVersion="main", clientToken="has space", requestedBy="", extra=1),
    )

    assert response["statusCode"] == 400
    fields = {e["field"] for e in response["json"]["errors"]}
    assert fields == {"environment", "specVersion", "clientToken", "requestedBy", "extra"}
    assert tooling.sfn.list_executions(stateMachineArn=tooling.state_machine_arn)["executions"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [("not json", "not JSON"), ("[1, 2]", "JSON object"), ("", "JSON object")],
)
def test_a_body_that_is_not_a_json_object_is_refused(tooling: Tooling, body: str, message: str) -> None:
    response = call(tooling, "POST", "/deployments", body)

    assert response["statusCode"] == 400
    assert message in response["json"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"a":' * 10_000 + "1" + "}" * 10_000,
        "[" * 10_000,  # not even JSON: refused for its depth before the parser recurses
        '{"environment": "dev", "changeTicket": ' + "[" * 32 + '"one level too deep"' + "]" * 32 + "}",
    ],
)
def test_a_body_nested_too_deeply_is_400_and_nothing_starts(tooling: Tooling, body: str) -> None:
    roomy = dataclasses.replace(tooling, api_max_body_bytes=65_536)
    response = call(roomy, "POST", "/deployments", body)

    assert response["statusCode"] == 400
    assert "the limit is 32" in response["json"]["message"]
    assert response["json"]["errors"] == [{"field": "(body)", "message": "nested deeper than 32 levels"}]
    assert tooling.sfn.list_executions(stateMachineArn=tooling.state_machine_arn)["executions"] == []


def test_brackets_inside_strings_do_not_count_as_nesting(tooling: Tooling) -> None:
    # GIVEN a change ticket full of brackets and escaped quotes, in a flat body
    response = call(tooling, "POST", "/deployments", request(changeTicket='CHG-1 [{\\"' * 40))
    # THEN it is judged on its fields, not refused for depth
    assert response["statusCode"] == 400
    assert {e["field"] for e in response["json"]["errors"]} == {"changeTicket"}


def test_an_announcement_names_its_bad_fields_and_keeps_nothing(tooling: Tooling) -> None:
    # WHEN an announcement lacks its change ticket and gives no time with an offset
    response = call(tooling, "POST", "/announcements", {"environment": "dev", "scheduledFor": "2030-01-01T09:00"})
    # THEN each field is named, and nothing is announced
    assert response["statusCode"] == 400
    assert response["json"]["message"] == "invalid announcement"
    assert {e["field"] for e in response["json"]["errors"]} == {"changeTicket", "scheduledFor"}
    assert tooling.records.announcements("dev") == []
    # AND a time no window can be computed for (datetime's very ends) is named, not a 500
    edge = {"environment": "dev", "changeTicket": "C-1", "scheduledFor": "0001-01-01T00:00:00+01:00"}
    far = call(tooling, "POST", "/announcements", edge)
    assert (far["statusCode"], [e["field"] for e in far["json"]["errors"]]) == (400, ["scheduledFor"])
    # AND an environment without a spec is 404
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    unknown = call(
        tooling, "POST", "/announcements", {"environment": "qa", "changeTicket": "C-1", "scheduledFor": later}
    )
    assert unknown["statusCode"] == 404


def test_an_unknown_environment_is_404_naming_the_known_ones(tooling: Tooling) -> None:
    response = call(tooling, "POST", "/deployments", request(environment="qa"))

    assert response["statusCode"] == 404
    assert response["json"]["message"] == "no environment 'qa': known environments are dev, sit"


def test_a_commit_never_pushed_is_a_field_error(tooling: Tooling) -> None:
    response = call(tooling, "POST", "/deployments", request(specVersion="fedcba9"))

    assert response["statusCode"] == 400
    assert response["json"]["errors"][0]["field"] == "specVersion"
    assert "fedcba9" in response["json"]["errors"][0]["message"]


def test_an_abbreviated_commit_resolves_to_the_full_one(tooling: Tooling) -> None:
    response = call(tooling, "POST", "/deployments", request(specVersion=COMMIT[:7]))

    execution = tooling.sfn.describe_execution(executionArn=response["json"]["executionArn"])
    assert json.loads(execution["input"])["origin"]["specCommit"] == COMMIT


def test_a_body_over_the_limit_is_413(tooling: Tooling) -> None:
    response = call(tooling, "POST", "/deployments", request(changeTicket="x" * 3000))

    assert response["statusCode"] == 413
    assert "limit is 2048" in response["json"]["message"]


def test_a_base64_body_is_decoded(tooling: Tooling) -> None:
    event_body = base64.b64encode(json.dumps(request()).encode()).decode()
    event = {**copy.deepcopy(EVENT), "body": event_body, "isBase64Encoded": True}

    response = build_api(tooling).resolve(event, None)  # type: ignore[arg-type]

    assert response["statusCode"] == 202


def test_get_by_id_reports_a_started_deployment_before_its_record_exists(tooling: Tooling) -> None:
    started = call(tooling, "POST", "/deployments", request())["json"]

    response = call(tooling, "GET", f"/deployments/{started['deploymentId']}")

    assert response["statusCode"] == 200
    view = response["json"]
    assert view["deploymentId"] == "api-run-42"
    assert view["executionArn"] == started["executionArn"]
    assert view["status"] in ("RUNNING", "SUCCEEDED")
    assert view["startedAt"] is not None


def test_get_by_id_reads_the_record(tooling: Tooling) -> None:
    plan = {"add": 2, "change": 0, "unchanged": 0, "hash": "h", "summary": "2 to add"}
    tooling.records.create(
        "dev-1", "dev", datetime(2026, 11, 27, 9, tzinfo=UTC), {"requestedBy": "alice", "plan": plan}
    )
    tooling.records.update(
        "dev-1", datetime(2026, 11, 27, 9, 5, tzinfo=UTC), {"status": "SUCCEEDED", "finishedAt": "2026-11-27T09:05:00Z"}
    )

    view = call(tooling, "GET", "/deployments/dev-1")["json"]

    assert view["status"] == "SUCCEEDED"
    assert view["plan"]["add"] == 2
    assert view["plan"]["summary"] == "2 to add"
    assert view["requestedBy"] == "alice"
    assert view["startedAt"] == "2026-11-27T09:00:00.000Z"
    assert view["finishedAt"] == "2026-11-27T09:05:00Z"


def test_get_an_unknown_id_is_404_and_a_malformed_one_400(tooling: Tooling) -> None:
    assert call(tooling, "GET", "/deployments/dev-nope")["statusCode"] == 404
    assert call(tooling, "GET", "/deployments/bad$id")["statusCode"] == 400


def test_list_by_environment_newest_first(tooling: Tooling) -> None:
    for hour, name in ((8, "dev-a"), (9, "dev-b")):
        tooling.records.create(name, "dev", datetime(2026, 11, 27, hour, tzinfo=UTC), {"requestedBy": "bob"})

    response = call(tooling, "GET", "/deployments", query={"environment": "dev", "limit": "5"})

    assert response["statusCode"] == 200
    assert [d["deploymentId"] for d in response["json"]["deployments"]] == ["dev-b", "dev-a"]


@pytest.mark.parametrize(
    ("query", "status", "fields"),
    [
        (None, 400, {"environment"}),
        ({"environment": "dev", "limit": "0"}, 400, {"limit"}),
        ({"environment": "dev", "limit": "ten"}, 400, {"limit"}),
        # Unicode digits pass str.isdigit() but not int(); a number with thousands of digits is refused too.
        ({"environment": "dev", "limit": "²"}, 400, {"limit"}),
        ({"environment": "dev", "limit": "٣"}, 400, {"limit"}),
        ({"environment": "dev", "limit": "9" * 5000}, 400, {"limit"}),
        ({"environment": "dev", "limit": "101"}, 400, {"limit"}),
        ({"environment": "qa"}, 404, set()),
    ],
)
def test_list_refuses_bad_queries(tooling: Tooling, query: Any, status: int, fields: set[str]) -> None:
    response = call(tooling, "GET", "/deployments", query=query)

    assert response["statusCode"] == status
    assert {e["field"] for e in response["json"].get("errors", [])} == fields


def _constraints(schema: dict[str, Any]) -> dict[str, Any]:
    """A property's type and limits, whether nullable is spelled OpenAPI 3.0's way or JSON Schema's."""
    options = schema.get("anyOf", [schema])
    main = next(o for o in options if o.get("type") != "null")
    keys = ("type", "pattern", "minLength", "maxLength", "format")
    return {k: main[k] for k in keys if k in main} | {"nullable": schema.get("nullable", len(options) > 1)}


@pytest.mark.parametrize(
    ("schema", "model_type"),
    [("DeploymentRequest", ApiDeploymentRequest), ("AnnouncementRequest", ApiAnnouncementRequest)],
)
def test_the_openapi_document_describes_exactly_the_model_the_api_validates_with(
    schema: str, model_type: type[ApiDeploymentRequest | ApiAnnouncementRequest]
) -> None:
    document = yaml.safe_load((REPO / "openapi.yaml").read_text())
    declared = document["components"]["schemas"][schema]
    model = model_type.model_json_schema(by_alias=True)

    assert set(declared["required"]) == set(model["required"])
    assert declared["additionalProperties"] is False
    assert {n: _constraints(p) for n, p in declared["properties"].items()} == {
        n: _constraints(p) for n, p in model["properties"].items()
    }


# ---------------------------------------------------------------- through POST /deployments


CI_ROLE_PREFIX = "bbws-deployer-github-ci-"


@pytest.fixture(scope="module")
def issuer() -> OidcIssuer:
    return OidcIssuer(url=ISSUER)


@pytest.fixture
def api(tooling: Tooling, issuer: OidcIssuer) -> Tooling:
    tooling.oidc = OidcVerifier(ISSUER, issuer.audience, _jwks=StaticKeys(issuer.jwks()))
    tooling.github_repository = "bbws/bbws-deployer"
    tooling.ci_role_prefix = CI_ROLE_PREFIX
    return tooling


def post(tooling: Tooling, body: dict[str, Any], token: str | None = None, caller: str | None = None) -> Any:
    event = copy.deepcopy(EVENT)
    if token is not None:
        event["headers"][TOKEN_HEADER] = token
    if caller is not None:
        event["requestContext"]["identity"]["userArn"] = caller
    event.update(httpMethod="POST", path="/deployments", body=json.dumps(body))
    response = build_api(tooling).resolve(event, None)  # type: ignore[arg-type]
    response["json"] = json.loads(response["body"])
    return response


def ci_role(environment: str) -> str:
    return f"arn:aws:sts::123456789012:assumed-role/{CI_ROLE_PREFIX}{environment}/gh-1-{environment}"


def test_a_valid_token_makes_its_actor_the_verified_requester(api: Tooling, issuer: OidcIssuer) -> None:
    token = issuer.mint(environment="dev", sha=COMMIT, actor="bbws-sit-lead")
    response = post(api, request(requestedBy="someone-else"), token, ci_role("dev"))
    assert response["statusCode"] == 202, response["json"]
    stored = RecordStore(api.records.table).verified_requester("api-run-42")
    assert stored == {
        "name": "github:bbws-sit-lead",
        "verifiedBy": "github-oidc",
        "githubLogin": "bbws-sit-lead",
        "awsPrincipal": ci_role("dev"),
        "claimed": "someone-else",
    }
    execution = api.sfn.describe_execution(executionArn=response["json"]["executionArn"])
    assert json.loads(execution["input"])["requestedBy"] == "github:bbws-sit-lead"


@pytest.mark.parametrize(
    ("mint", "claim", "message"),
    [
        ({"environment": "sit"}, "environment", "the token is for environment 'sit', the request for 'dev'"),
        ({"sha": "f" * 40}, "sha", f"the token was issued for commit {'f' * 40}, the request deploys the spec of"),
        ({"repository": "evil/fork"}, "repository", "evil/fork is not the repository this stack serves"),
        ({"ref": "refs/heads/feature-x"}, "ref", "refs/heads/feature-x is not a deployment branch of account"),
        ({"ref": "refs/tags/v1"}, "ref", "refs/tags/v1 is not a deployment branch"),
    ],
)
def test_a_claim_that_does_not_fit_the_request_is_403_naming_it(
    api: Tooling, issuer: OidcIssuer, mint: dict[str, Any], claim: str, message: str
) -> None:
    token = issuer.mint(**{"environment": "dev", "sha": COMMIT, **mint})
    response = post(api, request(), token)
    assert response["statusCode"] == 403
    assert response["json"]["errors"][0]["field"] == f"{TOKEN_HEADER}.{claim}"
    assert message in response["json"]["errors"][0]["message"]
    assert api.sfn.list_executions(stateMachineArn=api.state_machine_arn)["executions"] == []


def test_a_bad_token_is_401(api: Tooling, issuer: OidcIssuer) -> None:
    response = post(api, request(), issuer.mint(environment="dev", sha=COMMIT, forged=True))
    assert response["statusCode"] == 401
    assert "Signature verification failed" in response["json"]["message"]


def test_a_ci_role_deploys_only_its_environment_and_only_with_a_token(api: Tooling, issuer: OidcIssuer) -> None:
    token = issuer.mint(environment="sit", sha=COMMIT)
    other = post(api, request(environment="sit"), token, ci_role("dev"))
    assert other["statusCode"] == 403
    assert other["json"]["message"] == (
        f"caller {ci_role('dev')} is CI's role for environment dev; it may not deploy environment sit"
    )
    tokenless = post(api, request(), None, ci_role("dev"))
    assert tokenless["statusCode"] == 401
    assert TOKEN_HEADER in tokenless["json"]["message"]


def test_without_a_token_the_sigv4_caller_is_the_requester_and_the_claim_is_kept(api: Tooling) -> None:
    response = post(api, request(requestedBy="alice"), None, "arn:aws:iam::123456789012:user/alice")
    assert response["statusCode"] == 202
    stored = RecordStore(api.records.table).verified_requester("api-run-42")
    assert stored is not None
    assert (stored["name"], stored["verifiedBy"], stored["claimed"]) == (
        "arn:aws:iam::123456789012:user/alice",
        "aws-sigv4",
        "alice",
    )


# ---------------------------------------------------------------- POST /environments/{environment}/unlock


def unlock(tooling: Tooling, environment: str, body: Any) -> Any:
    event = copy.deepcopy(EVENT)
    event.update(httpMethod="POST", path=f"/environments/{environment}/unlock", body=json.dumps(body))
    response = build_api(tooling).resolve(event, None)  # type: ignore[arg-type]
    response["json"] = json.loads(response["body"])
    return response


def test_unlock_refuses_a_lock_whose_deployment_is_still_running(tooling: Tooling) -> None:
    # GIVEN a SIT deployment started through the API, holding SIT's lock
    started = call(tooling, "POST", "/deployments", request(environment="sit", clientToken="sit-held"))
    tooling.records.acquire_lock("sit", started["json"]["deploymentId"], "alice", 3600, datetime.now(UTC))
    # WHEN someone unlocks SIT THEN it is refused while that execution runs, and the lock stays
    response = unlock(tooling, "sit", {"reason": "it looks stuck to me"})
    assert response["statusCode"] == 409
    assert "is still RUNNING" in response["json"]["message"]
    assert tooling.records.lock_holder("sit") is not None


def test_unlock_frees_a_dead_deployments_lock_and_keeps_who_and_why(tooling: Tooling) -> None:
    # GIVEN a lock left by a deployment whose execution no longer exists
    tooling.records.acquire_lock("dev", "dev-crashed", "ghost", 3600, datetime.now(UTC))
    tooling.event_bus = "bbws-deployer-deployments"
    boto3.client("events", region_name="us-east-1").create_event_bus(Name=tooling.event_bus)
    # WHEN it is unlocked with a reason
    response = unlock(tooling, "dev", {"reason": "the Lambda crashed mid-deployment, INC-42"})
    # THEN the lock is gone, and who released it, why and whose it was are kept
    assert response["statusCode"] == 200, response["json"]
    assert response["json"]["released"] == "dev-crashed"
    assert tooling.records.lock_holder("dev") is None
    (kept,) = tooling.records.unlocks("dev")
    assert (kept["deploymentId"], kept["holderRequestedBy"], kept["reason"]) == (
        "dev-crashed",
        "ghost",
        "the Lambda crashed mid-deployment, INC-42",
    )
    assert kept["releasedBy"] == EVENT["requestContext"]["identity"]["userArn"]


@pytest.mark.parametrize(("body", "status"), [({"reason": "short"}, 400), ({}, 400), ({"reason": "x" * 600}, 400)])
def test_unlock_needs_a_reason(tooling: Tooling, body: Any, status: int) -> None:
    tooling.records.acquire_lock("dev", "dev-crashed", "ghost", 3600, datetime.now(UTC))
    response = unlock(tooling, "dev", body)
    assert response["statusCode"] == status
    assert response["json"]["errors"][0]["field"] == "reason"
    assert tooling.records.lock_holder("dev") is not None


def test_unlocking_an_unlocked_environment_is_404(tooling: Tooling) -> None:
    assert unlock(tooling, "dev", {"reason": "just to be sure"})["statusCode"] == 404
