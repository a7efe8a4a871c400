"""An environment's plan: every resource's planned action, like ``terraform plan``, and its application."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from deployer.aws import READ_WORKERS, TargetSession, fan_out
from deployer.replication import plan_replication
from deployer.resources import (
    ResourcePlan,
    WaitConfig,
    apply_bucket,
    apply_table,
    plan_bucket,
    plan_table,
    read_bucket,
    read_table,
)
from deployer.spec import Bucket, EnvironmentSpec, Table


@dataclass
class Plan:
    resources: list[ResourcePlan]

    def _count(self, action: str) -> int:
        return sum(1 for r in self.resources if r.action == action)

    @property
    def add(self) -> int:
        return self._count("add")

    @property
    def change(self) -> int:
        return self._count("change")

    @property
    def unchanged(self) -> int:
        return self._count("unchanged")

    @property
    def hash(self) -> str:
        # Prior state is left out: it holds values (item counts) that move without any drift.
        planned = [
            {"kind": r.kind, "name": r.name, "region": r.region, "action": r.action, "changes": r.changes}
            for r in self.resources
        ]
        canonical = json.dumps(planned, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def summary(self) -> str:
        return f"Plan: {self.add} to add, {self.change} to change, {self.unchanged} unchanged."

    def to_dict(self) -> dict[str, Any]:
        return {
            "add": self.add,
            "change": self.change,
            "unchanged": self.unchanged,
            "hash": self.hash,
            "summary": self.summary(),
            "resources": [r.to_dict() for r in self.resources],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls([ResourcePlan.from_dict(r) for r in data["resources"]])


def _planned(
    target: TargetSession,
    spec: EnvironmentSpec,
    region: str,
    *,
    shard: int = 0,
    of: int = 1,
    skip: frozenset[str] = frozenset(),
) -> list[tuple[Bucket | Table, ResourcePlan]]:
    s3 = target.client("s3", region)
    ddb = target.client("dynamodb", region)

    def planned(resource: Bucket | Table) -> tuple[Bucket | Table, ResourcePlan]:
        tags = spec.tags_for(resource)
        if isinstance(resource, Bucket):
            return resource, plan_bucket(resource, tags, region, read_bucket(s3, resource.name, target.account))
        return resource, plan_table(resource, tags, region, read_table(ddb, resource.name))

    resources = [r for r in spec.resources_in(region, shard, of) if f"{_kind(r)}/{r.name}" not in skip]
    return fan_out(planned, resources, READ_WORKERS)


def _kind(resource: Bucket | Table) -> str:
    return "bucket" if isinstance(resource, Bucket) else "table"


def unchanged_in(plan: dict[str, Any], region: str) -> frozenset[str]:
    """``kind/name`` of the resources a recorded plan found as specified in ``region``."""
    return frozenset(
        f"{r['kind']}/{r['name']}"
        for r in plan.get("resources", [])
        if r["region"] == region and r["action"] == "unchanged"
    )


def plan_region(target: TargetSession, spec: EnvironmentSpec, region: str) -> list[ResourcePlan]:
    """Read the actual state of every resource the spec places in ``region`` and plan it."""
    return [plan for _, plan in _planned(target, spec, region)]


def plan_environment(target: TargetSession, spec: EnvironmentSpec) -> Plan:
    """Plan every region of the environment, in deployment order, then its replication.

    Replication (each replicated bucket's rule, each table's replicas) is part of the plan, so the
    approvers see it and its hash covers it: Replicate applies nothing they did not approve.
    """
    resources = [plan for region in spec.regions.all() for plan in plan_region(target, spec, region)]
    return Plan(resources + plan_replication(target, spec))


def apply_region(
    target: TargetSession,
    spec: EnvironmentSpec,
    region: str,
    wait: WaitConfig,
    *,
    shard: int = 0,
    of: int = 1,
    unchanged: frozenset[str] = frozenset(),
) -> list[ResourcePlan]:
    """Re-plan one shard of ``region`` from fresh reads and apply what differs, all its resources at once.

    ``unchanged`` names (``kind/name``) the resources the deployment's plan, read moments
    before (and re-checked after an approval), found as specified: they are left alone
    without being read again. Idempotent: once applied, a second call plans everything
    unchanged and mutates nothing. Returns the plans of the resources it read.
    """
    planned = _planned(target, spec, region, shard=shard, of=of, skip=unchanged)
    s3, ddb = target.client("s3", region), target.client("dynamodb", region)

    def apply(item: tuple[Bucket | Table, ResourcePlan]) -> None:
        resource, plan = item
        if plan.action == "unchanged":
            return
        if isinstance(resource, Bucket):
            apply_bucket(s3, region, resource, spec.tags_for(resource), plan)
        else:
            apply_table(ddb, region, resource, spec.tags_for(resource), plan, wait=wait)

    fan_out(apply, planned, len(planned))
    return [plan for _, plan in planned]
