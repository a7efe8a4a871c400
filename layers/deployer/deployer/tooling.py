"""The tooling account's side: its clients and the stack's resources, from the environment.

Built once per Lambda container; clients are created on first use so a cold start
pays only for what the function touches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import boto3

from deployer.aws import retry_config
from deployer.records import RecordStore
from deployer.resources import WaitConfig
from deployer.specstore import SpecStore


@dataclass
class Tooling:
    records_table: str
    specs_bucket: str
    event_bus: str
    wait: WaitConfig

    @classmethod
    def from_environment(cls) -> Tooling:
        return cls(
            records_table=os.environ["RECORDS_TABLE"],
            specs_bucket=os.environ["SPECS_BUCKET"],
            event_bus=os.environ.get("EVENT_BUS_NAME", ""),
            wait=WaitConfig(
                delay_seconds=float(os.environ.get("WAIT_DELAY_SECONDS", "5")),
                max_attempts=int(os.environ.get("WAIT_MAX_ATTEMPTS", "60")),
            ),
        )

    @cached_property
    def session(self) -> boto3.Session:
        return boto3.Session()

    def client(self, service: str) -> Any:
        return self.session.client(service, config=retry_config())  # type: ignore[call-overload]

    @cached_property
    def sts(self) -> Any:
        return self.client("sts")

    @cached_property
    def records(self) -> RecordStore:
        return RecordStore(self.session.resource("dynamodb", config=retry_config()).Table(self.records_table))

    @cached_property
    def specs(self) -> SpecStore:
        return SpecStore(self.client("s3"), self.specs_bucket)
