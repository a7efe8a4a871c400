"""Stops a Step Functions execution as AWS does, which moto 5.2.5 does only between states.

moto 5.2.5's StopExecution marks the interpreter's program stopped and wakes nothing: an
execution waiting for a task token (``.waitForTaskToken``) keeps waiting until the task's
timeout (hours, for an approval), RUNNING all that while, and its token still completes the
task. It also drops StopExecution's ``error`` and ``cause``. What AWS does and this module
repeats:

- **The execution ends at once.** StopExecution on a RUNNING execution makes it ABORTED
  with the stop date StopExecution returns; DescribeExecution says so straight away, with the
  ``error`` and ``cause`` given (absent when not given), and the "Execution Status Change"
  event (ABORTED) is put on the default bus then (``eventbridge_delivery.announce_end``), not
  when the interpreter's thread gets round to it.
- **Its task-token waits end.** Every callback endpoint of the execution is woken and closed:
  SendTaskSuccess, SendTaskFailure and SendTaskHeartbeat with one of its tokens answer
  TaskTimedOut ("Provided task does not exist anymore"), as AWS answers for a task that
  closed. Wait states end too (moto wakes those itself).
- **The history ends with ExecutionAborted** (its error and cause), added at the stop; what
  the interpreter's thread records as it unwinds (moto records the woken wait as a
  TaskTimedOut and the execution as failed) is dropped, as AWS records nothing after the end.
- **A Lambda invocation in flight is not stopped**, on AWS as here: the function runs to its
  end and its result is discarded. The interpreter's thread ends then, and the status, stop
  date, error and cause StopExecution set stand.
- Stopping an execution that has ended changes nothing (moto's own behaviour).

moto internals this depends on (pin: moto==5.2.5), patched once per process by ``install()``:
- ``moto.stepfunctions.responses.StepFunctionResponse.stop_execution`` (reads the request) and
  ``moto.stepfunctions.models.StateMachine.stop_execution`` (calls ``Execution.stop`` with
  empty error and cause, which this module replaces by the request's);
- ``moto.stepfunctions.parser.backend.execution.Execution.stop`` / ``exec_status`` /
  ``stop_date`` / ``error`` / ``cause`` / ``exec_worker.env.callback_pool_manager._pool``, and
  ``BaseExecutionWorkerCommunication._reflect_execution_status``;
- ``moto.stepfunctions.parser.asl.eval.event.event_manager.EventManager.add_event`` and
  ``EventHistoryContext``;
- ``moto.stepfunctions.parser.asl.eval.callback.callback.CallbackEndpoint.report`` /
  ``interrupt_all`` and ``CallbackConsumerLeft``;
- ``moto.stepfunctions.parser.models.StepFunctionsParserBackend.send_task_success`` /
  ``send_task_failure`` / ``send_task_heartbeat``.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from typing import Any

from moto.core.exceptions import AWSError

from sandbox.eventbridge_delivery import announce_end

PATCHED = "__sandbox_sfn_stop__"
# Set on an execution StopExecution ended: the stop date it returned.
STOPPED_AT = "__sandbox_stopped_at__"
# Set on an execution's event manager once its history has its ExecutionAborted event.
SEALED = "__sandbox_history_sealed__"
TASK_GONE = "Task Timed Out: 'Provided task does not exist anymore'"
_install_lock = threading.Lock()
# StopExecution's error and cause, from the request to the execution it stops (moto drops them).
_reason: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "sandbox_stop_reason", default=(None, None)
)
# The task tokens of executions StopExecution ended: answered TaskTimedOut from then on.
_closed_tokens: set[str] = set()


class TaskTimedOut(AWSError):
    TYPE = "TaskTimedOut"
    STATUS = 400


def stop_now(execution: Any, stop_date: Any) -> bool:
    """End a RUNNING execution as StopExecution does on AWS; False if it had already ended."""
    from moto.stepfunctions.parser.api import ExecutionAbortedEventDetails, ExecutionStatus, HistoryEventType
    from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackConsumerLeft
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventHistoryContext

    if execution.exec_status != ExecutionStatus.RUNNING or execution.exec_worker is None:
        return False
    error, cause = _reason.get()
    execution.error, execution.cause = error, cause
    execution.stop_date = stop_date
    setattr(execution, STOPPED_AT, stop_date)
    execution.exec_status = ExecutionStatus.ABORTED
    env = execution.exec_worker.env
    # The history ends here, as on AWS: what the interpreter's thread records as it unwinds is dropped.
    env.event_manager.add_event(
        context=EventHistoryContext(previous_event_id=0),
        event_type=HistoryEventType.ExecutionAborted,
        event_details=EventDetails(
            executionAbortedEventDetails=ExecutionAbortedEventDetails(
                **{k: v for k, v in (("error", error), ("cause", cause)) if v is not None}
            )
        ),
        update_source_event_id=False,
    )
    setattr(env.event_manager, SEALED, True)
    for token, endpoint in list(env.callback_pool_manager._pool.items()):
        _closed_tokens.add(token)
        endpoint.report(CallbackConsumerLeft())
        endpoint.interrupt_all()
    announce_end(execution)
    return True


def install() -> None:
    """Patch moto (once per process)."""
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    with _install_lock:
        if getattr(Execution, PATCHED, False):
            return
        respond = StepFunctionResponse.stop_execution
        stop = Execution.stop
        reflect = BaseExecutionWorkerCommunication._reflect_execution_status
        add_event = EventManager.add_event

        @functools.wraps(respond)
        def stop_execution_with_reason(self: Any) -> Any:
            token = _reason.set((self._get_param("error"), self._get_param("cause")))
            try:
                return respond(self)
            finally:
                _reason.reset(token)

        @functools.wraps(stop)
        def stop_at_once(self: Any, stop_date: Any, error: str | None, cause: str | None) -> None:
            stop(self, stop_date=stop_date, error=error, cause=cause)  # the interpreter's program stops
            stop_now(self, stop_date)

        @functools.wraps(reflect)
        def reflect_unless_stopped(self: Any) -> None:
            # The interpreter's thread ended after StopExecution: the end StopExecution set stands.
            if getattr(self.execution, STOPPED_AT, None) is None:
                reflect(self)

        def refusing_closed(send: Any) -> Any:
            @functools.wraps(send)
            def send_unless_closed(self: Any, task_token: str, *args: Any, **kwargs: Any) -> Any:
                if task_token in _closed_tokens:
                    raise TaskTimedOut(TASK_GONE)
                return send(self, task_token, *args, **kwargs)

            return send_unless_closed

        @functools.wraps(add_event)
        def add_event_unless_sealed(self: Any, *args: Any, **kwargs: Any) -> int:
            return 0 if getattr(self, SEALED, False) else int(add_event(self, *args, **kwargs))

        StepFunctionResponse.stop_execution = stop_execution_with_reason  # type: ignore[method-assign]
        Execution.stop = stop_at_once  # type: ignore[method-assign]
        BaseExecutionWorkerCommunication._reflect_execution_status = reflect_unless_stopped  # type: ignore[method-assign]
        EventManager.add_event = add_event_unless_sealed  # type: ignore[method-assign]
        for name in ("send_task_success", "send_task_failure", "send_task_heartbeat"):
            setattr(StepFunctionsParserBackend, name, refusing_closed(getattr(StepFunctionsParserBackend, name)))
        setattr(Execution, PATCHED, True)
