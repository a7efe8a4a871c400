"""An environment's plan: every resource's planned action, like ``terraform plan``, and its application."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from deployer.aws import TargetSession, fan_out
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


# Reads are cheap and independent: planning reads this many resources at a time.
READ_WORKERS = 16


def _planned(
    target: TargetSession, spec: EnvironmentSpec, region: str, shard: int = 0, of: int = 1
) -> list[tuple[Bucket | Table, ResourcePlan]]:
    s3 = target.client("s3", region)
    ddb = target.client("dynamodb", region)

    def planned(resource: Bucket | Table) -> tuple[Bucket | Table, ResourcePlan]:
        tags = spec.tags_for(resource)
        if isinstance(resource, Bucket):
            return resource, plan_bucket(resource, tags, region, read_bucket(s3, resource.name, target.account))
        return resource, plan_table(resource, tags, region, read_table(ddb, resource.name))

    return fan_out(planned, spec.resources_in(region, shard, of), READ_WORKERS)


def plan_region(target: TargetSession, spec: EnvironmentSpec, region: str) -> list[ResourcePlan]:
    """Read the actual state of every resource the spec places in ``region`` and plan it."""
    return [plan for _, plan in _planned(target, spec, region)]


def plan_environment(target: TargetSession, spec: EnvironmentSpec) -> Plan:
    """Plan every region of the environment, in deployment order."""
    return Plan([plan for region in spec.regions.all() for plan in plan_region(target, spec, region)])


def apply_region(
    target: TargetSession, spec: EnvironmentSpec, region: str, wait: WaitConfig, *, shard: int = 0, of: int = 1
) -> list[ResourcePlan]:
    """Re-plan one shard of ``region`` from fresh reads and apply what differs, all its resources at once.

    Idempotent: once applied, a second call plans everything unchanged and mutates nothing.
    Returns the plans that were applied.
    """
    planned = _planned(target, spec, region, shard, of)
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
