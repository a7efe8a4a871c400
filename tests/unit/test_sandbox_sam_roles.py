"""The sandbox makes each function's and the state machine's execution role as SAM does: checked against
aws-sam-translator itself, run in the SAM CLI's environment (.venv-sam, which `make test` installs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandbox.sam_roles import FUNCTION, STATE_MACHINE, execution_role, role_logical_id
from sandbox.template import TemplateError, load_template

REPO = Path(__file__).resolve().parents[2]
SAM_PYTHON = REPO / ".venv-sam" / "bin" / "python"


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    if not SAM_PYTHON.exists():
        pytest.skip("needs .venv-sam (make install)")
    completed = subprocess.run(
        [str(SAM_PYTHON), str(REPO / "tests" / "sam_translate.py"), str(REPO / "template.yaml")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "AWS_DEFAULT_REGION": "af-south-1"},
    )
    return dict(json.loads(completed.stdout)["Resources"])


def test_every_execution_role_is_what_sam_makes(translated: dict[str, Any]) -> None:
    template = load_template(REPO / "template.yaml")
    serverless = {k: r for k, r in template["Resources"].items() if r["Type"] in (FUNCTION, STATE_MACHINE)}
    assert len(serverless) == 22  # 21 functions and the state machine
    for logical_id, resource in serverless.items():
        ours = json.loads(json.dumps(execution_role(logical_id, resource, template.get("Globals", {}))))
        assert ours == translated[role_logical_id(logical_id)], logical_id


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"Policies": ["AmazonS3ReadOnlyAccess"]}, "by name"),
        ({"Policies": [{"S3ReadPolicy": {"BucketName": "b"}}]}, "S3ReadPolicy"),
        ({"Policies": [{"LambdaInvokePolicy": {"Name": "f"}}]}, "takes exactly FunctionName"),
        ({"Role": "arn:aws:iam::123456789012:role/r"}, "Role"),
        ({"EventInvokeConfig": {"DestinationConfig": {"OnFailure": {"Type": "SNS", "Destination": "t"}}}}, "SQS"),
    ],
)
def test_forms_the_sandbox_does_not_expand_are_refused(properties: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        execution_role("F", {"Type": FUNCTION, "Properties": properties}, {})
