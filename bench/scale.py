"""Scale: one execution deploying 1, 10, 50 and 200 buckets plus as many tables.

Each size is its own environment (a copy of DEV's spec, in the DEV account, with
generated resources), deployed once from nothing. Reported per size: wall time in the
sandbox, state transitions, history events against Step Functions' 25,000 limit,
Lambda durations by function, and the deployment record's size against DynamoDB's
400 KB item limit. A model on paper then says how wall time would grow on AWS.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from bench.tables import Table
from deployer.records import deployment_key
from deployer_cli import client
from deployer_cli.client import Stack

HISTORY_LIMIT = 25_000
ITEM_LIMIT_BYTES = 400 * 1024
MAP_CONCURRENCY = 20  # the inner Maps' MaxConcurrency in statemachine/deployment.asl.json
SIZES = (1, 10, 50, 200)
# Published or commonly observed latencies (seconds) the model on paper uses.
S3_CONTROL_CALL = 0.15
DYNAMODB_CONTROL_CALL = 0.05
TABLE_ACTIVE = 20.0  # CreateTable until ACTIVE, typically 5-20 s
PITR_ENABLE = 5.0  # UpdateContinuousBackups until enabled
LAMBDA_INVOKE = 0.05
STATE_TRANSITION = 0.05


def scale_spec(repo: Path, count: int) -> tuple[str, str]:
    """An environment dev-scale-<count> (DEV's account takes dev-*): ``count`` buckets and tables; (name, YAML)."""
    data = yaml.safe_load((repo / "environments" / "dev.yaml").read_text())
    name = f"dev-scale-{count}"
    bucket, table = data["resources"]["buckets"][0], data["resources"]["tables"][0]
    data["environment"] = name
    data["tags"]["Environment"] = name
    # On 2 sandbox cores, hundreds of concurrent round trips through one moto process take over the
    # default 1 s latency threshold; that measures the sandbox, not the pipeline, so it is raised here.
    data["policy"].setdefault("rollback", {})["latencyThresholdMs"] = 10_000
    data["resources"] = {
        "buckets": [{**bucket, "name": f"bbws-{name}-bucket-{i:03d}"} for i in range(count)],
        "tables": [{**table, "name": f"Site-Scale{count}-Table-{i:03d}"} for i in range(count)],
    }
    return name, yaml.safe_dump(data, sort_keys=False)


def lambda_durations(events: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Seconds from LambdaFunctionStarted to its end, per function, from an execution's history."""
    by_id = {e["id"]: e for e in events}
    durations: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event["type"] not in ("LambdaFunctionSucceeded", "LambdaFunctionFailed"):
            continue
        started = by_id.get(event.get("previousEventId"))
        scheduled = by_id.get(started.get("previousEventId")) if started else None
        if not started or not scheduled:
            continue
        arn = scheduled["lambdaFunctionScheduledEventDetails"]["resource"]
        function = arn.rsplit(":", 1)[-1].removeprefix("bbws-deployer-")
        durations[function].append((event["timestamp"] - started["timestamp"]).total_seconds())
    return durations


def _record_bytes(stack: Stack, deployment_id: str) -> int:
    item = stack.records.table.get_item(Key=deployment_key(deployment_id), ConsistentRead=True)["Item"]
    return len(json.dumps(item, default=str).encode())


def measure(stack: Stack, repo: Path, spec_dir: Path, sizes: tuple[int, ...] = SIZES) -> list[Table]:
    runs = []
    for count in sizes:
        name, text = scale_spec(repo, count)
        (spec_dir / f"{name}.yaml").write_text(text)
        version = client.push_spec(stack, spec_dir, name)
        started = time.perf_counter()
        arn = client.start(stack, client.build_request(name, "bench", None, False, version))
        client.wait(stack, arn, poll_seconds=0.1, timeout_seconds=3600)
        wall = time.perf_counter() - started
        summary = client.summary(stack, arn)
        events = client.history(stack, arn)
        shards = next((len(w["shards"]) for w in _work(events)), 1)
        runs.append((count, wall, summary, events, shards))

    table = Table(
        "Scale: one execution, N buckets + N tables, first deployment (sandbox)",
        [
            "N + N",
            "status",
            "wall s",
            "shards",
            "state transitions",
            "history events (limit 25,000)",
            "slowest shard s (provision / validate)",
            "plan s",
            "record KB (limit 400)",
        ],
    )
    for count, wall, summary, events, shards in runs:
        durations = lambda_durations(events)
        table.add(
            f"{count} + {count}",
            summary["status"],
            wall,
            shards,
            summary["stateTransitions"],
            len(events),
            f"{max(durations.get('provision', [0])):.2f} / {max(durations.get('validate', [0])):.2f}",
            max(durations.get("plan", [0])),
            round(_record_bytes(stack, summary["deploymentId"]) / 1024, 1),
        )
    table.notes += _growth_notes(runs)
    records = {s["deploymentId"]: stack.records.get(s["deploymentId"]) or {} for _, _, s, _, _ in runs}
    return [table, _durations_table(runs), _model(runs, records)]


def _work(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        if event["type"] == "TaskStateExited" and event["stateExitedEventDetails"]["name"] == "StartDeployment":
            return list(json.loads(event["stateExitedEventDetails"]["output"])["deployment"]["work"])
    return []


def _growth_notes(runs: list[tuple[int, float, dict[str, Any], list[dict[str, Any]], int]]) -> list[str]:
    (small, _, _, small_events, _), (large, _, _, large_events, _) = runs[0], runs[-1]
    if large == small:
        return ["One size only (--sizes): the history's growth per resource needs two."]
    per_resource = (len(large_events) - len(small_events)) / (2 * (large - small))
    fixed = len(small_events) - per_resource * 2 * small
    ceiling = int((HISTORY_LIMIT - fixed) / per_resource)
    return [
        f"History grows by {per_resource:.2f} events per resource on top of {fixed:.0f} fixed: "
        f"25,000 events allow about {ceiling} resources in one execution.",
        "In the sandbox each function runs in one worker process, so shards of one region run one after "
        "another here; wall time in the sandbox grows with N. On AWS they run side by side (see the model).",
    ]


def _durations_table(runs: list[tuple[int, float, dict[str, Any], list[dict[str, Any]], int]]) -> Table:
    table = Table(
        "Scale: Lambda durations by function (sandbox, seconds: invocations, median, max)",
        ["function", *[f"{count} + {count}" for count, *_ in runs]],
    )
    per_run = [lambda_durations(events) for _, _, _, events, _ in runs]
    for function in sorted({f for d in per_run for f in d}):
        cells = []
        for durations in per_run:
            values = durations.get(function, [])
            cells.append(f"{len(values)}: {statistics.median(values):.2f} / {max(values):.2f}" if values else "-")
        table.add(function, *cells)
    return table


def _model(
    runs: list[tuple[int, float, dict[str, Any], list[dict[str, Any]], int]], stack_records: dict[str, dict[str, Any]]
) -> Table:
    """Wall time on AWS from the measured call counts and published latencies (not measured)."""
    table = Table(
        "Scale model on paper: provisioning wall time on AWS, one region (seconds)",
        [
            "N + N",
            "shards",
            "waves (20 at a time)",
            "sequential (one resource after another)",
            "fanned out (this design)",
        ],
    )
    for count, _, summary, _, shards in runs:
        calls = _calls_per_resource(stack_records[summary["deploymentId"]], count)
        bucket = calls["s3"] * S3_CONTROL_CALL
        table_time = calls["dynamodb"] * DYNAMODB_CONTROL_CALL + TABLE_ACTIVE + PITR_ENABLE
        sequential = count * (bucket + table_time)
        waves = math.ceil(shards / MAP_CONCURRENCY)
        # A shard's resources run at once: a shard takes as long as its slowest resource.
        fanned = waves * (max(bucket, table_time) + LAMBDA_INVOKE + 4 * STATE_TRANSITION)
        table.add(f"{count} + {count}", shards, waves, round(sequential, 1), round(fanned, 1))
    table.notes += [
        f"Latencies assumed: S3 control call {S3_CONTROL_CALL}s, DynamoDB control call {DYNAMODB_CONTROL_CALL}s, "
        f"CreateTable to ACTIVE {TABLE_ACTIVE}s, PITR enable {PITR_ENABLE}s, Lambda invoke {LAMBDA_INVOKE}s, "
        f"state transition {STATE_TRANSITION}s; calls per resource are the first deployment's, measured above.",
        f"With ShardSize 10 and {MAP_CONCURRENCY} shards at a time, up to {10 * MAP_CONCURRENCY} resources per region "
        "provision in one wave, as long as the slowest of them; beyond that, each further wave adds one slowest "
        "resource. Planning reads 16 resources at a time in one function.",
        "Largest spec for one execution, limit by limit: the 25,000-event history allows the number in the "
        "first table's note; Plan's 300 s timeout at 16 reads in flight and about 6 reads of 50-150 ms per "
        "resource allows roughly 300 / (6 x 0.1 / 16) = 8,000 resources; the deployment context carries one "
        "25-byte entry per shard, far below the 256 KB payload limit; the record spills large fields. So one "
        "execution handles about 8,000 resources, Plan's timeout being the first limit: more than the "
        "2,500 tables a region holds at the default quota, fewer than the 10,000 buckets an account may; "
        "beyond that, planning would have to be sharded like provisioning.",
    ]
    return table


def _calls_per_resource(record: dict[str, Any], count: int) -> dict[str, float]:
    """Provisioning's calls (reads and writes) per bucket (s3) and per table (dynamodb), as recorded."""
    per: dict[str, float] = {"s3": 0.0, "dynamodb": 0.0}
    for result in (record.get("provisioned") or {}).values():
        for operation, n in (result.get("apiCalls") or {}).items():
            service = operation.split(":", 1)[0]
            if service in per:
                per[service] += n / count
    return per
