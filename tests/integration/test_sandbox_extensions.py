"""Each of the sandbox's extensions on its own, over HTTP with boto3 as any client would.

The extensions emulate what moto 5.2.5 lacks (sandbox/s3_ownership.py, sfn_names.py,
lambda_runtime.py) or install what the pipeline runs on (stack.py, accounts.py). If a
moto upgrade changes what they build on, these tests say which one broke.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from deployer.guardrails import packaged
from deployer.spec import load_spec_file
from deployer.windows import window_status
from sandbox.accounts import TARGET_ACCOUNTS, TOOLING_ACCOUNT, account_session
from sandbox.lambda_runtime import LAMBDA_VENV, FunctionConfig, LambdaRuntime
from sandbox.server import Sandbox
from sandbox.template import Resolver, load_template
from tests.sandbox_fixtures import load_event, wait_for

REPO = Path(__file__).resolve().parents[2]
DEV = TARGET_ACCOUNTS["dev"]
SIT = TARGET_ACCOUNTS["sit"]
SETTLE_SECONDS = 60  # an upper bound for polling, never asserted on


def _wait_for(condition: Callable[[], Any], what: str) -> Any:
    return wait_for(condition, what, SETTLE_SECONDS)


def _error(call: Callable[[], Any]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def _status(error: ClientError) -> int:
    return int(error.response["ResponseMetadata"]["HTTPStatusCode"])


# --- s3_ownership ---------------------------------------------------------------------------------

OWNED_BUCKET = "bbws-sandbox-ownership-probe"


@pytest.fixture(scope="module")
def account_s3(sandbox: Sandbox) -> Callable[[str], Any]:
    sts = sandbox.client("sts")
    sessions: dict[str, boto3.Session] = {}

    def s3(account: str) -> Any:
        if account not in sessions:
            sessions[account] = account_session(sts, account)
        return sessions[account].client("s3", endpoint_url=sandbox.endpoint, region_name=sandbox.region)

    return s3


@pytest.fixture(scope="module")
def dev_bucket(sandbox: Sandbox, account_s3: Callable[[str], Any]) -> str:
    """A bucket that the DEV account created, so DEV owns it."""
    account_s3(DEV).create_bucket(Bucket=OWNED_BUCKET, CreateBucketConfiguration={"LocationConstraint": sandbox.region})
    return OWNED_BUCKET


def test_s3_owner_account_is_answered(account_s3: Callable[[str], Any], dev_bucket: str) -> None:
    # GIVEN a bucket DEV owns
    dev = account_s3(DEV)

    # WHEN DEV uses it THEN S3 answers as usual
    assert dev.head_bucket(Bucket=dev_bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert dev.get_bucket_versioning(Bucket=dev_bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    dev.put_object(Bucket=dev_bucket, Key="from-dev.txt", Body=b"dev")
    assert dev.get_object(Bucket=dev_bucket, Key="from-dev.txt")["Body"].read() == b"dev"


@pytest.mark.parametrize(
    ("operation", "kwargs", "code"),
    [
        ("head_bucket", {}, "403"),  # HEAD has no body, so botocore names the status
        ("get_bucket_versioning", {}, "AccessDenied"),
        ("put_object", {"Key": "from-sit.txt", "Body": b"sit"}, "AccessDenied"),
    ],
)
def test_s3_another_account_is_denied(
    account_s3: Callable[[str], Any], dev_bucket: str, operation: str, kwargs: dict[str, Any], code: str
) -> None:
    # GIVEN a bucket DEV owns
    # WHEN SIT, which has no grant on it, uses it
    error = _error(lambda: getattr(account_s3(SIT), operation)(Bucket=dev_bucket, **kwargs))

    # THEN S3 says 403, as AWS does (moto alone answers 200)
    assert _status(error) == 403
    assert error.response["Error"]["Code"] == code
    # ... and nothing SIT sent reached the bucket
    keys = [o["Key"] for o in account_s3(DEV).list_objects_v2(Bucket=dev_bucket).get("Contents", [])]
    assert "from-sit.txt" not in keys


def test_s3_expected_bucket_owner_of_another_account_is_denied_even_to_the_owner(
    account_s3: Callable[[str], Any], dev_bucket: str
) -> None:
    dev = account_s3(DEV)

    # WHEN the owner says it expects the bucket to belong to SIT THEN S3 refuses
    error = _error(lambda: dev.head_bucket(Bucket=dev_bucket, ExpectedBucketOwner=SIT))
    assert _status(error) == 403

    # ... and naming the true owner is answered
    answered = dev.head_bucket(Bucket=dev_bucket, ExpectedBucketOwner=DEV)
    assert answered["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_s3_create_of_a_taken_name_is_bucket_already_exists_and_ownership_stays(
    sandbox: Sandbox, account_s3: Callable[[str], Any], dev_bucket: str
) -> None:
    # GIVEN a bucket DEV owns
    # WHEN SIT tries to create a bucket of the same name
    error = _error(
        lambda: account_s3(SIT).create_bucket(
            Bucket=dev_bucket, CreateBucketConfiguration={"LocationConstraint": sandbox.region}
        )
    )

    # THEN moto's own answer comes through (s3_ownership leaves CreateBucket alone)
    assert error.response["Error"]["Code"] == "BucketAlreadyExists"
    # ... and the bucket is still DEV's
    assert account_s3(DEV).head_bucket(Bucket=dev_bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert _status(_error(lambda: account_s3(SIT).head_bucket(Bucket=dev_bucket))) == 403


def test_s3_a_bucket_nobody_owns_is_not_found(account_s3: Callable[[str], Any]) -> None:
    sit = account_s3(SIT)

    head = _error(lambda: sit.head_bucket(Bucket="bbws-sandbox-nobody-owns-this"))
    assert _status(head) == 404
    assert head.response["Error"]["Code"] == "404"

    versioning = _error(lambda: sit.get_bucket_versioning(Bucket="bbws-sandbox-nobody-owns-this"))
    assert _status(versioning) == 404
    assert versioning.response["Error"]["Code"] == "NoSuchBucket"


def test_s3_a_presigned_url_of_another_account_is_denied(account_s3: Callable[[str], Any], dev_bucket: str) -> None:
    # GIVEN an object in DEV's bucket
    account_s3(DEV).put_object(Bucket=dev_bucket, Key="presigned.txt", Body=b"dev only")

    # WHEN SIT presigns a GET of it and the URL is fetched
    url = account_s3(SIT).generate_presigned_url("get_object", Params={"Bucket": dev_bucket, "Key": "presigned.txt"})
    response = requests.get(url, timeout=30)

    # THEN it is refused, as any other request from SIT is
    assert response.status_code == 403


# --- sfn_names ------------------------------------------------------------------------------------

INVALID_INPUT = json.dumps({"environment": "qa", "requestedBy": "t"})  # no qa spec: fails at StartDeployment


def _finished(sfn: Any, execution_arn: str) -> dict[str, Any]:
    """Wait for an execution to stop, so no interpreter thread outlives the test."""
    return dict(
        _wait_for(
            lambda: (d := sfn.describe_execution(executionArn=execution_arn))["status"] != "RUNNING" and d,
            f"{execution_arn} to stop",
        )
    )


def _lambda_inputs(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events = sfn.get_execution_history(executionArn=execution_arn)["events"]
    return [
        json.loads(e["lambdaFunctionScheduledEventDetails"]["input"])
        for e in events
        if e["type"] == "LambdaFunctionScheduled"
    ]


def test_sfn_unnamed_execution_gets_a_uuid_name_the_state_machine_sees(sandbox: Sandbox) -> None:
    sfn = sandbox.client("stepfunctions")

    # WHEN an execution is started without a name, as the console does
    execution_arn = sfn.start_execution(stateMachineArn=sandbox.outputs["StateMachineArn"], input=INVALID_INPUT)[
        "executionArn"
    ]
    described = _finished(sfn, execution_arn)

    # THEN it runs under a generated UUID, the last part of its ARN, as on AWS
    name = execution_arn.rsplit(":", 1)[1]
    assert name != "None"
    assert str(uuid.UUID(name)) == name
    assert described["name"] == name
    # ... and $$.Execution.Name is that name, not null (StartDeployment's deploymentId)
    first = _lambda_inputs(sfn, execution_arn)[0]
    assert first["deploymentId"] == name


def test_sfn_named_execution_keeps_its_name(sandbox: Sandbox) -> None:
    sfn = sandbox.client("stepfunctions")
    name = f"named-{uuid.uuid4().hex[:8]}"

    execution_arn = sfn.start_execution(
        stateMachineArn=sandbox.outputs["StateMachineArn"], name=name, input=INVALID_INPUT
    )["executionArn"]
    described = _finished(sfn, execution_arn)

    assert execution_arn.endswith(f":{name}")
    assert described["name"] == name
    assert _lambda_inputs(sfn, execution_arn)[0]["deploymentId"] == name


# --- lambda_runtime -------------------------------------------------------------------------------

PROBE_HANDLER = textwrap.dedent(
    '''
    """A function for the runtime's tests: does what its event asks."""
    import importlib.util
    import os
    import pathlib
    import sys
    import time


    class Kaboom(Exception):
        pass


    def handler(event, context):
        action = event.get("action")
        if action == "env":
            return {key: os.environ.get(key) for key in event["keys"]}
        if action == "sleep":
            time.sleep(event["seconds"])
            return "woke"
        if action == "touch":
            # Written beside, then renamed: the file appears with its text, never empty.
            partial = pathlib.Path(event["path"] + ".partial")
            partial.write_text(context.function_name)
            partial.replace(event["path"])
            return "touched"
        if action == "raise":
            raise Kaboom(event["message"])
        if action == "unserialisable":
            return {"a set": {1, 2}}
        if action == "exit":
            sys.exit(3)
        if action == "now":
            return time.time()
        if action == "imports":
            found = {name: importlib.util.find_spec(name) for name in event["modules"]}
            origins = {name: spec and spec.origin for name, spec in found.items()}
            return {"path": sys.path, "prefix": sys.prefix, "base": sys.base_prefix, "found": origins}
        return {"function": context.function_name}
    '''
)
BROKEN_HANDLER = 'raise ValueError("broken at import")\n\n\ndef handler(event, context):\n    return None\n'


class Invoked:
    """A Lambda Invoke answer: status, X-Amz-Function-Error and the decoded payload."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.status = response["StatusCode"]
        self.error = response.get("FunctionError")
        raw = response["Payload"].read()
        self.payload: Any = json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    code = tmp_path_factory.mktemp("probe-function")
    (code / "probe.py").write_text(PROBE_HANDLER)
    (code / "broken.py").write_text(BROKEN_HANDLER)
    return code


@pytest.fixture(scope="module")
def register(sandbox: Sandbox, probe_dir: Path) -> Callable[..., str]:
    """Registers a probe function with the sandbox's runtime (not with moto); returns its name."""
    assert sandbox.runtime is not None
    runtime = sandbox.runtime

    def register(
        name: str, environment: dict[str, str] | None = None, timeout: int = 10, handler: str = "probe.handler"
    ) -> str:
        runtime.register(
            FunctionConfig(
                name=name,
                arn=f"arn:aws:lambda:{sandbox.region}:{TOOLING_ACCOUNT}:function:{name}",
                handler=handler,
                code_dir=probe_dir,
                layer_dirs=(),
                environment=environment or {},
                timeout_seconds=timeout,
                memory_mb=128,
            )
        )
        return name

    return register


@pytest.fixture(scope="module")
def invoke(sandbox: Sandbox) -> Callable[..., Invoked]:
    lambda_ = sandbox.client("lambda")

    def invoke(function: str, event: dict[str, Any], invocation_type: str = "RequestResponse") -> Invoked:
        return Invoked(lambda_.invoke(FunctionName=function, Payload=json.dumps(event), InvocationType=invocation_type))

    return invoke


def test_lambda_raised_exception_is_an_unhandled_error_named_after_its_class(
    sandbox: Sandbox, register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    # WHEN a deployed function rejects its event
    rejected = invoke(f"{sandbox.stack_name}-start-deployment", {})

    # THEN Lambda's error shape comes back: 200, X-Amz-Function-Error, errorType = the exception's class
    assert rejected.status == 200
    assert rejected.error == "Unhandled"
    assert rejected.payload["errorType"] == "InputInvalid"

    # ... for any handler's exception, with its message
    raised = invoke(register("probe-raise"), {"action": "raise", "message": "out of cheese"})
    assert raised.error == "Unhandled"
    assert raised.payload["errorType"] == "Kaboom"
    assert raised.payload["errorMessage"] == "out of cheese"


def test_lambda_function_is_found_by_name_and_by_arn(
    sandbox: Sandbox, register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    name = register("probe-lookup")
    arn = f"arn:aws:lambda:{sandbox.region}:{TOOLING_ACCOUNT}:function:{name}"

    for identifier in (name, arn, f"{arn}:$LATEST"):
        answered = invoke(identifier, {})
        assert answered.error is None, identifier
        assert answered.payload == {"function": name}


def test_lambda_dry_run_answers_204_and_runs_nothing(
    sandbox: Sandbox, register: Callable[..., str], invoke: Callable[..., Invoked], tmp_path: Path
) -> None:
    assert sandbox.runtime is not None
    name = register("probe-dry-run")
    marker = tmp_path / "ran"
    before = len(sandbox.runtime.invocations)

    answered = invoke(name, {"action": "touch", "path": str(marker)}, "DryRun")

    assert answered.status == 204
    assert answered.error is None
    assert len(sandbox.runtime.invocations) == before
    assert not marker.exists()


def test_lambda_event_invocation_answers_202_and_runs_later(
    register: Callable[..., str], invoke: Callable[..., Invoked], tmp_path: Path
) -> None:
    name = register("probe-event")
    marker = tmp_path / "ran"

    answered = invoke(name, {"action": "touch", "path": str(marker)}, "Event")

    assert answered.status == 202
    assert answered.error is None
    _wait_for(marker.exists, "the Event invocation to run")
    assert marker.read_text() == name


def test_lambda_each_function_sees_its_own_environment(
    sandbox: Sandbox, register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    # GIVEN two functions, only one of which has ONLY_MINE in its configuration
    mine = register("probe-env-mine", environment={"ONLY_MINE": "1"})
    other = register("probe-env-other")
    keys = ["ONLY_MINE", "AWS_ENDPOINT_URL", "AWS_LAMBDA_FUNCTION_NAME"]

    # WHEN each reports its environment (the other one last, after mine has run)
    seen_by_mine = invoke(mine, {"action": "env", "keys": keys}).payload
    seen_by_other = invoke(other, {"action": "env", "keys": keys}).payload

    # THEN only the configured function has the variable, and neither leaks into the sandbox's own
    assert seen_by_mine["ONLY_MINE"] == "1"
    assert seen_by_other["ONLY_MINE"] is None
    assert "ONLY_MINE" not in os.environ
    # ... each knows its own name, and both talk to the sandbox, not AWS
    assert seen_by_mine["AWS_LAMBDA_FUNCTION_NAME"] == mine
    assert seen_by_other["AWS_LAMBDA_FUNCTION_NAME"] == other
    assert seen_by_mine["AWS_ENDPOINT_URL"] == seen_by_other["AWS_ENDPOINT_URL"] == sandbox.endpoint


def test_lambda_function_configured_again_runs_in_a_fresh_worker(
    register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    # GIVEN a function with a warm worker
    name = register("probe-reconfigured", environment={"SETTING": "before"})
    assert invoke(name, {"action": "env", "keys": ["SETTING"]}).payload == {"SETTING": "before"}
    # WHEN it is configured again (as UpdateFunctionConfiguration would) and invoked
    register("probe-reconfigured", environment={"SETTING": "after"})
    # THEN the invocation runs with the new configuration, not in the old worker
    assert invoke(name, {"action": "env", "keys": ["SETTING"]}).payload == {"SETTING": "after"}


def test_lambda_handler_past_its_timeout_is_a_timeout_error_and_the_function_recovers(
    register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    # GIVEN a function with a 1-second timeout
    name = register("probe-timeout", timeout=1)

    # WHEN an invocation sleeps past it
    late = invoke(name, {"action": "sleep", "seconds": 30})

    # THEN it is an error saying so, as Lambda's
    assert late.error == "Unhandled"
    assert "Task timed out" in late.payload["errorMessage"]
    # ... and the next invocation runs in a fresh worker
    again = invoke(name, {"action": "sleep", "seconds": 0})
    assert again.error is None
    assert again.payload == "woke"


def test_lambda_result_that_is_not_json_is_an_error(
    register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    answered = invoke(register("probe-unserialisable"), {"action": "unserialisable"})

    assert answered.status == 200
    assert answered.error == "Unhandled"
    assert "not JSON serializable" in answered.payload["errorMessage"]


def test_lambda_result_that_is_not_json_is_a_marshal_error_as_on_lambda(
    register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    answered = invoke(register("probe-marshal"), {"action": "unserialisable"})

    assert answered.payload["errorType"] == "Runtime.MarshalError"


def test_lambda_handler_that_exits_is_not_reported_as_a_timeout(
    register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    answered = invoke(register("probe-exit", timeout=30), {"action": "exit"})

    assert answered.error == "Unhandled"
    assert answered.payload["errorType"] != "Sandbox.Timedout"
    assert "timed out" not in answered.payload["errorMessage"]


def test_lambda_import_failure_is_an_unhandled_error(
    register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    # GIVEN a function whose module raises on import
    name = register("probe-broken", handler="broken.handler")

    # WHEN it is invoked THEN the caller gets Lambda's error shape, not an HTTP 5xx
    answered = invoke(name, {})
    assert answered.status == 200
    assert answered.error == "Unhandled"
    # ... named after the exception, as Lambda's Python runtime names any exception a module raises on import
    assert answered.payload["errorType"] == "ValueError"
    assert "broken at import" in answered.payload["errorMessage"]


def test_lambda_handler_missing_from_its_module_is_lambdas_handler_not_found(
    register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    answered = invoke(register("probe-no-handler", handler="probe.nothing_here"), {})

    assert answered.error == "Unhandled"
    assert answered.payload == {
        "errorType": "Runtime.HandlerNotFound",
        "errorMessage": "Handler 'nothing_here' missing on module 'probe'",
    }


def _copy_of_deployed(sandbox: Sandbox, function: str, code_dir: Path, first_line: str = "") -> str:
    """Registers a copy of one of the stack's functions (its variables, layer and role) whose code is a copy
    of the repository's in ``code_dir``, with ``first_line`` put before its app.py; returns its name."""
    assert sandbox.runtime is not None
    deployed = sandbox.runtime.functions[f"{sandbox.stack_name}-{function.replace('_', '-')}"]
    shutil.copytree(REPO / "functions" / function, code_dir, ignore=shutil.ignore_patterns("__pycache__"))
    app = code_dir / "app.py"
    app.write_text(first_line + app.read_text())
    name = f"copy-of-{function.replace('_', '-')}-{code_dir.name}"
    arn = deployed.arn.removesuffix(deployed.name) + name
    sandbox.runtime.register(dataclasses.replace(deployed, name=name, arn=arn, code_dir=code_dir))
    return name


def test_lambda_function_importing_what_the_layer_does_not_ship_fails_as_on_lambda(
    sandbox: Sandbox, invoke: Callable[..., Invoked], tmp_path: Path
) -> None:
    # GIVEN a package that the sandbox's own environment has (the development tools) and the layer does not ship
    assert importlib.util.find_spec("moto") is not None
    # ... and two copies of a deployed function, one of which imports it
    intact = _copy_of_deployed(sandbox, "release_lock", tmp_path / "intact")
    importing = _copy_of_deployed(sandbox, "release_lock", tmp_path / "imports-moto", first_line="import moto\n")
    event = load_event("deployment.json")
    event["deployment"]["deploymentId"] = f"runtime-{uuid.uuid4().hex[:8]}"

    # WHEN each is invoked through Lambda's Invoke API
    answered_intact, answered_importing = invoke(intact, event), invoke(importing, event)

    # THEN the intact copy imports and answers (it held no lock)
    assert answered_intact.error is None, answered_intact.payload
    assert answered_intact.payload == {"released": False}
    # ... and the other cannot start, with the error Lambda's Python runtime gives
    assert answered_importing.status == 200
    assert answered_importing.error == "Unhandled"
    assert answered_importing.payload == {
        "errorType": "Runtime.ImportModuleError",
        "errorMessage": "Unable to import module 'app': No module named 'moto'",
    }


def test_lambda_worker_sees_the_runtime_environment_and_the_simulated_clock_comes_last(
    probe_dir: Path, tmp_path: Path
) -> None:
    # GIVEN a function with the deployer layer, run on the real clock and on a simulated one
    layer = REPO / "layers" / "deployer"
    config = FunctionConfig(
        name="probe-imports",
        arn=f"arn:aws:lambda:af-south-1:{TOOLING_ACCOUNT}:function:probe-imports",
        handler="probe.handler",
        code_dir=probe_dir,
        layer_dirs=(layer,),
        environment={},
        timeout_seconds=30,
        memory_mb=128,
    )
    modules = ["boto3", "deployer", "time_machine", "moto", "pytest", "requests", "sandbox"]
    seen: dict[str, Any] = {}
    for clock, base_env in (("real", {}), ("simulated", {"SANDBOX_TIME_OFFSET_SECONDS": "86400"})):
        runtime = LambdaRuntime(base_env=base_env, log_dir=tmp_path / clock)
        try:
            # WHEN the function reports its sys.path and where its imports would come from
            seen[clock], errored = runtime.invoke(config, {"action": "imports", "modules": modules})
        finally:
            runtime.stop()
        assert not errored, seen[clock]

    # THEN it runs in the runtime environment, and its path is the code, the layer, the standard library and
    # that environment's site-packages, nothing else
    assert seen["real"]["prefix"] == str(LAMBDA_VENV)
    path = seen["real"]["path"]
    site_packages = LAMBDA_VENV / "lib" / "python3.12" / "site-packages"
    assert path[:2] == [str(probe_dir), str(layer)]
    assert path[-1] == str(site_packages)
    assert all(entry.startswith(f"{seen['real']['base']}/") for entry in path[2:-1]), path
    # ... the layer's packages come from that environment, and nothing of the development tools is there
    found = seen["real"]["found"]
    assert found["boto3"].startswith(f"{site_packages}/")
    assert found["deployer"].startswith(f"{layer}/")
    absent = ("time_machine", "moto", "pytest", "requests", "sandbox")
    assert {name: found[name] for name in absent} == dict.fromkeys(absent)
    # AND with a simulated clock, time-machine's directory comes last, after the layer and the environment
    assert seen["simulated"]["path"] == [*path, str(LAMBDA_VENV / "sandbox-only")]
    found = seen["simulated"]["found"]
    assert found["time_machine"].startswith(f"{LAMBDA_VENV / 'sandbox-only'}/")
    assert found["moto"] is None
    assert found["pytest"] is None


def test_lambda_paused_holds_invocations_of_that_function_until_the_block_exits(
    sandbox: Sandbox, register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    assert sandbox.runtime is not None
    held, free = register("probe-held"), register("probe-free")
    assert invoke(held, {}).error is None  # warm, so only the pause can hold it
    answers: list[Invoked] = []
    done = threading.Event()

    def call() -> None:
        answers.append(invoke(held, {}))
        done.set()

    # GIVEN invocations of one function are paused
    with sandbox.runtime.paused(held):
        # WHEN it is invoked
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        time.sleep(0.5)  # time for the invocation to reach the pause; not asserted on

        # THEN it has not returned, while another function still answers
        assert not done.is_set()
        assert invoke(free, {}).payload == {"function": free}

    # ... and it returns once the block ends
    caller.join(SETTLE_SECONDS)
    assert done.is_set()
    assert answers[0].payload == {"function": held}


# --- stack installer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO / "template.yaml")


def test_stack_outputs_are_discoverable_as_a_cloudformation_stack(sandbox: Sandbox) -> None:
    stacks = sandbox.client("cloudformation").describe_stacks(StackName=sandbox.stack_name)["Stacks"]

    assert len(stacks) == 1
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0]["Outputs"]}
    assert outputs == sandbox.outputs
    declared = load_template(REPO / "template.yaml")["Outputs"]
    # The CI roles' outputs exist only with GitHubRepository set (Condition HasCiRole), as the sandbox sets it.
    assert set(outputs) == set(declared)
    assert {name for name, output in declared.items() if "Condition" in output} == {
        f"GitHubCi{e}RoleArn" for e in ("Dev", "Sit", "Prod")
    }
    # The deployed API's URL means nothing locally: the output points at the sandbox's own API.
    assert outputs["ApiUrl"] == sandbox.api


def test_stack_records_table_is_installed_with_its_template_properties(sandbox: Sandbox) -> None:
    ddb = sandbox.client("dynamodb")
    name = sandbox.outputs["RecordsTableName"]

    backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["DeletionProtectionEnabled"] is True
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["gsi1"]


def test_stack_specs_bucket_is_versioned_encrypted_and_not_public(sandbox: Sandbox) -> None:
    s3 = sandbox.client("s3")
    bucket = sandbox.outputs["SpecsBucketName"]

    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules] == ["AES256"]
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_stack_every_template_function_exists_with_its_timeout(sandbox: Sandbox, template: dict[str, Any]) -> None:
    # GIVEN the functions template.yaml declares, with the Globals' timeout unless their own
    resolver = Resolver(template, sandbox.stack_name, sandbox.region, TOOLING_ACCOUNT, dict(sandbox.parameters))
    default_timeout = template["Globals"]["Function"]["Timeout"]
    expected = {
        resolver.resolve(r["Properties"]["FunctionName"]): int(r["Properties"].get("Timeout", default_timeout))
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
    }

    # WHEN Lambda lists its functions
    pages = sandbox.client("lambda").get_paginator("list_functions").paginate()
    listed = {f["FunctionName"]: f["Timeout"] for page in pages for f in page["Functions"]}

    # THEN each is there with that timeout
    assert expected
    assert {name: listed.get(name) for name in expected} == expected
    assert expected[f"{sandbox.stack_name}-provision"] == 900  # the one that overrides Globals


def test_stack_functions_run_their_repo_code_with_the_template_environment(sandbox: Sandbox) -> None:
    # What a deployed function runs with: its runtime configuration, from Globals and the sandbox's parameters.
    assert sandbox.runtime is not None
    config = sandbox.runtime.functions[f"{sandbox.stack_name}-plan"]
    assert config.environment["RECORDS_TABLE"] == sandbox.outputs["RecordsTableName"]
    assert config.environment["SPECS_BUCKET"] == sandbox.outputs["SpecsBucketName"]
    assert config.environment["WAIT_DELAY_SECONDS"] == sandbox.parameters["WaitDelaySeconds"]
    assert (config.code_dir / "app.py").is_file()
    assert config.layer_dirs
    assert all((layer / "deployer").is_dir() for layer in config.layer_dirs)
    # What the Lambda API reports is what the function runs with.
    listed = sandbox.client("lambda").get_function_configuration(FunctionName=config.name)
    assert listed["Environment"]["Variables"] == config.environment
    assert listed["Timeout"] == config.timeout_seconds


def test_stack_state_machine_definition_is_fully_substituted(sandbox: Sandbox) -> None:
    sfn = sandbox.client("stepfunctions")
    definition = sfn.describe_state_machine(stateMachineArn=sandbox.outputs["StateMachineArn"])["definition"]

    assert "${" not in definition
    # Every Lambda it calls is an installed function.
    functions = {f["FunctionArn"] for f in sandbox.client("lambda").list_functions()["Functions"]}
    called = set(re.findall(r"arn:aws:lambda:[^\"]+:function:[^\"]+", definition))
    assert called
    assert called <= functions
    assert sandbox.outputs["EventBusName"] in definition


# --- accounts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", sorted(TARGET_ACCOUNTS))
def test_accounts_deployment_role_exists_in_each_target_account_trusting_the_tooling_account(
    sandbox: Sandbox, environment: str
) -> None:
    # GIVEN a target account's session
    account = TARGET_ACCOUNTS[environment]
    iam = account_session(sandbox.client("sts"), account).client(
        "iam", endpoint_url=sandbox.endpoint, region_name=sandbox.region
    )

    # WHEN its deployment role is read
    guardrail_role = packaged().for_account(account).deployment_role_arn
    role = iam.get_role(RoleName=guardrail_role.rsplit("/", 1)[1])["Role"]

    # THEN it is the role the sandbox reports and the account's guardrails name, assumable from the tooling account only
    assert role["Arn"] == sandbox.deployment_roles[environment] == guardrail_role
    assert role["Arn"].startswith(f"arn:aws:iam::{account}:role/")
    statements = role["AssumeRolePolicyDocument"]["Statement"]
    principals = [s["Principal"]["AWS"] for s in statements if s["Effect"] == "Allow"]
    assert principals == [f"arn:aws:iam::{TOOLING_ACCOUNT}:root"]


def test_accounts_the_deployment_role_is_not_in_the_tooling_account(sandbox: Sandbox) -> None:
    # Accounts are separate: the role exists only where it was installed.
    role_name = packaged().for_account(TARGET_ACCOUNTS["dev"]).deployment_role_arn.rsplit("/", 1)[1]
    error = _error(lambda: sandbox.client("iam").get_role(RoleName=role_name))
    assert error.response["Error"]["Code"] == "NoSuchEntity"


def test_functions_clock_moves_only_forward_to_a_window_derived_from_now(
    sandbox: Sandbox, register: Callable[..., str], invoke: Callable[..., Invoked]
) -> None:
    # GIVEN a function with a warm worker
    probe = register("probe-clock")
    invoke(probe, {"action": "now"})
    assert sandbox.runtime is not None
    cold_starts = len(sandbox.runtime.init_seconds[probe])
    # WHEN the sandbox's clock moves to PROD's next window
    before = datetime.now(UTC)
    opens = sandbox.travel_to_window("prod")
    # THEN that is the next opening after now, and a function sees it (ticking on from there), inside the window
    window = load_spec_file(REPO / "environments" / "prod.yaml").policy.window
    assert opens > before
    assert window_status(window, opens).open
    assert not window_status(window, opens - timedelta(minutes=1)).open
    seen = datetime.fromtimestamp(invoke(probe, {"action": "now"}).payload, UTC)
    assert opens <= seen < opens + timedelta(minutes=5)
    # AND the warm worker saw it without a cold start (the clock travels with each invocation)
    assert len(sandbox.runtime.init_seconds[probe]) == cold_starts
    # AND it never turns back, which would list later records behind earlier ones
    with pytest.raises(ValueError, match="only moves forward"):
        sandbox.travel(opens - timedelta(seconds=1))
    assert sandbox.now() >= opens
