"""`make bench`: how fast and how frugal the pipeline is. Prints every table; asserts nothing.

Writes the same tables to docs/performance.md with the machine they ran on. Each
measurement that needs a clean slate gets its own sandbox.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench import api_calls, cold_start, end_to_end, runbook_cli, scale
from bench.tables import Table
from deployer_cli.client import Stack
from sandbox.server import Sandbox

REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "docs" / "performance.md"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or platform.machine(),
    )
    memory_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_kb / 1024 / 1024:.0f} GiB, {platform.system()} {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


@contextmanager
def sandbox_stack(window: str | None = None) -> Iterator[tuple[Sandbox, Stack]]:
    """A sandbox with the stack installed; with ``window``, its clock at that environment's next window."""
    with Sandbox() as sandbox:
        if window:
            sandbox.travel_to_window(window)
        yield sandbox, Stack.discover(sandbox.session(), sandbox.stack_name, sandbox.region, sandbox.endpoint)


def timed(label: str, measure: Callable[[], list[Table]]) -> list[Table]:
    started = time.perf_counter()
    print(f"... {label}", flush=True)
    tables = measure()
    print(f"    {label}: {time.perf_counter() - started:.0f} s", flush=True)
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reruns", type=int, default=5, help="unchanged re-runs per environment (median)")
    parser.add_argument("--sizes", default=",".join(map(str, scale.SIZES)), help="scale: buckets (= tables) per run")
    parser.add_argument("--no-report", action="store_true", help=f"print only; leave {REPORT.name} alone")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))

    tables: list[Table] = []
    with sandbox_stack(window="prod") as (sandbox, stack):
        tables += timed("end to end: DEV, SIT, PROD", lambda: end_to_end.measure(sandbox, stack, args.reruns))
        tables += timed("runbook section 7 CLI vs our validation", lambda: runbook_cli.measure(sandbox, "dev"))
    with sandbox_stack() as (sandbox, _):
        tables += timed("AWS API calls against the minimum", lambda: api_calls.measure(sandbox))
    tables += timed("cold start", lambda: cold_start.measure(REPO / "functions", REPO / "layers" / "deployer"))
    with sandbox_stack() as (_, stack), tempfile.TemporaryDirectory() as spec_dir:
        tables += timed("scale", lambda: scale.measure(stack, REPO, Path(spec_dir), sizes))

    header = [
        "# Performance",
        "",
        f"Written by `make bench` (`python -m bench.run`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"at commit {commit()}.",
        "",
        f"Machine: {machine()}.",
        "",
        "Every number comes from a run of the real state machine and functions in the embedded sandbox "
        "(moto), except where a table says it is a model on paper. Tests never assert on time.",
        "",
    ]
    text = "\n".join(header) + "\n".join(t.markdown() + "\n" for t in tables)
    print("\n" + text)
    if not args.no_report:
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(text)
        print(f"written to {REPORT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
