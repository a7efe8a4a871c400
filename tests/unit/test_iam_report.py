"""The least-privilege report: uses attributed to the grants that allow them; an unused grant needs a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scripts.iam_report import REPO, collect, render

ROLE = "arn:aws:iam::123456789012:role/bbws-deployer-PlanFunctionRole"
TARGET = "arn:aws:iam::536580886816:role/bbws-deployer"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["dynamodb:UpdateItem", "dynamodb:BatchWriteItem"],
            "Resource": "arn:aws:dynamodb:af-south-1:123456789012:table/records",
        },
        {
            "Sid": "Delete",
            "Effect": "Allow",
            "Action": "dynamodb:DeleteItem",
            "Resource": "arn:aws:dynamodb:*:536580886816:table/Site-*",
            "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["_v-*"]}},
        },
    ],
}


def use(role: str, action: str, resource: str, allowed: bool = True, **keys: list[str]) -> dict[str, Any]:
    return {"role": role, "action": action, "resource": resource, "allowed": allowed, "keys": keys, "count": 2}


def write(tmp_path: Path, usage: list[dict[str, Any]], repo: Path = REPO) -> Path:
    data = {
        "repo": str(repo),
        "usage": usage,
        "policies": {
            ROLE: {"inline": {"PlanFunctionRolePolicy0": POLICY}, "managed": ["arn:aws:iam::aws:policy/X"]},
            TARGET: {"inline": {"provision": POLICY}, "managed": []},
            "arn:aws:iam::123456789012:role/some-test-role": {"inline": {"p": POLICY}, "managed": []},
        },
    }
    path = tmp_path / "1.json"
    path.write_text(json.dumps(data))
    return path


def test_uses_mark_their_grants_and_the_rest_need_a_reason(tmp_path: Path) -> None:
    # GIVEN the Plan role updated the table, and the target role deleted a validation item and was denied a site
    table = "arn:aws:dynamodb:af-south-1:123456789012:table/records"
    site = "arn:aws:dynamodb:af-south-1:536580886816:table/Site-X"
    usage = [
        use(ROLE, "dynamodb:UpdateItem", table),
        use(TARGET, "dynamodb:DeleteItem", site, **{"dynamodb:LeadingKeys": ["_v-1"]}),
        use(TARGET, "dynamodb:DeleteItem", site, allowed=False, **{"dynamodb:LeadingKeys": ["site-001"]}),
    ]
    reports = collect([write(tmp_path, usage)])
    # THEN only the stack's roles are reported, the target role under one name whatever the account
    assert set(reports) == {"PlanFunctionRole", "DeploymentRole (target accounts)"}
    text, unexplained = render(reports, {"PlanFunctionRole": {"arn:aws:iam::aws:policy/X": "Lambda's."}})
    # AND a grant no use needed is listed, and without a reason it is a finding
    assert "PlanFunctionRole: dynamodb:BatchWriteItem on " + table in unexplained
    assert not any("UpdateItem" in u and "PlanFunctionRole" in u for u in unexplained)
    assert not [u for u in unexplained if u.startswith("DeploymentRole") and "DeleteItem" in u]  # matched the condition
    assert "| denied (tests that show a denial) | resource | calls |" in text
    assert f"| `dynamodb:DeleteItem` | `{site}` | 2 |" in text
    # WHEN a reason is given THEN it is printed and the grant is no longer a finding
    reasons = {"PlanFunctionRole": {"arn:aws:iam::aws:policy/X": "Lambda's.", "dynamodb:BatchWriteItem": "Spills."}}
    text, unexplained = render(reports, reasons)
    plan = [u for u in unexplained if u.startswith("PlanFunctionRole")]
    assert plan == ["PlanFunctionRole: dynamodb:DeleteItem on arn:aws:dynamodb:*:536580886816:table/Site-*"]
    assert "| `dynamodb:BatchWriteItem` | `" + table + "` | Spills. |" in text


def test_sandboxes_of_another_checkout_are_left_out(tmp_path: Path) -> None:
    path = write(tmp_path, [use(ROLE, "dynamodb:UpdateItem", "x")], repo=tmp_path)
    assert collect([path]) == {}
