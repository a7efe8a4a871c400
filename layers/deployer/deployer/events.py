"""The deployer's own events on its EventBridge bus (source ``bbws.deployer``).

The state machine publishes most of them itself (its ``events:putEvents`` tasks); a
function publishes only what the state machine cannot see, such as "Approval Requested".
NotifyFunction's rule (template.yaml) turns every one of them into a Slack message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from deployer.aws import TRANSIENT_CODES, transient_errors
from deployer.errors import EventPublishFailed, TransientAwsError

SOURCE = "bbws.deployer"
APPROVAL_REQUESTED = "Approval Requested"
LOCK_RELEASED = "Lock Released"
# PutEvents reports a refused entry in its answer, not as an error; these codes are worth a retry.
TRANSIENT_ENTRY_CODES = TRANSIENT_CODES | {"InternalFailure", "InternalException"}


def publish(events: Any, bus: str, detail_type: str, detail: Mapping[str, Any]) -> str:
    """Put one event on ``bus`` and return its EventBridge id.

    ``events`` is an EventBridge client. Raises TransientAwsError when the call or the entry
    failed in a way worth retrying, EventPublishFailed when EventBridge refused the entry.
    """
    if not bus:
        raise EventPublishFailed(f"cannot publish {detail_type!r}: no event bus is configured (EVENT_BUS_NAME)")
    entry = {"EventBusName": bus, "Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail)}
    with transient_errors():
        response = events.put_events(Entries=[entry])
    result = response["Entries"][0]
    if response.get("FailedEntryCount", 0) or "EventId" not in result:
        code, message = result.get("ErrorCode", "unknown"), result.get("ErrorMessage", "")
        problem = f"EventBridge refused the {detail_type!r} event on bus {bus}: {code}: {message}"
        if code in TRANSIENT_ENTRY_CODES:
            raise TransientAwsError(problem)
        raise EventPublishFailed(problem)
    return str(result["EventId"])
