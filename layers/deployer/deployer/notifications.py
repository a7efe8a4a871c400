"""Slack notifications: every pipeline event, one thread per deployment.

NotifyFunction (template.yaml) receives the pipeline's events (source ``bbws.deployer``): the
state machine's putEvents tasks, the approval gate's "Approval Requested", the API's "Lock
Released", and "Deployment Closed" from CloseStoppedFunction, which reports an execution that
ended outside the pipeline (aborted, timed out, or failed past every Catch) once it has closed
its record and freed its lock (``deployer.stopped``).

Threading: the first notification posted for a deployment goes to the channel, and its ts is
kept on the deployment record as ``notifyThreadTs`` by a conditional write. Later ones reply
in that thread; outcomes are also broadcast to the channel. Two first notifications racing
(Deployment Started and Deployment Window Announced are published a moment apart, and
EventBridge keeps no order) both post to the channel: the first write keeps the thread, the
other message stays on its own. Without a record (an execution stopped before
StartDeployment) a message goes to the channel.

Idempotency: EventBridge and Lambda's async retries may deliver an event more than once. A
small item per posted event, ``NOTIFIED#<event id>``, in the records table says it was
posted and where. It is written right after the post, so a retry (say the thread write
failed) posts nothing and only finishes the thread write. A separate item, not a set on the
record: an event may have no record to write to, and an update would create a partial record
that StartDeployment's conditional create then refuses. A failure between the post and that
write posts twice: rare, and better than never.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from slack_sdk.errors import SlackClientError
from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, MarkdownTextObject, SectionBlock

from deployer import clock
from deployer.aws import error_code, transient_errors
from deployer.errors import NotificationFailed, SpecInvalid, SpecNotFound
from deployer.events import SOURCE
from deployer.observability import logger
from deployer.records import deployment_key, iso
from deployer.slack import HEADER_LIMIT, SECTION_TEXT_LIMIT, clip, escape, execution_console_url
from deployer.spec import ENVIRONMENT_NAME, EnvironmentSpec
from deployer.tooling import Tooling

# Block Kit: at most 10 fields per section, 2000 characters each.
MAX_FIELDS = 10
FIELD_LIMIT = 2000
EXECUTION_ARN = r"^arn:aws[a-z-]*:states:[a-z0-9-]+:[0-9]{12}:execution:[^:]+:[^:]+$"

Detail = Mapping[str, Any]
Record = Mapping[str, Any]


@dataclass(frozen=True)
class Notification:
    """One Slack message about one deployment, and what is needed to place it."""

    deployment_id: str | None
    environment: str | None
    # The spec version the event itself names, if it names one (its channel is that version's).
    spec_version: str | None
    text: str
    blocks: list[dict[str, Any]]
    # Failures, rollbacks, incidents and stopped executions mention the environment's mentionOnFailure.
    alert: bool = False
    # An outcome: a reply in the thread is broadcast to the channel as well.
    terminal: bool = False
    # For the incident channel (policy.emergency.channel), not the deployment's thread.
    incident: bool = False

    def mentioning(self, ids: Sequence[str]) -> Notification:
        """This notification with ``ids`` mentioned, if it is an alert."""
        if not self.alert or not ids:
            return self
        who = " ".join(mention(i) for i in ids)
        section = SectionBlock(block_id="mentions", text=MarkdownTextObject(text=f"cc {who}"))
        return replace(self, text=f"{self.text} cc {who}", blocks=[*self.blocks, section.to_dict()])


def mention(slack_id: str) -> str:
    """A user (U…, W…) or user group (S…) mention."""
    return f"<!subteam^{slack_id}>" if slack_id.startswith("S") else f"<@{slack_id}>"


@dataclass
class _About:
    """Who and what the message is about, from the event's detail first, then the record."""

    deployment_id: str | None
    environment: str | None
    requested_by: str | None
    change_ticket: str | None
    execution_arn: str | None
    spec_version: str | None

    @property
    def env(self) -> str:
        return self.environment or "unknown"


@dataclass
class _Draft:
    emoji: str
    headline: str
    facts: list[tuple[str, str]] = field(default_factory=list)  # (label, mrkdwn value, escaped)
    lines: list[str] = field(default_factory=list)  # mrkdwn, escaped
    alert: bool = False
    terminal: bool = False
    # Posted in the policy's incident channel (policy.emergency.channel), outside the deployment's thread.
    incident: bool = False


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _first(*values: Any) -> str | None:
    return next((s for s in (_str(v) for v in values) if s is not None), None)


def _date(value: Any) -> str:
    """An ISO 8601 time as Slack's <!date>, shown in the reader's own time zone."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return escape(str(value))
    if moment.tzinfo is None:
        return escape(str(value))
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{iso(moment)}>"


def _cause_text(cause: Any) -> str | None:
    """A Lambda error's cause is its JSON payload: keep just the message."""
    text = _str(cause)
    if text is None:
        return None
    try:
        payload = json.loads(text)
    except ValueError:
        return text
    return str(payload.get("errorMessage", text)) if isinstance(payload, dict) else text


def _plan_summary(detail: Detail, record: Record) -> str | None:
    if _str(detail.get("planSummary")):
        return str(detail["planSummary"])
    recorded = record.get("plan")
    if isinstance(recorded, dict) and _str(recorded.get("summary")):
        return str(recorded["summary"])
    plan = detail.get("plan")
    if isinstance(plan, dict) and all(isinstance(plan.get(k), int) for k in ("add", "change", "unchanged")):
        return f"Plan: {plan['add']} to add, {plan['change']} to change, {plan['unchanged']} unchanged."
    return None


def _plan_line(summary: str | None) -> list[str]:
    return [f"*Plan* {escape(summary.removeprefix('Plan: '))}"] if summary else []


def _error_lines(error: Any, cause: Any) -> list[str]:
    lines = [f"*Error* `{escape(str(error))}`"] if _str(error) else []
    text = _cause_text(cause)
    if text:
        lines.append(f"*Cause* {escape(clip(text, 1500))}")
    return lines


def _decision_lines(record: Record) -> list[str]:
    decision = record.get("decision")
    if not isinstance(decision, dict) or not decision.get("criterion"):
        return []
    line = f"*Criterion* `{escape(str(decision['criterion']))}`"
    if _str(decision.get("reason")):
        line += f": {escape(str(decision['reason']))}"
    return [line]


# ---------------------------------------------------------------- the pipeline's events


def _started(detail: Detail, _record: Record, about: _About) -> _Draft:
    env, dry_run, rollback_to = about.env, bool(detail.get("dryRun")), _str(detail.get("rollbackTo"))
    if rollback_to:
        draft = _Draft(":rewind:", f"{env} rollback to deployment {rollback_to} started")
    else:
        draft = _Draft(":rocket:", f"{env} {'dry run' if dry_run else 'deployment'} started")
    regions = detail.get("regions")
    if isinstance(regions, list) and regions:
        draft.facts.append(("Regions", ", ".join(f"`{escape(str(r))}`" for r in regions)))
    policy = detail.get("policy")
    if isinstance(policy, dict) and policy.get("approvalsRequired"):
        draft.facts.append(("Approvals required", escape(str(policy["approvalsRequired"]))))
    schedule = detail.get("schedule")
    if isinstance(schedule, dict) and schedule.get("scheduledFor"):
        draft.facts.append(("Scheduled for", _date(schedule["scheduledFor"])))
    if _str(detail.get("promotionOverride")):
        draft.lines.append(f"*Promotion override* {escape(str(detail['promotionOverride']))}")
    if _str(detail.get("emergency")):
        draft.lines.append(f"*Emergency, without the notice* {escape(str(detail['emergency']))}")
    if dry_run:
        draft.lines.append("A dry run: the plan is computed and recorded, nothing is changed.")
    return draft


def _approval_requested(detail: Detail, record: Record, about: _About) -> _Draft:
    draft = _Draft(":raised_hand:", f"{about.env} deployment waiting for approval")
    draft.facts.append(("Approvals needed", escape(str(detail.get("required", "?")))))
    if detail.get("expiresAt"):
        draft.facts.append(("Expires", _date(detail["expiresAt"])))
    draft.lines.extend(_plan_line(_plan_summary(detail, record)))
    approvers = detail.get("approvers")
    if isinstance(approvers, list) and approvers:
        draft.lines.append("*Approvers* " + ", ".join(escape(str(a)) for a in approvers))
    draft.lines.append("Approvers vote with the buttons on the approval message.")
    return draft


def _window_announced(detail: Detail, _record: Record, about: _About) -> _Draft:
    window = _str(detail.get("windowText")) or _str(detail.get("scheduledFor")) or "a scheduled time"
    if about.deployment_id:
        draft = _Draft(":calendar:", f"{about.env} deployment scheduled: {window}")
    else:
        ticket = f"change {about.change_ticket}" if about.change_ticket else "a change"
        draft = _Draft(":calendar:", f"{about.env} {ticket} announced: {window}")
    if _str(detail.get("announcedBy")):
        draft.facts.append(("Announced by", escape(str(detail["announcedBy"]))))
    if detail.get("scheduledFor"):
        draft.facts.append(("Starts", _date(detail["scheduledFor"])))
    if detail.get("windowEndUtc"):
        draft.facts.append(("Window ends", _date(detail["windowEndUtc"])))
    for label, key in (("Expected downtime", "expectedDowntime"), ("Escalation", "escalation")):
        if _str(detail.get(key)):
            draft.facts.append((label, escape(str(detail[key]))))
    if detail.get("rollbackEstimateMinutes") is not None:
        draft.facts.append(("Rollback estimate", f"{escape(str(detail['rollbackEstimateMinutes']))} minutes"))
    draft.lines.append(f"*Window* {escape(window)}")
    if _str(detail.get("allowedWindow")):
        draft.lines.append(f"*Allowed window* {escape(str(detail['allowedWindow']))}")
    return draft


def _emergency(detail: Detail, _record: Record, about: _About) -> _Draft:
    """StartDeployment's "Emergency Deployment Declared": posted in the policy's incident channel."""
    hours = detail.get("minimumNoticeHours")
    notice = f"{escape(str(hours))} hours' notice" if hours is not None else "the notice"
    draft = _Draft(":rotating_light:", f"Emergency {about.env} deployment without {notice}", alert=True)
    draft.incident = True
    required, extra = detail.get("approvalsRequired"), detail.get("extraApprovals")
    if required is not None:
        draft.facts.append(("Approvals required", f"{escape(str(required))} ({escape(str(extra))} extra)"))
    draft.lines.append(f"*Reason* {escape(str(detail.get('reason') or 'none given'))}")
    draft.lines.append(
        f"It was not announced ahead as {escape(about.env)}'s policy requires; it applies only once approved."
    )
    return draft


def _succeeded(detail: Detail, record: Record, about: _About) -> _Draft:
    warnings = detail.get("status") == "SUCCEEDED_WITH_WARNINGS"
    if warnings:
        draft = _Draft(":warning:", f"{about.env} deployment succeeded with warnings", terminal=True)
    else:
        draft = _Draft(":white_check_mark:", f"{about.env} deployment succeeded", terminal=True)
    draft.lines.extend(_plan_line(_plan_summary(detail, record)))
    if detail.get("mutatingCalls") is not None:
        draft.facts.append(("Mutating AWS calls", escape(str(detail["mutatingCalls"]))))
    if warnings:
        draft.lines.append("A failure was fixed forward, as the rollback policy says; it needs a follow-up.")
        draft.lines.extend(_decision_lines(record))
        draft.lines.extend(_error_lines(detail.get("error"), detail.get("cause")))
    return draft


def _failed(detail: Detail, record: Record, about: _About) -> _Draft:
    error = _first(detail.get("error"), record.get("error"))
    draft = _Draft(":x:", f"{about.env} deployment failed" + (f": {error}" if error else ""), alert=True, terminal=True)
    draft.lines.extend(_error_lines(error, _first(detail.get("cause"), record.get("cause"))))
    draft.lines.extend(_plan_line(_plan_summary(detail, record)))
    return draft


def _planned(detail: Detail, record: Record, about: _About) -> _Draft:
    draft = _Draft(":memo:", f"{about.env} dry run planned", terminal=True)
    draft.lines.extend(_plan_line(_plan_summary(detail, record)) or ["*Plan* not recorded"])
    plan = detail.get("plan")
    if isinstance(plan, dict) and plan.get("hash"):
        draft.facts.append(("Plan hash", f"`{escape(str(plan['hash']))}`"))
    draft.lines.append("Nothing was changed.")
    return draft


def _rollback_started(detail: Detail, _record: Record, about: _About) -> _Draft:
    criterion = _str(detail.get("criterion"))
    headline = f"{about.env} deployment rolling back" + (f" ({criterion})" if criterion else "")
    draft = _Draft(":rewind:", headline, alert=True)
    if criterion:
        draft.facts.append(("Criterion", f"`{escape(criterion)}`"))
    if _str(detail.get("error")):
        draft.facts.append(("Failure", f"`{escape(str(detail['error']))}`"))
    if _str(detail.get("reason")):
        draft.lines.append(f"*Reason* {escape(str(detail['reason']))}")
    draft.lines.append("The deployment is undone from the prior state recorded at plan time; no data is deleted.")
    return draft


def _rollback_completed(detail: Detail, record: Record, about: _About) -> _Draft:
    draft = _Draft(":leftwards_arrow_with_hook:", f"{about.env} deployment rolled back", alert=True, terminal=True)
    draft.lines.extend(_decision_lines(record))
    draft.lines.extend(_error_lines(_first(detail.get("error"), record.get("error")), detail.get("cause")))
    draft.lines.append("The rollback was validated: prior configuration restored, no items or object versions lost.")
    return draft


def _incident(detail: Detail, record: Record, about: _About) -> _Draft:
    draft = _Draft(":rotating_light:", f"Incident: {about.env} rollback failed", alert=True, terminal=True)
    draft.lines.extend(_decision_lines(record))
    draft.lines.extend(_error_lines(_first(detail.get("error"), record.get("error")), record.get("cause")))
    if about.execution_arn:
        draft.lines.append(f"The post-incident report: `deployer report {escape(about.execution_arn)}`.")
    draft.lines.append("Re-running the rollback resumes it; every action reads the current state first.")
    return draft


def _lock_released(detail: Detail, _: Record, about: _About) -> _Draft:
    draft = _Draft(":unlock:", f"{about.env} lock released by hand", alert=True)
    draft.facts.append(("Released by", escape(str(detail.get("releasedBy", "unknown")))))
    draft.lines.append(f"*Reason* {escape(str(detail.get('reason', '')))}")
    status = _str(detail.get("executionStatus"))
    draft.lines.append(
        f"The deployment holding it had ended ({escape(status)})." if status else "Its execution no longer exists."
    )
    return draft


def _closed(detail: Detail, _: Record, about: _About) -> _Draft:
    """CloseStoppedFunction's report on an execution that ended outside the pipeline (deployer.stopped)."""
    status, env = str(detail.get("executionStatus") or "?"), escape(about.env)
    if status == "ABORTED":
        draft = _Draft(":octagonal_sign:", f"{about.env} deployment aborted")
    elif status == "TIMED_OUT":
        draft = _Draft(":hourglass:", f"{about.env} deployment timed out")
    else:
        error = _str(detail.get("error"))
        draft = _Draft(":x:", f"{about.env} deployment failed outside the pipeline" + (f": {error}" if error else ""))
    draft.alert = draft.terminal = True
    draft.facts.append(("Execution status", f"`{escape(status)}`"))
    draft.lines.extend(_error_lines(detail.get("error"), detail.get("cause")))
    record, lock = detail.get("record"), detail.get("lock") or {}
    if record == "none":
        draft.lines.append("It stopped before its deployment record was opened: it took no lock and changed nothing.")
    elif record == "closed":
        draft.lines.append(f"Its record is closed as `{escape(status)}`.")
    if lock.get("outcome") == "released":
        draft.lines.append(f"The {env} lock it held is released.")
    elif lock.get("outcome") == "kept":
        running = ", ".join(escape(str(s)) for s in lock.get("inFlight") or []) or "a step"
        draft.lines.append(
            f"The {env} lock stays held until {_date(lock.get('until'))}: {running} was still running when the "
            "execution ended, and Step Functions does not stop a running function. The lock frees itself then; "
            f"once you have checked what it changed, `deployer unlock --env {env} --reason ...` frees it sooner."
        )
    elif record != "none" and _str(lock.get("holder")):
        draft.lines.append(f"It no longer held the {env} lock: deployment `{escape(str(lock['holder']))}` holds it.")
    if about.execution_arn:
        draft.lines.append(f"Check with `deployer status {escape(about.execution_arn)}`.")
    return draft


PIPELINE_EVENTS: dict[str, Callable[[Detail, Record, _About], _Draft]] = {
    "Deployment Started": _started,
    "Approval Requested": _approval_requested,
    "Deployment Window Announced": _window_announced,
    "Deployment Succeeded": _succeeded,
    "Deployment Failed": _failed,
    "Deployment Planned": _planned,
    "Rollback Started": _rollback_started,
    "Rollback Completed": _rollback_completed,
    "Incident Declared": _incident,
    "Lock Released": _lock_released,
    "Deployment Closed": _closed,
    "Emergency Deployment Declared": _emergency,
}


# ---------------------------------------------------------------- building the message


def deployment_id_of(event: Mapping[str, Any]) -> str | None:
    """The deployment an event is about (detail.deploymentId)."""
    detail = event.get("detail")
    return _str(detail.get("deploymentId")) if isinstance(detail, dict) else None


def notification_for(event: Mapping[str, Any], record: Record | None = None) -> Notification | None:
    """The Slack message for an EventBridge event, or None if there is nothing to post.

    ``record`` is the deployment's record, None if it has none: it fills in what the event does not carry.
    """
    detail, detail_type = event.get("detail"), event.get("detail-type")
    if not isinstance(detail, dict) or event.get("source") != SOURCE or detail_type not in PIPELINE_EVENTS:
        return None
    known = record or {}
    about = _about(detail, known, event)
    return _render(PIPELINE_EVENTS[str(detail_type)](detail, known, about), about)


def _about(detail: Detail, record: Record, event: Mapping[str, Any]) -> _About:
    return _About(
        deployment_id=deployment_id_of(event),
        environment=_first(detail.get("environment"), record.get("environment")),
        requested_by=_first(detail.get("requestedBy"), record.get("requestedBy")),
        change_ticket=_first(detail.get("changeTicket"), record.get("changeTicket")),
        execution_arn=_first(detail.get("executionArn"), record.get("executionArn")),
        spec_version=_str(detail.get("specVersion")),
    )


def _render(draft: _Draft, about: _About) -> Notification:
    facts = [
        ("Environment", escape(about.environment or "unknown")),
        ("Deployment", f"`{escape(about.deployment_id)}`" if about.deployment_id else "not started yet"),
        ("Requested by", escape(about.requested_by or "unknown")),
        ("Change ticket", escape(about.change_ticket) if about.change_ticket else "none"),
        *draft.facts,
    ]
    blocks: list[Block] = [HeaderBlock(text=clip(f"{draft.emoji} {draft.headline}", HEADER_LIMIT))]
    for start in range(0, len(facts), MAX_FIELDS):
        fields = [
            MarkdownTextObject(text=clip(f"*{label}*\n{value}", FIELD_LIMIT))
            for label, value in facts[start : start + MAX_FIELDS]
        ]
        blocks.append(SectionBlock(fields=fields))
    if draft.lines:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=clip("\n".join(draft.lines), SECTION_TEXT_LIMIT))))
    if about.execution_arn and re.fullmatch(EXECUTION_ARN, about.execution_arn):
        link = f"<{execution_console_url(about.execution_arn)}|View the execution in the Step Functions console>"
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=link)]))
    text = f"{draft.headline} (deployment {about.deployment_id or 'unknown'}"
    text += f", requested by {about.requested_by})" if about.requested_by else ")"
    return Notification(
        deployment_id=about.deployment_id,
        environment=about.environment,
        spec_version=about.spec_version,
        text=escape(text),
        blocks=[b.to_dict() for b in blocks],
        alert=draft.alert,
        terminal=draft.terminal,
        incident=draft.incident,
    )


# ---------------------------------------------------------------- posting


def notify(event: dict[str, Any], tooling: Tooling) -> dict[str, Any]:
    """Post one EventBridge event to its environment's Slack channel, in the deployment's thread.

    Returns what happened: ``posted`` (channel, ts, threadTs), ``duplicate`` (posted before)
    or ``skipped`` (nothing to say, or nowhere to say it). Raises NotificationFailed when
    Slack does not take the message, so that Lambda retries the event and, after its
    retries, the dead-letter queue keeps it.
    """
    event_id, detail_type = _str(event.get("id")), str(event.get("detail-type", ""))
    deployment_id = deployment_id_of(event)
    record = tooling.records.get(deployment_id) if deployment_id else None
    notification = notification_for(event, record)
    if notification is None:
        return _skipped(event_id, detail_type, "nothing to post for this event")
    delivered = _delivered(tooling, event_id) if event_id else None
    if delivered is not None:
        # Posted by an earlier attempt: at most its thread write is left to do.
        if deployment_id and not delivered.get("threadTs"):
            _claim_thread(tooling, deployment_id, str(delivered["ts"]))
        return {"status": "duplicate", "eventId": event_id, "detailType": detail_type, "ts": delivered.get("ts")}
    channel, mentions, reason = _destination(tooling, notification, record)
    if channel is None:
        return _skipped(event_id, detail_type, reason)
    notification = notification.mentioning(mentions)
    thread_ts = None if notification.incident else _str((record or {}).get("notifyThreadTs"))
    ts = _post(tooling, channel, notification, thread_ts, detail_type)
    if event_id:
        _mark_delivered(
            tooling,
            event_id,
            detail_type=detail_type,
            deployment_id=deployment_id,
            channel=channel,
            ts=ts,
            thread_ts=thread_ts,
        )
    if thread_ts is None and deployment_id and record is not None and not notification.incident:
        _claim_thread(tooling, deployment_id, ts)
    logger.info("notification posted", extra={"detailType": detail_type, "channel": channel, "threadTs": thread_ts})
    return {
        "status": "posted",
        "eventId": event_id,
        "detailType": detail_type,
        "channel": channel,
        "ts": ts,
        "threadTs": thread_ts,
    }


def _skipped(event_id: str | None, detail_type: str, reason: str) -> dict[str, Any]:
    logger.info("notification skipped", extra={"detailType": detail_type, "eventId": event_id, "reason": reason})
    return {"status": "skipped", "eventId": event_id, "detailType": detail_type, "reason": reason}


def _destination(
    tooling: Tooling, notification: Notification, record: Record | None
) -> tuple[str | None, list[str], str]:
    """(channel, mentions, why not): the channel of the spec version the deployment runs, else the latest."""
    environment = notification.environment
    if not environment or not re.fullmatch(ENVIRONMENT_NAME, environment):
        return None, [], f"the event names no known environment ({environment!r})"
    version = notification.spec_version or _str((record or {}).get("specVersion"))
    try:
        spec = _spec(tooling, environment, version)
    except (SpecNotFound, SpecInvalid) as exc:
        logger.warning("no spec to find the notification channel in", extra={"environment": environment})
        return None, [], f"no usable spec for {environment}: {exc}"
    channel = spec.policy.notification_channel()
    if notification.incident and spec.policy.emergency is not None:
        channel = spec.policy.emergency.channel
    if channel is None:
        logger.warning("no notification channel configured", extra={"environment": environment})
        return None, [], f"{environment} has neither policy.notifications.channel nor policy.approvals.channel"
    return channel, spec.policy.mention_on_failure(), ""


def _spec(tooling: Tooling, environment: str, version: str | None) -> EnvironmentSpec:
    try:
        spec, _ = tooling.specs.get(environment, version)
    except (SpecNotFound, SpecInvalid):
        if version is None:
            raise
        # A pinned version can be gone (a lifecycle rule expiring old versions): better the
        # latest spec's channel than no message at all.
        logger.warning("pinned spec version unusable, using the latest", extra={"specVersion": version})
        spec, _ = tooling.specs.get(environment)
    return spec


def _post(tooling: Tooling, channel: str, notification: Notification, thread_ts: str | None, what: str) -> str:
    try:
        return tooling.slack.post(
            channel,
            notification.text,
            notification.blocks,
            thread_ts=thread_ts,
            reply_broadcast=notification.terminal and thread_ts is not None,
        )
    except (SlackClientError, OSError) as exc:
        # SlackApiError covers Slack's error answers, rate limits (429) and 5xx; OSError a connection that failed.
        raise NotificationFailed(
            f"Slack did not take the {what!r} notification of deployment {notification.deployment_id} "
            f"for {channel}: {type(exc).__name__}: {exc}"
        ) from exc


NOTIFIED_RETENTION_SECONDS = 30 * 24 * 3600


def _notified_key(event_id: str) -> dict[str, str]:
    return {"pk": f"NOTIFIED#{event_id}", "sk": "NOTIFIED"}


def _delivered(tooling: Tooling, event_id: str) -> dict[str, Any] | None:
    with transient_errors():
        item = tooling.records.table.get_item(Key=_notified_key(event_id), ConsistentRead=True).get("Item")
    return dict(item) if item else None


def _mark_delivered(
    tooling: Tooling,
    event_id: str,
    *,
    detail_type: str,
    deployment_id: str | None,
    channel: str,
    ts: str,
    thread_ts: str | None,
) -> None:
    # UpdateItem creates the item (NotifyFunction may GetItem and UpdateItem, nothing else).
    values = {
        "deploymentId": deployment_id,
        "detailType": detail_type,
        "channel": channel,
        "ts": ts,
        "threadTs": thread_ts,
        "notifiedAt": iso(clock.now()),
        # Only retries need this marker (EventBridge gives up within a day): DynamoDB's TTL removes it.
        "expiresAt": int(clock.now().timestamp()) + NOTIFIED_RETENTION_SECONDS,
    }
    present = {k: v for k, v in values.items() if v is not None}
    _conditional_update(
        tooling,
        Key=_notified_key(event_id),
        UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(present))),
        ConditionExpression="attribute_not_exists(pk)",
        ExpressionAttributeNames={f"#f{i}": k for i, k in enumerate(present)},
        ExpressionAttributeValues={f":v{i}": v for i, v in enumerate(present.values())},
    )


def _claim_thread(tooling: Tooling, deployment_id: str, ts: str) -> bool:
    """Make ``ts`` the deployment's thread unless one is kept already, or there is no record to keep it on."""
    return _conditional_update(
        tooling,
        Key=deployment_key(deployment_id),
        UpdateExpression="SET notifyThreadTs = :ts",
        ConditionExpression="attribute_exists(pk) AND attribute_not_exists(notifyThreadTs)",
        ExpressionAttributeValues={":ts": ts},
    )


def _conditional_update(tooling: Tooling, **kwargs: Any) -> bool:
    """An UpdateItem with a condition; False when the condition did not hold."""
    try:
        with transient_errors():
            tooling.records.table.update_item(**kwargs)
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return False
    return True
