"""Notice of every change (runbook section 6 step 1): announce the window, then apply only inside it.

An environment with ``minimumNoticeHours`` applies a deployment only inside a window announced
for its change ticket at least that long before: ``deployer announce`` (the API's
``POST /announcements``, or an ``announceOnly`` execution input) or a scheduled run (``--at``),
which announces as it starts. The check runs when a deployment starts, so an unannounced one
asks nobody for approval, and again right before it applies (CheckWindow), which is what the
notice is for. ``--emergency REASON`` is the one way past it, at the policy's price
(``policy.emergency``): more approvals, and the incident channel told.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from deployer.errors import InputInvalid, NoticeTooShort
from deployer.events import publish
from deployer.models import Requester
from deployer.records import RecordStore, iso
from deployer.spec import EnvironmentSpec, Policy
from deployer.tooling import Tooling
from deployer.windows import ANNOUNCEMENT_DETAIL_TYPE, announcement, duration, validate_schedule

EMERGENCY_DETAIL_TYPE = "Emergency Deployment Declared"


def announce(
    tooling: Tooling,
    spec: EnvironmentSpec,
    *,
    change_ticket: str | None,
    scheduled_for: datetime,
    announced_by: Requester,
    now: datetime,
    execution_name: str | None = None,
    scheduled_run: bool = False,
) -> dict[str, Any]:
    """Record and publish the window at ``scheduled_for`` for ``change_ticket``; returns the announcement kept.

    Refused (ScheduleRefused) in the past, with less than minimumNoticeHours' notice, or outside
    the policy's window. Where notice is required, an announcement names its change ticket
    (InputInvalid without one). An execution retried (``execution_name``) announces once: its
    announcement is published again, never kept twice. ``scheduled_run``: the execution is the
    deployment itself (``--at``), which the announcement then names.
    """
    if not change_ticket and spec.policy.minimum_notice_hours:
        raise InputInvalid(
            f"an announcement of a {spec.environment} window names the change ticket it is for (changeTicket): "
            "the deployment of that ticket is the one it allows"
        )
    validate_schedule(spec.policy, scheduled_for, now)
    earlier = [
        a
        for a in tooling.records.announcements(spec.environment, change_ticket)
        if execution_name is not None and a.get("executionName") == execution_name
    ]
    if earlier:
        kept = earlier[0]
    else:
        detail = {
            **announcement(spec, scheduled_for, change_ticket),
            "announcedAt": iso(now),
            "announcedBy": announced_by.name,
            "minimumNoticeHours": spec.policy.minimum_notice_hours,
        }
        if scheduled_run:
            detail["deploymentId"] = execution_name
        fields = {
            "changeTicket": change_ticket,
            "windowStart": detail["windowStartUtc"],
            "windowEnd": detail["windowEndUtc"],
            "announcedBy": announced_by.dump(),
            "executionName": execution_name,
            "detail": detail,
        }
        announcement_id = tooling.records.put_announcement(spec.environment, now, fields)
        kept = {**fields, "announcementId": announcement_id, "announcedAt": iso(now), "environment": spec.environment}
    publish(
        tooling.events,
        tooling.event_bus,
        ANNOUNCEMENT_DETAIL_TYPE,
        {**kept["detail"], "announcementId": kept["announcementId"]},
    )
    return kept


def notice_problem(
    policy: Policy, environment: str, change_ticket: str | None, found: dict[str, Any] | None, now: datetime
) -> str | None:
    """Why a deployment of ``change_ticket`` may not apply at ``now`` (None if it may).

    ``found`` is the latest announcement for the ticket. It must have been made minimumNoticeHours
    before ``now``, and ``now`` must lie inside the window it announced.
    """
    hours = policy.minimum_notice_hours
    if not hours:
        return None
    how = (
        f"announce it at least {hours:g} hours ahead (`deployer announce --env {environment} "
        f"--change-ticket {change_ticket or '<ticket>'} --at <time>`), or deploy it as an emergency "
        "(--emergency REASON) if the policy has one"
    )
    if not change_ticket:
        return (
            f"{environment} applies only what was announced {hours:g} hours ahead (minimumNoticeHours), and an "
            f"announcement is for a change ticket: this deployment names none; {how}"
        )
    if found is None:
        return f"change ticket {change_ticket} was never announced for {environment}; {how}"
    announced_at, start, end = (datetime.fromisoformat(found[k]) for k in ("announcedAt", "windowStart", "windowEnd"))
    problem = None
    if now - announced_at < timedelta(hours=hours):
        problem = (
            f"change ticket {change_ticket} was announced at {iso(announced_at)}, only {duration(now - announced_at)} "
            f"before now ({iso(now)}); {environment} needs {hours:g} hours' notice (minimumNoticeHours)"
        )
    elif now < start:
        problem = (
            f"the window announced for change ticket {change_ticket} opens at {iso(start)}; it may not apply "
            f"earlier (now is {iso(now)})"
        )
    elif now >= end:
        problem = (
            f"the window announced for change ticket {change_ticket} closed at {iso(end)} (now is {iso(now)}); {how}"
        )
    return problem


def require_notice(
    records: RecordStore, policy: Policy, environment: str, change_ticket: str | None, now: datetime
) -> dict[str, Any] | None:
    """The announcement a deployment is held to (None when the policy needs none); NoticeTooShort if it fails."""
    if not policy.minimum_notice_hours:
        return None
    latest = records.announcements(environment, change_ticket)[:1] if change_ticket else []
    found = latest[0] if latest else None
    problem = notice_problem(policy, environment, change_ticket, found, now)
    if problem:
        raise NoticeTooShort(problem)
    return found


def emergency_approvals(spec: EnvironmentSpec, reason: str | None, *, scheduled: bool, dry_run: bool) -> int:
    """The extra approvals an emergency costs (0 without one); InputInvalid where there is no emergency path,
    or for a run that is no emergency (scheduled ahead, or a dry run, which applies nothing)."""
    if reason is None:
        return 0
    policy = spec.policy
    if policy.emergency is None:
        raise InputInvalid(
            f"emergency: {spec.environment}'s policy has no emergency path (policy.emergency), so every "
            f"change is announced {policy.minimum_notice_hours:g} hours ahead"
        )
    if scheduled:
        raise InputInvalid(
            "emergency: a scheduled deployment (scheduledFor) is announced ahead, which is not an emergency; "
            "give one or the other"
        )
    if dry_run:
        raise InputInvalid("emergency: a dry run applies nothing and needs no notice, so it is no emergency")
    return policy.emergency.extra_approvals
