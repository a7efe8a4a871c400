"""`make bench`: how long the pipeline takes in the sandbox. Prints numbers; asserts nothing.

Measures the sandbox's start, a first (cold) DEV deployment, unchanged warm re-runs
(median of several), and each function's cold initialisation (module import) time.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from deployer_cli import client
from deployer_cli.client import Stack
from sandbox.server import Sandbox

REPO = Path(__file__).resolve().parent.parent


def deploy(stack: Stack, environment: str) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    version = client.push_spec(stack, REPO / "environments", environment)
    arn = client.start(stack, client.build_request(environment, "bench", None, False, version))
    client.wait(stack, arn, poll_seconds=0.05)
    wall = time.perf_counter() - started
    return wall, client.summary(stack, arn)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="warm re-runs to take the median of")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    started = time.perf_counter()
    with Sandbox() as sandbox:
        startup = time.perf_counter() - started
        stack = Stack.discover(sandbox.session(), sandbox.stack_name, sandbox.region, sandbox.endpoint)
        cold_wall, cold = deploy(stack, "dev")
        warm = [deploy(stack, "dev") for _ in range(args.runs)]
        assert sandbox.runtime is not None
        inits = dict(sandbox.runtime.init_seconds)

    walls = [w for w, _ in warm]
    print("\nDEV deployment in the sandbox")
    print(row("run", "status", "wall s", "execution s", "state transitions", "mutating calls"))
    print(row("---", "---", "---", "---", "---", "---"))
    print(row("sandbox start", "", f"{startup:.2f}", "", "", ""))
    print(
        row(
            "first (cold)",
            cold["status"],
            f"{cold_wall:.2f}",
            cold["durationSeconds"],
            cold["stateTransitions"],
            cold["mutatingCalls"],
        )
    )
    last = warm[-1][1]
    print(
        row(
            f"unchanged re-run, median of {len(walls)}",
            last["status"],
            f"{statistics.median(walls):.2f} (min {min(walls):.2f}, max {max(walls):.2f})",
            last["durationSeconds"],
            last["stateTransitions"],
            last["mutatingCalls"],
        )
    )
    print("\nFunction cold initialisation (import of app.py with the layer)")
    print(row("function", "init s"))
    print(row("---", "---"))
    for name, seconds in sorted(inits.items()):
        print(row(name, f"{seconds[0]:.3f}"))


if __name__ == "__main__":
    main()
