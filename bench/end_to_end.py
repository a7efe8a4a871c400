"""End to end in the sandbox: DEV, SIT and PROD as `deployer run` does them, approvals clicked at once.

Each environment's first deployment creates its resources with cold functions; the
re-runs that follow are unchanged deployments with warm functions. Wall time is from
pushing the spec to the outcome, approval clicks included. PROD needs 24 hours' notice of
every change: each PROD run is announced first (`deployer announce`), the functions' clock
moves to the announced window's start, and the run is timed from there.
"""

from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from bench.tables import Table, median
from deployer_cli import main
from deployer_cli.client import Stack
from sandbox.server import Sandbox

# Environment, change ticket, who clicks Approve: the runbook's SIT and PROD approvers.
ENVIRONMENTS: tuple[tuple[str, str | None, list[str]], ...] = (
    ("dev", None, []),
    ("sit", "CHG-2026", ["sit-lead"]),
    ("prod", "CHG-2026", ["senior-engineer-1", "senior-engineer-2"]),
)
PROD_TARGET_SECONDS = 10.0
RUNBOOK_MINUTES = {"dev": "10-15", "sit": "20-30", "prod": "45-60"}


def deploy(
    sandbox: Sandbox, stack: Stack, environment: str, change_ticket: str | None, approvers: list[str]
) -> tuple[float, dict[str, Any]]:
    release_tag = None
    if environment == "prod" and change_ticket:
        at = sandbox.announce_ahead(environment, change_ticket, "bench")
        release_tag = f"v{at:%Y.%m.%d}-prod-bench"
    args = Namespace(
        release_tag=release_tag,
        env=environment,
        spec_dir="environments",
        requested_by="bench",
        change_ticket=change_ticket,
        quiet=True,
        approve_as=approvers,
        reject_as=None,
    )
    started = time.perf_counter()
    result = main._deploy(args, stack, dry_run=False)
    return time.perf_counter() - started, result


def measure(sandbox: Sandbox, stack: Stack, reruns: int = 5) -> list[Table]:
    """DEV, SIT and PROD, each first and re-run; PROD's runs are each announced a day ahead (simulated)."""
    table = Table(
        "End to end in the sandbox: one deployment per environment, approvals clicked at once",
        [
            "environment",
            "runbook (minutes, by hand)",
            "first deployment s",
            f"unchanged re-run s (median of {reruns})",
            "re-run min / max s",
            "state transitions (first / re-run)",
            "mutating calls (first / re-run)",
            "status",
        ],
    )
    prod: tuple[float, float] = (0.0, 0.0)
    prod_succeeded = False
    for environment, ticket, approvers in ENVIRONMENTS:
        first_wall, first = deploy(sandbox, stack, environment, ticket, approvers)
        again = [deploy(sandbox, stack, environment, ticket, approvers) for _ in range(reruns)]
        walls = [wall for wall, _ in again]
        last = again[-1][1]
        statuses = {first["status"], *(r["status"] for _, r in again)}
        if environment == "prod":
            prod, prod_succeeded = (first_wall, median(walls)), statuses == {"SUCCEEDED"}
        table.add(
            environment.upper(),
            RUNBOOK_MINUTES[environment],
            first_wall,
            median(walls),
            f"{min(walls):.2f} / {max(walls):.2f}",
            f"{first['stateTransitions']} / {last['stateTransitions']}",
            f"{first['mutatingCalls']} / {last['mutatingCalls']}",
            "/".join(sorted(statuses)),
        )
    verdict = "met" if prod_succeeded and max(prod) < PROD_TARGET_SECONDS else "missed"
    table.notes.append(
        f"Target, PROD under {PROD_TARGET_SECONDS:.0f} s in the sandbox: {verdict} "
        f"(first deployment {prod[0]:.1f} s, unchanged re-run {prod[1]:.1f} s)."
    )
    table.notes.append(
        "PROD deploys both regions (af-south-1, then eu-west-1), configures and verifies replication (a marker object "
        "and a test item must reach the failover region), after SIT ran the same spec. Each PROD run is announced "
        "24 hours ahead and timed from the announced window's start (simulated time). Clicks are signed Slack "
        "requests through the sandbox's API."
    )
    return [table]
