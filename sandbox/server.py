"""The embedded sandbox: moto's server on loopback with our stack installed in it.

One HTTP endpoint answers every AWS API. In front of moto sit the sandbox's
extensions, each in its own module: Lambda invocations of our functions
(``lambda_runtime``), S3 bucket ownership across accounts (``s3_ownership``) and
names for unnamed executions (``sfn_names``).
The state machine runs in moto's ASL interpreter (``execute_state_machine``), which
invokes Lambda through the same endpoint, so the functions run for real.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from werkzeug.wrappers import Request

from deployer.specstore import SpecStore
from sandbox import s3_ownership, sfn_names
from sandbox.accounts import (
    TARGET_ACCOUNTS,
    TOOLING_ACCESS_KEY,
    TOOLING_ACCOUNT,
    TOOLING_SECRET_KEY,
    install_deployment_roles,
)
from sandbox.lambda_runtime import LambdaRuntime
from sandbox.stack import StackInstaller

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STACK = "bbws-deployer"
DEFAULT_REGION = "af-south-1"
# Test-speed settings for the template's parameters; real AWS keeps the defaults.
SANDBOX_PARAMETERS = {"WaitDelaySeconds": "0.2", "WaitMaxAttempts": "50"}


class SandboxApp:
    """WSGI: the sandbox's extensions first, then moto."""

    def __init__(self, moto_app: Any, runtime: LambdaRuntime) -> None:
        self.moto_app = moto_app
        self.runtime = runtime

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        sfn_names.name_unnamed_execution(environ)
        request = Request(environ, shallow=False)
        response = self.runtime.wsgi(request) or s3_ownership.check(request)
        if response is None:
            return self.moto_app(environ, start_response)  # type: ignore[no-any-return]
        return response(environ, start_response)


@dataclass
class Sandbox:
    repo: Path = REPO
    port: int = 0
    stack_name: str = DEFAULT_STACK
    region: str = DEFAULT_REGION
    parameters: dict[str, str] = field(default_factory=lambda: dict(SANDBOX_PARAMETERS))
    # Each function's stdout/stderr, as CloudWatch Logs would hold them. A directory the
    # sandbox made itself is removed on stop; one passed in is kept.
    log_dir: Path | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    deployment_roles: dict[str, str] = field(default_factory=dict)
    _server: Any = None
    _thread: threading.Thread | None = None
    _own_log_dir: bool = False
    runtime: LambdaRuntime | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

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
        from werkzeug.serving import make_server

        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # moto logs every failed state with its whole parse tree; the execution history says it better.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        if self.log_dir is None:
            self.log_dir, self._own_log_dir = Path(tempfile.mkdtemp(prefix="bbws-sandbox-")), True
        self.runtime = LambdaRuntime(base_env={}, log_dir=self.log_dir / "lambda")
        app = SandboxApp(DomainDispatcherApplication(create_backend_app), self.runtime)
        self._server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=MotoRequestHandler)
        # moto's ASL interpreter calls Lambda and the SDK integrations on this port.
        os.environ["MOTO_PORT"] = str(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox", daemon=True)
        self._thread.start()
        self.runtime.base_env.update(self._function_env())
        # moto's backends are per process: a new sandbox starts from nothing.
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")).close()  # noqa: S310
        self._install()
        return self

    def _function_env(self) -> dict[str, str]:
        """What Lambda's environment gives every function, pointed at the sandbox."""
        keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ}
        return {
            **keep,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": TOOLING_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": TOOLING_SECRET_KEY,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            # No X-Ray daemon runs here.
            "POWERTOOLS_TRACE_DISABLED": "true",
        }

    def _install(self) -> None:
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
            parameters=dict(self.parameters),
        )
        self.outputs = installer.install()
        specs = SpecStore(self.client("s3"), self.outputs["SpecsBucketName"])
        for path in sorted((self.repo / "environments").glob("*.yaml")):
            specs.put(path.stem, path.read_text())

    def describe(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
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
        if self.runtime:
            self.runtime.stop()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join()
        if self._own_log_dir and self.log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
