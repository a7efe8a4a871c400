"""Deployment windows, waiting for them, scheduling with notice, and the window announcement (runbook section 6)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from deployer.errors import OutsideDeploymentWindow, ScheduleRefused
from deployer.spec import DeploymentWindow, EnvironmentSpec, Policy
from deployer.windows import (
    WindowDecision,
    WindowStatus,
    announcement,
    decide_window,
    describe_window,
    first_opening,
    validate_schedule,
    window_status,
)

# Like environments/prod.yaml: Africa/Johannesburg is UTC+2 all year, so 09:00-15:00 local is 07:00-13:00 UTC.
PROD_WINDOW: dict[str, Any] = {
    "timeZone": "Africa/Johannesburg",
    "weekdays": ["mon", "tue", "wed", "thu"],
    "start": "09:00",
    "end": "15:00",
    "blackoutDates": ["2026-12-24", "2026-12-25", "2026-12-31", "2027-01-01"],
    "maxWaitHours": 2,
}
PROD = "Mon-Thu 09:00-15:00 Africa/Johannesburg"
# Calendar used below: 2026-11-26 is a Thursday, 11-28 a Saturday, 11-30 a Monday; 12-24 a Thursday.
MONDAY_0900 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(**changes: Any) -> DeploymentWindow:
    return DeploymentWindow.model_validate({**PROD_WINDOW, **changes})


def london(**changes: Any) -> DeploymentWindow:
    """Every day 09:00-17:00 in Europe/London, which moves from GMT to BST on 2026-03-29 and back on 2026-10-25."""
    every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    return window(
        **{
            "timeZone": "Europe/London",
            "weekdays": every_day,
            "start": "09:00",
            "end": "17:00",
            "blackoutDates": [],
            **changes,
        }
    )


# ---------------------------------------------------------------- window_status


def test_window_opens_at_its_start_inclusive() -> None:
    # GIVEN the PROD window WHEN it is exactly 09:00 local on a Monday
    status = window_status(window(), MONDAY_0900)

    # THEN it is open until 15:00 local, and says so
    assert status == WindowStatus(True, MONDAY_0900, utc(2026, 11, 30, 13, 0), f"inside the window {PROD}")


def test_window_is_closed_just_before_its_start() -> None:
    # GIVEN the PROD window WHEN it is one second before 09:00 local
    status = window_status(window(), MONDAY_0900 - timedelta(seconds=1))

    # THEN it is closed and opens at 09:00 local the same day
    assert status == WindowStatus(False, MONDAY_0900, utc(2026, 11, 30, 13, 0), "before 09:00 (local time 08:59)")


def test_window_closes_at_its_end_exclusive() -> None:
    # GIVEN the PROD window
    # WHEN it is one second before 15:00 local THEN it is still open
    assert window_status(window(), utc(2026, 11, 30, 12, 59, 59)).open

    # WHEN it is exactly 15:00 local THEN it is closed until Tuesday 09:00 local
    status = window_status(window(), utc(2026, 11, 30, 13, 0))
    assert status == WindowStatus(
        False, utc(2026, 12, 1, 7, 0), utc(2026, 12, 1, 13, 0), "the window closed at 15:00 (local time 15:00)"
    )


def test_weekday_outside_the_window_opens_after_the_weekend() -> None:
    # GIVEN the Mon-Thu window WHEN it is Friday at 10:00 local
    status = window_status(window(), utc(2026, 11, 27, 8, 0))

    # THEN it is closed for the day of the week, and opens Monday 09:00 local
    assert not status.open
    assert status.reason == "Friday is not a deployment day"
    assert status.opens_at == MONDAY_0900


def test_blackout_date_is_closed_all_day_and_the_next_opening_skips_it() -> None:
    # GIVEN the PROD window, whose blackout dates include Thursday 2026-12-24
    # WHEN it is 10:00 local on that Thursday
    status = window_status(window(), utc(2026, 12, 24, 8, 0))

    # THEN it is closed for the blackout, and opens on Monday 12-28 (Friday 12-25 and the weekend are out)
    assert not status.open
    assert status.reason == "2026-12-24 is a blackout date"
    assert status.opens_at == utc(2026, 12, 28, 7, 0)

    # AND after Wednesday 12-30 closes, Thursday 12-31 and Friday 2027-01-01 are skipped too
    assert window_status(window(), utc(2026, 12, 30, 13, 0)).opens_at == utc(2027, 1, 4, 7, 0)


def test_no_window_is_always_open() -> None:
    # GIVEN a policy without a window WHEN its status is asked at any time
    now = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    status = window_status(None, now)

    # THEN it is open, with no closing time
    assert status.open
    assert status.opens_at == now
    assert status.closes_at is None


def test_times_in_other_zones_are_compared_as_instants() -> None:
    # GIVEN the PROD window WHEN "now" is given in New York time (Monday 02:00 EST = 09:00 in Johannesburg)
    new_york = MONDAY_0900.astimezone(ZoneInfo("America/New_York"))
    status = window_status(window(), new_york)

    # THEN it is open, and the times reported are UTC
    assert status.open
    assert status.opens_at == MONDAY_0900
    assert status.opens_at is not None
    assert status.opens_at.tzinfo == UTC


def test_window_follows_local_time_across_the_start_of_summer_time() -> None:
    # GIVEN a 09:00-17:00 window in Europe/London, which springs forward on Sunday 2026-03-29
    # WHEN it is Saturday (GMT) THEN the window is 09:00-17:00 UTC
    saturday = window_status(london(), utc(2026, 3, 28, 9, 0))
    assert (saturday.open, saturday.closes_at) == (True, utc(2026, 3, 28, 17, 0))

    # WHEN Saturday's window has closed THEN it next opens at 09:00 BST on Sunday, which is 08:00 UTC
    assert window_status(london(), utc(2026, 3, 28, 17, 0)).opens_at == utc(2026, 3, 29, 8, 0)

    # WHEN it is Sunday 07:59 UTC (08:59 BST) THEN closed; at 08:00 UTC (09:00 BST) open until 16:00 UTC
    assert not window_status(london(), utc(2026, 3, 29, 7, 59)).open
    sunday = window_status(london(), utc(2026, 3, 29, 8, 0))
    assert (sunday.open, sunday.closes_at) == (True, utc(2026, 3, 29, 16, 0))


def test_window_starting_in_the_skipped_hour_opens_at_the_jump() -> None:
    # GIVEN a window starting at 01:30 London time, which does not exist on 2026-03-29 (01:00 GMT -> 02:00 BST)
    skipped = london(start="01:30", end="03:00")

    # WHEN it is 00:59 UTC THEN it is closed and opens at the jump, 01:00 UTC (02:00 BST)
    assert window_status(skipped, utc(2026, 3, 29, 0, 59)).opens_at == utc(2026, 3, 29, 1, 0)

    # WHEN it is 01:00 UTC THEN it is open until 03:00 BST = 02:00 UTC
    status = window_status(skipped, utc(2026, 3, 29, 1, 0))
    assert (status.open, status.closes_at) == (True, utc(2026, 3, 29, 2, 0))


def test_window_ending_in_the_repeated_hour_closes_the_first_time() -> None:
    # GIVEN a 00:00-01:30 London window; on 2026-10-25 the clock reads 01:00-02:00 twice (BST, then GMT)
    repeated = london(start="00:00", end="01:30")

    # WHEN it is 00:10 UTC (01:10 BST) THEN it is open, closing at 01:30 BST = 00:30 UTC
    first = window_status(repeated, utc(2026, 10, 25, 0, 10))
    assert (first.open, first.closes_at) == (True, utc(2026, 10, 25, 0, 30))

    # WHEN the clock reads 01:10 again (GMT, 01:10 UTC) THEN the window does not reopen
    second = window_status(repeated, utc(2026, 10, 25, 1, 10))
    assert not second.open
    assert second.reason == "the window closed at 01:30 (local time 01:10)"
    assert second.opens_at == utc(2026, 10, 26, 0, 0)


def test_window_that_never_opens_has_no_next_opening() -> None:
    # GIVEN a Monday-only window with every Monday of the next 60 weeks blacked out
    mondays = [date(2026, 11, 30) + timedelta(weeks=n) for n in range(60)]
    never = window(weekdays=["mon"], blackoutDates=mondays)

    # WHEN its status is asked THEN it is closed with no opening in sight
    status = window_status(never, MONDAY_0900)
    assert status == WindowStatus(False, None, None, "2026-11-30 is a blackout date")

    # AND a deployment cannot wait for it
    with pytest.raises(OutsideDeploymentWindow, match="it does not open within the next 400 days"):
        decide_window(never, MONDAY_0900, MONDAY_0900)


def test_naive_datetimes_are_refused() -> None:
    # GIVEN a datetime without a time zone WHEN the window is checked THEN it is refused
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        window_status(window(), datetime(2026, 11, 30, 9, 0))


@pytest.mark.parametrize(
    ("weekdays", "expected"),
    [
        (["mon", "tue", "wed", "thu"], "Mon-Thu"),
        (["fri", "mon", "wed"], "Mon, Wed, Fri"),
        (["sat", "sun"], "Sat, Sun"),
        (["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "Mon-Sun"),
    ],
)
def test_describe_window_names_the_days(weekdays: list[str], expected: str) -> None:
    # GIVEN a window on some weekdays WHEN it is described THEN runs of three or more days are ranges
    assert describe_window(window(weekdays=weekdays)) == f"{expected} 09:00-15:00 Africa/Johannesburg"


# ---------------------------------------------------------------- decide_window


def test_inside_the_window_proceeds_at_once() -> None:
    # GIVEN the PROD window is open WHEN a deployment reaches it THEN it proceeds without waiting
    decision = decide_window(window(), MONDAY_0900, MONDAY_0900)
    assert decision == WindowDecision(True, 0, window_status(window(), MONDAY_0900))


def test_no_window_proceeds_at_once() -> None:
    # GIVEN no window WHEN a deployment reaches the check on a Saturday night THEN it proceeds
    assert decide_window(None, utc(2026, 11, 28, 23, 0), utc(2026, 11, 28, 23, 0)).proceed


def test_window_opening_within_max_wait_waits_until_it_opens() -> None:
    # GIVEN maxWaitHours 2 WHEN a deployment reaches the window at 07:30 local, 1.5 hours before it opens
    now = MONDAY_0900 - timedelta(minutes=90)
    decision = decide_window(window(), now, waited_since=now)

    # THEN it waits exactly until 09:00 local
    assert (decision.proceed, decision.wait_seconds) == (False, 5400)
    assert decision.status.opens_at == MONDAY_0900


def test_wait_rounds_up_to_whole_seconds() -> None:
    # GIVEN a check 0.2 seconds before the window opens WHEN deciding THEN it waits one whole second, never zero
    now = MONDAY_0900 - timedelta(milliseconds=200)
    assert decide_window(window(), now, now).wait_seconds == 1

    # AND 1.5 seconds before, it waits 2 seconds (it is open once the wait ends)
    now = MONDAY_0900 - timedelta(milliseconds=1500)
    assert decide_window(window(), now, now).wait_seconds == 2


def test_max_wait_counts_from_when_the_deployment_first_reached_the_window() -> None:
    # GIVEN a deployment that first reached the window 2.5 hours before it opens (maxWaitHours 2)
    waited_since = MONDAY_0900 - timedelta(hours=2, minutes=30)

    # WHEN it checks again one hour before the window opens
    # THEN it is refused: checking again does not restart the wait
    with pytest.raises(OutsideDeploymentWindow, match="exceeds maxWaitHours 2"):
        decide_window(window(), MONDAY_0900 - timedelta(hours=1), waited_since)

    # AND one that first arrived exactly 2 hours before the opening may wait (the limit is inclusive)
    decision = decide_window(window(), MONDAY_0900 - timedelta(hours=1), MONDAY_0900 - timedelta(hours=2))
    assert (decision.proceed, decision.wait_seconds) == (False, 3600)


def test_outside_the_window_beyond_max_wait_names_the_window_reason_and_next_opening() -> None:
    # GIVEN the PROD window (maxWaitHours 2) WHEN a deployment reaches it on Saturday 10:00 local
    saturday = utc(2026, 11, 28, 8, 0)
    with pytest.raises(OutsideDeploymentWindow) as raised:
        decide_window(window(), saturday, saturday)

    # THEN it ends, saying which window, why it is closed, when it opens and that the wait is too long
    assert str(raised.value) == (
        f"outside the deployment window {PROD}: Saturday is not a deployment day; "
        "it next opens 2026-11-30 07:00 UTC (2026-11-30 09:00 Africa/Johannesburg), 47h00m after the deployment "
        "reached the window at 2026-11-28 08:00 UTC (2026-11-28 10:00 Africa/Johannesburg), "
        "which exceeds maxWaitHours 2"
    )


def test_zero_max_wait_never_waits() -> None:
    # GIVEN a window with maxWaitHours 0 WHEN a deployment arrives a minute early THEN it ends at once
    with pytest.raises(OutsideDeploymentWindow, match="before 09:00"):
        decide_window(window(maxWaitHours=0), MONDAY_0900 - timedelta(minutes=1), MONDAY_0900 - timedelta(minutes=1))


# ---------------------------------------------------------------- validate_schedule


def prod_policy(**changes: Any) -> Policy:
    return Policy.model_validate({"window": PROD_WINDOW, "minimumNoticeHours": 24, "lockLeaseMinutes": 270, **changes})


def test_schedule_in_the_past_is_refused() -> None:
    # GIVEN a schedule an hour ago WHEN it is validated THEN it is refused as not in the future
    with pytest.raises(ScheduleRefused) as raised:
        validate_schedule(prod_policy(), MONDAY_0900 - timedelta(hours=1), MONDAY_0900)
    assert str(raised.value) == (
        "scheduled time 2026-11-30 06:00 UTC (2026-11-30 08:00 Africa/Johannesburg) is not in the future "
        "(now is 2026-11-30 07:00 UTC (2026-11-30 09:00 Africa/Johannesburg))"
    )


def test_schedule_with_too_little_notice_names_the_notice_and_earliest_time() -> None:
    # GIVEN 24 hours' notice is required WHEN a deployment is scheduled 5 hours ahead, inside the window
    with pytest.raises(ScheduleRefused) as raised:
        validate_schedule(prod_policy(), MONDAY_0900 + timedelta(hours=5), MONDAY_0900)

    # THEN it is refused naming the notice required, the notice given and the earliest allowed time
    assert str(raised.value) == (
        "a scheduled deployment needs at least 24 hours' notice (minimumNoticeHours), but "
        "2026-11-30 12:00 UTC (2026-11-30 14:00 Africa/Johannesburg) is only 5h00m away; "
        "the earliest allowed time is 2026-12-01 07:00 UTC (2026-12-01 09:00 Africa/Johannesburg)"
    )


def test_earliest_allowed_time_is_inside_the_window() -> None:
    # GIVEN it is Thursday 15:00 local, so 24 hours from now is Friday, outside the Mon-Thu window
    now = utc(2026, 11, 26, 13, 0)

    # WHEN a deployment is scheduled an hour ahead THEN the earliest allowed time offered is Monday's opening
    with pytest.raises(ScheduleRefused, match=r"the earliest allowed time is 2026-11-30 07:00 UTC \("):
        validate_schedule(prod_policy(), now + timedelta(hours=1), now)


def test_earliest_allowed_time_rounds_up_to_a_whole_second() -> None:
    # GIVEN 24 hours' notice and no window, WHEN "now" has a fraction of a second
    now = datetime(2026, 11, 26, 9, 0, 30, 250000, tzinfo=UTC)

    # THEN the earliest allowed time offered is not earlier than the notice allows
    with pytest.raises(ScheduleRefused, match=r"the earliest allowed time is 2026-11-27 09:00:31 UTC$"):
        validate_schedule(Policy(minimum_notice_hours=24), now + timedelta(hours=1), now)


def test_schedule_outside_the_window_names_the_reason_and_next_opening() -> None:
    # GIVEN plenty of notice WHEN a deployment is scheduled for Saturday 10:00 local
    with pytest.raises(ScheduleRefused) as raised:
        validate_schedule(prod_policy(), utc(2026, 11, 28, 8, 0), utc(2026, 11, 20, 8, 0))

    # THEN it is refused naming why and when the window next opens after that time
    assert str(raised.value) == (
        "scheduled time 2026-11-28 08:00 UTC (2026-11-28 10:00 Africa/Johannesburg) is outside the deployment "
        f"window {PROD}: Saturday is not a deployment day; "
        "the window next opens 2026-11-30 07:00 UTC (2026-11-30 09:00 Africa/Johannesburg)"
    )


def test_schedule_with_enough_notice_inside_the_window_is_accepted() -> None:
    # GIVEN 24 hours' notice WHEN a deployment is scheduled exactly 24 hours ahead, at the window's opening
    # THEN it is accepted
    validate_schedule(prod_policy(), MONDAY_0900, MONDAY_0900 - timedelta(hours=24))

    # AND without a window or notice rule, any future time is accepted
    validate_schedule(Policy(), utc(2026, 11, 28, 23, 0), utc(2026, 11, 28, 22, 59))


# ---------------------------------------------------------------- announcement


@pytest.fixture
def prod_like(spec_data: dict[str, Any], build_spec: Callable[[dict[str, Any]], EnvironmentSpec]) -> EnvironmentSpec:
    spec_data["policy"] = {"window": PROD_WINDOW, "minimumNoticeHours": 24, "lockLeaseMinutes": 270}
    return build_spec(spec_data)


def test_announcement_runs_from_the_scheduled_time_to_the_window_close(prod_like: EnvironmentSpec) -> None:
    # GIVEN the PROD window WHEN a deployment scheduled for Monday 10:00 local is announced
    detail = announcement(prod_like, utc(2026, 11, 30, 8, 0), "CHG-1234")

    # THEN the announced window ends at 15:00 local, in UTC and local time, with the runbook's facts
    assert detail == {
        "detailType": "Deployment Window Announced",
        "environment": "test",
        "scheduledFor": "2026-11-30T08:00:00.000Z",
        "windowStartUtc": "2026-11-30T08:00:00.000Z",
        "windowEndUtc": "2026-11-30T13:00:00.000Z",
        "windowStartLocal": "2026-11-30T10:00:00+02:00",
        "windowEndLocal": "2026-11-30T15:00:00+02:00",
        "timeZone": "Africa/Johannesburg",
        "windowText": "2026-11-30 08:00 to 13:00 UTC (2026-11-30 10:00 to 15:00 Africa/Johannesburg)",
        "allowedWindow": PROD,
        "expectedDowntime": "none",
        "rollbackEstimateMinutes": 15,
        "changeTicket": "CHG-1234",
        "escalation": "on-call engineer",
    }


def test_announcement_without_a_window_lasts_thirty_minutes(spec: EnvironmentSpec) -> None:
    # GIVEN no policy window WHEN a deployment at 23:45 UTC is announced with a 20-minute rollback estimate
    detail = announcement(spec, datetime(2026, 11, 30, 23, 45, tzinfo=UTC), None, rollback_estimate_minutes=20)

    # THEN the announced window is the runbook's 30 minutes, in UTC, crossing midnight
    assert {k: detail[k] for k in ("windowStartUtc", "windowEndUtc", "timeZone", "windowText")} == {
        "windowStartUtc": "2026-11-30T23:45:00.000Z",
        "windowEndUtc": "2026-12-01T00:15:00.000Z",
        "timeZone": "UTC",
        "windowText": "2026-11-30 23:45 to 2026-12-01 00:15 UTC",
    }
    assert detail["windowStartLocal"] == "2026-11-30T23:45:00+00:00"
    assert (detail["allowedWindow"], detail["changeTicket"], detail["rollbackEstimateMinutes"]) == (None, None, 20)


def test_first_opening_skips_an_open_window_and_non_deployment_days() -> None:
    # GIVEN PROD's window, open on Monday 2026-11-30 10:00 local
    # WHEN asked for the first opening from inside it, and from Thursday evening
    # THEN it is the start of the next whole window: Tuesday 09:00, and Monday 09:00 after the weekend
    assert first_opening(window(), MONDAY_0900 + timedelta(hours=1)) == MONDAY_0900 + timedelta(days=1)
    assert first_opening(window(), utc(2026, 11, 26, 14)) == MONDAY_0900
    # AND an opening instant itself counts
    assert first_opening(window(), MONDAY_0900) == MONDAY_0900


def test_first_opening_skips_blackout_dates_and_is_none_when_the_window_never_opens() -> None:
    # GIVEN 2026-12-24 (Thursday) is a blackout date: from Wednesday's close the next opening is Monday the 28th
    assert first_opening(window(), utc(2026, 12, 23, 14)) == utc(2026, 12, 28, 7)
    # GIVEN a Thursday-only window with every Thursday of the next 60 weeks blacked out THEN it never opens
    thursdays = [date(2026, 12, 24) + timedelta(weeks=n) for n in range(60)]
    assert first_opening(window(weekdays=["thu"], blackoutDates=thursdays), utc(2026, 12, 23)) is None
