"""Cold starts: each function's import in a fresh interpreter, and its first invocation in the sandbox.

`measure()` returns two tables and prints nothing (`python -m bench.cold_start` prints them):

- import: ``import app`` timed in a new interpreter of the functions' runtime environment
  (.venv-lambda: the layer's requirements only) per run, with the function's environment
  from template.yaml and tracing on, as Lambda's INIT phase runs it; the biggest contributors
  from ``-X importtime``; and what compiling the layer's modules would add where the layer ships
  no bytecode.
- first invocation: a cold worker of each function in the sandbox, driven by real deployments,
  the deployments API and a signed Slack click.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.tables import Table, median
from sandbox.lambda_runtime import LAMBDA_VENV

REPO = Path(__file__).resolve().parent.parent
# The interpreter of the functions' runtime environment, as the sandbox's workers run (`make install` builds it).
LAMBDA_PYTHON = LAMBDA_VENV / "bin" / "python"
STACK = "bbws-deployer"
REGION = "af-south-1"
# What Lambda's cold start must fit in: the budget per function, and Slack's for an answer.
IMPORT_BUDGET_MS = 300
SLACK_DEADLINE_MS = 3000

# Run in the fresh interpreter: argv = [function dir, layer dir, JSON list of the layer's top-level packages].
# With the list, it also compiles the source of every layer module it imported: the cost of a
# layer that ships no .pyc, which Lambda's read-only /opt cannot cache.
_CHILD = """
import json, sys, time
function_dir, layer_dir, layer_packages = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path[:0] = [function_dir, layer_dir]
started, cpu_started = time.perf_counter(), time.process_time()
import app
seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
assert callable(app.lambda_handler)
compile_seconds = 0.0
if layer_packages:
    layer = set(layer_packages)
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if name.partition(".")[0] in layer and path.endswith(".py"):
            with open(path, "rb") as source:
                text = source.read()
            compiling = time.process_time()
            compile(text, path, "exec", dont_inherit=True)
            compile_seconds += time.process_time() - compiling
print(json.dumps({"seconds": seconds, "cpuSeconds": cpu_seconds, "compileSeconds": compile_seconds}))
"""


@dataclass
class ImportNode:
    name: str
    self_us: int
    cumulative_us: int
    children: list[ImportNode] = field(default_factory=list)


def parse_importtime(stderr: str) -> list[ImportNode]:
    """The import tree ``-X importtime`` prints (children before their parent); returns its roots."""
    waiting: dict[int, list[ImportNode]] = defaultdict(list)
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, label = line.removeprefix("import time:").split("|", 2)
        name = label.strip()
        depth = (len(label) - len(label.lstrip()) - 1) // 2
        node = ImportNode(name, int(self_us), int(cumulative_us), waiting.pop(depth + 1, []))
        waiting[depth].append(node)
    return waiting[0]


def contributors(roots: Iterable[ImportNode], ours: tuple[str, ...] = ("app", "deployer")) -> list[tuple[str, float]]:
    """Milliseconds by contributor under ``import app``: our modules by their own (self) time, everything
    else by the package it enters through (its cumulative time, charged to the first importer)."""
    totals: dict[str, float] = defaultdict(float)

    def visit(node: ImportNode) -> None:
        if node.name.partition(".")[0] in ours:
            totals[f"{node.name} (self)"] += node.self_us / 1000
            for child in node.children:
                visit(child)
        else:
            totals[node.name.partition(".")[0]] += node.cumulative_us / 1000

    for root in roots:
        if root.name == "app":
            visit(root)
    return sorted(totals.items(), key=lambda item: -item[1])


def function_environments(template_path: Path, function_names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Each function's variables from template.yaml (Globals, then its own), keyed by its code directory.

    Resources resolve to placeholders named after them: an import reads no resource."""
    from sandbox.template import Resolver, cfn_string, load_template

    template = load_template(template_path)
    resolver = Resolver(
        template,
        STACK,
        REGION,
        "000000000000",
        refs={logical_id: f"{STACK}-{logical_id}" for logical_id in template["Resources"]},
    )
    globals_ = template.get("Globals", {}).get("Function", {})
    wanted = set(function_names)
    environments: dict[str, dict[str, str]] = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        name = Path(str(props.get("CodeUri", ""))).name
        if name not in wanted:
            continue
        variables = {
            **globals_.get("Environment", {}).get("Variables", {}),
            **props.get("Environment", {}).get("Variables", {}),
        }
        environments[name] = {
            **{k: cfn_string(v) for k, v in resolver.resolve(variables).items()},
            "AWS_LAMBDA_FUNCTION_NAME": f"{STACK}-{logical_id}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(props.get("MemorySize", globals_.get("MemorySize", 128))),
        }
    return environments


def lambda_environment(function_dir: Path, variables: dict[str, str]) -> dict[str, str]:
    """The process environment Lambda gives a function with ``Tracing: Active``, the variables beside it.

    Nothing else of ours leaks in (no PYTHON*, no AWS profile). LAMBDA_TASK_ROOT is what makes
    Powertools' Tracer trace (and patch) as on AWS. The X-Ray daemon address points at loopback:
    the SDK only opens a UDP socket at import and sends nothing until a segment closes, so
    nothing is ever sent from an import."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "TZ") if k in os.environ}
    return {
        **keep,
        **variables,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "LAMBDA_TASK_ROOT": str(function_dir),
        "_HANDLER": "app.lambda_handler",
    }


def layer_packages(requirements: Path) -> list[str]:
    """Top-level import names of what `sam build` puts in the layer: requirements.txt and their requirements."""
    pending = [
        Requirement(line.strip())
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        for spec in metadata.distribution(requirement.name).requires or []:
            required = Requirement(spec)
            extras = {"", *requirement.extras}
            if required.marker is None or any(required.marker.evaluate({"extra": e}) for e in extras):
                pending.append(required)
    return sorted(
        {
            top
            for top, distributions in metadata.packages_distributions().items()
            if any(canonicalize_name(d) in found for d in distributions)
        }
        | {"deployer"}
    )


def _interpreter_start_seconds(python: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-I", "-c", "pass"], env=env, check=True)
    return time.perf_counter() - started


def _run_child(
    function_dir: Path,
    layer_dir: Path,
    env: dict[str, str],
    packages: Sequence[str],
    *flags: str,
    python: Path = LAMBDA_PYTHON,
) -> tuple[dict[str, float], str]:
    done = subprocess.run(
        [python, "-I", *flags, "-c", _CHILD, str(function_dir), str(layer_dir), json.dumps(list(packages))],
        cwd=function_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"import of {function_dir.name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def import_table(
    functions_dir: Path, layer_dir: Path, runs: int, python: Path = LAMBDA_PYTHON, only: Sequence[str] = ()
) -> Table:
    """``python`` runs the imports: the runtime environment's, unless another is to be compared with it."""
    names = sorted(p.name for p in functions_dir.iterdir() if (p / "app.py").is_file() and (not only or p.name in only))
    environments = function_environments(functions_dir.parent / "template.yaml", names)
    requirements = layer_dir / "requirements.txt"
    packages = layer_packages(requirements) if requirements.is_file() else []
    table = Table(
        f"Cold import of each function (import app, fresh interpreter, median of {runs})",
        [
            "function",
            "import ms",
            "min-max ms",
            "CPU ms",
            "biggest contributors (ms, -X importtime)",
            "+ compile ms without .pyc",
        ],
    )
    for name in names:
        function_dir = functions_dir / name
        env = lambda_environment(function_dir, environments.get(name, {}))
        # One unmeasured import first, so every measured run finds current bytecode caches.
        _run_child(function_dir, layer_dir, env, [], python=python)
        timings = [_run_child(function_dir, layer_dir, env, [], python=python)[0] for _ in range(runs)]
        seconds = [t["seconds"] * 1000 for t in timings]
        result, stderr = _run_child(function_dir, layer_dir, env, packages, "-X", "importtime", python=python)
        top = ", ".join(f"{label} {ms:.0f}" for label, ms in contributors(parse_importtime(stderr))[:3])
        table.add(
            name,
            round(median(seconds)),
            f"{min(seconds):.0f}-{max(seconds):.0f}",
            round(median([t["cpuSeconds"] * 1000 for t in timings])),
            top,
            round(result["compileSeconds"] * 1000) if packages else "",
        )
    over = [f"{row[0]} ({row[3]})" for row in table.rows if isinstance(row[3], int) and row[3] > IMPORT_BUDGET_MS]
    startup = median([_interpreter_start_seconds(python, env) * 1000 for _ in range(runs)])
    version = subprocess.run(
        [python, "-I", "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    where = (
        "the functions' runtime environment (.venv-lambda: the layer's requirements.txt at requirements-lambda.lock's "
        "versions, nothing else, as the sandbox's workers run)"
        if python == LAMBDA_PYTHON
        else f"`{python}`"
    )
    table.notes += [
        f"`import app` timed in a new `python -I` of {where} per run ({version}, {os.cpu_count()} CPUs here; "
        "Lambda's CPU share grows with memory, a full vCPU at 1,769 MB, so expect larger numbers at 512 MB), with "
        "sys.path = [function dir, layer dir] before site-packages, cwd the function dir, and the function's "
        "variables from template.yaml (Globals + its own) plus Lambda's runtime variables. Tracing is on as on "
        "AWS (`Tracing: Active`): POWERTOOLS_TRACE_DISABLED is not set and LAMBDA_TASK_ROOT is, so Powertools' "
        "Tracer imports the X-Ray SDK and patches; the daemon address is loopback, and an import connects and "
        "sends nothing (tests/unit/test_cold_start.py checks it). Interpreter start-up is not included "
        f"(`python -I -c pass`: {startup:.0f} ms wall, median). Bytecode caches are warm (one unmeasured import "
        "first). `import ms` is wall-clock time; `CPU ms` (median process time) is what to compare between runs "
        "on a busy machine, since an import is CPU-bound.",
        "Contributors come from one extra run with `-X importtime` (which inflates times a little): our modules "
        "(app, deployer.*) by their own time, which is mostly building pydantic models; every other package by "
        "its cumulative time where our code first imports it. A module two packages share is charged to the "
        "first one that imports it (botocore's urllib3 may show under boto3 or aws_xray_sdk).",
        "`+ compile ms without .pyc`: what each cold start would add if the package held no bytecode. "
        "Lambda's /opt is read-only and `sam build` alone installs the layer's wheels without compiling them, "
        "so `make build` compiles the build (checked-hash .pyc) and AWS does not pay this "
        f"({len(packages)} top-level packages: deployer and requirements.txt's distributions with their "
        "dependencies, botocore included). Measured as the CPU time of compile() on those modules' sources "
        "after the import.",
        f"CPU ms above {IMPORT_BUDGET_MS}: {', '.join(over) if over else 'none'}.",
    ]
    return table


def _first_cold(runtime: Any, since_invocations: int, since_inits: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per function (by code dir): (init s, first invocation s) of workers started since the marks."""
    by_config = {name: config.code_dir.name for name, config in runtime.functions.items()}
    first: dict[str, tuple[float, float]] = {}
    for invocation in runtime.invocations[since_invocations:]:
        name = invocation["function"]
        inits = runtime.init_seconds.get(name, [])[since_inits.get(name, 0) :]
        if inits and by_config[name] not in first:
            first[by_config[name]] = (inits[0], invocation["seconds"])
    return first


def _marks(runtime: Any) -> tuple[int, dict[str, int]]:
    return len(runtime.invocations), {name: len(inits) for name, inits in runtime.init_seconds.items()}


def first_invocation_table(repo: Path = REPO) -> Table:
    from deployer_cli import client
    from deployer_cli.clicks import SandboxSlack, slack_user
    from deployer_cli.client import Stack
    from deployer_cli.signing import signed_request
    from sandbox.server import Sandbox

    table = Table(
        "First invocation of a cold function in the sandbox",
        ["function", "triggered by", "init (import) ms", "first invocation ms", "init + invocation ms", "HTTP ms"],
    )
    outcomes: list[str] = []
    with Sandbox(repo=repo) as sandbox:
        runtime = sandbox.runtime
        assert runtime is not None
        stack = Stack.discover(sandbox.session(), sandbox.stack_name, sandbox.region, sandbox.endpoint)

        # Every worker is cold: a first DEV deployment starts one of each function it runs.
        marks = _marks(runtime)
        version = client.push_spec(stack, repo / "environments", "dev")
        arn = client.start(stack, client.build_request("dev", "bench", None, False, version))
        outcomes.append(f"DEV {client.wait(stack, arn, poll_seconds=0.05)['status']}")
        cold = {name: ("DEV deployment", *times, None) for name, times in _first_cold(runtime, *marks).items()}

        # The deployments API, cold: one signed GET of that deployment through API Gateway.
        runtime.stop()
        marks = _marks(runtime)
        url = f"{stack.outputs['ApiUrl'].rstrip('/')}/deployments/{arn.rsplit(':', 1)[1]}"
        started = time.perf_counter()
        answer = signed_request(stack.session, "GET", url, stack.region)
        http = time.perf_counter() - started
        outcomes.append(f"GET /deployments/{{id}} answered {answer.status}")
        for name, times in _first_cold(runtime, *marks).items():
            cold.setdefault(name, ("signed GET /deployments/{id}", *times, http if name == "deployments_api" else None))

        # Slack's click on a SIT approval, every worker recycled while the approval waits.
        version = client.push_spec(stack, repo / "environments", "sit")
        arn = client.start(stack, client.build_request("sit", "bench", "CHG-1", False, version))
        approval = client.open_approval(stack, arn, poll_seconds=0.05)
        if approval is None:
            outcomes.append("SIT ended without asking for approval: no click measured")
        else:
            runtime.stop()
            marks = _marks(runtime)
            spec, _ = stack.specs.get("sit")
            user_id, user_name = slack_user(spec, spec.policy.approvals.approvers[0].name)
            slack = SandboxSlack.discover(sandbox.endpoint)
            started = time.perf_counter()
            clicked = slack.click(approval, user_id, user_name, "approve")
            http = time.perf_counter() - started
            outcomes.append(f"the click answered {clicked['status']} ({clicked.get('outcome')})")
            outcomes.append(f"SIT {client.wait(stack, arn, poll_seconds=0.05)['status']}")
            for name, times in _first_cold(runtime, *marks).items():
                trigger = "signed Slack click" if name == "slack_interactions" else "SIT after the click"
                cold.setdefault(name, (trigger, *times, http if name == "slack_interactions" else None))

    lambda_ms, sandbox_ms = _sandbox_environment_import(repo, "slack_interactions")
    for name, (trigger, init, invoke, http_seconds) in sorted(cold.items()):
        table.add(
            name,
            trigger,
            round(init * 1000),
            round(invoke * 1000),
            round((init + invoke) * 1000),
            round(http_seconds * 1000) if http_seconds is not None else "",
        )
    table.notes += [
        "Each function's first worker process in the sandbox (a cold container): init is its `import app` "
        "as sandbox.lambda_worker times it (runtime.init_seconds), the invocation its first handler run "
        "against moto, including its first AWS clients and calls. Triggers: a first DEV deployment (all "
        "workers cold), then `runtime.stop()` (warm workers recycled) before a signed GET through the "
        "deployments API, and again while a SIT deployment waits for approval, before a signed Slack "
        "block_actions click on it (SIT's later steps then run cold too).",
        "HTTP ms is the whole round trip the caller sees: API Gateway emulation, worker process start "
        "(interpreter start-up, import), invocation and answer. For the Slack click this is what must fit "
        f"in Slack's {SLACK_DEADLINE_MS / 1000:g} s, on 1024 MB on AWS.",
        "The sandbox's workers have Lambda's variables (LAMBDA_TASK_ROOT included, without which the X-Ray SDK "
        "builds botocore clients of its own at import) plus POWERTOOLS_TRACE_DISABLED, as no X-Ray daemon runs "
        f"there: slack_interactions imports in {sandbox_ms:.0f} ms of CPU in the sandbox's environment against "
        f"{lambda_ms:.0f} ms in Lambda's (median of 5 each). And moto runs on the same machine: Map states "
        "start several workers of one function at once (provision, validate) beside it, so those first "
        "invocations share the CPUs.",
        f"Outcomes: {'; '.join(outcomes)}.",
    ]
    return table


def _sandbox_environment_import(repo: Path, name: str, runs: int = 5) -> tuple[float, float]:
    """CPU ms of one function's import in Lambda's environment, and in the sandbox's (medians)."""
    function_dir, layer_dir = repo / "functions" / name, repo / "layers" / "deployer"
    on_lambda = lambda_environment(function_dir, function_environments(repo / "template.yaml", [name])[name])
    in_sandbox = on_lambda | {"POWERTOOLS_TRACE_DISABLED": "true"}
    cpu: dict[str, list[float]] = {"lambda": [], "sandbox": []}
    for _ in range(runs):
        for label, env in (("lambda", on_lambda), ("sandbox", in_sandbox)):
            cpu[label].append(_run_child(function_dir, layer_dir, env, [])[0]["cpuSeconds"] * 1000)
    return median(cpu["lambda"]), median(cpu["sandbox"])


def measure(functions_dir: Path, layer_dir: Path, runs: int = 5) -> list[Table]:
    """The import table for every function under ``functions_dir``, then the sandbox's first invocations.

    Both read ``functions_dir.parent``'s template.yaml (the functions' variables; the stack the sandbox installs).
    """
    return [import_table(functions_dir, layer_dir, runs), first_invocation_table(functions_dir.parent)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="imports per function to take the median of")
    parser.add_argument("--imports-only", action="store_true", help="skip the sandbox's first invocations")
    parser.add_argument(
        "--python",
        type=Path,
        default=LAMBDA_PYTHON,
        help="interpreter for the imports (default: the runtime environment)",
    )
    parser.add_argument("--function", action="append", default=[], help="only this function's import (repeatable)")
    args = parser.parse_args()
    functions_dir, layer_dir = REPO / "functions", REPO / "layers" / "deployer"
    tables = (
        [import_table(functions_dir, layer_dir, args.runs, args.python, args.function)]
        if args.imports_only
        else measure(functions_dir, layer_dir, args.runs)
    )
    for table in tables:
        print(table.markdown())


if __name__ == "__main__":
    main()
