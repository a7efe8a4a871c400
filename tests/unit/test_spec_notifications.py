"""The spec's notifications section: where an environment's events go, and who a failure mentions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.errors import SpecInvalid
from deployer.spec import EnvironmentSpec, load_spec_file

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "environments"
Build = Callable[[dict[str, Any]], EnvironmentSpec]


@pytest.mark.parametrize(
    ("environment", "channel", "mentions"),
    [
        ("dev", "#bbws-deploy-dev", []),
        ("sit", "C0DEPLOYSIT", []),
        ("prod", "C0DEPLOYPROD", ["U0SENIOR01", "U0SENIOR02", "U0SENIOR03"]),
    ],
)
def test_each_environment_names_its_notification_channel(environment: str, channel: str, mentions: list[str]) -> None:
    # GIVEN the environment's spec file WHEN it is loaded
    policy = load_spec_file(ENVIRONMENTS / f"{environment}.yaml").policy
    # THEN its notifications go to its channel, and PROD failures mention the PROD approvers
    assert policy.notification_channel() == channel
    assert policy.mention_on_failure() == mentions


def test_prod_failures_mention_exactly_the_prod_approvers() -> None:
    policy = load_spec_file(ENVIRONMENTS / "prod.yaml").policy
    assert policy.mention_on_failure() == [a.slack_user_id for a in policy.approvals.approvers]


def test_without_a_notifications_section_the_approvals_channel_is_used(spec_data: dict[str, Any], build: Build) -> None:
    # GIVEN approvals in a channel and no notifications section
    spec_data["policy"] = {
        "approvals": {
            "required": 1,
            "approvers": [{"slackUserId": "U0LEAD0001", "name": "lead"}],
            "channel": "C0APPROVE",
        },
    }
    # THEN notifications fall back to it, mentioning nobody
    policy = build(spec_data).policy
    assert policy.notifications is None
    assert policy.notification_channel() == "C0APPROVE"
    assert policy.mention_on_failure() == []


def test_a_notifications_channel_wins_over_the_approvals_channel(spec_data: dict[str, Any], build: Build) -> None:
    spec_data["policy"] = {
        "approvals": {
            "required": 1,
            "approvers": [{"slackUserId": "U0LEAD0001", "name": "lead"}],
            "channel": "C0APPROVE",
        },
        "notifications": {"channel": "G0PRIVATE1", "mentionOnFailure": ["U0LEAD0001", "S0ONCALL01", "W0ENTERPR1"]},
    }
    policy = build(spec_data).policy
    assert policy.notification_channel() == "G0PRIVATE1"
    assert policy.mention_on_failure() == ["U0LEAD0001", "S0ONCALL01", "W0ENTERPR1"]


def test_a_spec_with_no_channel_at_all_is_valid(spec: EnvironmentSpec) -> None:
    # GIVEN the test spec: no approvals, no notifications; its notifications are skipped, not refused
    assert spec.policy.notification_channel() is None
    assert spec.policy.mention_on_failure() == []


@pytest.mark.parametrize(
    ("notifications", "expected"),
    [
        ({"channel": "bbws-deploy"}, "policy.notifications.channel: String should match pattern"),
        ({"channel": "#BBWS Deploy"}, "policy.notifications.channel: String should match pattern"),
        ({"channel": "#" + "x" * 81}, "policy.notifications.channel: String should match pattern"),
        ({"mentionOnFailure": ["U0LEAD0001"]}, "policy.notifications.channel: Field required"),
        (
            {"channel": "C0DEPLOY01", "mentionOnFailure": ["alice"]},
            "policy.notifications.mentionOnFailure[0]: String should match pattern",
        ),
        (
            {"channel": "C0DEPLOY01", "mentionOnFailure": ["C0DEPLOY01"]},
            "policy.notifications.mentionOnFailure[0]: String should match pattern",
        ),
        (
            {"channel": "C0DEPLOY01", "mentionOnFailure": ["U0LEAD0001", "U0LEAD0001"]},
            "policy.notifications.mentionOnFailure: lists U0LEAD0001 more than once",
        ),
        (
            {"channel": "C0DEPLOY01", "mentionOnFailure": [f"U0LEAD{i:04d}" for i in range(21)]},
            "policy.notifications.mentionOnFailure: List should have at most 20 items",
        ),
        ({"channel": "C0DEPLOY01", "mentions": []}, "policy.notifications.mentions: Extra inputs are not permitted"),
    ],
)
def test_an_invalid_notifications_section_names_the_field_and_problem(
    tmp_path: Path, spec_data: dict[str, Any], notifications: dict[str, Any], expected: str
) -> None:
    # GIVEN a spec whose notifications section has one mistake
    spec_data["policy"] = {"notifications": notifications}
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(spec_data))
    # WHEN it is loaded THEN the error names the file, the field and the problem
    with pytest.raises(SpecInvalid) as raised:
        load_spec_file(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert expected in str(raised.value)


@pytest.fixture
def build(build_spec: Build) -> Build:
    return build_spec
