"""The least-privilege report (docs/iam.md): per role, what the sandbox saw it use, and every grant nothing used.

`make iam-report` runs the integration and end-to-end suites (game days included) with
``BBWS_IAM_USAGE_DIR`` set: each sandbox then writes, when it stops, every authorization its IAM
layer evaluated (role, action, resource, condition keys, decision) and the policies of the roles
that made them (``IamEnforcer.report``). This script reads those files and, for each role:

- lists what it used, by action and resource, with how often;
- attributes each allowed use to the statements that allow it, so every (statement, action) pair
  of the role's inline policies that no use needed is listed as not exercised; each must carry a
  one-line reason in ``docs/iam-grants.yaml`` (kept: why) or be removed from the policy. A pair
  without a reason makes the script exit 1, so a new unused grant cannot slip in unexplained;
- lists its managed policies (AWS's, attached by SAM for Lambda's logs and X-Ray), whose use is
  Lambda's or X-Ray's, not the function's, with their reason from the same file.

Sandboxes of another checkout (tests that install an altered copy of the template) are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox.iam_policy import Request, evaluate, statements

REPO = Path(__file__).resolve().parent.parent
REASONS = REPO / "docs" / "iam-grants.yaml"
STACK_PREFIX = "bbws-deployer-"


@dataclass
class RoleReport:
    name: str
    used: Counter[tuple[str, str]] = field(default_factory=Counter)
    denied: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (policy, statement label, action pattern, resource index) -> (resource as first seen, exercised?)
    grants: dict[tuple[str, str, str, int], tuple[str, bool]] = field(default_factory=dict)
    managed: set[str] = field(default_factory=set)


def role_name(arn: str) -> str | None:
    """The report's name for one of the stack's roles (the target role in every account is one); None otherwise."""
    name = arn.rsplit("/", 1)[-1]
    if name == STACK_PREFIX.rstrip("-"):
        return "DeploymentRole (target accounts)"
    return name.removeprefix(STACK_PREFIX) if name.startswith(STACK_PREFIX) else None


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


Grant = tuple[tuple[str, str, str, int], dict[str, Any]]


def _grants(policies: dict[str, Any]) -> list[Grant]:
    """Each (statement, action, resource) the role's inline Allow statements grant, as a statement of its own."""
    found: list[Grant] = []
    for policy, document in policies["inline"].items():
        for index, statement in enumerate(statements(document)):
            if statement["Effect"] != "Allow":
                continue
            label = str(statement.get("Sid") or f"#{index}")
            for action in _as_list(statement.get("Action")):
                for position, resource in enumerate(_as_list(statement.get("Resource", "*"))):
                    one = {"Effect": "Allow", "Action": action, "Resource": resource}
                    if "Condition" in statement:
                        one["Condition"] = statement["Condition"]
                    found.append(((policy, label, action, position), one))
    return found


def collect(files: list[Path], repo: Path = REPO) -> dict[str, RoleReport]:
    """Per role: its uses and denials, and which of its grants any use needed, over every sandbox's file."""
    reports: dict[str, RoleReport] = {}
    for path in files:
        data = json.loads(path.read_text())
        if Path(data["repo"]) != repo.resolve():
            continue
        grants: dict[str, list[Grant]] = {}
        for arn, policies in data["policies"].items():
            name = role_name(arn)
            if name is None:
                continue
            report = reports.setdefault(name, RoleReport(name))
            report.managed.update(policies["managed"])
            grants[arn] = _grants(policies)
            for key, one in grants[arn]:
                report.grants.setdefault(key, (str(one["Resource"]), False))
        for use in data["usage"]:
            name = role_name(use["role"])
            if name is None:
                continue
            report = reports[name]
            if not use["allowed"]:
                report.denied[(use["action"], use["resource"])] += use["count"]
                continue
            request = Request(use["action"], use["resource"], {**use["keys"], "aws:PrincipalArn": [use["role"]]})
            allowing = [
                key for key, one in grants.get(use["role"], []) if evaluate([{"Statement": [one]}], request).allowed
            ]
            for key in allowing:
                report.grants[key] = (report.grants[key][0], True)
            # Listed under the grant that allows it (its resource pattern), so a role's uses read as its grants do.
            shown = report.grants[allowing[0]][0] if allowing else use["resource"]
            report.used[(use["action"], shown)] += use["count"]
    return reports


def render(reports: dict[str, RoleReport], reasons: dict[str, dict[str, str]]) -> tuple[str, list[str]]:
    """The markdown report, and the unused grants that have no reason."""
    unexplained: list[str] = []
    lines = [
        "# IAM: what each role used, and every grant nothing used",
        "",
        "Written by `make iam-report` (`scripts/iam_report.py`) from the sandbox's IAM layer",
        "(`sandbox/iam.py`) over the integration and end-to-end suites, game days included.",
        "A grant nothing exercised is kept only with the reason given in `docs/iam-grants.yaml`.",
        "",
    ]
    for name in sorted(reports):
        report = reports[name]
        role_reasons = reasons.get(name, {})
        lines += [f"## {name}", ""]
        if report.used:
            lines += ["| used | resource (as granted) | calls |", "|---|---|---|"]
            lines += [f"| `{a}` | `{r}` | {n} |" for (a, r), n in sorted(report.used.items())]
            lines.append("")
        else:
            lines += ["Made no call in the sandbox.", ""]
        unused = sorted({(action, resource) for (_, _, action, _), (resource, hit) in report.grants.items() if not hit})
        if unused:
            lines += ["| granted, not exercised | resource | why it is kept |", "|---|---|---|"]
            for action, resource in unused:
                reason = role_reasons.get(action)
                if reason is None:
                    unexplained.append(f"{name}: {action} on {resource}")
                lines.append(f"| `{action}` | `{resource}` | {reason or '**no reason: remove it**'} |")
            lines.append("")
        for arn in sorted(report.managed):
            reason = role_reasons.get(arn)
            if reason is None:
                unexplained.append(f"{name}: managed policy {arn}")
            lines.append(f"- Managed policy `{arn}`: {reason or '**no reason**'}")
        if report.managed:
            lines.append("")
        if report.denied:
            lines += ["| denied (tests that show a denial) | resource | calls |", "|---|---|---|"]
            lines += [f"| `{a}` | `{r}` | {n} |" for (a, r), n in sorted(report.denied.items())]
            lines.append("")
    return "\n".join(lines), unexplained


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("usage_dir", type=Path, help="where the sandboxes wrote their IAM usage (BBWS_IAM_USAGE_DIR)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "iam.md")
    args = parser.parse_args(argv)
    files = sorted(args.usage_dir.glob("*.json"))
    if not files:
        print(f"iam-report: no usage files in {args.usage_dir}", file=sys.stderr)
        return 2
    reasons: dict[str, dict[str, str]] = yaml.safe_load(REASONS.read_text()) or {}
    grouped: dict[str, dict[str, str]] = defaultdict(dict, reasons)
    text, unexplained = render(collect(files), grouped)
    args.output.write_text(text + "\n")
    print(f"iam-report: {len(files)} sandbox(es), wrote {args.output}")
    for line in unexplained:
        print(f"iam-report: unused grant without a reason: {line}", file=sys.stderr)
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
