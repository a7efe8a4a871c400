"""The template's API routes over HTTP, as API Gateway (REST, proxy integration) serves them.

Each request becomes an API Gateway v1 proxy event for the route's function, run by the
sandbox's Lambda runtime; the function's proxy response becomes the HTTP response. The
stage is part of the path (``/v1/...``), as in the deployed API's URL.

Routes with the ``AWS_IAM`` authorizer (the template's ``DefaultAuthorizer``) need a SigV4
signature for ``execute-api`` in the API's region, checked by ``sandbox.sigv4`` before the
function runs (and before the body limit, as API Gateway authenticates first); the
caller lands in ``requestContext.identity``. The sandbox authenticates callers but does not
evaluate their IAM policies (``execute-api:Invoke``). ``NONE`` routes are open.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.lambda_runtime import LambdaRuntime
from sandbox.sigv4 import MISSING_AUTHENTICATION, AuthError, Identity, SigV4Verifier
from sandbox.template import TemplateError

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
AUTHORIZERS = ("NONE", "AWS_IAM")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {param} placeholders, as in the template
    function: str
    authorizer: str  # one of AUTHORIZERS: NONE, or the API's default (AWS_IAM)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in (method, "ANY"):
            return None
        declared, given = self.path.strip("/").split("/"), path.strip("/").split("/")
        if len(declared) != len(given):
            return None
        params = {}
        for part, value in zip(declared, given, strict=True):
            if part.startswith("{") and part.endswith("}"):
                params[part.strip("{}+")] = value
            elif part != value:
                return None
        return params


@dataclass
class ApiGateway:
    runtime: LambdaRuntime
    account: str
    # The API's region, which SigV4 credentials must be scoped to.
    region: str
    stage: str = "v1"
    routes: list[Route] = field(default_factory=list)
    verifier: SigV4Verifier | None = None

    def add_route(self, route: Route) -> None:
        if route.authorizer not in AUTHORIZERS:
            raise TemplateError(
                f"the sandbox's API checks only {' and '.join(AUTHORIZERS)} authorizers; "
                f"{route.method} {route.path} uses {route.authorizer}"
            )
        self.routes.append(route)

    def _authenticate(self, request: Request) -> Identity:
        if self.verifier is None:
            self.verifier = SigV4Verifier(self.region)
        return self.verifier.verify(request)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        prefix = f"/{self.stage}"
        if not request.path.startswith(prefix + "/"):
            return _missing_token()
        path = request.path[len(prefix) :]
        for route in self.routes:
            params = route.match(request.method, path)
            if params is not None:
                break
        else:
            return _missing_token()
        identity = None
        if route.authorizer == "AWS_IAM":
            try:
                identity = self._authenticate(request)
            except AuthError as refused:
                return _json(refused.status, {"message": refused.message}, refused.error_type)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _json(413, {"message": "Request Too Long"})
        config = self.runtime.functions[route.function]
        event = self._event(request, route, path, params)
        if identity is not None:
            event["requestContext"]["identity"].update(identity.request_context())
        result, errored = self.runtime.invoke(config, event)
        if errored or not isinstance(result, dict) or "statusCode" not in result:
            return _json(502, {"message": "Internal server error"})
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        # API Gateway's default Content-Type; a header the function sets replaces it.
        response = Response(raw, status=int(result["statusCode"]), content_type="application/json")
        for name, value in (result.get("headers") or {}).items():
            response.headers[name] = str(value)
        for name, values in (result.get("multiValueHeaders") or {}).items():
            response.headers.setlist(name, [str(v) for v in values])
        return response

    def _event(self, request: Request, route: Route, path: str, params: dict[str, str]) -> dict[str, Any]:
        raw = request.get_data()
        try:
            body: str | None = raw.decode("utf-8") if raw else None
            encoded = False
        except UnicodeDecodeError:
            body, encoded = base64.b64encode(raw).decode(), True
        args = request.args
        # API Gateway adds the X-Forwarded-* headers; the deployed API's scheme is https, the sandbox's http.
        forwarded = {
            "X-Forwarded-For": request.remote_addr or "",
            "X-Forwarded-Port": str(request.environ.get("SERVER_PORT", "")),
            "X-Forwarded-Proto": request.scheme,
        }
        headers = {**dict(request.headers.items()), **forwarded}
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": request.method,
            "headers": headers,
            "multiValueHeaders": {
                **{k: request.headers.getlist(k) for k in request.headers.keys()},  # noqa: SIM118
                **{k: [v] for k, v in forwarded.items()},
            },
            "queryStringParameters": {k: args[k] for k in args} or None,
            "multiValueQueryStringParameters": {k: args.getlist(k) for k in args} or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "accountId": self.account,
                "apiId": "sandbox",
                "stage": self.stage,
                "resourcePath": route.path,
                "httpMethod": request.method,
                "path": request.path,
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "requestId": str(uuid.uuid4()),
                "requestTimeEpoch": int(time.time() * 1000),
                "domainName": request.host,
                "identity": {"sourceIp": request.remote_addr, "userAgent": request.user_agent.string},
            },
            "body": body,
            "isBase64Encoded": encoded,
        }


def _json(status: int, body: dict[str, Any], error_type: str | None = None) -> Response:
    response = Response(json.dumps(body), status=status, content_type="application/json")
    if error_type:
        response.headers["x-amzn-ErrorType"] = error_type
    return response


def _missing_token() -> Response:
    # API Gateway's answer for an unknown resource or method, and for an unsigned IAM route.
    return _json(403, {"message": MISSING_AUTHENTICATION}, "MissingAuthenticationTokenException")
