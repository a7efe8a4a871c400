"""Lambda invocations for the sandbox: warm worker processes, Lambda's wire format.

Isolation choice: a warm worker process per function (more when invocations overlap),
not a lock around an ``os.environ`` swap. Lambda gives each function its own container
with its own environment variables and module state; a process gives the same, lets
invocations of different functions run at once (the state machine's Map states and
two concurrent deployments do), and a handler can never see the sandbox's moto
objects or another function's variables.

Runtime environment: a worker runs on the interpreter of ``.venv-lambda`` (``make install``
builds it from requirements-lambda.lock, the layer's requirements and nothing else), not
the sandbox's own, started with ``-I`` (no PYTHON* variables, user site or script
directory). Its ``sys.path`` is the function's code, the layer's package (as Lambda's
/var/task and /opt/python), the standard library and that environment's site-packages:
a module that the layer does not ship fails to import here as it would on AWS, with
``Runtime.ImportModuleError``, however much the development tools installed.

What only the sandbox's worker needs, time-machine for a simulated clock, is installed
into ``.venv-lambda/sandbox-only``, outside site-packages. The worker appends that
directory to ``sys.path`` last, after the layer's and the environment's, and only when
the clock is simulated: deployed code finds nothing of it first, and nothing at all on
the real clock. A separate directory rather than a second site-packages keeps it off
the path Python builds by itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

WORKER = Path(__file__).with_name("lambda_worker.py")
# The functions' runtime environment (see above), built by `make install`.
LAMBDA_VENV = Path(__file__).resolve().parent.parent / ".venv-lambda"
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
MAX_WORKERS_PER_FUNCTION = 4


@dataclass(frozen=True)
class FunctionConfig:
    name: str
    arn: str
    handler: str
    code_dir: Path
    layer_dirs: tuple[Path, ...]
    environment: dict[str, str]
    timeout_seconds: int
    memory_mb: int
    # The function's execution role; a function without one gets no AWS credentials.
    role_arn: str | None = None


class InvocationTimeout(Exception):
    pass


class WorkerExited(Exception):
    pass


class InitError(Exception):
    def __init__(self, error: dict[str, str]) -> None:
        super().__init__(error["errorMessage"])
        self.error = error


@dataclass
class Worker:
    config: FunctionConfig
    process: subprocess.Popen[str]
    responses: IO[str]
    init_seconds: float

    @classmethod
    def start(
        cls,
        config: FunctionConfig,
        base_env: dict[str, str],
        log: IO[str],
        credentials: dict[str, str],
        *,
        python: Path,
        sandbox_only: Path,
    ) -> Worker:
        if not config.code_dir.is_dir():
            # Lambda's answer for a package without the handler's module: a function whose code is not
            # written yet still installs, and fails only when it runs.
            module = config.handler.rpartition(".")[0]
            message = f"Unable to import module '{module}': No module named '{module}'"
            raise InitError({"errorType": "Runtime.ImportModuleError", "errorMessage": message})
        read_fd, write_fd = os.pipe()
        env = {
            **base_env,
            **credentials,
            **config.environment,
            "AWS_LAMBDA_FUNCTION_NAME": config.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            # Lambda sets it; libraries use it to tell they run on Lambda (the X-Ray SDK builds no
            # botocore clients of its own at import when it is set, as on AWS).
            "LAMBDA_TASK_ROOT": str(config.code_dir),
            "SANDBOX_FUNCTION_ARN": config.arn,
            "SANDBOX_RESPONSE_FD": str(write_fd),
            "SANDBOX_PYTHONPATH": os.pathsep.join(str(p) for p in (config.code_dir, *config.layer_dirs)),
            "SANDBOX_ONLY_PATH": str(sandbox_only),
            "_HANDLER": config.handler,
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(  # noqa: S603 - the runtime environment's interpreter and our worker script
            [str(python), "-I", str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=env,
            cwd=config.code_dir,
            text=True,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        responses = os.fdopen(read_fd, "r")
        line = responses.readline()
        ready = json.loads(line) if line else {"ready": False}
        if not ready["ready"]:
            process.wait()
            responses.close()
            raise InitError(ready.get("error") or {"errorType": "Runtime.ExitError", "errorMessage": "worker exited"})
        return cls(config, process, responses, float(ready["initSeconds"]))

    def invoke(self, payload: Any, request_id: str, time_offset_seconds: float = 0.0) -> dict[str, Any]:
        assert self.process.stdin is not None
        request = {
            "payload": payload,
            "requestId": request_id,
            "timeoutSeconds": self.config.timeout_seconds,
            # The functions' clock as it is now (Sandbox.travel moves it while workers stay warm).
            "timeOffsetSeconds": time_offset_seconds,
        }
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self.stop()
            raise WorkerExited("Runtime exited before the invocation") from None
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            self.process.kill()

        timer = threading.Timer(self.config.timeout_seconds, kill)
        timer.start()
        try:
            line = self.responses.readline()
        finally:
            timer.cancel()
        # The timer may fire just after an answer: the worker is dead either way, so the call timed out.
        if timed_out.is_set():
            self.stop()
            raise InvocationTimeout(f"Task timed out after {self.config.timeout_seconds:.2f} seconds")
        if not line:
            self.stop()
            raise WorkerExited(f"Runtime exited with status {self.process.returncode}")
        return dict(json.loads(line))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.responses.close()
        if self.process.stdin:
            self.process.stdin.close()


# The functions' simulated clock: seconds from the real time (Sandbox.travel sets it in base_env).
TIME_OFFSET = "SANDBOX_TIME_OFFSET_SECONDS"


@dataclass
class LambdaRuntime:
    """Runs registered functions; answers Lambda's Invoke API for them."""

    base_env: dict[str, str]
    log_dir: Path
    functions: dict[str, FunctionConfig] = field(default_factory=dict)
    _idle: dict[str, list[Worker]] = field(default_factory=dict)
    _busy: dict[str, int] = field(default_factory=dict)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    invocations: list[dict[str, Any]] = field(default_factory=list)
    init_seconds: dict[str, list[float]] = field(default_factory=dict)
    _paused: set[str] = field(default_factory=set)
    # Runs InvocationType=Event invocations with Lambda's asynchronous semantics (retries, on-failure
    # destinations); sandbox.eventbridge_delivery's when the sandbox runs, else a plain thread.
    async_invoke: Callable[[FunctionConfig, Any], object] | None = None
    # A worker's AWS credentials (environment variables), as Lambda gives a new container its role's.
    credentials: Callable[[FunctionConfig], dict[str, str]] = lambda _: {}
    # The functions' runtime environment: the workers' interpreter, and what only the worker needs.
    python: Path = LAMBDA_VENV / "bin" / "python"
    sandbox_only: Path = LAMBDA_VENV / "sandbox-only"

    def __post_init__(self) -> None:
        if not self.python.is_file():
            raise FileNotFoundError(
                f"the functions' runtime environment is missing ({self.python}): run `make install`"
            )

    @contextmanager
    def paused(self, function_name: str) -> Iterator[None]:
        """Hold every invocation of one function until the block ends (a slow AWS, for tests)."""
        with self._lock:
            self._paused.add(function_name)
        try:
            yield
        finally:
            with self._lock:
                self._paused.discard(function_name)
                self._lock.notify_all()

    def register(self, config: FunctionConfig) -> None:
        self.functions[config.name] = config

    def resolve(self, identifier: str) -> FunctionConfig | None:
        """A function by name, ARN or partial ARN, qualifier ignored."""
        name = unquote(identifier)
        if name.startswith("arn:"):
            name = name.split(":")[6]
        elif ":function:" in name:
            name = name.split(":function:")[1]
        return self.functions.get(name.split(":")[0])

    def _checkout(self, config: FunctionConfig) -> Worker:
        stale: list[Worker] = []
        with self._lock:
            while config.name in self._paused:
                self._lock.wait()
            while True:
                idle = self._idle.setdefault(config.name, [])
                if idle:
                    worker = idle.pop()
                    if worker.config != config:  # configured since it started: Lambda starts a new environment
                        stale.append(worker)
                        continue
                    break
                if self._busy.get(config.name, 0) < MAX_WORKERS_PER_FUNCTION:
                    worker = None
                    break
                self._lock.wait()
            self._busy[config.name] = self._busy.get(config.name, 0) + 1
        for old in stale:
            old.stop()
        if worker is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.log_dir / f"{config.name}.log").open("a")
            try:
                worker = Worker.start(
                    config,
                    self.base_env,
                    log,
                    self.credentials(config),
                    python=self.python,
                    sandbox_only=self.sandbox_only,
                )
            except BaseException:
                self._checkin(config, None)
                raise
            finally:
                log.close()
            with self._lock:
                self.init_seconds.setdefault(config.name, []).append(worker.init_seconds)
        return worker

    def _checkin(self, config: FunctionConfig, worker: Worker | None) -> None:
        with self._lock:
            self._busy[config.name] -= 1
            if worker is not None and worker.process.poll() is None:
                self._idle.setdefault(config.name, []).append(worker)
            self._lock.notify_all()

    def invoke(
        self, config: FunctionConfig, payload: Any, request_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Run one invocation; returns (payload, errored) as Lambda would answer it.

        ``request_id`` is the context's ``aws_request_id``: new unless given, as the retries of an
        asynchronous invocation keep theirs."""
        request_id = request_id or str(uuid.uuid4())
        try:
            worker = self._checkout(config)
        except InitError as exc:
            return exc.error, True
        started = time.perf_counter()
        try:
            answer = worker.invoke(payload, request_id, float(self.base_env.get(TIME_OFFSET, "0")))
        except InvocationTimeout as exc:
            answer = {"error": {"errorType": "Sandbox.Timedout", "errorMessage": str(exc)}}
            worker = None  # type: ignore[assignment]
        except WorkerExited as exc:
            answer = {"error": {"errorType": "Runtime.ExitError", "errorMessage": str(exc)}}
            worker = None  # type: ignore[assignment]
        finally:
            self._checkin(config, worker)
        self.invocations.append(
            {"function": config.name, "seconds": time.perf_counter() - started, "error": "error" in answer}
        )
        if "error" in answer:
            return answer["error"], True
        return json.loads(answer["result"]), False

    def wsgi(self, request: Request) -> Response | None:
        """Lambda's Invoke API for a registered function; None lets moto answer."""
        match = INVOKE_PATH.match(request.path)
        if request.method != "POST" or not match:
            return None
        config = self.resolve(match.group("function"))
        if config is None:
            return None
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        body = request.get_data()
        payload = json.loads(body) if body else {}
        if invocation_type == "DryRun":
            return Response(status=204)
        if invocation_type == "Event":
            if self.async_invoke is not None:
                self.async_invoke(config, payload)
            else:
                threading.Thread(target=self.invoke, args=(config, payload), daemon=True).start()
            return Response(status=202)
        result, errored = self.invoke(config, payload)
        headers = {"X-Amz-Executed-Version": "$LATEST", "Content-Type": "application/json"}
        if errored:
            headers["X-Amz-Function-Error"] = "Unhandled"
        return Response(json.dumps(result), status=200, headers=headers)

    def stop(self) -> None:
        """Stop the idle workers; the next invocation of each function starts a fresh one (a cold start)."""
        with self._lock:
            workers = [w for ws in self._idle.values() for w in ws]
            self._idle.clear()
        for worker in workers:
            worker.stop()
