"""Static checks of the state machine that cfn-lint cannot make (it does not read DefinitionUri).

1. Every ``${Placeholder}`` in the ASL has a DefinitionSubstitutions entry, and every
   entry is used.
2. Every Task retries (transient errors) and is caught (cleanup): a Task inside a Map or
   Parallel may leave the Catch to an enclosing state.
3. asl-validator accepts the definition with the substitutions applied.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sandbox.template import load_template

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def state_machines(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (logical_id, r["Properties"])
        for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::Serverless::StateMachine" and "DefinitionUri" in r["Properties"]
    ]


def task_problems(states: dict[str, Any], where: str, caught_by_parent: bool) -> list[str]:
    problems = []
    for name, state in states.items():
        if state["Type"] == "Task":
            if not state.get("Retry"):
                problems.append(f"{where}{name}: Task has no Retry")
            if not state.get("Catch") and not caught_by_parent:
                problems.append(f"{where}{name}: Task has no Catch")
        nested = [state["ItemProcessor"]] if state["Type"] == "Map" else state.get("Branches", [])
        for inner in nested:
            problems += task_problems(inner["States"], f"{where}{name}/", caught_by_parent or bool(state.get("Catch")))
    return problems


def check(template_path: Path, validator: Path) -> list[str]:
    problems: list[str] = []
    for logical_id, props in state_machines(load_template(template_path)):
        asl_path = REPO / props["DefinitionUri"]
        text = asl_path.read_text()
        used = set(PLACEHOLDER.findall(text))
        defined = set(props.get("DefinitionSubstitutions", {}))
        problems += [
            f"{asl_path.name}: ${{{p}}} has no DefinitionSubstitutions entry in {logical_id}"
            for p in sorted(used - defined)
        ]
        problems += [
            f"{logical_id}: DefinitionSubstitutions.{p} is not used by {asl_path.name}" for p in sorted(defined - used)
        ]
        definition = json.loads(text)
        problems += [f"{asl_path.name}: {p}" for p in task_problems(definition["States"], "", False)]
        substituted = PLACEHOLDER.sub(
            lambda m: (
                f"arn:aws:lambda:af-south-1:123456789012:function:{m.group(1)}"
                if m.group(1).endswith("Arn")
                else m.group(1)
            ),
            text,
        )
        with tempfile.NamedTemporaryFile("w", suffix=".asl.json") as resolved:
            resolved.write(substituted)
            resolved.flush()
            for path in (str(asl_path), resolved.name):
                result = subprocess.run(  # noqa: S603 - our pinned linter
                    [str(validator), "--json-path", path], capture_output=True, text=True, check=False
                )
                if result.returncode:
                    problems.append(f"asl-validator rejects {asl_path.name}: {result.stdout}{result.stderr}")
    return problems


def main() -> int:
    problems = check(REPO / "template.yaml", REPO / "node_modules" / ".bin" / "asl-validator")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("ASL: placeholders, Retry/Catch and asl-validator all pass")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
