"""Deployment windows and scheduling (runbook section 6): when changes may be applied, and the notice given.

Pure functions of a policy and an instant: nothing here reads the clock, so the caller passes
``now`` (from ``deployer.clock``) and every datetime must be timezone-aware.

A window is open on each listed weekday from ``start`` (inclusive) to ``end`` (exclusive) in
the window's own time zone, except on blackout dates. Each day's opening and closing are
wall-clock times turned into instants on that day, so DST shifts the UTC times of the window
with the local clock. A wall-clock time the clocks skip (spring forward) happens at the jump;
one they pass twice (fall back) happens the first time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from deployer.errors import OutsideDeploymentWindow, ScheduleRefused
from deployer.records import iso
from deployer.spec import WEEKDAYS, DeploymentWindow, EnvironmentSpec, Policy, Weekday

ANNOUNCEMENT_DETAIL_TYPE = "Deployment Window Announced"
# Runbook section 6, "Timing": a scheduled deployment window is 30 minutes when no policy window bounds it.
DEFAULT_WINDOW = timedelta(minutes=30)
# How far ahead to look for the next opening: beyond a year of blackout dates, a window never opens.
SCAN_DAYS = 400
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class WindowStatus:
    """Whether the window is open at an instant; ``opens_at`` is ``now`` when open, None if it never opens."""

    open: bool
    opens_at: datetime | None
    closes_at: datetime | None
    reason: str


@dataclass(frozen=True)
class WindowDecision:
    """Proceed now, or wait ``wait_seconds`` and check again."""

    proceed: bool
    wait_seconds: int
    status: WindowStatus


def describe_window(window: DeploymentWindow) -> str:
    """The window in a line, e.g. ``Mon-Thu 09:00-15:00 Africa/Johannesburg``."""
    return f"{_describe_days(window.weekdays)} {window.start}-{window.end} {window.time_zone}"


def window_status(window: DeploymentWindow | None, now: datetime) -> WindowStatus:
    """Whether ``window`` is open at ``now``, when it next opens and closes (UTC), and why.

    No window means always open. The next opening is searched day by day up to SCAN_DAYS ahead.
    """
    _require_aware("now", now)
    now = now.astimezone(UTC)
    if window is None:
        return WindowStatus(True, now, None, "no deployment window: changes may be applied at any time")
    zone = ZoneInfo(window.time_zone)
    today = now.astimezone(zone).date()
    for opens, closes in _openings(window, zone, today - timedelta(days=1)):
        if closes <= now:
            continue
        if opens <= now:
            return WindowStatus(True, now, closes, f"inside the window {describe_window(window)}")
        return WindowStatus(False, opens, closes, _closed_reason(window, now.astimezone(zone)))
    return WindowStatus(False, None, None, _closed_reason(window, now.astimezone(zone)))


def first_opening(window: DeploymentWindow, after: datetime) -> datetime | None:
    """The first instant (UTC) at or after ``after`` at which ``window`` opens; None if it never does.

    Unlike ``window_status``, an open window does not count: this is the start of a whole window.
    """
    _require_aware("after", after)
    after = after.astimezone(UTC)
    zone = ZoneInfo(window.time_zone)
    first_day = after.astimezone(zone).date()
    return next((opens for opens, _ in _openings(window, zone, first_day) if opens >= after), None)


def decide_window(window: DeploymentWindow | None, now: datetime, waited_since: datetime) -> WindowDecision:
    """Proceed inside the window; outside it, wait if it opens within maxWaitHours of ``waited_since``.

    ``waited_since`` is when the deployment first reached the window check, so checking again
    after a wait never extends the limit. Raises OutsideDeploymentWindow when the window opens
    later than that (or never).
    """
    _require_aware("waited_since", waited_since)
    status = window_status(window, now)
    if status.open or window is None:
        return WindowDecision(True, 0, status)
    limit = timedelta(hours=window.max_wait_hours)
    if status.opens_at is not None and status.opens_at - waited_since <= limit:
        return WindowDecision(False, max(1, _ceil_seconds(status.opens_at - now)), status)
    zone = ZoneInfo(window.time_zone)
    if status.opens_at is None:
        next_opening = f"it does not open within the next {SCAN_DAYS} days"
    else:
        waited = duration(status.opens_at - waited_since.astimezone(UTC))
        next_opening = (
            f"it next opens {_moment(status.opens_at, zone)}, {waited} after the deployment reached the "
            f"window at {_moment(waited_since, zone)}"
        )
    raise OutsideDeploymentWindow(
        f"outside the deployment window {describe_window(window)}: {status.reason}; {next_opening}, "
        f"which exceeds maxWaitHours {window.max_wait_hours:g}"
    )


def validate_schedule(policy: Policy, scheduled_for: datetime, now: datetime) -> None:
    """Refuse a schedule that is in the past, gives less than minimumNoticeHours, or falls outside the window.

    Raises ScheduleRefused saying what is wrong and the earliest (or next) time that would be accepted.
    """
    _require_aware("scheduled_for", scheduled_for)
    _require_aware("now", now)
    window = policy.window
    zone = ZoneInfo(window.time_zone if window else "UTC")
    if scheduled_for <= now:
        raise ScheduleRefused(
            f"scheduled time {_moment(scheduled_for, zone)} is not in the future (now is {_moment(now, zone)})"
        )
    required = timedelta(hours=policy.minimum_notice_hours)
    if scheduled_for - now < required:
        earliest = _ceil_to_second(now + required)
        status = window_status(window, earliest)
        if not status.open and status.opens_at is not None:
            earliest = status.opens_at
        raise ScheduleRefused(
            f"a scheduled deployment needs at least {policy.minimum_notice_hours:g} hours' notice "
            f"(minimumNoticeHours), but {_moment(scheduled_for, zone)} is only {duration(scheduled_for - now)} "
            f"away; the earliest allowed time is {_moment(earliest, zone)}"
        )
    if window is None:
        return
    status = window_status(window, scheduled_for)
    if status.open:
        return
    next_opening = (
        f"the window next opens {_moment(status.opens_at, zone)}"
        if status.opens_at
        else f"the window does not open within {SCAN_DAYS} days of it"
    )
    raise ScheduleRefused(
        f"scheduled time {_moment(scheduled_for, zone)} is outside the deployment window "
        f"{describe_window(window)}: {status.reason}; {next_opening}"
    )


def announcement(
    spec: EnvironmentSpec,
    scheduled_for: datetime,
    change_ticket: str | None,
    rollback_estimate_minutes: int = 15,
) -> dict[str, Any]:
    """The detail of the "Deployment Window Announced" event (runbook section 6, step 1).

    The announced window runs from the scheduled time to the policy window's close that day;
    without a policy window (or for a time outside it, which validate_schedule refuses) it is
    the runbook's 30 minutes.
    """
    _require_aware("scheduled_for", scheduled_for)
    window = spec.policy.window
    zone = ZoneInfo(window.time_zone if window else "UTC")
    start = scheduled_for.astimezone(UTC)
    status = window_status(window, start)
    end = status.closes_at if status.open and status.closes_at else start + DEFAULT_WINDOW
    return {
        "detailType": ANNOUNCEMENT_DETAIL_TYPE,
        "environment": spec.environment,
        "scheduledFor": iso(start),
        "windowStartUtc": iso(start),
        "windowEndUtc": iso(end),
        "windowStartLocal": start.astimezone(zone).isoformat(timespec="seconds"),
        "windowEndLocal": end.astimezone(zone).isoformat(timespec="seconds"),
        "timeZone": str(zone),
        "windowText": _span(start, end, zone),
        "allowedWindow": describe_window(window) if window else None,
        "expectedDowntime": "none",
        "rollbackEstimateMinutes": rollback_estimate_minutes,
        "changeTicket": change_ticket,
        "escalation": "on-call engineer",
    }


def _openings(window: DeploymentWindow, zone: ZoneInfo, first_day: date) -> Iterator[tuple[datetime, datetime]]:
    """The window's [opens, closes) instants (UTC) on each deployment day from ``first_day``, in order."""
    start, end = time.fromisoformat(window.start), time.fromisoformat(window.end)
    for offset in range(SCAN_DAYS + 2):
        day = first_day + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in window.weekdays or day in window.blackout_dates:
            continue
        opens, closes = _instant(day, start, zone), _instant(day, end, zone)
        # Both ends inside the same skipped hour: that day's window never happens on the clock.
        if opens < closes:
            yield opens, closes


def _instant(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the local clock reads ``clock`` on ``day`` or later."""
    wall = datetime.combine(day, clock)
    moment = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if moment.astimezone(zone).replace(tzinfo=None) == wall:
        return moment
    # The clocks jumped over this time: it "happens" at the jump, the first minute past it.
    probe = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    while probe.astimezone(zone).replace(tzinfo=None) < wall:
        probe += timedelta(minutes=1)
    return probe


def _closed_reason(window: DeploymentWindow, local: datetime) -> str:
    day = local.date()
    if day in window.blackout_dates:
        return f"{day.isoformat()} is a blackout date"
    if WEEKDAYS[day.weekday()] not in window.weekdays:
        return f"{DAY_NAMES[day.weekday()]} is not a deployment day"
    clock = f"{local:%H:%M}"
    if clock < window.start:
        return f"before {window.start} (local time {clock})"
    return f"the window closed at {window.end} (local time {clock})"


def _describe_days(weekdays: list[Weekday]) -> str:
    indexes = sorted({WEEKDAYS.index(d) for d in weekdays})
    runs: list[list[int]] = []
    for index in indexes:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    names = [WEEKDAYS[i].title() for i in range(7)]
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{names[run[0]]}-{names[run[-1]]}")
        else:
            parts.extend(names[i] for i in run)
    return ", ".join(parts)


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")


def _ceil_seconds(delta: timedelta) -> int:
    return -(-delta // timedelta(seconds=1))


def _ceil_to_second(moment: datetime) -> datetime:
    return moment if not moment.microsecond else moment.replace(microsecond=0) + timedelta(seconds=1)


def duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _clock(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment.second else f"{moment:%Y-%m-%d %H:%M}"


def _moment(moment: datetime, zone: ZoneInfo) -> str:
    """E.g. ``2026-11-30 07:00 UTC (2026-11-30 09:00 Africa/Johannesburg)``; just UTC for a UTC window."""
    utc = f"{_clock(moment.astimezone(UTC))} UTC"
    if str(zone) == "UTC":
        return utc
    return f"{utc} ({_clock(moment.astimezone(zone))} {zone})"


def _span(start: datetime, end: datetime, zone: ZoneInfo) -> str:
    """E.g. ``2026-11-30 07:00 to 13:00 UTC (09:00 to 15:00 Africa/Johannesburg)``."""

    def one(a: datetime, b: datetime) -> str:
        tail = f"{b:%H:%M}" if a.date() == b.date() else _clock(b)
        return f"{_clock(a)} to {tail}"

    utc = f"{one(start.astimezone(UTC), end.astimezone(UTC))} UTC"
    if str(zone) == "UTC":
        return utc
    return f"{utc} ({one(start.astimezone(zone), end.astimezone(zone))} {zone})"
