"""The deployments API (``openapi.yaml``): how CI starts deployments and follows them.

Every route sits behind API Gateway's IAM (SigV4) auth, so the caller's identity is the
one API Gateway verified. A start is idempotent by the client's token: the execution's
name derives from it, and Step Functions refuses a second execution of that name, so a
retried request can only ever find the first one. The request's hash travels in the
execution input, which tells a retry (same request, 200) from a conflict (other request,
409).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import APIGatewayRestResolver, Response
from botocore.exceptions import ClientError
from pydantic import ValidationError

from deployer import clock
from deployer.announcements import announce
from deployer.aws import error_code, transient_errors
from deployer.errors import GuardrailViolation, ScheduleRefused, SpecNotFound
from deployer.events import LOCK_RELEASED, publish
from deployer.models import ApiAnnouncementRequest, ApiDeploymentRequest, ApiOrigin, DeploymentRequest, Requester
from deployer.oidc import TOKEN_HEADER, IssuerUnavailable, TokenRefused
from deployer.spec import ENVIRONMENT_NAME
from deployer.tooling import Tooling
from deployer.views import deployment_view, history_item

EXECUTION_PREFIX = "api-"
DEPLOYMENT_ID = r"[A-Za-z0-9_.-]{1,80}"
HISTORY_LIMIT_MAX = 100
# ASCII digits only: str.isdigit() also takes "²" and other Unicode digits, which int() refuses.
HISTORY_LIMIT = re.compile(r"[0-9]{1,3}")
# A deployment request is a flat object; deeper nesting is refused before the JSON parser recurses.
MAX_BODY_DEPTH = 32
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
ASSUMED_ROLE = re.compile(r"arn:aws[a-z-]*:sts::[0-9]{12}:assumed-role/(?P<role>[^/]+)/.+")
UNKNOWN_CALLER = "unknown"
MIN_REASON, MAX_REASON = 10, 500


@dataclass
class ApiError(Exception):
    """An answer other than success: its status, message and the offending fields."""

    status: int
    message: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def response(self) -> Response[str]:
        body: dict[str, Any] = {"message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return _json(self.status, body)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[str]:
    return Response(status, "application/json", json.dumps(body), headers)


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """One entry per offending field, named by its JSON path in the request."""
    return [
        {"field": ".".join(str(part) for part in error["loc"]) or "(body)", "message": error["msg"]}
        for error in exc.errors()
    ]


def execution_arn(state_machine_arn: str, name: str) -> str:
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"


def request_hash(request: ApiDeploymentRequest) -> str:
    return hashlib.sha256(json.dumps(request.dump(), sort_keys=True).encode()).hexdigest()


def _describe(sfn: Any, arn: str) -> dict[str, Any] | None:
    try:
        with transient_errors():
            return dict(sfn.describe_execution(executionArn=arn))
    except ClientError as exc:
        if error_code(exc) == "ExecutionDoesNotExist":
            return None
        raise


def _known_environment(tooling: Tooling, environment: str) -> None:
    known = tooling.specs.environments()
    if environment not in known:
        raise ApiError(404, f"no environment {environment!r}: known environments are {', '.join(known) or 'none'}")


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON text, counted without parsing it (strings skipped)."""
    depth = deepest = 0
    for char in JSON_STRING.sub('""', text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_request[R: (ApiDeploymentRequest, ApiAnnouncementRequest)](raw: bytes, limit: int, model: type[R]) -> R:
    """The POST body as a validated request, or an ApiError saying exactly what is wrong."""
    try:
        return model.model_validate(json_object(raw, limit))
    except ValidationError as exc:
        what = "announcement" if model is ApiAnnouncementRequest else "deployment request"
        raise ApiError(400, f"invalid {what}", field_errors(exc)) from None


def json_object(raw: bytes, limit: int) -> dict[str, Any]:
    """A request body as a JSON object: within the size and nesting limits, or an ApiError saying what is wrong."""
    if len(raw) > limit:
        raise ApiError(413, f"the request body is {len(raw)} bytes; the limit is {limit}")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the request body is not JSON: {exc}") from None
    depth = nesting_depth(text)
    if depth > MAX_BODY_DEPTH:
        raise ApiError(
            400,
            f"the request body nests {depth} levels deep; the limit is {MAX_BODY_DEPTH}",
            [{"field": "(body)", "message": f"nested deeper than {MAX_BODY_DEPTH} levels"}],
        )
    try:
        body = json.loads(text or "null")
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def ci_role_environment(caller: str, prefix: str) -> str | None:
    """The environment whose CI role made the call (``assumed-role/<prefix><environment>/...``); None for others."""
    match = ASSUMED_ROLE.fullmatch(caller)
    if not prefix or match is None or not match["role"].startswith(prefix):
        return None
    return match["role"].removeprefix(prefix)


def _refuse_claim(claim: str, message: str) -> ApiError:
    return ApiError(
        403,
        f"the GitHub OIDC token's {claim} claim is refused: {message}",
        [{"field": f"{TOKEN_HEADER}.{claim}", "message": message}],
    )


def verify_requester(
    tooling: Tooling,
    request: ApiDeploymentRequest | ApiAnnouncementRequest,
    *,
    caller: str,
    token: str | None,
    commit: str | None,
    version: str | None,
) -> Requester:
    """Who is asking: CI's verified GitHub actor (its token's claims must fit the request), else the SigV4 caller.

    A bad token is a 401; a good token whose claims do not fit is a 403 naming the claim. ``commit``
    is the commit whose spec is deployed (None for an announcement, which deploys none).
    """
    if token is None:
        if caller == UNKNOWN_CALLER:
            return Requester(name=request.requested_by or UNKNOWN_CALLER, claimed=request.requested_by)
        return Requester(name=caller, verified_by="aws-sigv4", aws_principal=caller, claimed=request.requested_by)
    try:
        claims = tooling.oidc.verify(token)
    except TokenRefused as exc:
        raise ApiError(401, f"the GitHub OIDC token in {TOKEN_HEADER} is refused: {exc}") from None
    except IssuerUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    if claims.environment != request.environment:
        raise _refuse_claim(
            "environment",
            f"the token is for environment {claims.environment!r}, the request for {request.environment!r}",
        )
    if commit is not None and claims.sha != commit:
        raise _refuse_claim(
            "sha", f"the token was issued for commit {claims.sha}, the request deploys the spec of {commit}"
        )
    if tooling.github_repository and claims.repository != tooling.github_repository:
        raise _refuse_claim(
            "repository", f"{claims.repository} is not the repository this stack serves, {tooling.github_repository}"
        )
    spec, _ = tooling.specs.get(request.environment, version)
    try:
        rules = tooling.guardrails.for_account(spec.account)
    except GuardrailViolation as exc:
        raise _refuse_claim("ref", str(exc)) from None
    if not rules.allows_ref(claims.ref):
        raise _refuse_claim(
            "ref",
            f"{claims.ref} is not a deployment branch of account {spec.account} ({rules.name}), "
            f"whose guardrails allow {', '.join(rules.branches)}",
        )
    return Requester(
        name=f"github:{claims.actor}",
        verified_by="github-oidc",
        github_login=claims.actor,
        aws_principal=None if caller == UNKNOWN_CALLER else caller,
        claimed=request.requested_by,
    )


def _ci_may(tooling: Tooling, caller: str, token: str | None, environment: str, what: str) -> None:
    """CI's role for one environment may act on no other (403), and must prove its workflow with its token (401)."""
    ci_environment = ci_role_environment(caller, tooling.ci_role_prefix)
    if ci_environment is not None and ci_environment != environment:
        raise ApiError(
            403,
            f"caller {caller} is CI's role for environment {ci_environment}; it may not {what} environment "
            f"{environment}",
        )
    if ci_environment is not None and token is None:
        raise ApiError(
            401, f"CI's role must send its GitHub OIDC token (audience {tooling.oidc_audience}) in {TOKEN_HEADER}"
        )


def announce_window(
    tooling: Tooling, request: ApiAnnouncementRequest, caller: str, token: str | None = None
) -> dict[str, Any]:
    """Announce the window a change ticket's deployment will apply in (runbook section 6 step 1).

    Held to the latest spec's policy: at least minimumNoticeHours ahead, inside the window (400
    naming scheduledFor otherwise). Kept, and posted to the environment's channel.
    """
    _ci_may(tooling, caller, token, request.environment, "announce")
    _known_environment(tooling, request.environment)
    requester = verify_requester(tooling, request, caller=caller, token=token, commit=None, version=None)
    spec, _ = tooling.specs.get(request.environment)
    try:
        tooling.guardrails.enforce(spec)
        kept = announce(
            tooling,
            spec,
            change_ticket=request.change_ticket,
            scheduled_for=request.scheduled_for,
            announced_by=requester,
            now=clock.now(),
        )
    except GuardrailViolation as exc:
        raise ApiError(403, str(exc)) from None
    except ScheduleRefused as exc:
        raise ApiError(400, "invalid announcement", [{"field": "scheduledFor", "message": str(exc)}]) from None
    return {
        "announcementId": kept["announcementId"],
        "environment": request.environment,
        "changeTicket": request.change_ticket,
        "announcedAt": kept["announcedAt"],
        "announcedBy": requester.name,
        "windowStart": kept["windowStart"],
        "windowEnd": kept["windowEnd"],
        "windowText": kept["detail"]["windowText"],
        "minimumNoticeHours": spec.policy.minimum_notice_hours,
    }


def start_deployment(
    tooling: Tooling, request: ApiDeploymentRequest, caller: str, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Start the request's execution, or find the one an earlier try of it started.

    Returns 202 and the new deployment, or 200 and the existing one; a token already
    used for another request is a 409. CI's role for one environment may deploy no other
    (403), and must prove which workflow it runs with its GitHub OIDC token (401 without).
    """
    _ci_may(tooling, caller, token, request.environment, "deploy")
    _known_environment(tooling, request.environment)
    try:
        commit, version = tooling.specs.resolve_commit(request.environment, request.spec_version)
    except SpecNotFound as exc:
        raise ApiError(400, "invalid deployment request", [{"field": "specVersion", "message": str(exc)}]) from None
    requester = verify_requester(tooling, request, caller=caller, token=token, commit=commit, version=version)
    fingerprint = request_hash(request)
    name = EXECUTION_PREFIX + request.client_token
    arn = execution_arn(tooling.state_machine_arn, name)
    execution_input = DeploymentRequest(
        **request.model_dump(exclude={"spec_version", "client_token", "requested_by"}),
        requested_by=requester.name,
        spec_version=version,
        origin=ApiOrigin(
            client_token=request.client_token, request_hash=fingerprint, caller=caller, spec_commit=commit
        ),
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    # Two tries racing: the loser's StartExecution fails, and it then finds the winner's.
    for _ in range(2):
        existing = _describe(tooling.sfn, arn)
        if existing is not None:
            origin = json.loads(existing.get("input") or "{}").get("origin") or {}
            if origin.get("requestHash") != fingerprint:
                raise ApiError(
                    409,
                    f"clientToken {request.client_token!r} was already used for another request "
                    f"(deployment {name}); use a new token for a new deployment",
                )
            return 200, {"deploymentId": name, "executionArn": arn, "status": existing["status"], "created": False}
        tooling.records.put_requester(name, requester.dump())
        try:
            with transient_errors():
                tooling.sfn.start_execution(
                    stateMachineArn=tooling.state_machine_arn, name=name, input=json.dumps(execution_input)
                )
        except ClientError as exc:
            if error_code(exc) != "ExecutionAlreadyExists":
                raise
            continue
        return 202, {"deploymentId": name, "executionArn": arn, "status": "RUNNING", "created": True}
    raise ApiError(409, f"deployment {name} is being started by a concurrent request; retry")


def get_deployment(tooling: Tooling, deployment_id: str) -> dict[str, Any]:
    if re.fullmatch(DEPLOYMENT_ID, deployment_id) is None:
        raise ApiError(400, "invalid deployment id", [{"field": "id", "message": f"must match ^{DEPLOYMENT_ID}$"}])
    record = tooling.records.get(deployment_id)
    execution = _describe(tooling.sfn, execution_arn(tooling.state_machine_arn, deployment_id))
    if record is None and execution is None:
        raise ApiError(404, f"no deployment {deployment_id}")
    approval_id = (record or {}).get("approvalId")
    votes = tooling.approvals.votes(approval_id) if approval_id else []
    return deployment_view(deployment_id, record, execution, votes)


def unlock_environment(tooling: Tooling, environment: str, body: dict[str, Any], caller: str) -> dict[str, Any]:
    """Release a dead deployment's lock on ``environment``: refused while its execution runs; kept and announced."""
    if re.fullmatch(ENVIRONMENT_NAME, environment) is None:
        raise ApiError(
            400, "invalid environment", [{"field": "environment", "message": f"must match {ENVIRONMENT_NAME}"}]
        )
    reason = body.get("reason")
    if not isinstance(reason, str) or not MIN_REASON <= len(reason.strip()) <= MAX_REASON:
        raise ApiError(
            400,
            "invalid unlock request",
            [{"field": "reason", "message": f"say why, in {MIN_REASON} to {MAX_REASON} characters"}],
        )
    holder = tooling.records.lock_holder(environment)
    if holder is None:
        raise ApiError(404, f"environment {environment} is not locked")
    deployment_id = str(holder.get("deploymentId", ""))
    execution = _describe(tooling.sfn, execution_arn(tooling.state_machine_arn, deployment_id))
    if execution is not None and execution.get("status") == "RUNNING":
        raise ApiError(
            409,
            f"environment {environment} is locked by deployment {deployment_id}, which is still RUNNING; "
            "stop its execution (or let it finish) instead of unlocking it",
        )
    if not tooling.records.release_lock(environment, deployment_id):
        raise ApiError(409, f"the lock on environment {environment} changed while it was being released; look again")
    now = clock.now()
    tooling.records.note_unlock(environment, holder, caller, reason.strip(), now)
    detail = {
        "deploymentId": deployment_id,
        "environment": environment,
        "requestedBy": holder.get("requestedBy"),
        "releasedBy": caller,
        "reason": reason.strip(),
        "executionStatus": execution.get("status") if execution else None,
    }
    publish(tooling.events, tooling.event_bus, LOCK_RELEASED, detail)
    return {"environment": environment, "released": deployment_id, "releasedBy": caller, "reason": reason.strip()}


def list_deployments(tooling: Tooling, environment: str | None, limit: str | None) -> dict[str, Any]:
    errors = []
    if not environment:
        errors.append({"field": "environment", "message": "is required"})
    count = 20
    if limit is not None:
        count = int(limit) if HISTORY_LIMIT.fullmatch(limit) else 0
        if not 1 <= count <= HISTORY_LIMIT_MAX:
            errors.append(
                {"field": "limit", "message": f"must be a whole number from 1 to {HISTORY_LIMIT_MAX} in ASCII digits"}
            )
    if errors:
        raise ApiError(400, "invalid query", errors)
    assert environment is not None
    _known_environment(tooling, environment)
    records = tooling.records.history(environment, count)
    return {"environment": environment, "deployments": [history_item(r) for r in records]}


def build_api(tooling: Tooling) -> APIGatewayRestResolver:
    """The API's routes, bound to the tooling account's stores and clients."""
    app = APIGatewayRestResolver()

    @app.exception_handler(ApiError)  # type: ignore[untyped-decorator]
    def refuse(error: ApiError) -> Response[str]:
        return error.response()

    def raw_body() -> bytes:
        event = app.current_event
        raw = event.body or ""
        return base64.b64decode(raw) if event.is_base64_encoded else raw.encode()

    def caller() -> str:
        return app.current_event.request_context.identity.user_arn or UNKNOWN_CALLER

    @app.post("/deployments")
    def post_deployment() -> Response[str]:
        event = app.current_event
        request = parse_request(raw_body(), tooling.api_max_body_bytes, ApiDeploymentRequest)
        token = event.headers.get(TOKEN_HEADER)
        status, answer = start_deployment(tooling, request, caller(), token or None)
        url = _status_url(event.raw_event, answer["deploymentId"])
        return _json(status, {**answer, "statusUrl": url}, {"Location": url})

    @app.post("/announcements")
    def post_announcement() -> Response[str]:
        request = parse_request(raw_body(), tooling.api_max_body_bytes, ApiAnnouncementRequest)
        token = app.current_event.headers.get(TOKEN_HEADER)
        return _json(201, announce_window(tooling, request, caller(), token or None))

    @app.get("/deployments/<deployment_id>")
    def get_one(deployment_id: str) -> Response[str]:
        return _json(200, get_deployment(tooling, deployment_id))

    @app.get("/deployments")
    def get_many() -> Response[str]:
        query = app.current_event.query_string_parameters or {}
        return _json(200, list_deployments(tooling, query.get("environment"), query.get("limit")))

    @app.post("/environments/<environment>/unlock")
    def post_unlock(environment: str) -> Response[str]:
        body = json_object(raw_body(), tooling.api_max_body_bytes)
        return _json(200, unlock_environment(tooling, environment, body, caller()))

    @app.get("/guardrails")
    def get_guardrails() -> Response[str]:
        return _json(200, tooling.guardrails.document())

    return app


def _status_url(event: dict[str, Any], deployment_id: str) -> str:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    context = event.get("requestContext") or {}
    scheme = headers.get("x-forwarded-proto", "https")
    return f"{scheme}://{context.get('domainName', '')}/{context.get('stage', '')}/deployments/{deployment_id}"
