"""A warm Lambda "container": one process that imports one function and runs its invocations.

Started by ``sandbox.lambda_runtime`` on the functions' runtime environment's interpreter,
with the function's environment variables as its own ``os.environ`` and ``sys.path`` =
the function's code + its layers before that environment, as Lambda lays out /var/task
and /opt/python before its runtime. Requests arrive as JSON lines on stdin; answers go to
the file descriptor named by ``SANDBOX_RESPONSE_FD``. The handler's own stdout and
stderr (prints, Powertools logs and EMF metrics) go to the function's log file, as
they would go to CloudWatch Logs.

This file is run as a script, not imported: it must not import anything of the
sandbox, so the function sees only what Lambda would give it.
"""

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from typing import Any


class Context:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    def __init__(self, request_id: str, deadline: float, function_arn: str) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = "$LATEST"
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"sandbox/{os.getpid()}"
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def import_error(exc: Exception, module_name: str) -> dict[str, str]:
    """What Lambda's Python runtime (awslambdaric's bootstrap) answers when the handler's module fails to import."""
    if isinstance(exc, ImportError):
        return {
            "errorType": "Runtime.ImportModuleError",
            "errorMessage": f"Unable to import module '{module_name}': {exc}",
        }
    if isinstance(exc, SyntaxError):
        return {
            "errorType": "Runtime.UserCodeSyntaxError",
            "errorMessage": f"Syntax error in module '{module_name}': {exc}",
        }
    return {"errorType": type(exc).__name__, "errorMessage": str(exc)}  # an exception the module raised as it ran


class SimulatedClock:
    """Simulated wall-clock time (`deployer sandbox --time`, `Sandbox.travel`): now plus an offset, ticking on.

    Set before each invocation, so a warm worker follows the sandbox's clock as a new one would.
    time-machine is the sandbox's, not the layer's: last on the path, so nothing deployed finds it
    first, and only imported once the clock is simulated at all.
    """

    def __init__(self, sandbox_only: str) -> None:
        self.sandbox_only, self.offset = sandbox_only, 0.0
        self.traveller: Any = None

    def set(self, offset: float) -> None:
        if offset == self.offset:
            return
        if self.traveller is not None:
            self.traveller.stop()  # back on the real clock
            self.traveller = None
        if offset:
            if self.sandbox_only not in sys.path:
                sys.path.append(self.sandbox_only)
            import time_machine

            self.traveller = time_machine.travel(time.time() + offset, tick=True)
            self.traveller.start()
        self.offset = offset


def main() -> None:
    # The sandbox's own settings are taken out of the environment the function sees.
    responses = os.fdopen(int(os.environ.pop("SANDBOX_RESPONSE_FD")), "w", buffering=1)
    function_arn = os.environ.pop("SANDBOX_FUNCTION_ARN")
    sys.path[:0] = os.environ.pop("SANDBOX_PYTHONPATH").split(os.pathsep)
    sandbox_only = os.environ.pop("SANDBOX_ONLY_PATH", "")
    clock = SimulatedClock(sandbox_only)
    clock.set(float(os.environ.pop("SANDBOX_TIME_OFFSET_SECONDS", "0")))
    os.dup2(2, 1)  # the handler's stdout goes where its logs go
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), function_name, None)
        error = None
        if handler is None:
            message = f"Handler '{function_name}' missing on module '{module_name}'"
            error = {"errorType": "Runtime.HandlerNotFound", "errorMessage": message}
    except Exception as exc:
        traceback.print_exc()
        error = import_error(exc, module_name)
    if error is not None:
        responses.write(json.dumps({"ready": False, "error": error}) + "\n")
        return
    responses.write(json.dumps({"ready": True, "initSeconds": time.perf_counter() - started}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        clock.set(float(request.get("timeOffsetSeconds", 0)))
        deadline = time.time() + request["timeoutSeconds"]  # on the worker's (possibly simulated) clock
        context = Context(request.get("requestId") or str(uuid.uuid4()), deadline, function_arn)
        answer: dict[str, Any]
        try:
            result = handler(request["payload"], context)
        except Exception as exc:  # reported to the caller exactly as Lambda does
            answer = {
                "error": {
                    "errorType": type(exc).__name__,
                    "errorMessage": str(exc),
                    "stackTrace": traceback.format_tb(exc.__traceback__),
                }
            }
            traceback.print_exc()
        else:
            try:
                answer = {"result": json.dumps(result)}
            except (TypeError, ValueError) as exc:
                error = {"errorType": "Runtime.MarshalError", "errorMessage": f"Unable to marshal response: {exc}"}
                answer = {"error": error}
        sys.stdout.flush()
        responses.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
