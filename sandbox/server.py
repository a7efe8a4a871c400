"""The embedded sandbox: moto's server on loopback with our stack installed in it.

Three HTTP endpoints on 127.0.0.1:
- ``endpoint``: every AWS API. In front of moto sit the sandbox's extensions, each in
  its own module: Lambda invocations of our functions (``lambda_runtime``), S3 bucket
  ownership across accounts (``s3_ownership``) and names for unnamed executions
  (``sfn_names``). The state machine runs in moto's ASL interpreter
  (``execute_state_machine``), which invokes Lambda through the same endpoint. Inside
  moto, ``eventbridge_delivery`` delivers events to Lambda targets (with Lambda's
  asynchronous retries and on-failure destinations) and puts Step Functions' execution
  status changes on the default bus, and ``sfn_stop`` makes StopExecution end an execution
  at once, task-token waits included. ``call_counter``, outermost, counts every API call
  by account, service and operation.
- ``api``: the template's API Gateway routes (``api_gateway``), stage included.
- ``slack``: a fake Slack (``fake_slack``) that the functions post to and that records
  every message.
- ``oidc``: GitHub Actions' OIDC issuer (``oidc_issuer``): its OpenID configuration and
  keys, which the deployments API verifies CI's tokens against, and tokens minted on demand.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from deployer.spec import load_spec_file
from deployer.specstore import SpecStore
from deployer.windows import first_opening
from sandbox import iam_policy, s3_ownership, sfn_names, sfn_roles, sfn_stop
from sandbox.accounts import (
    BOOTSTRAP_ROLE,
    TARGET_ACCOUNTS,
    TOOLING_ACCESS_KEY,
    TOOLING_ACCOUNT,
    TOOLING_SECRET_KEY,
    install_deployment_roles,
)
from sandbox.api_gateway import ApiGateway
from sandbox.call_counter import CallCounter
from sandbox.cloudwatch_metrics import DynamoDBMetrics
from sandbox.dynamodb_replicas import DynamoDBReplicas
from sandbox.eventbridge_delivery import EventBridgeDelivery
from sandbox.fake_slack import FakeSlack
from sandbox.faults import FaultInjector
from sandbox.iam import IamEnforcer
from sandbox.lambda_runtime import TIME_OFFSET, FunctionConfig, LambdaRuntime
from sandbox.oidc_issuer import OidcIssuer
from sandbox.s3_replication import S3Replication
from sandbox.stack import StackInstaller

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STACK = "bbws-deployer"
DEFAULT_REGION = "af-south-1"
# Test-speed settings for the template's parameters; real AWS keeps the defaults.
SANDBOX_PARAMETERS = {
    "WaitDelaySeconds": "0.2",
    "WaitMaxAttempts": "50",
    "ReplicationCheckTimeoutSeconds": "20",
    "AwsMaxAttempts": "2",
}
SLACK_TEAM_ID = "T0BBWS0001"
INFO_PATH = "/_sandbox/info"
IAM_USAGE_VARIABLE = "BBWS_IAM_USAGE_DIR"


def _env_path(variable: str) -> Path | None:
    return Path(os.environ[variable]) if os.environ.get(variable) else None


class SandboxApp:
    """WSGI for the AWS endpoint: the sandbox's extensions first, then moto."""

    def __init__(
        self, moto_app: Any, runtime: LambdaRuntime, info: Any, faults: FaultInjector, metrics: DynamoDBMetrics
    ) -> None:
        self.moto_app = moto_app
        self.runtime = runtime
        self.info = info
        self.faults = faults
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        sfn_names.name_unnamed_execution(environ)
        request = Request(environ, shallow=False)
        if request.path == INFO_PATH:
            response: Response | None = Response(json.dumps(self.info()), content_type="application/json")
        else:
            response = self.faults.handle(request) or self.runtime.wsgi(request) or s3_ownership.check(request)
        if response is not None:
            return response(environ, start_response)
        written = self.metrics.watch(environ)
        if written is None:
            return self.moto_app(environ, start_response)  # type: ignore[no-any-return]
        statuses: list[str] = []

        def capture(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        body = self.moto_app(environ, capture)
        if statuses and statuses[0].startswith("200"):
            self.metrics.emit(written)
        return body  # type: ignore[no-any-return]


@dataclass
class Sandbox:
    repo: Path = REPO
    port: int = 0
    stack_name: str = DEFAULT_STACK
    region: str = DEFAULT_REGION
    parameters: dict[str, str] = field(default_factory=lambda: dict(SANDBOX_PARAMETERS))
    slack_signing_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    # Simulated wall-clock time the functions see (ticking on from it); None is the real time.
    time: datetime | None = None
    # Each function's stdout/stderr, as CloudWatch Logs would hold them. A directory the
    # sandbox made itself is removed on stop; one passed in is kept.
    log_dir: Path | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    # The template's resources the sandbox accepted but does not install (WAF), each with why.
    not_installed: dict[str, str] = field(default_factory=dict)
    deployment_roles: dict[str, str] = field(default_factory=dict)
    runtime: LambdaRuntime | None = None
    # Game-day faults (`deployer run --inject`), off until injected.
    faults: FaultInjector = field(default_factory=FaultInjector)
    dynamodb_metrics: DynamoDBMetrics = field(default_factory=DynamoDBMetrics)
    slack: FakeSlack = field(default_factory=lambda: FakeSlack(f"xoxb-sandbox-{secrets.token_hex(8)}", SLACK_TEAM_ID))
    # CI's identity: the stack is installed with GitHubRepository (so CI's roles exist) and this issuer.
    oidc: OidcIssuer = field(default_factory=OidcIssuer)
    # moto 5.2.5 gaps, each emulated in its own module; pause()/resume() them for fault tests.
    s3_replication: S3Replication = field(default_factory=S3Replication)
    dynamodb_replicas: DynamoDBReplicas = field(default_factory=DynamoDBReplicas)
    # EventBridge's Lambda targets, Lambda's async retries, Step Functions' status-change events.
    eventbridge: EventBridgeDelivery = field(default_factory=EventBridgeDelivery)
    # Every AWS API call the endpoint serves, by account, service and operation (benchmarks read it).
    calls: CallCounter = field(default_factory=CallCounter)
    # IAM evaluated for every call the functions, the state machine and their sessions make.
    iam: IamEnforcer = field(default_factory=lambda: IamEnforcer(exempt_roles=frozenset({BOOTSTRAP_ROLE})))
    # Where stop() writes what IAM evaluated, for the least-privilege report (`make iam-report`).
    iam_usage_dir: Path | None = field(default_factory=lambda: _env_path(IAM_USAGE_VARIABLE))
    _servers: list[tuple[BaseWSGIServer, threading.Thread]] = field(default_factory=list)
    _own_log_dir: bool = False

    @property
    def endpoint(self) -> str:
        return self._url(0)

    @property
    def api(self) -> str:
        """The deployer's HTTP API base URL (stage included), like the stack's ApiUrl output."""
        return self._url(1) + "/v1"

    @property
    def slack_url(self) -> str:
        return self._url(2)

    @property
    def oidc_url(self) -> str:
        return self._url(3)

    def _url(self, index: int) -> str:
        return f"http://127.0.0.1:{self._servers[index][0].server_port}"

    def session(self) -> boto3.Session:
        """A session in the tooling account, where the deployer stack runs."""
        return boto3.Session(
            aws_access_key_id=TOOLING_ACCESS_KEY, aws_secret_access_key=TOOLING_SECRET_KEY, region_name=self.region
        )

    def client(self, service: str, region: str | None = None) -> Any:
        return self.session().client(service, endpoint_url=self.endpoint, region_name=region or self.region)  # type: ignore[call-overload]

    def start(self) -> Sandbox:
        from moto.core.config import default_user_config
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # moto logs every failed state with its whole parse tree; the execution history says it better.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        if self.log_dir is None:
            self.log_dir, self._own_log_dir = Path(tempfile.mkdtemp(prefix="bbws-sandbox-")), True
        self.runtime = LambdaRuntime(base_env={}, log_dir=self.log_dir / "lambda", credentials=self._credentials)
        self.eventbridge.start(self.runtime)
        sfn_stop.install()
        self.s3_replication.start()
        self.faults.switched = {
            "s3_replication": self.s3_replication,
            "dynamodb_replicas": self.dynamodb_replicas,
            "dynamodb_metrics": self.dynamodb_metrics,
        }
        self.dynamodb_replicas.start()
        sfn_roles.install(self.iam.fixed_keys.__setitem__)
        aws = SandboxApp(
            DomainDispatcherApplication(create_backend_app),
            self.runtime,
            self.describe,
            self.faults,
            self.dynamodb_metrics,
        )
        self._serve(self.calls.wrap(self.iam.wrap(aws)), self.port, MotoRequestHandler)
        # moto's ASL interpreter calls Lambda and the SDK integrations on this port.
        os.environ["MOTO_PORT"] = str(self._servers[0][0].server_port)
        api = ApiGateway(self.runtime, TOOLING_ACCOUNT, self.region)
        self._serve(api, 0)
        self._serve(self.slack, 0)
        self._serve(self.oidc, 0)
        self.oidc.url = self.oidc_url
        self.runtime.base_env.update(self._function_env())
        if self.time is not None:
            self._set_clock(self.time)
        # moto's backends are per process: a new sandbox starts from nothing.
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")).close()  # noqa: S310
        self._install(api)
        return self

    @property
    def time_offset_seconds(self) -> float:
        assert self.runtime is not None
        return float(self.runtime.base_env.get(TIME_OFFSET, "0"))

    def now(self) -> datetime:
        """The time the functions see now (UTC)."""
        return datetime.now(UTC) + timedelta(seconds=self.time_offset_seconds)

    def travel(self, to: datetime) -> None:
        """Move the functions' clock forward to ``to`` (ticking on from there), warm workers' too.

        Only forward: records are ordered by the time the functions see, so a clock turned back
        would list later deployments behind earlier ones.
        """
        if to < self.now():
            raise ValueError(
                f"the sandbox's clock only moves forward: {to.isoformat()} is before its now, {self.now().isoformat()}"
            )
        self._set_clock(to)

    def travel_to_window(self, environment: str) -> datetime:
        """Move the functions' clock to the next opening of the environment's deployment window; return it."""
        window = load_spec_file(self.repo / "environments" / f"{environment}.yaml").policy.window
        opens = first_opening(window, self.now()) if window else None
        if opens is None:
            raise ValueError(f"environment {environment} has no deployment window that opens again")
        self.travel(opens)
        return opens

    def first_announceable(self, environment: str, spec: Path | None = None) -> datetime:
        """The earliest window the environment's policy lets be announced now: its notice away, a whole window.

        ``spec`` is the environment's spec file (default ``environments/<environment>.yaml``).
        """
        policy = load_spec_file(spec or self.repo / "environments" / f"{environment}.yaml").policy
        earliest = self.now() + timedelta(hours=policy.minimum_notice_hours, minutes=1)
        opens = first_opening(policy.window, earliest) if policy.window else earliest
        if opens is None:
            raise ValueError(f"environment {environment} has no deployment window that opens again")
        return opens

    def announce_ahead(
        self, environment: str, change_ticket: str, requested_by: str = "alice", spec_dir: Path | None = None
    ) -> datetime:
        """Announce the earliest window the notice allows (as `deployer announce` does), then travel to it.

        The spec is ``spec_dir/<environment>.yaml`` (default ``environments/``); returns the window's start.
        """
        from deployer_cli import client

        spec_dir = spec_dir or self.repo / "environments"
        at = self.first_announceable(environment, spec_dir / f"{environment}.yaml")
        stack = client.Stack.discover(self.session(), self.stack_name, self.region, self.endpoint)
        client.announce(stack, spec_dir, environment, change_ticket=change_ticket, at=at, requested_by=requested_by)
        self.travel(at)
        return at

    def _set_clock(self, to: datetime) -> None:
        """Every function sees ``to`` from now on: warm workers take it with their next invocation."""
        assert self.runtime is not None
        offset = (to - datetime.now(UTC)).total_seconds()
        self.runtime.base_env[TIME_OFFSET] = f"{offset:.3f}"

    def _serve(self, app: Any, port: int, handler: Any = None) -> None:
        server = make_server("127.0.0.1", port, app, threaded=True, request_handler=handler)
        thread = threading.Thread(target=server.serve_forever, name=f"sandbox-{port}", daemon=True)
        thread.start()
        self._servers.append((server, thread))

    def _function_env(self) -> dict[str, str]:
        """What Lambda's environment gives every function, pointed at the sandbox."""
        keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ}
        return {
            **keep,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            # No X-Ray daemon runs here.
            "POWERTOOLS_TRACE_DISABLED": "true",
        }

    def _credentials(self, function: FunctionConfig) -> dict[str, str]:
        """A new worker's credentials: its role's, assumed as the Lambda service does for a cold start."""
        if function.role_arn is None:
            return {}
        trust = self.iam.lookups.trust(function.role_arn)
        principal = iam_policy.Principal("Service", "lambda.amazonaws.com")
        request = iam_policy.Request("sts:AssumeRole", function.role_arn)
        if trust is None or not iam_policy.trust_allows(trust, principal, request).allowed:
            raise PermissionError(f"{function.role_arn} does not trust lambda.amazonaws.com: Lambda cannot assume it")
        credentials = self.client("sts").assume_role(RoleArn=function.role_arn, RoleSessionName=function.name)[
            "Credentials"
        ]
        return {
            "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"],
        }

    def _install(self, api: ApiGateway) -> None:
        assert self.runtime is not None
        session = self.session()
        self.deployment_roles = install_deployment_roles(
            session, self.endpoint, self.region, self.repo / "target-account" / "deployment-role.yaml", self.stack_name
        )
        installer = StackInstaller(
            repo=self.repo,
            session=session,
            endpoint=self.endpoint,
            region=self.region,
            account=TOOLING_ACCOUNT,
            stack_name=self.stack_name,
            runtime=self.runtime,
            api=api,
            output_overrides={"ApiUrl": self.api},
            parameters={
                **self.parameters,
                "SlackApiUrl": f"{self.slack_url}/api/",
                "SlackResponseUrlPrefix": f"{self.slack_url}/actions/",
                "GitHubRepository": self.oidc.repository,
                "GitHubOidcIssuer": self.oidc_url,
                "GitHubOidcAudience": self.oidc.audience,
            },
            secret_values={
                "SlackBotSecret": json.dumps({"botToken": self.slack.bot_token}),
                "SlackSigningSecret": json.dumps(
                    {"signingSecret": self.slack_signing_secret, "teamId": self.slack.team_id}
                ),
            },
        )
        self.outputs = installer.install()
        self.not_installed = installer.skipped
        specs = SpecStore(self.client("s3"), self.outputs["SpecsBucketName"])
        for path in sorted((self.repo / "environments").glob("*.yaml")):
            specs.put(path.stem, path.read_text())

    def describe(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "api": self.api,
            "slack": self.slack_url,
            "slackSigningSecret": self.slack_signing_secret,
            "slackTeamId": self.slack.team_id,
            "oidcIssuer": self.oidc_url,
            "timeOffsetSeconds": self.time_offset_seconds,
            "region": self.region,
            "stackName": self.stack_name,
            "toolingAccount": TOOLING_ACCOUNT,
            "targetAccounts": TARGET_ACCOUNTS,
            "deploymentRoles": self.deployment_roles,
            "outputs": self.outputs,
            "credentials": {"accessKeyId": TOOLING_ACCESS_KEY, "secretAccessKey": TOOLING_SECRET_KEY},
            "logs": str(self.log_dir),
        }

    def stop(self) -> None:
        if self.iam_usage_dir is not None:
            self.iam_usage_dir.mkdir(parents=True, exist_ok=True)
            report = {"repo": str(self.repo.resolve()), **self.iam.report()}
            (self.iam_usage_dir / f"{os.getpid()}-{secrets.token_hex(4)}.json").write_text(json.dumps(report))
        self.eventbridge.stop()  # first, so no invocation starts a worker the runtime has stopped
        if self.runtime:
            self.runtime.stop()
        self.s3_replication.stop()
        self.dynamodb_replicas.stop()
        sfn_roles.uninstall()
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join()
        self._servers.clear()
        if self._own_log_dir and self.log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
