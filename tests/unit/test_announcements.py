"""Notice of every change: announcements kept and published, and deployments held to them (runbook section 6)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from deployer.announcements import announce, emergency_approvals, notice_problem, require_notice
from deployer.errors import InputInvalid, NoticeTooShort, ScheduleRefused
from deployer.models import Requester
from deployer.records import iso
from deployer.resources import WaitConfig
from deployer.spec import EnvironmentSpec, Policy
from deployer.tooling import Tooling
from tests.unit.conftest import records_table

BUS = "bbws-deployer-events"
ALICE = Requester(name="alice")
DAY = timedelta(hours=24)


def policy(**fields: Any) -> Policy:
    return Policy.model_validate({"minimumNoticeHours": 24, **fields})


def kept(announced_at: datetime, start: datetime, end: datetime) -> dict[str, Any]:
    return {"announcedAt": iso(announced_at), "windowStart": iso(start), "windowEnd": iso(end)}


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def tooling(aws: None) -> Tooling:
    events = boto3.client("events", region_name="us-east-1")
    events.create_event_bus(Name=BUS)
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName="captured")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all", EventBusName=BUS, EventPattern=json.dumps({"source": ["bbws.deployer"]}))
    events.put_targets(Rule="all", EventBusName=BUS, Targets=[{"Id": "q", "Arn": arn}])
    return Tooling(
        records_table=records_table().name,
        specs_bucket="unused",
        event_bus=BUS,
        wait=WaitConfig(delay_seconds=0, max_attempts=1),
    )


def published(tooling: Tooling) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.get_queue_url(QueueName="captured")["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


@pytest.fixture
def prod_like(spec_data: dict[str, Any], build_spec: Callable[[dict[str, Any]], EnvironmentSpec]) -> EnvironmentSpec:
    data = copy.deepcopy(spec_data)
    data["policy"] = {**data.get("policy", {}), "minimumNoticeHours": 24}
    return build_spec(data)


# ---------------------------------------------------------------- the rule


def test_an_environment_without_notice_needs_no_announcement(now: datetime) -> None:
    assert notice_problem(Policy(), "dev", None, None, now) is None


def test_a_deployment_without_a_change_ticket_cannot_have_been_announced(now: datetime) -> None:
    problem = notice_problem(policy(), "prod", None, None, now)
    assert problem is not None
    assert problem.startswith("prod applies only what was announced 24 hours ahead (minimumNoticeHours)")
    assert "names none" in problem


def test_a_change_never_announced_is_named_with_how_to_announce_it(now: datetime) -> None:
    problem = notice_problem(policy(), "prod", "CHG-9", None, now)
    assert problem is not None
    assert problem.startswith("change ticket CHG-9 was never announced for prod; ")
    assert "`deployer announce --env prod --change-ticket CHG-9 --at <time>`" in problem
    assert "--emergency REASON" in problem


def test_an_announcement_made_less_than_the_notice_ago_is_too_short(now: datetime) -> None:
    found = kept(now - timedelta(hours=23, minutes=30), now - timedelta(minutes=5), now + timedelta(hours=1))
    problem = notice_problem(policy(), "prod", "CHG-9", found, now)
    assert problem is not None
    assert "only 23h30m before now" in problem
    assert "needs 24 hours' notice" in problem


def test_announced_long_enough_ago_it_applies_only_inside_the_announced_window(now: datetime) -> None:
    announced_at = now - DAY - timedelta(hours=2)
    # inside: from its start (inclusive) ...
    assert notice_problem(policy(), "prod", "CHG-9", kept(announced_at, now, now + timedelta(hours=1)), now) is None
    # ... not before it opens ...
    early = notice_problem(
        policy(), "prod", "CHG-9", kept(announced_at, now + timedelta(minutes=1), now + timedelta(hours=1)), now
    )
    assert early is not None
    assert "opens at" in early
    assert "may not apply earlier" in early
    # ... and not once it has closed (exclusive)
    late = notice_problem(policy(), "prod", "CHG-9", kept(announced_at, now - timedelta(hours=1), now), now)
    assert late is not None
    assert f"closed at {iso(now)}" in late


# ---------------------------------------------------------------- announcing, and being held to it


def test_an_announcement_is_kept_published_and_then_allows_its_change(
    tooling: Tooling, prod_like: EnvironmentSpec
) -> None:
    announced_at = datetime.now(UTC)
    at = announced_at + DAY + timedelta(hours=1)
    item = announce(tooling, prod_like, change_ticket="CHG-1", scheduled_for=at, announced_by=ALICE, now=announced_at)
    assert item["windowStart"] == iso(at)
    assert (item["changeTicket"], item["announcedBy"]["name"]) == ("CHG-1", "alice")
    # published as the "Deployment Window Announced" event, with who announced it and when
    [event] = published(tooling)
    assert event["detail-type"] == "Deployment Window Announced"
    assert event["detail"]["changeTicket"] == "CHG-1"
    assert event["detail"]["announcedBy"] == "alice"
    assert event["detail"]["announcementId"] == item["announcementId"]
    assert "deploymentId" not in event["detail"]
    # too early for the change, then inside its window
    with pytest.raises(NoticeTooShort, match="only 0h00m before now"):
        require_notice(tooling.records, prod_like.policy, prod_like.environment, "CHG-1", announced_at)
    held = require_notice(tooling.records, prod_like.policy, prod_like.environment, "CHG-1", at)
    assert held is not None
    assert held["announcementId"] == item["announcementId"]
    # another ticket's deployment is not covered by it
    with pytest.raises(NoticeTooShort, match="CHG-2 was never announced"):
        require_notice(tooling.records, prod_like.policy, prod_like.environment, "CHG-2", at)


def test_a_later_announcement_of_the_same_change_is_the_one_that_counts(
    tooling: Tooling, prod_like: EnvironmentSpec
) -> None:
    first_at = datetime.now(UTC)
    moved_at = first_at + timedelta(hours=1)
    for announced_at, start in ((first_at, first_at + DAY), (moved_at, moved_at + 2 * DAY)):
        announce(tooling, prod_like, change_ticket="CHG-1", scheduled_for=start, announced_by=ALICE, now=announced_at)
    # both are kept (nothing is overwritten), newest first
    assert len(tooling.records.announcements(prod_like.environment, "CHG-1")) == 2
    # the first window no longer allows the change: the later announcement, made 23 hours before it, counts
    with pytest.raises(NoticeTooShort, match="only 23h00m before now"):
        require_notice(tooling.records, prod_like.policy, prod_like.environment, "CHG-1", first_at + DAY)
    # and its own window does
    held = require_notice(tooling.records, prod_like.policy, prod_like.environment, "CHG-1", moved_at + 2 * DAY)
    assert held is not None
    assert held["announcedAt"] == iso(moved_at)


def test_a_retried_execution_announces_once(tooling: Tooling, prod_like: EnvironmentSpec) -> None:
    now = datetime.now(UTC)
    for _ in range(2):
        announce(
            tooling,
            prod_like,
            change_ticket="CHG-1",
            scheduled_for=now + DAY,
            announced_by=ALICE,
            now=now,
            execution_name="prod-1",
            scheduled_run=True,
        )
    [only] = tooling.records.announcements(prod_like.environment, "CHG-1")
    assert only["detail"]["deploymentId"] == "prod-1"


def test_an_announcement_is_refused_with_too_little_notice_or_no_ticket(
    tooling: Tooling, prod_like: EnvironmentSpec
) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ScheduleRefused, match="needs at least 24 hours' notice"):
        announce(
            tooling,
            prod_like,
            change_ticket="CHG-1",
            scheduled_for=now + timedelta(hours=2),
            announced_by=ALICE,
            now=now,
        )
    with pytest.raises(InputInvalid, match="names the change ticket it is for"):
        announce(tooling, prod_like, change_ticket=None, scheduled_for=now + 2 * DAY, announced_by=ALICE, now=now)
    assert tooling.records.announcements(prod_like.environment) == []
    assert published(tooling) == []


# ---------------------------------------------------------------- the emergency path


def test_an_emergency_costs_the_policys_extra_approvals(
    spec_data: dict[str, Any], build_spec: Callable[[dict[str, Any]], EnvironmentSpec]
) -> None:
    data = copy.deepcopy(spec_data)
    data["policy"] = {
        **data.get("policy", {}),
        "minimumNoticeHours": 24,
        "emergency": {"extraApprovals": 2, "channel": "#incidents"},
    }
    spec = build_spec(data)
    reason = "Sev-1 INC-1, writes failing"
    assert emergency_approvals(spec, None, scheduled=False, dry_run=False) == 0
    assert emergency_approvals(spec, reason, scheduled=False, dry_run=False) == 2
    with pytest.raises(InputInvalid, match=r"a scheduled deployment .* is announced ahead, which is not an emergency"):
        emergency_approvals(spec, reason, scheduled=True, dry_run=False)
    with pytest.raises(InputInvalid, match="a dry run applies nothing"):
        emergency_approvals(spec, reason, scheduled=False, dry_run=True)


def test_an_emergency_is_refused_where_the_policy_has_no_emergency_path(prod_like: EnvironmentSpec) -> None:
    with pytest.raises(InputInvalid, match=r"has no emergency path \(policy.emergency\)"):
        emergency_approvals(prod_like, "Sev-1 INC-1, writes failing", scheduled=False, dry_run=False)
