"""What a cold start imports and does, each function in a fresh interpreter as Lambda's INIT runs it:
the functions' runtime environment's (.venv-lambda, the layer's requirements only), as the sandbox's workers.

These assert behaviour (which modules load, what the tracer patches, that deferred models
still validate), never timing: bench/cold_start.py measures the time.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.cold_start import LAMBDA_PYTHON, function_environments, lambda_environment

REPO = Path(__file__).resolve().parents[2]
LAYER = REPO / "layers" / "deployer"


def cold_import(function: str, then: str = "") -> dict[str, Any]:
    """Import the function's app.py in a new interpreter with its Lambda environment (tracing on); run
    ``then``, which sets ``result``, and return the result."""
    function_dir = REPO / "functions" / function
    env = lambda_environment(function_dir, function_environments(REPO / "template.yaml", [function])[function])
    program = f"""
import json, sys
network = []
sys.addaudithook(lambda event, args: network.append(event) if event in ("socket.connect", "socket.sendto",
    "socket.sendmsg", "socket.getaddrinfo") else None)
sys.path[:0] = [{str(function_dir)!r}, {str(LAYER)!r}]
import app
result = {{"network": network, "modules": sorted(sys.modules)}}
{then}
print(json.dumps(result))
"""
    done = subprocess.run(
        [LAMBDA_PYTHON, "-I", "-c", program], cwd=function_dir, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_the_slack_endpoint_imports_neither_specs_nor_planning() -> None:
    # WHEN the Slack interactions function starts cold
    result = cold_import("slack_interactions")

    # THEN a click's modules are loaded, and nothing it never uses: no spec models, YAML or planning
    modules = set(result["modules"])
    assert {"deployer.interactions", "deployer.slack", "deployer.approvals"} <= modules
    assert not modules & {"yaml", "deployer.spec", "deployer.specstore", "deployer.models", "deployer.plan"}


def test_tracing_patches_what_the_functions_call_and_sends_nothing_at_import() -> None:
    # WHEN a function starts cold with tracing on, as Tracing: Active runs it on Lambda
    result = cold_import(
        "plan",
        then="from aws_xray_sdk.core import patcher; result['patched'] = sorted(patcher._PATCHED_MODULES)",
    )

    # THEN AWS calls and HTTP (Slack) are traced, no other library is loaded to be patched,
    # and the import neither resolves nor reaches any address (no X-Ray daemon, no AWS)
    assert result["patched"] == ["botocore", "httplib"]
    assert "requests" not in result["modules"]
    assert result["network"] == []


def test_deferred_spec_models_validate_when_first_used_from_many_threads() -> None:
    # GIVEN a cold function whose import built none of the environment spec's models
    prod = REPO / "environments" / "prod.yaml"
    then = f"""
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from deployer.spec import EnvironmentSpec, load_spec_file
result["builtAtImport"] = EnvironmentSpec.__pydantic_complete__
# WHEN eight threads parse PROD's spec at once, the first use of every model
with ThreadPoolExecutor(8) as pool:
    specs = list(pool.map(lambda _: load_spec_file(Path({str(prod)!r})), range(8)))
result["hashes"] = sorted(set(s.spec_hash() for s in specs))
result["tables"] = [t.partition_key.model_dump() for t in specs[0].resources.tables]
"""
    result = cold_import("release_lock", then=then)

    # THEN each thread gets the same valid spec, and nested models serialise once built on demand
    assert result["builtAtImport"] is False
    assert len(result["hashes"]) == 1
    assert result["tables"]
    assert all(key["name"] for key in result["tables"])
