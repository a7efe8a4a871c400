"""CloudWatch metrics for DynamoDB writes, which AWS publishes and moto 5.2.5 does not.

On AWS, every write to a table shows up in CloudWatch as ``AWS/DynamoDB``
``ConsumedWriteCapacityUnits`` for that table; the runbook's extended validation looks
for it ("CloudWatch logs and metrics visible"). Here each successful write from a
target account puts that datum into moto's CloudWatch backend of the table's account
and region. ``pause()`` stops it, for the missing-monitoring game day.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any

from sandbox.accounts import TARGET_ACCOUNTS

CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/dynamodb/")
WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem")


@dataclass
class DynamoDBMetrics:
    paused: bool = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def watch(self, environ: dict[str, Any]) -> list[tuple[str, str, str]] | None:
        """The (account, region, table) a write request touches, or None for any other request.

        Reads the body and puts it back, so moto still sees it.
        """
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        match = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        if self.paused or not match or target.rpartition(".")[2] not in WRITES:
            return None
        from moto.iam.models import get_account_id_from

        account = get_account_id_from(match.group(1))
        if account not in TARGET_ACCOUNTS.values():
            return None
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)
        body = json.loads(raw or b"{}")
        tables = [body["TableName"]] if "TableName" in body else list(body.get("RequestItems", {}))
        return [(account, match.group(2), table) for table in tables]

    def emit(self, written: list[tuple[str, str, str]]) -> None:
        from moto.cloudwatch.models import cloudwatch_backends

        for account, region, table in written:
            cloudwatch_backends[account][region].put_metric_data(
                "AWS/DynamoDB",
                [
                    {
                        "MetricName": "ConsumedWriteCapacityUnits",
                        "Value": 1.0,
                        "Unit": "Count",
                        "Dimensions": [{"Name": "TableName", "Value": table}],
                    }
                ],
            )
