"""The deploy workflow tells the truth: its deploy step fails when the deployment fails, keeps the outcome,
and its AWS session lasts as long as the job may.

The step's script is run as GitHub runs it, with a `deployer` stub whose outcome and exit status come from
the real CLI's reporting (`deployer_cli.main._report`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from deployer.models import RELEASE_TAG
from sandbox.template import load_template
from scripts import check_workflows

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "deploy.yml"
DEPLOY_STEP = "Deploy through the API and wait for the outcome"
# How GitHub runs a `run:` step on Linux, by its `shell:` (docs: "Using a specific shell"); none is `bash -e`.
GITHUB_SHELLS: dict[str | None, list[str]] = {
    None: ["bash", "-e"],
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail"],
    "sh": ["sh", "-e"],
}
STUB = """#!{python}
import json, os, sys
from argparse import Namespace
from deployer_cli.main import _report
with open("args.json", "w") as f:
    json.dump(sys.argv[1:], f)
with open("token.txt", "w") as f:
    f.write(os.environ.get("DEPLOYER_OIDC_TOKEN", ""))
sys.exit(_report(Namespace(json=True), {{"status": {status!r}, "environment": "prod", "deploymentId": "prod-1"}}))
"""


# `gh api` as the release-tag step calls it, against a repository kept in gh-state.json: refs -> tag
# objects -> commits. Every call is logged to gh-calls.json.
GH_STUB = """#!{python}
import json, sys
from pathlib import Path
state_file, calls_file = Path("gh-state.json"), Path("gh-calls.json")
state = json.loads(state_file.read_text())
args = sys.argv[1:]
calls = json.loads(calls_file.read_text()) if calls_file.exists() else []
calls.append(args)
calls_file.write_text(json.dumps(calls))
assert args[0] == "api", args
path = args[1].split("/", 3)[3]
fields = dict(a.split("=", 1) for flag, a in zip(args, args[1:]) if flag == "-f")
if path.startswith("git/matching-refs/"):
    prefix = "refs/" + path.removeprefix("git/matching-refs/")
    print("\\n".join(r for r in state["refs"] if r.startswith(prefix)))
elif path.startswith("commits/"):
    print(state["objects"][state["refs"]["refs/tags/" + path.removeprefix("commits/")]])
elif path == "git/tags":
    sha = "tagobject%d" % len(state["objects"])
    state["objects"][sha] = fields["object"]
    state["messages"] = state.get("messages", {{}}) | {{fields["tag"]: fields["message"]}}
    print(sha)
elif path == "git/refs":
    assert fields["ref"] not in state["refs"], "GitHub refuses a ref that exists"
    state["refs"][fields["ref"]] = fields["sha"]
else:
    sys.exit("unexpected gh api " + path)
state_file.write_text(json.dumps(state))
"""


def workflow() -> dict[str, Any]:
    return dict(yaml.safe_load(WORKFLOW.read_text()))


def deploy_step() -> dict[str, Any]:
    steps = workflow()["jobs"]["deploy"]["steps"]
    return next(s for s in steps if s.get("name") == DEPLOY_STEP)


class TokenService(BaseHTTPRequestHandler):
    """GitHub's ID-token endpoint for a job with `id-token: write`: a token for the audience asked."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        granted = self.headers.get("Authorization") == "bearer request-token" and query.get("api-version") == ["2.0"]
        body = json.dumps({"value": f"oidc-token-for-{query['audience'][0]}"} if granted else {"message": "no"})
        self.send_response(200 if granted else 401)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def token_service() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), TokenService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/token?api-version=2.0"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def id_token_endpoint(token_service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What GitHub sets in a job with `id-token: write` (the request token's value is the service's to check)."""
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", token_service)


def run_step(tmp_path: Path, status: str, **inputs: str) -> subprocess.CompletedProcess[str]:
    """The deploy step's script, in a checkout whose `.venv/bin/deployer` reports ``status``."""
    step = deploy_step()
    stub = tmp_path / ".venv" / "bin" / "deployer"
    stub.parent.mkdir(parents=True)
    stub.write_text(STUB.format(python=sys.executable, status=status))
    stub.chmod(0o755)
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    env = {
        **os.environ,
        "ENVIRONMENT": "prod",
        "CHANGE_TICKET": "",
        "SCHEDULED_FOR": "",
        "RELEASE_TAG": "",
        "ACTOR": "octocat",
        "RUN_ID": "42",
        "GITHUB_SHA": "0123abc",
        "DEPLOYER_OIDC_AUDIENCE": "bbws-deployer",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
        **inputs,
    }
    shell = GITHUB_SHELLS[step.get("shell")]
    return subprocess.run([*shell, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("status", ["FAILED", "ROLLED_BACK", "ROLLBACK_FAILED"])
def test_a_failed_deployment_fails_the_step_and_its_outcome_is_kept(tmp_path: Path, status: str) -> None:
    # WHEN the deployment ends badly
    completed = run_step(tmp_path, status)
    # THEN the step fails, and deployment.json (the artifact) still holds the outcome
    assert completed.returncode == 1, completed.stderr
    assert json.loads((tmp_path / "deployment.json").read_text())["status"] == status


def test_a_successful_deployment_passes_with_the_inputs_passed_on(tmp_path: Path) -> None:
    completed = run_step(tmp_path, "SUCCEEDED", CHANGE_TICKET="CHG-9", SCHEDULED_FOR="2030-01-07T09:00:00+02:00")
    assert completed.returncode == 0, completed.stderr
    assert json.loads((tmp_path / "deployment.json").read_text())["status"] == "SUCCEEDED"
    args = json.loads((tmp_path / "args.json").read_text())
    assert args[:3] == ["run", "--aws", "--via-api"]
    assert args[args.index("--client-token") + 1] == "gh-42-prod"
    assert args[args.index("--requested-by") + 1] == "github:octocat"
    assert args[args.index("--change-ticket") + 1] == "CHG-9"
    assert args[args.index("--at") + 1] == "2030-01-07T09:00:00+02:00"
    # AND the job's GitHub OIDC token, for the deployer's audience, is handed to the CLI
    assert (tmp_path / "token.txt").read_text() == "oidc-token-for-bbws-deployer"
    assert "oidc-token-for-bbws-deployer" not in completed.stdout.replace(
        "::add-mask::oidc-token-for-bbws-deployer", ""
    )


def test_no_token_no_deployment(tmp_path: Path) -> None:
    # GIVEN GitHub refuses the job a token WHEN the step runs THEN it fails before the CLI is called
    completed = run_step(tmp_path, "SUCCEEDED", ACTIONS_ID_TOKEN_REQUEST_TOKEN="wrong")
    assert completed.returncode != 0
    assert not (tmp_path / "args.json").exists()


def test_empty_optional_inputs_are_not_passed(tmp_path: Path) -> None:
    assert run_step(tmp_path, "SUCCEEDED").returncode == 0
    args = json.loads((tmp_path / "args.json").read_text())
    assert "--change-ticket" not in args
    assert "--at" not in args
    assert "--release-tag" not in args


def run_tag_step(tmp_path: Path, sha: str = "0123abc", run_number: str = "7") -> subprocess.CompletedProcess[str]:
    """The release-tag job's step, with a `gh` that answers from tmp_path/gh-state.json."""
    step = workflow()["jobs"]["release-tag"]["steps"][0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gh = bin_dir / "gh"
    gh.write_text(GH_STUB.format(python=sys.executable))
    gh.chmod(0o755)
    state = tmp_path / "gh-state.json"
    if not state.exists():
        state.write_text(json.dumps({"refs": {}, "objects": {}}))
    (tmp_path / "step.sh").write_text(step["run"])
    output = tmp_path / "github-output"
    output.write_text("")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_REPOSITORY": "octo-org/bbws",
        "GITHUB_SHA": sha,
        "GITHUB_RUN_NUMBER": run_number,
        "GITHUB_RUN_ID": "4242",
        "GITHUB_OUTPUT": str(output),
        "GH_TOKEN": "token",
    }
    shell = GITHUB_SHELLS[step.get("shell")]
    return subprocess.run(
        [*shell, str(tmp_path / "step.sh")], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )


def test_prod_tags_the_commit_it_deploys_once_and_passes_the_tag_on(tmp_path: Path) -> None:
    # WHEN the release-tag step runs for a PROD run
    first = run_tag_step(tmp_path)
    # THEN it made an annotated tag v<today UTC>-prod-run<N> on the run's commit, and output its name
    assert first.returncode == 0, first.stderr
    state = json.loads((tmp_path / "gh-state.json").read_text())
    [(ref, tag_object)] = state["refs"].items()
    tag = ref.removeprefix("refs/tags/")
    assert re.fullmatch(r"v[0-9]{4}\.[0-9]{2}\.[0-9]{2}-prod-run7", tag)
    assert re.fullmatch(RELEASE_TAG, tag)
    assert state["objects"][tag_object] == "0123abc"
    assert "0123abc" in state["messages"][tag]
    assert (tmp_path / "github-output").read_text() == f"tag={tag}\n"
    # AND a re-run of the same workflow run finds that tag instead of making another
    again = run_tag_step(tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "gh-state.json").read_text())["refs"] == state["refs"]
    assert (tmp_path / "github-output").read_text() == f"tag={tag}\n"
    # AND a tag of this run number on another commit fails the job rather than deploy under it
    other = run_tag_step(tmp_path, sha="fedcba9")
    assert other.returncode != 0
    assert "names 0123abc, not fedcba9" in other.stdout


def test_only_the_release_tag_job_may_write_and_only_prod_waits_for_it(tmp_path: Path) -> None:
    jobs = workflow()["jobs"]
    assert workflow()["permissions"] == {"contents": "read", "id-token": "write"}
    assert jobs["release-tag"]["permissions"] == {"contents": "write"}
    assert jobs["release-tag"]["if"] == "inputs.environment == 'prod'"
    assert "permissions" not in jobs["deploy"]
    assert jobs["deploy"]["needs"] == "release-tag"
    assert "needs.release-tag.result == 'skipped'" in jobs["deploy"]["if"]
    # AND the tag reaches the CLI
    completed = run_step(tmp_path, "SUCCEEDED", RELEASE_TAG="v2030.01.07-prod-run7")
    assert completed.returncode == 0, completed.stderr
    args = json.loads((tmp_path / "args.json").read_text())
    assert args[args.index("--release-tag") + 1] == "v2030.01.07-prod-run7"
    assert deploy_step()["env"]["RELEASE_TAG"] == "${{ needs.release-tag.outputs.tag }}"


def test_the_outcome_is_uploaded_even_when_the_step_failed() -> None:
    steps = workflow()["jobs"]["deploy"]["steps"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "deployment.json"


def test_the_ci_session_lasts_as_long_as_the_job() -> None:
    # GIVEN the job's timeout (a PROD approval alone may take 120 minutes)
    job = workflow()["jobs"]["deploy"]
    job_seconds = int(job["timeout-minutes"]) * 60
    credentials = next(s for s in job["steps"] if "configure-aws-credentials" in str(s.get("uses", "")))
    resources = load_template(REPO / "template.yaml")["Resources"]
    # THEN the session asked for, and each CI role's maximum, cover it
    assert int(credentials["with"]["role-duration-seconds"]) >= job_seconds
    for environment in ("Dev", "Sit", "Prod"):
        role = resources[f"GitHubCi{environment}Role"]["Properties"]
        assert int(role["MaxSessionDuration"]) >= int(credentials["with"]["role-duration-seconds"])
        assert int(role["MaxSessionDuration"]) <= 43200  # IAM's upper bound


def test_actionlint_reports_what_the_configuration_does_not_explain(tmp_path: Path) -> None:
    # GIVEN a workflow with a configured label, the `vars` context, an unknown label and an unknown property
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n"
        "  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ vars.X }}\n"
        "  b:\n    runs-on: windows-3000\n    steps:\n      - run: echo ${{ github.no_such_thing }}\n"
    )
    # WHEN the lint runs
    found = check_workflows.problems(check_workflows.lint([bad]), check_workflows.known_labels())
    # THEN only the two real problems are reported, each with its place
    assert len(found) == 2, found
    assert any('label "windows-3000" is unknown' in p and ":8:" in p for p in found)
    assert any('"no_such_thing" is not defined' in p and ":10:" in p for p in found)
    # AND the project's workflows are clean
    assert check_workflows.problems(check_workflows.lint([WORKFLOW]), check_workflows.known_labels()) == []
