"""Emulates EventBridge's Lambda targets and Step Functions' status-change events, which moto 5.2.5 lacks.

moto 5.2.5's EventBridge matches rules but cannot invoke a Lambda target (``Rule.send_to_targets``
raises NotImplementedError for one, failing the PutEvents call), and its Step Functions puts no
events on any bus. What AWS does and this module repeats:

- **EventBridge to Lambda.** Every event put on a bus (PutEvents from a function or any client,
  the state machine's ``arn:aws:states:::events:putEvents`` task, the status changes below)
  reaches each rule of that bus. A rule that is ENABLED and whose pattern matches (moto's own
  ``EventPattern``) hands the event to each of its Lambda targets: the target's ``Input``,
  ``InputPath`` or ``InputTransformer`` (moto's ``EventTemplateParser``) if it has one, else
  the event's envelope ``{"version", "id", "detail-type", "source", "account", "time",
  "region", "resources", "detail"}``. EventBridge invokes Lambda asynchronously, so the
  PutEvents call only queues the work and never waits for a function. A target whose function
  does not exist (not registered with the sandbox's Lambda runtime, or in another account or
  region) is an error EventBridge does not retry: the event goes to the target's
  ``DeadLetterConfig`` queue, with the RULE_ARN, TARGET_ARN, ERROR_CODE and ERROR_MESSAGE
  message attributes EventBridge sets. The target's ``RetryPolicy`` is kept as put but has
  nothing to do: Lambda accepts every asynchronous invocation of a function that exists, and
  what happens next is Lambda's retry policy. moto's own target kinds (SQS, CloudWatch Logs,
  archives, other buses) are still moto's; a DISABLED rule delivers to none of them (moto
  5.2.5 ignores a rule's State).
- **Lambda's asynchronous invocation**, also what ``Invoke`` with InvocationType=Event gets
  (``LambdaRuntime.async_invoke``). The function runs through ``LambdaRuntime.invoke``; a
  function error (the handler's exception, an import error, a timeout) is retried up to the
  function's EventInvokeConfig ``MaximumRetryAttempts`` (default 2), the first retry after
  ``retry_delay_seconds`` and the second after twice that (AWS waits 1 and then 2 minutes);
  an event older than ``MaximumEventAgeInSeconds`` (default 6 hours) when its turn comes is
  not run again. When retries are exhausted or the event is too old, Lambda's invocation
  record goes to the ``DestinationConfig.OnFailure`` destination (an SQS queue, an SNS
  topic, a function or an event bus): ``{"version": "1.0", "timestamp", "requestContext":
  {"requestId", "functionArn", "condition": "RetriesExhausted" | "EventAgeExceeded",
  "approximateInvokeCount"}, "requestPayload", "responseContext": {"statusCode",
  "executedVersion", "functionError"}, "responsePayload"}``. OnSuccess destinations and a
  function's own DeadLetterConfig are not emulated. The EventInvokeConfig is read from moto's
  Lambda (PutFunctionEventInvokeConfig; the stack installer puts the template's there) at
  each attempt, so it is what the Lambda API says it is.
- **Step Functions execution status changes.** When an execution of a STANDARD state machine
  starts (RUNNING) and when it ends (SUCCEEDED, FAILED, TIMED_OUT, ABORTED), a "Step Functions
  Execution Status Change" event (source ``aws.states``) is put on the default bus of the
  execution's account and region, ``resources`` the execution's ARN, ``detail``
  ``{executionArn, stateMachineArn, name, status, startDate, stopDate, input, inputDetails,
  output, outputDetails, error, cause}`` with the dates in epoch milliseconds, as AWS sends
  it. Express workflows send none, as on AWS. The changes are hooked, not polled: moto's
  interpreter (``execute_state_machine``) runs in this process and sets RUNNING in
  ``Execution.start`` and the final status in ``BaseExecutionWorkerCommunication.terminated``
  (success, failure, timeout and StopExecution's abort all end there; ``sfn_stop`` announces
  an abort from StopExecution itself, and ``announce_end`` puts each end once). A hook sees every
  change exactly once and in order, the moment it happens, where a watcher would need a
  thread, a poll interval, and could miss a short execution's RUNNING.

The work runs on a few worker threads (``workers``) behind a dispatcher that holds delayed
retries; status-change events are put on the bus by the dispatcher itself, so they keep
their order. For tests: ``drain(timeout)`` waits until nothing is queued, running or waiting
for a retry; ``counts()`` counts what happened and ``outcomes`` says how each asynchronous
invocation ended. ``stop()`` (the sandbox stopping) drops what is still queued.

moto internals this depends on (pin: moto==5.2.5), patched once per process by ``install()``;
while no ``EventBridgeDelivery`` is started the patches leave moto's behaviour as it was:
- ``moto.events.models.Rule.send_to_targets(event, transform_input)``: every event reaches
  every rule of its bus there (from ``EventsBackend.put_events`` and moto's S3 notifications);
  ``Rule.targets`` / ``state`` / ``event_pattern.matches_event`` / ``arn``.
- ``moto.events.models.events_backends[account][region].put_events``: status-change events
  and EventBridge destinations go through it, so they reach rules as any event does.
- ``moto.stepfunctions.parser.backend.execution.Execution.start`` and
  ``BaseExecutionWorkerCommunication.terminated``; the ``Execution`` attributes ``exec_arn``,
  ``state_machine_arn``, ``name``, ``sm_type``, ``status``, ``start_date``, ``stop_date``,
  ``execution_input``, ``output``, ``error``, ``cause``, ``account_id``, ``region_name``.
- ``moto.awslambda.models.lambda_backends[account][region].get_function(name).event_invoke_config``
  (moto appends on every put, so the last one is the one in force).
- ``moto.sqs.models.sqs_backends[...].send_message`` and ``moto.sns.models.sns_backends[...].publish``.
"""

from __future__ import annotations

import copy
import functools
import heapq
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from sandbox.lambda_runtime import FunctionConfig, LambdaRuntime

logger = logging.getLogger(__name__)

PATCHED = "__sandbox_eventbridge_delivery__"
# Set on an execution whose final status change was put on the bus.
ANNOUNCED = "__sandbox_end_announced__"
# The sandbox's wait before a retry (then twice that); AWS waits 1 and then 2 minutes.
DEFAULT_RETRY_DELAY_SECONDS = 1.0
DEFAULT_MAX_RETRY_ATTEMPTS = 2
DEFAULT_MAX_EVENT_AGE_SECONDS = 6 * 60 * 60
STATUS_CHANGE = "Step Functions Execution Status Change"
FAILURE_DETAIL_TYPE = "Lambda Function Invocation Result - Failure"
_install_lock = threading.Lock()


# --- the worker pool, with delayed jobs ---------------------------------------------------------


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    run: Callable[[], None] = field(compare=False)
    serial: bool = field(compare=False)


class _Work:
    """A dispatcher that releases jobs when due to a few worker threads; ``serial`` jobs it runs itself, in order."""

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = workers
        self._jobs: list[_Job] = []
        self._seq = itertools.count()
        self._ready: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._outstanding = 0  # queued, due, running, or held by a caller
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stopping = False
        self._threads = [threading.Thread(target=self._dispatch, name=f"{self.name}-dispatch", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"{self.name}-{n}", daemon=True) for n in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, run: Callable[[], None], delay_seconds: float = 0.0, *, serial: bool = False) -> None:
        with self._cond:
            if self._stopping:
                return
            self._outstanding += 1
            heapq.heappush(self._jobs, _Job(time.monotonic() + max(delay_seconds, 0.0), next(self._seq), run, serial))
            self._cond.notify_all()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Counts as outstanding while the block runs: drain() waits for whatever it submits."""
        with self._cond:
            self._outstanding += 1
        try:
            yield
        finally:
            self._done()

    def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._outstanding:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def outstanding(self) -> int:
        with self._cond:
            return self._outstanding

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._outstanding -= len(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for _ in range(self.workers):
            self._ready.put(None)
        # A worker inside a long invocation is left to finish on its own (the threads are daemons).
        deadline = time.monotonic() + 5
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=max(deadline - time.monotonic(), 0))
        self._threads = []

    def _done(self) -> None:
        with self._cond:
            self._outstanding -= 1
            self._cond.notify_all()

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    if self._jobs and self._jobs[0].due <= now:
                        job = heapq.heappop(self._jobs)
                        break
                    self._cond.wait(self._jobs[0].due - now if self._jobs else None)
            if job.serial:
                self._run(job)
            else:
                self._ready.put(job)

    def _work(self) -> None:
        while True:
            job = self._ready.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: _Job) -> None:
        try:
            if not self._stopping:
                job.run()
        except Exception:  # the caller's request succeeded long ago; a delivery failure is logged, never raised
            logger.exception("%s: a delivery job failed", self.name)
        finally:
            self._done()


# --- shapes ---------------------------------------------------------------------------------------


def _arn_parts(arn: str) -> tuple[str, str, str, str]:
    """(service, region, account, resource) of an ARN."""
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        raise ValueError(f"not an ARN: {arn!r}")
    return parts[2], parts[3], parts[4], parts[5]


def _is_lambda(arn: str) -> bool:
    return arn.split(":")[2:3] == ["lambda"]


def _iso(when: Any) -> Any:
    """EventBridge's ``time``: moto keeps it in epoch seconds until a target needs it."""
    if isinstance(when, int | float):
        return datetime.fromtimestamp(float(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return when


def _millis(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


def envelope(event: dict[str, Any]) -> dict[str, Any]:
    """The event as EventBridge delivers it to a target, from moto's internal event message."""
    delivered = {
        "version": event.get("version", "0"),
        "id": event["id"],
        "detail-type": event["detail-type"],
        "source": event["source"],
        "account": event["account"],
        "time": _iso(event.get("time")),
        "region": event["region"],
        "resources": list(event.get("resources", [])),
        "detail": event.get("detail", {}),
    }
    if "replay-name" in event:
        delivered["replay-name"] = event["replay-name"]
    return delivered


def target_input(target: dict[str, Any], event: dict[str, Any], transform_input: bool = True) -> Any:
    """What a target receives: its Input, InputPath or InputTransformer applied, else the envelope."""
    delivered = envelope(event)
    if not transform_input:
        return delivered
    if "Input" in target:
        return json.loads(target["Input"])
    if "InputPath" in target:
        from jsonpath_ng.ext import parse  # type: ignore[attr-defined]

        matches = parse(target["InputPath"]).find(delivered)
        return matches[0].value if matches else None
    if "InputTransformer" in target:
        from moto.events.utils import EventTemplateParser

        transformer = target["InputTransformer"]
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event={**event, "time": delivered["time"]},  # type: ignore[typeddict-item]
        )
    return delivered


def status_change_detail(execution: Any, status: str) -> dict[str, Any]:
    """The ``detail`` of a "Step Functions Execution Status Change" event for a moto execution."""
    from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

    output = to_json_str(execution.output, separators=(",", ":")) if status == "SUCCEEDED" else None
    return {
        "executionArn": execution.exec_arn,
        "stateMachineArn": execution.state_machine_arn,
        "name": execution.name,
        "status": status,
        "startDate": _millis(execution.start_date),
        "stopDate": None if status == "RUNNING" else _millis(execution.stop_date),
        "input": execution.execution_input,
        "inputDetails": {"included": True},
        "output": output,
        "outputDetails": {"included": True} if output is not None else None,
        "error": execution.error,
        "cause": execution.cause,
    }


@dataclass
class _Settings:
    max_retries: int = DEFAULT_MAX_RETRY_ATTEMPTS
    max_age_seconds: float = DEFAULT_MAX_EVENT_AGE_SECONDS
    on_failure: str | None = None


def invoke_settings(function: FunctionConfig) -> _Settings:
    """The function's EventInvokeConfig as moto's Lambda holds it; Lambda's defaults without one."""
    from moto.awslambda.exceptions import UnknownFunctionException
    from moto.awslambda.models import lambda_backends

    _, region, account, _ = _arn_parts(function.arn)
    try:
        configs = lambda_backends[account][region].get_function(function.name).event_invoke_config
    except UnknownFunctionException:  # registered with the runtime only (tests do that)
        configs = []
    config = configs[-1].config if configs else {}
    return _Settings(
        max_retries=int(config.get("MaximumRetryAttempts", DEFAULT_MAX_RETRY_ATTEMPTS)),
        max_age_seconds=float(config.get("MaximumEventAgeInSeconds", DEFAULT_MAX_EVENT_AGE_SECONDS)),
        on_failure=(config.get("DestinationConfig") or {}).get("OnFailure", {}).get("Destination"),
    )


# --- the emulation --------------------------------------------------------------------------------


@dataclass
class _Invocation:
    function: FunctionConfig
    payload: Any
    request_id: str
    accepted: float
    attempts: int = 0
    response: Any = None


@dataclass(frozen=True)
class Outcome:
    """How one asynchronous invocation ended."""

    function: str
    request_id: str
    condition: str  # Success, RetriesExhausted or EventAgeExceeded, as Lambda names it
    attempts: int
    payload: Any
    response: Any
    destination: str | None  # where the invocation record went, if anywhere


@dataclass
class EventBridgeDelivery:
    """EventBridge's Lambda targets, Lambda's asynchronous invocation and Step Functions' status events.

    One is active per process (moto's backends are); ``Sandbox`` starts and stops it.
    """

    # The wait before the first retry of a failed invocation, twice that before the second.
    retry_delay_seconds: float = DEFAULT_RETRY_DELAY_SECONDS
    workers: int = 4
    # Measures an event's age against MaximumEventAgeInSeconds; tests may move it on.
    clock: Callable[[], float] = time.monotonic
    runtime: LambdaRuntime | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    active: ClassVar[EventBridgeDelivery | None] = None
    _counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _work: _Work | None = None

    def start(self, runtime: LambdaRuntime) -> EventBridgeDelivery:
        install()
        self.runtime = runtime
        self._work = _Work("sandbox-eventbridge", self.workers)
        self._work.start()
        runtime.async_invoke = self.invoke_async
        EventBridgeDelivery.active = self
        return self

    def stop(self) -> None:
        if EventBridgeDelivery.active is self:
            EventBridgeDelivery.active = None
        if self.runtime is not None and self.runtime.async_invoke == self.invoke_async:
            self.runtime.async_invoke = None
        if self._work is not None:
            self._work.stop()
            self._work = None

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until every queued delivery, invocation, retry and status event is done."""
        if self._work is not None and not self._work.drain(timeout):
            raise TimeoutError(f"EventBridge delivery still has {self._work.outstanding} jobs after {timeout}s")

    def counts(self) -> dict[str, int]:
        """What happened so far: ``events`` handed to Lambda targets, ``undeliverable`` targets (to their
        dead-letter queue), ``invocations`` run (retries included), ``errors`` among them, ``retries``,
        ``delivered`` (ended in success), ``failed`` (ended in failure), ``destination_records`` sent,
        ``status_changes`` put on a bus."""
        with self._lock:
            return dict(self._counts)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _submit(self, run: Callable[[], None], delay_seconds: float = 0.0, *, serial: bool = False) -> None:
        if self._work is not None:
            self._work.submit(run, delay_seconds, serial=serial)

    def _function(self, arn: str) -> FunctionConfig | None:
        """The registered function an ARN names, in its own account and region only."""
        assert self.runtime is not None
        config = self.runtime.resolve(arn)
        if config is None or _arn_parts(config.arn)[1:3] != _arn_parts(arn)[1:3]:
            return None
        return config

    # --- EventBridge ----------------------------------------------------------------------------

    def rule_matched(
        self, rule: Any, targets: list[dict[str, Any]], event: dict[str, Any], transform_input: bool
    ) -> None:
        """Called inside PutEvents for a matching rule's Lambda targets: queues their delivery."""
        rule_arn, event, targets = rule.arn, copy.deepcopy(event), copy.deepcopy(targets)
        for target in targets:
            self._submit(functools.partial(self._deliver, rule_arn, target, event, transform_input))

    def _deliver(self, rule_arn: str, target: dict[str, Any], event: dict[str, Any], transform_input: bool) -> None:
        payload = target_input(target, event, transform_input)
        function = self._function(target["Arn"])
        if function is not None:
            self._count("events")
            self.invoke_async(function, payload)
            return
        self._count("undeliverable")
        message = f"Function not found: {target['Arn']}"
        dead_letter = (target.get("DeadLetterConfig") or {}).get("Arn")
        if dead_letter is None:
            logger.warning("EventBridge dropped an event for %s: %s", rule_arn, message)
            return
        attributes = {
            "RULE_ARN": rule_arn,
            "TARGET_ARN": target["Arn"],
            "ERROR_CODE": "ResourceNotFoundException",
            "ERROR_MESSAGE": message,
        }
        self._send(dead_letter, payload, {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()})

    # --- Lambda's asynchronous invocation -------------------------------------------------------

    def invoke_async(self, function: FunctionConfig, payload: Any) -> str:
        """Accept an asynchronous invocation (Lambda's 202) and queue it; returns its request id."""
        invocation = _Invocation(function, payload, str(uuid.uuid4()), self.clock())
        self._submit(functools.partial(self._attempt, invocation))
        return invocation.request_id

    def _attempt(self, invocation: _Invocation) -> None:
        assert self.runtime is not None
        settings = invoke_settings(invocation.function)
        if self.clock() - invocation.accepted > settings.max_age_seconds:
            self._end(invocation, "EventAgeExceeded", settings)
            return
        invocation.attempts += 1
        self._count("invocations")
        try:
            invocation.response, errored = self.runtime.invoke(
                invocation.function, invocation.payload, invocation.request_id
            )
        except Exception as exc:  # the emulated service failed, not the function: Lambda retries those too
            logger.exception("invoking %s failed", invocation.function.name)
            invocation.response, errored = {"errorType": type(exc).__name__, "errorMessage": str(exc)}, True
        if not errored:
            self._end(invocation, "Success", settings)
            return
        self._count("errors")
        if invocation.attempts > settings.max_retries:
            self._end(invocation, "RetriesExhausted", settings)
            return
        self._count("retries")
        self._submit(functools.partial(self._attempt, invocation), self.retry_delay_seconds * invocation.attempts)

    def _end(self, invocation: _Invocation, condition: str, settings: _Settings) -> None:
        destination = None if condition == "Success" else settings.on_failure
        with self._lock:
            self._counts["delivered" if condition == "Success" else "failed"] += 1
            self.outcomes.append(
                Outcome(
                    invocation.function.name,
                    invocation.request_id,
                    condition,
                    invocation.attempts,
                    invocation.payload,
                    invocation.response,
                    destination,
                )
            )
        if condition == "Success":
            return
        if destination is None:
            logger.warning("Lambda discarded an event for %s: %s", invocation.function.name, condition)
            return
        self._send(destination, self.failure_record(invocation, condition))
        self._count("destination_records")

    @staticmethod
    def failure_record(invocation: _Invocation, condition: str) -> dict[str, Any]:
        """Lambda's invocation record for an on-failure destination."""
        now = datetime.now(UTC)
        response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if invocation.attempts:
            response_context["functionError"] = "Unhandled"
        return {
            "version": "1.0",
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "requestContext": {
                "requestId": invocation.request_id,
                "functionArn": f"{invocation.function.arn}:$LATEST",
                "condition": condition,
                "approximateInvokeCount": invocation.attempts,
            },
            "requestPayload": invocation.payload,
            "responseContext": response_context,
            "responsePayload": invocation.response,
        }

    def _send(self, arn: str, body: Any, sqs_attributes: dict[str, Any] | None = None) -> None:
        """Deliver a record (or a dead-lettered event) to a queue, topic, function or bus, in moto."""
        service, region, account, resource = _arn_parts(arn)
        text = json.dumps(body)
        try:
            if service == "sqs":
                from moto.sqs.models import sqs_backends

                sqs_backends[account][region].send_message(
                    queue_name=resource, message_body=text, message_attributes=sqs_attributes
                )
            elif service == "sns":
                from moto.sns.models import sns_backends

                sns_backends[account][region].publish(message=text, arn=arn)
            elif service == "lambda" and (function := self._function(arn)) is not None:
                self.invoke_async(function, body)
            elif service == "events":
                from moto.events.models import events_backends

                events_backends[account][region].put_events(
                    [
                        {
                            "Source": "lambda",
                            "DetailType": FAILURE_DETAIL_TYPE,
                            "Detail": text,
                            "EventBusName": resource.split("/", 1)[-1],
                            "Resources": [arn],
                        }
                    ]
                )
            else:
                raise ValueError(f"no such destination: {arn}")
        except Exception:  # AWS counts these (DestinationDeliveryFailures); the sandbox logs them
            self._count("destination_failures")
            logger.exception("could not deliver to %s", arn)

    # --- Step Functions -------------------------------------------------------------------------

    def execution_status_changed(self, execution: Any, status: str) -> None:
        """Called by moto's interpreter as an execution starts and ends: queues its status-change event."""
        sm_type = getattr(execution.sm_type, "value", execution.sm_type)
        if str(sm_type) == "EXPRESS":
            return
        detail = status_change_detail(execution, status)
        when = execution.start_date if status == "RUNNING" else (execution.stop_date or datetime.now(UTC))
        put = functools.partial(
            self._put_status_change, execution.account_id, execution.region_name, detail, when.timestamp()
        )
        self._submit(put, serial=True)

    def _put_status_change(self, account: str, region: str, detail: dict[str, Any], when: float) -> None:
        from moto.events.models import events_backends

        events_backends[account][region].put_events(
            [
                {
                    "Source": "aws.states",
                    "DetailType": STATUS_CHANGE,
                    "Detail": json.dumps(detail),
                    "Resources": [detail["executionArn"]],
                    "Time": when,
                }
            ]
        )
        self._count("status_changes")

    @contextmanager
    def _held(self) -> Iterator[None]:
        with self._work.held() if self._work is not None else nullcontext():
            yield


def announce_end(execution: Any) -> None:
    """Put an execution's final status change on the bus, once: when StopExecution ends it, or its interpreter."""
    delivery = EventBridgeDelivery.active
    with _install_lock:
        if delivery is None or getattr(execution, ANNOUNCED, False):
            return
        setattr(execution, ANNOUNCED, True)
    delivery.execution_status_changed(execution, execution.status)


# --- the patches ------------------------------------------------------------------------------------


def install() -> None:
    """Patch moto (once per process); harmless while no EventBridgeDelivery is active."""
    from moto.events.models import Rule
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution

    with _install_lock:
        if getattr(Rule, PATCHED, False):
            return
        send_to_targets = Rule.send_to_targets
        start = Execution.start
        terminated = BaseExecutionWorkerCommunication.terminated

        @functools.wraps(send_to_targets)
        def send_to_targets_and_lambda(self: Any, original_event: Any, transform_input: bool = True) -> None:
            delivery = EventBridgeDelivery.active
            if delivery is None:
                return send_to_targets(self, original_event, transform_input)
            if self.state != "ENABLED":
                return None
            lambdas = [t for t in self.targets if _is_lambda(t["Arn"])]
            if not lambdas:
                return send_to_targets(self, original_event, transform_input)
            if self.event_pattern.matches_event(original_event):
                delivery.rule_matched(self, lambdas, original_event, transform_input)
            others = [t for t in self.targets if not _is_lambda(t["Arn"])]
            if others:
                # moto's targets through moto, on a shallow copy so a concurrent PutTargets is not disturbed.
                rule = copy.copy(self)
                rule.targets = others
                send_to_targets(rule, original_event, transform_input)
            return None

        @functools.wraps(start)
        def start_and_announce(self: Any) -> None:
            delivery = EventBridgeDelivery.active
            # Queued before moto's worker thread starts, so RUNNING always comes before the end.
            if delivery is not None and self.exec_worker is None:  # moto refuses a second start
                delivery.execution_status_changed(self, "RUNNING")
            start(self)

        @functools.wraps(terminated)
        def terminated_and_announce(self: Any) -> None:
            delivery = EventBridgeDelivery.active
            if delivery is None:
                terminated(self)
                return
            # Held from before the status is visible (DescribeExecution) until its event is queued,
            # so a test that saw the end and then drains waits for that event too.
            with delivery._held():
                terminated(self)
                announce_end(self.execution)

        Rule.send_to_targets = send_to_targets_and_lambda  # type: ignore[method-assign]
        Execution.start = start_and_announce  # type: ignore[method-assign]
        BaseExecutionWorkerCommunication.terminated = terminated_and_announce  # type: ignore[method-assign]
        setattr(Rule, PATCHED, True)
