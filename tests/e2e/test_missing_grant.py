"""A grant missing from the roles shows up in the sandbox exactly as on AWS: the deployment fails naming it.

The sandbox installs a copy of the repository whose target-account role lacks one statement
(cloudwatch:ListMetrics, which post-deployment validation needs); everything else is the repository's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer_cli import client
from deployer_cli.client import Stack
from sandbox.server import Sandbox
from tests.sandbox_fixtures import REPO

MISSING = """              - Sid: TableMetrics
                # Post-deployment validation: the table's metrics are visible (monitoring.metrics).
                Effect: Allow
                Action: cloudwatch:ListMetrics
                Resource: "*"
"""


@pytest.fixture(scope="module")
def without_list_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Stack]]:
    copy = tmp_path_factory.mktemp("repo-without-list-metrics")
    for name in ("template.yaml", "functions", "layers", "statemachine", "environments"):
        (copy / name).symlink_to(REPO / name)
    role = (REPO / "target-account" / "deployment-role.yaml").read_text()
    assert MISSING in role, "the statement this test removes is no longer in target-account/deployment-role.yaml"
    (copy / "target-account").mkdir()
    (copy / "target-account" / "deployment-role.yaml").write_text(role.replace(MISSING, ""))
    with Sandbox(repo=copy, log_dir=tmp_path_factory.mktemp("logs")) as sandbox:
        yield sandbox, Stack.discover(sandbox.session(), sandbox.stack_name, sandbox.region, sandbox.endpoint)


def test_dev_fails_validation_naming_the_denied_action(without_list_metrics: tuple[Sandbox, Stack]) -> None:
    _, stack = without_list_metrics
    # WHEN DEV is deployed
    version = client.push_spec(stack, Path(REPO / "environments"), "dev")
    arn = client.start(stack, client.build_request("dev", "pytest", None, False, version))
    client.wait(stack, arn, poll_seconds=0.1, timeout_seconds=300)
    result = client.summary(stack, arn)
    # THEN it does not succeed: the metrics check of its table failed with IAM's denial, naming the action
    assert result["status"] != "SUCCEEDED"
    assert result["error"] == "ValidationFailed"
    failed = [c for c in result["checks"] if not c["passed"]]
    assert {c["name"] for c in failed} == {"monitoring.metrics"}
    assert all(c["detail"].startswith("AccessDenied: User: ") for c in failed)
    assert all("is not authorized to perform: cloudwatch:ListMetrics" in c["detail"] for c in failed)
    # AND every other check passed, so nothing but the missing grant stood in the way
    assert len(result["checks"]) > len(failed)
