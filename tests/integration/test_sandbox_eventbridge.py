"""EventBridge's Lambda targets, Lambda's asynchronous retries and Step Functions' status-change
events in the sandbox (sandbox/eventbridge_delivery.py), and the template resources they hang on
(sandbox/stack.py), over HTTP with boto3 as any client would.

The function under test is tests/integration/fixtures/echo_function: it reports every event it
gets (every attempt) to a queue, and fails when the event asks it to. It is registered with moto
(so it has an EventInvokeConfig) and with the sandbox's runtime (so it runs), as the installer
registers the template's functions.
"""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.accounts import TOOLING_ACCOUNT
from sandbox.api_gateway import ApiGateway
from sandbox.eventbridge_delivery import STATUS_CHANGE, EventBridgeDelivery
from sandbox.lambda_runtime import FunctionConfig
from sandbox.sam_roles import LAMBDA_TRUST, STATES_TRUST
from sandbox.server import Sandbox
from sandbox.stack import StackInstaller
from sandbox.template import load_template
from tests.sandbox_fixtures import wait_for

REPO = Path(__file__).resolve().parents[2]
ECHO_DIR = Path(__file__).resolve().parent / "fixtures" / "echo_function"
# Lambda waits 1 and then 2 minutes before its retries; the sandbox under test waits this, then twice it.
RETRY_DELAY_SECONDS = 0.05
DRAIN_SECONDS = 60  # an upper bound for waiting, never asserted on
TEST_BUS = "test-eventbridge-bus"
SOURCE = "test.eventbridge"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    delivery = EventBridgeDelivery(retry_delay_seconds=RETRY_DELAY_SECONDS)
    with Sandbox(log_dir=tmp_path_factory.mktemp("sandbox-logs"), eventbridge=delivery) as running:
        yield running


def _drain(sandbox: Sandbox) -> None:
    sandbox.eventbridge.drain(DRAIN_SECONDS)


@dataclass
class Queue:
    sqs: Any
    url: str
    arn: str

    def messages(self) -> list[dict[str, Any]]:
        """Every message waiting, bodies decoded; they are taken off the queue."""
        received = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                return received
            for message in batch:
                received.append({"body": json.loads(message["Body"]), "attributes": message.get("MessageAttributes")})
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def bodies(self) -> list[Any]:
        return [m["body"] for m in self.messages()]


@pytest.fixture(scope="module")
def make_queue(sandbox: Sandbox) -> Callable[[str], Queue]:
    sqs = sandbox.client("sqs")

    def make(name: str) -> Queue:
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return Queue(sqs, url, arn)

    return make


@dataclass
class Echo:
    name: str
    arn: str
    seen: Queue  # every invocation, retries included
    failures: Queue  # the on-failure destination


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "runs from tests/integration/fixtures/echo_function")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def make_echo(sandbox: Sandbox, make_queue: Callable[[str], Queue]) -> Callable[..., Echo]:
    """An echo function in moto and in the runtime, with its own queues and EventInvokeConfig."""
    assert sandbox.runtime is not None
    runtime, lambda_, iam = sandbox.runtime, sandbox.client("lambda"), sandbox.client("iam")

    def make(name: str, max_retries: int | None = None, max_age_seconds: int | None = None) -> Echo:
        seen, failures = make_queue(f"{name}-seen"), make_queue(f"{name}-failures")
        role = iam.create_role(
            RoleName=f"{name}-role",
            AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST),
        )["Role"]["Arn"]
        # The sandbox evaluates IAM for its functions: the echo may report to its own queue, nothing else.
        report = {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": seen.arn}
        iam.put_role_policy(
            RoleName=f"{name}-role",
            PolicyName="report",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [report]}),
        )
        environment = {"ECHO_QUEUE_URL": seen.url}
        arn = lambda_.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler="app.lambda_handler",
            Code={"ZipFile": _zip()},
            Timeout=10,
            Environment={"Variables": environment},
        )["FunctionArn"]
        config: dict[str, Any] = {"DestinationConfig": {"OnFailure": {"Destination": failures.arn}}}
        if max_retries is not None:
            config["MaximumRetryAttempts"] = max_retries
        if max_age_seconds is not None:
            config["MaximumEventAgeInSeconds"] = max_age_seconds
        lambda_.put_function_event_invoke_config(FunctionName=name, **config)
        runtime.register(
            FunctionConfig(
                name=name,
                arn=arn,
                handler="app.lambda_handler",
                code_dir=ECHO_DIR,
                layer_dirs=(),
                environment=environment,
                timeout_seconds=10,
                memory_mb=128,
                role_arn=role,
            )
        )
        return Echo(name, arn, seen, failures)

    return make


@pytest.fixture(scope="module")
def echo(make_echo: Callable[..., Echo]) -> Echo:
    # One retry, so "retried MaximumRetryAttempts times" is not Lambda's default of two.
    return make_echo("test-echo", max_retries=1)


@pytest.fixture(scope="module")
def events(sandbox: Sandbox) -> Any:
    client = sandbox.client("events")
    client.create_event_bus(Name=TEST_BUS)
    return client


@pytest.fixture(scope="module")
def echo_rule(events: Any, echo: Echo) -> str:
    """A rule on the test bus for SOURCE's "Echo" events, with the echo function as its target."""
    events.put_rule(
        Name="test-echo-rule",
        EventBusName=TEST_BUS,
        EventPattern=json.dumps({"source": [SOURCE], "detail-type": ["Echo"]}),
    )
    events.put_targets(Rule="test-echo-rule", EventBusName=TEST_BUS, Targets=[{"Id": "echo", "Arn": echo.arn}])
    return "test-echo-rule"


def _put(events: Any, detail: dict[str, Any], detail_type: str = "Echo", bus: str = TEST_BUS) -> str:
    answer = events.put_events(
        Entries=[
            {
                "Source": SOURCE,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
                "EventBusName": bus,
                "Resources": ["arn:aws:s3:::a-resource"],
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0
    return str(answer["Entries"][0]["EventId"])


# --- EventBridge to Lambda ----------------------------------------------------------------------


def test_a_matching_event_reaches_the_function_target_as_eventbridge_delivers_it(
    sandbox: Sandbox, events: Any, echo: Echo, echo_rule: str
) -> None:
    # GIVEN a rule on a bus with the echo function as its target
    before = sandbox.eventbridge.counts()

    # WHEN an event matching its pattern is put on the bus
    event_id = _put(events, {"deploymentId": "d-1"})
    _drain(sandbox)

    # THEN the function got it once, in EventBridge's envelope
    [seen] = echo.seen.bodies()
    event = seen["event"]
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert event["id"] == event_id
    assert (event["version"], event["source"], event["detail-type"]) == ("0", SOURCE, "Echo")
    assert (event["account"], event["region"]) == (TOOLING_ACCOUNT, sandbox.region)
    assert event["resources"] == ["arn:aws:s3:::a-resource"]
    assert event["detail"] == {"deploymentId": "d-1"}
    assert time.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ")
    # ... and it succeeded, so nothing went to the failure destination
    assert echo.failures.bodies() == []
    after = sandbox.eventbridge.counts()
    assert after.get("delivered", 0) - before.get("delivered", 0) == 1
    assert after.get("failed", 0) == before.get("failed", 0)


def test_a_non_matching_event_does_not_reach_the_function(
    sandbox: Sandbox, events: Any, echo: Echo, echo_rule: str
) -> None:
    before = sandbox.eventbridge.counts()

    # WHEN events that the pattern does not match are put: another detail-type, another bus
    _put(events, {"deploymentId": "d-2"}, detail_type="Not Echo")
    _put(events, {"deploymentId": "d-3"}, bus="default")
    _drain(sandbox)

    # THEN the function never ran
    assert echo.seen.bodies() == []
    assert sandbox.eventbridge.counts().get("invocations", 0) == before.get("invocations", 0)


def test_putevents_answers_before_the_function_runs(sandbox: Sandbox, events: Any, echo: Echo, echo_rule: str) -> None:
    # GIVEN the echo function held (a slow Lambda)
    assert sandbox.runtime is not None
    with sandbox.runtime.paused(echo.name):
        # WHEN an event for it is put THEN PutEvents answers although the function cannot run yet
        _put(events, {"deploymentId": "d-held"})
        assert echo.seen.bodies() == []
    # ... and the function runs once it can
    _drain(sandbox)
    assert [s["event"]["detail"] for s in echo.seen.bodies()] == [{"deploymentId": "d-held"}]


def test_an_erroring_function_is_retried_max_retry_attempts_times_then_its_record_goes_to_the_destination(
    sandbox: Sandbox, events: Any, echo: Echo, echo_rule: str
) -> None:
    # GIVEN the echo function with MaximumRetryAttempts 1 and an SQS OnFailure destination
    # WHEN an event that makes it fail is put
    started = time.monotonic()
    event_id = _put(events, {"fail": "out of cheese"})
    _drain(sandbox)
    elapsed = time.monotonic() - started

    # THEN it ran 1 + MaximumRetryAttempts times, every attempt with the same event and request id
    attempts = echo.seen.bodies()
    assert len(attempts) == 2
    assert {a["event"]["id"] for a in attempts} == {event_id}
    assert len({a["requestId"] for a in attempts}) == 1
    # ... after the sandbox's short retry delay, not Lambda's minute
    assert elapsed < DRAIN_SECONDS
    # ... and Lambda's invocation record landed in the destination queue
    [record] = echo.failures.bodies()
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": attempts[0]["requestId"],
        "functionArn": f"{echo.arn}:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 2,
    }
    assert record["requestPayload"] == attempts[0]["event"]
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "EchoFailed"
    assert record["responsePayload"]["errorMessage"] == "out of cheese"
    assert time.strptime(record["timestamp"].split(".")[0], "%Y-%m-%dT%H:%M:%S")
    outcome = next(o for o in sandbox.eventbridge.outcomes if o.request_id == record["requestContext"]["requestId"])
    assert (outcome.condition, outcome.attempts, outcome.destination) == ("RetriesExhausted", 2, echo.failures.arn)


def test_without_an_event_invoke_config_lambda_retries_twice(
    sandbox: Sandbox, events: Any, make_echo: Callable[..., Echo], make_queue: Callable[[str], Queue]
) -> None:
    # GIVEN a function with Lambda's defaults (no MaximumRetryAttempts), as the target of a rule
    echo = make_echo("test-echo-defaults")
    events.put_rule(Name="test-defaults", EventBusName=TEST_BUS, EventPattern=json.dumps({"detail-type": ["Defaults"]}))
    events.put_targets(Rule="test-defaults", EventBusName=TEST_BUS, Targets=[{"Id": "echo", "Arn": echo.arn}])

    # WHEN a failing event reaches it
    _put(events, {"fail": "always"}, detail_type="Defaults")
    _drain(sandbox)

    # THEN it ran three times (two retries) before its record went to the destination
    assert len(echo.seen.bodies()) == 3
    [record] = echo.failures.bodies()
    assert record["requestContext"]["approximateInvokeCount"] == 3


def test_an_event_older_than_maximum_event_age_is_not_retried(
    sandbox: Sandbox, events: Any, make_echo: Callable[..., Echo]
) -> None:
    # GIVEN a function whose events may be an hour old at most, as the target of a rule
    assert sandbox.runtime is not None
    echo = make_echo("test-echo-age", max_retries=2, max_age_seconds=3600)
    events.put_rule(Name="test-age", EventBusName=TEST_BUS, EventPattern=json.dumps({"detail-type": ["Age"]}))
    events.put_targets(Rule="test-age", EventBusName=TEST_BUS, Targets=[{"Id": "echo", "Arn": echo.arn}])
    delivery = sandbox.eventbridge
    real_clock = delivery.clock
    moved = [0.0]
    delivery.clock = lambda: real_clock() + moved[0]
    try:
        # WHEN its first attempt fails two hours after the event was accepted
        with sandbox.runtime.paused(echo.name):
            before = delivery.counts().get("invocations", 0)
            _put(events, {"fail": "too slow"}, detail_type="Age")
            wait_for(lambda: delivery.counts().get("invocations", 0) > before, "the first attempt", DRAIN_SECONDS)
            moved[0] = 2 * 3600
        _drain(sandbox)
    finally:
        delivery.clock = real_clock

    # THEN it is not retried: its record says the event was too old
    assert len(echo.seen.bodies()) == 1
    [record] = echo.failures.bodies()
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1


def test_an_async_invoke_gets_the_same_retries_and_destination(
    sandbox: Sandbox, make_echo: Callable[..., Echo]
) -> None:
    # GIVEN a function with one retry and a destination
    echo = make_echo("test-echo-invoke", max_retries=1)

    # WHEN it is invoked with InvocationType=Event and fails
    answer = sandbox.client("lambda").invoke(
        FunctionName=echo.name, InvocationType="Event", Payload=json.dumps({"fail": "async"})
    )
    assert answer["StatusCode"] == 202
    _drain(sandbox)

    # THEN Lambda retried it once and sent its record to the destination
    assert len(echo.seen.bodies()) == 2
    [record] = echo.failures.bodies()
    assert record["requestPayload"] == {"fail": "async"}
    assert record["requestContext"]["condition"] == "RetriesExhausted"


def test_a_target_whose_function_does_not_exist_goes_to_the_rules_dead_letter_queue(
    sandbox: Sandbox, events: Any, make_queue: Callable[[str], Queue]
) -> None:
    # GIVEN a rule whose Lambda target names no function, with a dead-letter queue
    dead_letters = make_queue("test-rule-dlq")
    missing = f"arn:aws:lambda:{sandbox.region}:{TOOLING_ACCOUNT}:function:no-such-function"
    events.put_rule(Name="test-missing", EventBusName=TEST_BUS, EventPattern=json.dumps({"detail-type": ["Missing"]}))
    events.put_targets(
        Rule="test-missing",
        EventBusName=TEST_BUS,
        Targets=[{"Id": "gone", "Arn": missing, "DeadLetterConfig": {"Arn": dead_letters.arn}}],
    )

    # WHEN an event matches it
    event_id = _put(events, {"x": 1}, detail_type="Missing")
    _drain(sandbox)

    # THEN EventBridge put the event in the dead-letter queue, saying why
    [message] = dead_letters.messages()
    assert message["body"]["id"] == event_id
    attributes = {k: v["StringValue"] for k, v in message["attributes"].items()}
    assert attributes["ERROR_CODE"] == "ResourceNotFoundException"
    assert attributes["TARGET_ARN"] == missing
    assert attributes["RULE_ARN"].endswith(f":rule/{TEST_BUS}/test-missing")


def test_a_disabled_rule_delivers_nothing(sandbox: Sandbox, events: Any, echo: Echo) -> None:
    events.put_rule(
        Name="test-disabled",
        EventBusName=TEST_BUS,
        EventPattern=json.dumps({"detail-type": ["Disabled"]}),
        State="DISABLED",
    )
    events.put_targets(Rule="test-disabled", EventBusName=TEST_BUS, Targets=[{"Id": "echo", "Arn": echo.arn}])

    _put(events, {"x": 1}, detail_type="Disabled")
    _drain(sandbox)

    assert echo.seen.bodies() == []


def test_a_target_input_transformer_shapes_what_the_function_gets(sandbox: Sandbox, events: Any, echo: Echo) -> None:
    transformer = {
        "InputPathsMap": {"deployment": "$.detail.deploymentId", "kind": "$.detail-type"},
        "InputTemplate": '{"deployment": "<deployment>", "kind": "<kind>"}',
    }
    events.put_rule(Name="test-transform", EventBusName=TEST_BUS, EventPattern=json.dumps({"detail-type": ["Shape"]}))
    events.put_targets(
        Rule="test-transform",
        EventBusName=TEST_BUS,
        Targets=[{"Id": "echo", "Arn": echo.arn, "InputTransformer": transformer}],
    )

    _put(events, {"deploymentId": "d-9"}, detail_type="Shape")
    _drain(sandbox)

    assert [s["event"] for s in echo.seen.bodies()] == [{"deployment": "d-9", "kind": "Shape"}]


def test_the_state_machines_put_events_task_reaches_a_function_target(
    sandbox: Sandbox, events: Any, echo: Echo, echo_rule: str
) -> None:
    # GIVEN a state machine whose task puts an event on the test bus
    definition = {
        "StartAt": "Announce",
        "States": {
            "Announce": {
                "Type": "Task",
                "Resource": "arn:aws:states:::events:putEvents",
                "Parameters": {
                    "Entries": [
                        {
                            "Source": SOURCE,
                            "DetailType": "Echo",
                            "EventBusName": TEST_BUS,
                            "Detail": {"from": "state machine"},
                        }
                    ]
                },
                "ResultSelector": {"failed.$": "$.FailedEntryCount"},
                "End": True,
            }
        },
    }
    arn = _state_machine(sandbox, "test-put-events", definition)

    # WHEN it runs
    _run(sandbox, arn)
    _drain(sandbox)

    # THEN the event reached the function
    assert [s["event"]["detail"] for s in echo.seen.bodies()] == [{"from": "state machine"}]


# --- Step Functions status changes --------------------------------------------------------------


def _state_machine(sandbox: Sandbox, name: str, definition: dict[str, Any]) -> str:
    """A state machine whose role may put events on the test bus (its integrations run as that role)."""
    iam = sandbox.client("iam")
    put_events = {
        "Effect": "Allow",
        "Action": "events:PutEvents",
        "Resource": f"arn:aws:events:*:*:event-bus/{TEST_BUS}",
    }
    try:
        iam.create_role(RoleName="test-sfn", AssumeRolePolicyDocument=json.dumps(STATES_TRUST))
        iam.put_role_policy(
            RoleName="test-sfn",
            PolicyName="put-events",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [put_events]}),
        )
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    return str(
        sandbox.client("stepfunctions").create_state_machine(
            name=name, definition=json.dumps(definition), roleArn=f"arn:aws:iam::{TOOLING_ACCOUNT}:role/test-sfn"
        )["stateMachineArn"]
    )


def _run(sandbox: Sandbox, arn: str, stop: bool = False) -> dict[str, Any]:
    sfn = sandbox.client("stepfunctions")
    execution = sfn.start_execution(stateMachineArn=arn, name=f"run-{uuid.uuid4().hex[:8]}", input='{"n": 1}')
    if stop:
        sfn.stop_execution(executionArn=execution["executionArn"])

    def ended() -> dict[str, Any] | None:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        return None if described["status"] == "RUNNING" else described

    return dict(wait_for(ended, "the execution to end", DRAIN_SECONDS))


STATE_MACHINES: dict[str, tuple[dict[str, Any], str]] = {
    "succeeds": ({"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"ok": True}, "End": True}}}, "SUCCEEDED"),
    "fails": ({"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Boom", "Cause": "on purpose"}}}, "FAILED"),
    "times-out": (
        {"StartAt": "W", "TimeoutSeconds": 1, "States": {"W": {"Type": "Wait", "Seconds": 30, "End": True}}},
        "TIMED_OUT",
    ),
    "is-stopped": ({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 30, "End": True}}}, "ABORTED"),
}


@pytest.mark.parametrize("case", sorted(STATE_MACHINES))
def test_an_execution_sends_running_then_its_final_status_to_the_default_bus(
    sandbox: Sandbox, events: Any, make_queue: Callable[[str], Queue], make_echo: Callable[..., Echo], case: str
) -> None:
    # GIVEN a state machine, and a rule on the default bus for its status changes with an SQS
    # target (which keeps their order) and a function target
    definition, final = STATE_MACHINES[case]
    arn = _state_machine(sandbox, f"test-status-{case}", definition)
    captured = make_queue(f"test-status-{case}")
    echo = make_echo(f"test-status-echo-{case}")
    pattern = {"source": ["aws.states"], "detail-type": [STATUS_CHANGE], "detail": {"stateMachineArn": [arn]}}
    events.put_rule(Name=f"test-status-{case}", EventPattern=json.dumps(pattern))
    events.put_targets(
        Rule=f"test-status-{case}", Targets=[{"Id": "queue", "Arn": captured.arn}, {"Id": "echo", "Arn": echo.arn}]
    )

    # WHEN an execution runs to its end
    described = _run(sandbox, arn, stop=case == "is-stopped")
    _drain(sandbox)

    # THEN RUNNING and then the final status were put on the default bus, as AWS sends them
    statuses = captured.bodies()
    assert [e["detail"]["status"] for e in statuses] == ["RUNNING", final]
    assert described["status"] == final
    running, ended = statuses
    for event in statuses:
        assert (event["source"], event["detail-type"]) == ("aws.states", STATUS_CHANGE)
        assert event["resources"] == [described["executionArn"]]
        detail = event["detail"]
        assert detail["executionArn"] == described["executionArn"]
        assert detail["stateMachineArn"] == arn
        assert detail["name"] == described["name"]
        assert detail["input"] == '{"n": 1}'
        assert detail["startDate"] == int(described["startDate"].timestamp() * 1000)
    assert running["detail"]["stopDate"] is None
    assert running["detail"]["output"] is None
    assert ended["detail"]["stopDate"] >= ended["detail"]["startDate"]
    if final == "SUCCEEDED":
        assert json.loads(ended["detail"]["output"]) == {"ok": True}
    if final == "FAILED":
        assert (ended["detail"]["error"], ended["detail"]["cause"]) == ("Boom", "on purpose")
    # ... and the function target got the same two events, in the tooling account's envelope
    # (moto's SQS target leaves "account" out; that is moto's own delivery)
    got = {s["event"]["detail"]["status"]: s["event"] for s in echo.seen.bodies()}
    assert sorted(got) == sorted(["RUNNING", final])
    assert got[final]["detail"] == ended["detail"]
    assert {e["account"] for e in got.values()} == {TOOLING_ACCOUNT}


# --- StopExecution (sandbox/sfn_stop.py) ---------------------------------------------------------


@pytest.fixture(scope="module")
def token_waiter(sandbox: Sandbox, make_queue: Callable[[str], Queue]) -> tuple[str, Queue]:
    """A state machine that hands its task token to a queue and waits an hour for it."""
    tokens = make_queue("test-stop-tokens")
    definition = {
        "StartAt": "Wait for a person",
        "States": {
            "Wait for a person": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": tokens.url, "MessageBody": {"token.$": "$$.Task.Token"}},
                "TimeoutSeconds": 3600,
                "End": True,
            }
        },
    }
    arn = _state_machine(sandbox, "test-stop-token-wait", definition)
    send = {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": tokens.arn}
    sandbox.client("iam").put_role_policy(
        RoleName="test-sfn",
        PolicyName="send-tokens",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [send]}),
    )
    return arn, tokens


def _waiting(sandbox: Sandbox, arn: str, tokens: Queue, stopped: Queue) -> tuple[str, str]:
    """Start an execution and return (its ARN, its task token) once it waits; its status changes go to ``stopped``."""
    sfn, events = sandbox.client("stepfunctions"), sandbox.client("events")
    pattern = {"source": ["aws.states"], "detail-type": [STATUS_CHANGE], "detail": {"stateMachineArn": [arn]}}
    events.put_rule(Name="test-stop-statuses", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="test-stop-statuses", Targets=[{"Id": "queue", "Arn": stopped.arn}])
    execution = sfn.start_execution(stateMachineArn=arn, name=f"stop-{uuid.uuid4().hex[:8]}", input="{}")[
        "executionArn"
    ]
    token = wait_for(tokens.bodies, "the task token")[0]["token"]
    return execution, token


def test_stopexecution_ends_a_task_token_wait_at_once_and_the_token_no_longer_completes_it(
    sandbox: Sandbox, token_waiter: tuple[str, Queue], make_queue: Callable[[str], Queue]
) -> None:
    # GIVEN an execution waiting for a task token (an hour, as an approval waits hours)
    arn, tokens = token_waiter
    statuses = make_queue("test-stop-statuses")
    execution, token = _waiting(sandbox, arn, tokens, statuses)
    sfn = sandbox.client("stepfunctions")

    # WHEN it is stopped, with an error and a cause
    stopped = sfn.stop_execution(executionArn=execution, error="Operator.Stop", cause="wrong change ticket")

    # THEN it is ABORTED from that moment, with StopExecution's date, error and cause
    described = sfn.describe_execution(executionArn=execution)
    assert described["status"] == "ABORTED"
    assert described["stopDate"] == stopped["stopDate"]
    assert (described["error"], described["cause"]) == ("Operator.Stop", "wrong change ticket")
    # ... its token no longer completes the task, as AWS answers for a closed task
    for send in (
        lambda: sfn.send_task_success(taskToken=token, output="{}"),
        lambda: sfn.send_task_failure(taskToken=token, error="Rejected"),
        lambda: sfn.send_task_heartbeat(taskToken=token),
    ):
        with pytest.raises(sfn.exceptions.TaskTimedOut):
            send()
    # ... the ABORTED status change went to the default bus once, after RUNNING
    _drain(sandbox)
    changes = statuses.bodies()
    assert [e["detail"]["status"] for e in changes] == ["RUNNING", "ABORTED"]
    assert changes[1]["detail"]["stopDate"] == int(stopped["stopDate"].timestamp() * 1000)
    assert (changes[1]["detail"]["error"], changes[1]["detail"]["cause"]) == ("Operator.Stop", "wrong change ticket")
    # ... and the history ends with the abort: nothing of the woken wait's unwinding (moto's own
    # thread records it as a TaskTimedOut and a failed execution) is recorded after it
    history = sfn.get_execution_history(executionArn=execution)["events"]
    assert [e["type"] for e in history] == [
        "ExecutionStarted",
        "TaskStateEntered",
        "TaskScheduled",
        "TaskStarted",
        "TaskSubmitted",
        "ExecutionAborted",
    ]
    assert history[-1]["executionAbortedEventDetails"] == {"error": "Operator.Stop", "cause": "wrong change ticket"}
    after = sfn.describe_execution(executionArn=execution)
    assert (after["status"], after["stopDate"], after["error"]) == ("ABORTED", stopped["stopDate"], "Operator.Stop")
    _drain(sandbox)
    assert statuses.bodies() == []


def test_stopexecution_without_a_reason_and_on_an_ended_execution(
    sandbox: Sandbox, token_waiter: tuple[str, Queue], make_queue: Callable[[str], Queue]
) -> None:
    # GIVEN an execution waiting for a task token
    arn, tokens = token_waiter
    execution, _ = _waiting(sandbox, arn, tokens, make_queue("test-stop-statuses-2"))
    sfn = sandbox.client("stepfunctions")

    # WHEN it is stopped without an error or a cause, and then stopped again
    first = sfn.stop_execution(executionArn=execution)
    sfn.stop_execution(executionArn=execution)

    # THEN it is ABORTED with neither (AWS leaves the keys out), and the second stop changed nothing
    described = sfn.describe_execution(executionArn=execution)
    assert described["status"] == "ABORTED"
    assert described["stopDate"] == first["stopDate"]
    assert "error" not in described
    assert "cause" not in described


# --- the template's resources -------------------------------------------------------------------


def _topic(sandbox: Sandbox, name: str) -> str:
    return next(t["TopicArn"] for t in sandbox.client("sns").list_topics()["Topics"] if t["TopicArn"].endswith(name))


def test_the_notify_function_is_wired_as_the_template_says(sandbox: Sandbox) -> None:
    # GIVEN the installed template
    notify = f"{sandbox.stack_name}-notify"
    lambda_, events = sandbox.client("lambda"), sandbox.client("events")
    notify_arn = lambda_.get_function(FunctionName=notify)["Configuration"]["FunctionArn"]
    queue_url = sandbox.outputs["NotifyDeadLetterQueueUrl"]
    queue_arn = sandbox.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]

    # THEN its asynchronous invocation settings are in Lambda, from the template's parameters
    config = lambda_.get_function_event_invoke_config(FunctionName=notify)
    assert config["MaximumRetryAttempts"] == 2
    assert config["MaximumEventAgeInSeconds"] == 3600
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn

    # ... and its EventBridgeRule event is a rule targeting it, on the deployer's bus
    bus = sandbox.outputs["EventBusName"]
    (rule,) = [r for r in events.list_rules(EventBusName=bus)["Rules"] if "NotifyFunction" in r["Name"]]
    assert json.loads(rule["EventPattern"])["source"] == ["bbws.deployer"]
    [target] = events.list_targets_by_rule(Rule=rule["Name"], EventBusName=bus)["Targets"]
    assert target["Arn"] == notify_arn
    assert target["DeadLetterConfig"] == {"Arn": queue_arn}
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 3600}


def test_the_close_stopped_function_gets_the_deployment_machines_ends(sandbox: Sandbox) -> None:
    # GIVEN the installed template
    lambda_, events = sandbox.client("lambda"), sandbox.client("events")
    close = lambda_.get_function(FunctionName=f"{sandbox.stack_name}-close-stopped")["Configuration"]["FunctionArn"]
    queue_url = sandbox.outputs["NotifyDeadLetterQueueUrl"]
    queue_arn = sandbox.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    # THEN a rule on the default bus hands it the state machine's ABORTED, TIMED_OUT and FAILED status changes
    (rule,) = [r for r in events.list_rules()["Rules"] if "CloseStoppedFunction" in r["Name"]]
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.states"],
        "detail-type": [STATUS_CHANGE],
        "detail": {
            "stateMachineArn": [sandbox.outputs["StateMachineArn"]],
            "status": ["ABORTED", "TIMED_OUT", "FAILED"],
        },
    }
    [target] = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert (target["Arn"], target["DeadLetterConfig"]) == (close, {"Arn": queue_arn})
    # ... and what it could not do after Lambda's retries is kept in the dead-letter queue
    config = lambda_.get_function_event_invoke_config(FunctionName=f"{sandbox.stack_name}-close-stopped")
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn


def test_the_templates_monitoring_resources_are_installed(sandbox: Sandbox) -> None:
    stack = sandbox.stack_name
    cloudwatch, logs, sqs = sandbox.client("cloudwatch"), sandbox.client("logs"), sandbox.client("sqs")

    # Alarms, the metric-math one included, notify the alarm topic.
    alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms(AlarmNamePrefix=stack)["MetricAlarms"]}
    topic = next(
        t["TopicArn"] for t in sandbox.client("sns").list_topics()["Topics"] if t["TopicArn"].endswith("-alarms")
    )
    assert {a["AlarmActions"][0] for a in alarms.values()} == {topic}
    stuck = alarms[f"{stack}-executions-timed-out"]
    assert [m["Id"] for m in stuck["Metrics"]] == ["stuck", "timedout", "aborted"]
    failed = alarms[f"{stack}-executions-failed"]
    assert failed["Dimensions"] == [{"Name": "StateMachineArn", "Value": sandbox.outputs["StateMachineArn"]}]
    assert (failed["Threshold"], failed["Period"]) == (0.0, 300)

    # The dashboard's body is the template's, every ${...} resolved.
    body = cloudwatch.get_dashboard(DashboardName=stack)["DashboardBody"]
    assert "${" not in body
    assert alarms[f"{stack}-api-5xx"]["AlarmArn"] in json.loads(body)["widgets"][-1]["properties"]["alarms"]

    # The records table has the template's time to live, if it has one.
    declared = load_template(REPO / "template.yaml")["Resources"]["RecordsTable"]["Properties"]
    ttl = sandbox.client("dynamodb").describe_time_to_live(TableName=sandbox.outputs["RecordsTableName"])
    if "TimeToLiveSpecification" in declared:
        attribute = declared["TimeToLiveSpecification"]["AttributeName"]
        assert ttl["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": attribute}

    # Log groups keep the template's retention.
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups()["logGroups"]}
    assert groups[f"/aws/lambda/{stack}"]["retentionInDays"] == 365
    assert groups[f"/aws/vendedlogs/states/{stack}-deployment"]["retentionInDays"] == 365

    # The dead-letter queue allows EventBridge, without the deny-without-TLS statement.
    attributes = sqs.get_queue_attributes(QueueUrl=sandbox.outputs["NotifyDeadLetterQueueUrl"], AttributeNames=["All"])
    policy = json.loads(attributes["Attributes"]["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["EventBridgeUndeliverable"]
    assert attributes["Attributes"]["MessageRetentionPeriod"] == "1209600"

    # The state machine logs to its log group (kept as configured).
    machine = sandbox.client("stepfunctions").describe_state_machine(stateMachineArn=sandbox.outputs["StateMachineArn"])
    [destination] = machine["loggingConfiguration"]["destinations"]
    assert (
        destination["cloudWatchLogsLogGroup"]["logGroupArn"]
        == groups[f"/aws/vendedlogs/states/{stack}-deployment"]["arn"]
    )

    # API Gateway's logging role has AWS's managed policy and is the account's CloudWatch role.
    account = sandbox.client("apigateway").get_account()
    role_name = account["cloudwatchRoleArn"].rsplit("/", 1)[-1]
    attached = sandbox.client("iam").list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["AmazonAPIGatewayPushToCloudWatchLogs"]


def test_the_waf_resources_are_accepted_and_said_not_installed(sandbox: Sandbox) -> None:
    # GIVEN the template's WAF web ACL, its association with the API stage and its logging (moto has no WAF)
    # THEN the stack installs, and the sandbox says which resources it left out and why
    assert set(sandbox.not_installed) == {"ApiWebAcl", "ApiWebAclAssociation", "ApiWebAclLogging"}
    assert all("moto does not emulate WAF" in why for why in sandbox.not_installed.values())
    # AND the rest of what they refer to is there (the WAF log group)
    groups = sandbox.client("logs").describe_log_groups(logGroupNamePrefix="aws-waf-logs-")["logGroups"]
    assert [g["logGroupName"] for g in groups] == [f"aws-waf-logs-{sandbox.stack_name}-api"]


def test_conditions_decide_what_is_installed(sandbox: Sandbox) -> None:
    # GIVEN the sandbox's stack: GitHubRepository set (HasCiRole), no AlarmEmail (HasAlarmEmail false)
    iam, sns = sandbox.client("iam"), sandbox.client("sns")
    # THEN CI's roles and the OIDC provider exist, and the alarms topic has no email subscription
    roles = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert {f"{sandbox.stack_name}-github-ci-{e}" for e in ("dev", "sit", "prod")} <= roles
    assert len(iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]) == 1
    topic = next(t["TopicArn"] for t in sns.list_topics()["Topics"] if f"{sandbox.stack_name}-alarms" in t["TopicArn"])
    assert sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"] == []


def test_a_stack_with_its_conditions_true_installs_the_conditional_resources(sandbox: Sandbox) -> None:
    # GIVEN the template installed a second time, as another stack, with CI's roles trusting the account's
    # existing OIDC provider (GitHubOidcProviderArn) and an alarm email
    assert sandbox.runtime is not None
    iam = sandbox.client("iam")
    [provider] = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    installer = StackInstaller(
        repo=REPO,
        session=sandbox.session(),
        endpoint=sandbox.endpoint,
        region=sandbox.region,
        account=TOOLING_ACCOUNT,
        stack_name="ci-stack",
        runtime=sandbox.runtime,
        api=ApiGateway(sandbox.runtime, TOOLING_ACCOUNT, sandbox.region),
        parameters={
            "GitHubRepository": "bbws/deployer",
            "GitHubOidcProviderArn": provider["Arn"],
            "AlarmEmail": "ops@example.com",
        },
    )
    outputs = installer.install()

    # THEN each CI role trusts that provider for its own GitHub environment, and the email subscription exists
    stack_id = sandbox.client("cloudformation").describe_stacks(StackName="ci-stack")["Stacks"][0]["StackId"]
    for environment in ("dev", "sit", "prod"):
        role = iam.get_role(RoleName=f"ci-stack-github-ci-{environment}")["Role"]
        assert outputs[f"GitHubCi{environment.capitalize()}RoleArn"] == role["Arn"]
        [statement] = role["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Federated": provider["Arn"]}
        subject = statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"]
        assert subject == f"repo:bbws/deployer:environment:{environment}"
        policy = iam.get_role_policy(RoleName=role["RoleName"], PolicyName="start-deployments")["PolicyDocument"]
        assert policy["Statement"][-1]["Resource"] == stack_id
    assert len(iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]) == 1
    topic = next(
        t["TopicArn"] for t in sandbox.client("sns").list_topics()["Topics"] if "ci-stack-alarms" in t["TopicArn"]
    )
    subscriptions = sandbox.client("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", "ops@example.com")]
    # ... and each resource came after what it refers to
    order = installer.installed
    assert "GitHubOidcProvider" not in order
    assert order.index("DeployerApi") < order.index("GitHubCiDevRole")
    assert order.index("DeploymentStateMachine") < order.index("CloseStoppedFunctionExecutionEnded")


def test_a_function_whose_code_is_missing_installs_and_fails_only_when_invoked(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # GIVEN a function registered with a code directory that does not exist (yet)
    assert sandbox.runtime is not None
    sandbox.runtime.register(
        FunctionConfig(
            name="test-no-code",
            arn=f"arn:aws:lambda:{sandbox.region}:{TOOLING_ACCOUNT}:function:test-no-code",
            handler="app.lambda_handler",
            code_dir=tmp_path / "not-written-yet",
            layer_dirs=(),
            environment={},
            timeout_seconds=3,
            memory_mb=128,
        )
    )

    # WHEN it is invoked THEN Lambda's import error comes back
    answer = sandbox.client("lambda").invoke(FunctionName="test-no-code", Payload=b"{}")
    assert answer["FunctionError"] == "Unhandled"
    error = json.loads(answer["Payload"].read())
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "No module named 'app'" in error["errorMessage"]
