"""An environment's plan: every resource's planned action, like ``terraform plan``, and its application."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from deployer.aws import TargetSession
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


def _planned(target: TargetSession, spec: EnvironmentSpec, region: str) -> list[tuple[Bucket | Table, ResourcePlan]]:
    s3 = target.client("s3", region)
    ddb = target.client("dynamodb", region)
    planned: list[tuple[Bucket | Table, ResourcePlan]] = []
    for bucket in spec.buckets_in(region):
        actual = read_bucket(s3, bucket.name, target.account)
        planned.append((bucket, plan_bucket(bucket, spec.tags_for(bucket), region, actual)))
    for table in spec.tables_in(region):
        planned.append((table, plan_table(table, spec.tags_for(table), region, read_table(ddb, table.name))))
    return planned


def plan_region(target: TargetSession, spec: EnvironmentSpec, region: str) -> list[ResourcePlan]:
    """Read the actual state of every resource the spec places in ``region`` and plan it."""
    return [plan for _, plan in _planned(target, spec, region)]


def plan_environment(target: TargetSession, spec: EnvironmentSpec) -> Plan:
    """Plan every region of the environment, in deployment order."""
    return Plan([plan for region in spec.regions.all() for plan in plan_region(target, spec, region)])


def apply_region(target: TargetSession, spec: EnvironmentSpec, region: str, wait: WaitConfig) -> list[ResourcePlan]:
    """Re-plan ``region`` from fresh reads and apply what differs (buckets, then tables).

    Idempotent: once applied, a second call plans everything unchanged and mutates nothing.
    Returns the plans that were applied.
    """
    planned = _planned(target, spec, region)
    for resource, plan in planned:
        if plan.action == "unchanged":
            continue
        if isinstance(resource, Bucket):
            apply_bucket(target.client("s3", region), region, resource, spec.tags_for(resource), plan)
        else:
            apply_table(target.client("dynamodb", region), region, resource, spec.tags_for(resource), plan, wait=wait)
    return [plan for _, plan in planned]
