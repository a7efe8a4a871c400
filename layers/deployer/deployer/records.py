"""The records table: one item per deployment, one lock item per environment.

Single-table layout (pk, sk):
- ``DEPLOYMENT#<id>`` / ``RECORD``: the deployment record; ``gsi1pk = ENV#<env>`` and
  ``gsi1sk = <startedAt>#<id>`` list an environment's history newest first.
- ``LOCK#<env>`` / ``LOCK``: the environment lock, a lease that expires.
- ``ANNOUNCEMENT#<env>`` / ``AT#<announcedAt>#<id>``: each deployment window announced, kept; the
  latest for a change ticket is the one its deployment is held to.

Structured fields (plan, prior state, checks) are stored as JSON strings: DynamoDB
would turn their numbers into Decimals and their size is bounded by the plan anyway.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from deployer.aws import error_code, transient_errors
from deployer.errors import LockHeld, LockLost

JSON_FIELDS = (
    "plan",
    "priorState",
    "preflight",
    "input",
    "decision",
    "rollback",
    "rollbackValidation",
    "countsBefore",
    "countsAfter",
    "replan",
    "policy",
    "policyChange",
    "requester",
    "announcement",
    "announcedBy",
    "detail",
)
SUCCEEDED_STATUSES = ("SUCCEEDED", "SUCCEEDED_WITH_WARNINGS")
# Per-region results: a map of region -> JSON string, so regions write without racing.
REGION_FIELDS = ("checks", "provisioned")
HISTORY_INDEX = "gsi1"
# Items beside a deployment's record holding one shard's result each.
PART_PREFIX = "PART#"
# A JSON field longer than this is kept in pieces beside the record (DynamoDB items stop at 400 KB).
SPILL_BYTES = 32_000
SPILL_PREFIX = "SPILL#"
SPILLED = "$spilledPieces"
# Beside a record: the requester the deployments API verified before it started the deployment.
REQUESTER_SK = "REQUESTER"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def deployment_key(deployment_id: str) -> dict[str, str]:
    return {"pk": f"DEPLOYMENT#{deployment_id}", "sk": "RECORD"}


def _announcements_pk(environment: str) -> str:
    return f"ANNOUNCEMENT#{environment}"


def _lock_key(environment: str) -> dict[str, str]:
    return {"pk": f"LOCK#{environment}", "sk": "LOCK"}


def _combine(first: Any, second: Any) -> Any:
    """Two shards' results as one: lists joined, counts added, maps combined key by key."""
    if isinstance(first, list) and isinstance(second, list):
        return first + second
    if isinstance(first, dict) and isinstance(second, dict):
        return {
            k: _combine(first[k], second[k]) if k in first and k in second else first.get(k, second.get(k))
            for k in first | second
        }
    if isinstance(first, int) and isinstance(second, int):
        return first + second
    return second


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v, sort_keys=True) if k in JSON_FIELDS else v for k, v in fields.items()}


def _decode(item: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in item.items() if k not in ("pk", "sk", "gsi1pk", "gsi1sk")}
    for name in JSON_FIELDS:
        if isinstance(record.get(name), str):
            record[name] = json.loads(record[name])
    for name in REGION_FIELDS:
        if isinstance(record.get(name), dict):
            record[name] = {region: json.loads(v) for region, v in record[name].items()}
    for name in ("mutatingCalls", "lockExpiresAt"):
        if name in record:
            record[name] = int(record[name])
    return record


@dataclass
class RecordStore:
    """Reads and writes deployment records and locks; ``table`` is a boto3 Table resource."""

    table: Any

    def create(self, deployment_id: str, environment: str, started_at: datetime, fields: dict[str, Any]) -> None:
        """Create the record; a retried call for the same deployment keeps the first one."""
        item = {
            **deployment_key(deployment_id),
            "gsi1pk": f"ENV#{environment}",
            "gsi1sk": f"{iso(started_at)}#{deployment_id}",
            "deploymentId": deployment_id,
            "environment": environment,
            "status": "RUNNING",
            "startedAt": iso(started_at),
            "updatedAt": iso(started_at),
            "mutatingCalls": 0,
            **{name: {} for name in REGION_FIELDS},
            **_encode(fields),
        }
        try:
            with transient_errors():
                self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    def put_requester(self, deployment_id: str, requester: dict[str, Any]) -> None:
        """Keep who the API verified as the requester of a deployment it is about to start.

        Beside the record-to-be, written only by the deployments API: the execution input
        is anyone's to write who may start an execution, so it cannot vouch for anybody.
        """
        item = {"pk": deployment_key(deployment_id)["pk"], "sk": REQUESTER_SK, "requester": json.dumps(requester)}
        with transient_errors():
            self.table.put_item(Item=item)

    def verified_requester(self, deployment_id: str) -> dict[str, Any] | None:
        """The requester the deployments API verified for this deployment; None if it did not start it."""
        with transient_errors():
            item = self.table.get_item(
                Key={"pk": deployment_key(deployment_id)["pk"], "sk": REQUESTER_SK}, ConsistentRead=True
            ).get("Item")
        return dict(json.loads(item["requester"])) if item else None

    def update(self, deployment_id: str, now: datetime, fields: dict[str, Any]) -> None:
        self._set(deployment_id, now, fields)

    def close(self, deployment_id: str, now: datetime, fields: dict[str, Any]) -> bool:
        """Set ``fields`` (a final status among them) only if the record still says RUNNING; False if not."""
        try:
            self._set(deployment_id, now, fields, only_running=True)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def _set(self, deployment_id: str, now: datetime, fields: dict[str, Any], only_running: bool = False) -> None:
        values = {**self._spill(deployment_id, _encode(fields)), "updatedAt": iso(now)}
        names = {f"#f{i}": k for i, k in enumerate(values)}
        values_by_name = {f":v{i}": v for i, v in enumerate(values.values())}
        condition = {}
        if only_running:
            names["#status"] = "status"
            values_by_name[":running"] = "RUNNING"
            condition = {"ConditionExpression": "#status = :running"}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(values)))
        with transient_errors():
            self.table.update_item(
                Key=deployment_key(deployment_id),
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values_by_name,
                **condition,
            )

    def _spill(self, deployment_id: str, encoded: dict[str, Any]) -> dict[str, Any]:
        """Move JSON fields too big for the record (a plan of hundreds of resources) to items beside it.

        The record keeps a marker saying how many pieces the text was cut into; ``get`` joins them.
        """
        kept = {}
        for name, value in encoded.items():
            if name not in JSON_FIELDS or len(value) <= SPILL_BYTES:
                kept[name] = value
                continue
            pieces = [value[i : i + SPILL_BYTES] for i in range(0, len(value), SPILL_BYTES)]
            pk = deployment_key(deployment_id)["pk"]
            with transient_errors(), self.table.batch_writer() as batch:
                for index, piece in enumerate(pieces):
                    batch.put_item(Item={"pk": pk, "sk": f"{SPILL_PREFIX}{name}#{index:04d}", "text": piece})
            kept[name] = json.dumps({SPILLED: len(pieces)})
        return kept

    def merge_region(
        self,
        deployment_id: str,
        field: str,
        region: str,
        value: Any,
        *,
        mutating_calls: int = 0,
        part: int | None = None,
    ) -> None:
        """Record one region's result under ``field`` without touching other regions'.

        With ``part`` (a shard of the region), the result is an item of its own beside the
        record, so a large environment never outgrows DynamoDB's 400 KB item; ``get``
        combines the parts into the region's result.
        """
        assert field in REGION_FIELDS
        encoded = json.dumps(value, sort_keys=True)
        with transient_errors():
            if part is None:
                self.table.update_item(
                    Key=deployment_key(deployment_id),
                    UpdateExpression="SET #f.#r = :v ADD mutatingCalls :n",
                    ExpressionAttributeNames={"#f": field, "#r": region},
                    ExpressionAttributeValues={":v": encoded, ":n": mutating_calls},
                )
                return
            key = {"pk": deployment_key(deployment_id)["pk"], "sk": f"{PART_PREFIX}{field}#{region}#{part:05d}"}
            self.table.put_item(Item={**key, "field": field, "region": region, "value": encoded})
            if mutating_calls:
                self.table.update_item(
                    Key=deployment_key(deployment_id),
                    UpdateExpression="ADD mutatingCalls :n",
                    ExpressionAttributeValues={":n": mutating_calls},
                )

    def get(self, deployment_id: str) -> dict[str, Any] | None:
        """The deployment's record, with its regions' results combined from their parts."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": deployment_key(deployment_id)["pk"]},
            "ConsistentRead": True,
        }
        while True:
            with transient_errors():
                page = self.table.query(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        record = next((i for i in items if i["sk"] == deployment_key(deployment_id)["sk"]), None)
        if record is None:
            return None
        spilled = {str(i["sk"]): str(i["text"]) for i in items if str(i["sk"]).startswith(SPILL_PREFIX)}
        for name in JSON_FIELDS:
            marker = json.loads(record[name]) if isinstance(record.get(name), str) else None
            if isinstance(marker, dict) and SPILLED in marker:
                record[name] = "".join(spilled[f"{SPILL_PREFIX}{name}#{i:04d}"] for i in range(int(marker[SPILLED])))
        decoded = _decode(record)
        # Parts sort by their key (field, region, zero-padded part), so results keep the shards' order.
        for part in sorted((i for i in items if str(i["sk"]).startswith(PART_PREFIX)), key=lambda i: str(i["sk"])):
            regions = decoded.setdefault(str(part["field"]), {})
            value = json.loads(str(part["value"]))
            region = str(part["region"])
            regions[region] = _combine(regions[region], value) if region in regions else value
        return decoded

    def history(self, environment: str, limit: int = 20) -> list[dict[str, Any]]:
        """The environment's most recent deployments, newest first."""
        with transient_errors():
            items = self.table.query(
                IndexName=HISTORY_INDEX,
                KeyConditionExpression="gsi1pk = :pk",
                ExpressionAttributeValues={":pk": f"ENV#{environment}"},
                ScanIndexForward=False,
                Limit=limit,
            )["Items"]
        return [_decode(i) for i in items]

    def last_succeeded(self, environment: str) -> dict[str, Any] | None:
        """The environment's most recent deployment that succeeded, however far back it is."""
        kwargs: dict[str, Any] = {
            "IndexName": HISTORY_INDEX,
            "KeyConditionExpression": "gsi1pk = :pk",
            "FilterExpression": "#s IN (:ok, :warned)",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {
                ":pk": f"ENV#{environment}",
                ":ok": SUCCEEDED_STATUSES[0],
                ":warned": SUCCEEDED_STATUSES[1],
            },
            "ScanIndexForward": False,
        }
        while True:
            with transient_errors():
                page = self.table.query(**kwargs)
            if page["Items"]:
                return _decode(page["Items"][0])
            if "LastEvaluatedKey" not in page:
                return None
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def acquire_lock(
        self, environment: str, deployment_id: str, requested_by: str, lease_seconds: int, now: datetime
    ) -> dict[str, Any]:
        """Take the environment's lease, or raise LockHeld naming who holds it.

        Re-entrant for the same deployment (a retried state), and a lease past its
        expiry is free to take, so a crashed deployment never blocks an environment forever.
        """
        epoch = int(now.timestamp())
        item = {
            **_lock_key(environment),
            "deploymentId": deployment_id,
            "requestedBy": requested_by,
            "acquiredAt": iso(now),
            "lockExpiresAt": epoch + lease_seconds,
        }
        try:
            with transient_errors():
                self.table.put_item(
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk) OR lockExpiresAt < :now OR deploymentId = :me",
                    ExpressionAttributeValues={":now": epoch, ":me": deployment_id},
                )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            holder = self.lock_holder(environment) or {}
            raise LockHeld(
                f"environment {environment} is locked by deployment {holder.get('deploymentId', '?')} "
                f"(requested by {holder.get('requestedBy', '?')}) until "
                f"{iso(datetime.fromtimestamp(int(holder.get('lockExpiresAt', 0)), UTC))}"
            ) from None
        return _decode(item)

    def renew_lock(
        self, environment: str, deployment_id: str, requested_by: str, lease_seconds: int, now: datetime
    ) -> None:
        """Extend this deployment's lease from ``now``; LockLost if another deployment holds the lock.

        A lease of ours that lapsed while nobody took it is simply ours again, as is a lock
        nobody holds. The holder comes back with the refusal itself (no read of the lock).
        """
        epoch = int(now.timestamp())
        try:
            with transient_errors():
                self.table.update_item(
                    Key=_lock_key(environment),
                    UpdateExpression=(
                        "SET deploymentId = :me, requestedBy = :by, lockExpiresAt = :until, renewedAt = :at"
                    ),
                    ConditionExpression="attribute_not_exists(pk) OR deploymentId = :me",
                    ExpressionAttributeValues={
                        ":me": deployment_id,
                        ":by": requested_by,
                        ":until": epoch + lease_seconds,
                        ":at": iso(now),
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            # The refusal carries the item in DynamoDB's wire format (the client's, not the resource's).
            item: dict[str, Any] = dict(exc.response.get("Item") or {})  # type: ignore[call-overload]
            holder = {k: TypeDeserializer().deserialize(v) for k, v in item.items()}
            raise LockLost(
                f"environment {environment} is locked by deployment {holder.get('deploymentId', '?')} (requested by "
                f"{holder.get('requestedBy', '?')}), not by {deployment_id}, whose lease ran out; it stopped before "
                "changing anything"
            ) from None

    def note_unlock(
        self, environment: str, holder: dict[str, Any], released_by: str, reason: str, now: datetime
    ) -> None:
        """Keep who released an environment's lock by hand, why, and whose it was (``LOCK#<env>`` / ``UNLOCK#<at>``)."""
        item = {
            "pk": _lock_key(environment)["pk"],
            "sk": f"UNLOCK#{iso(now)}",
            "deploymentId": str(holder.get("deploymentId", "")),
            "holderRequestedBy": str(holder.get("requestedBy", "")),
            "releasedBy": released_by,
            "reason": reason,
            "at": iso(now),
        }
        with transient_errors():
            self.table.put_item(Item=item)

    def unlocks(self, environment: str) -> list[dict[str, Any]]:
        """The environment's hand releases, oldest first."""
        with transient_errors():
            items = self.table.query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :unlock)",
                ExpressionAttributeValues={":pk": _lock_key(environment)["pk"], ":unlock": "UNLOCK#"},
                ConsistentRead=True,
            )["Items"]
        return [{k: v for k, v in i.items() if k not in ("pk", "sk")} for i in items]

    def put_announcement(self, environment: str, announced_at: datetime, fields: dict[str, Any]) -> str:
        """Keep one announcement (never replacing another); returns its id."""
        announcement_id = uuid.uuid4().hex
        item = {
            "pk": _announcements_pk(environment),
            "sk": f"AT#{iso(announced_at)}#{announcement_id}",
            "announcementId": announcement_id,
            "environment": environment,
            "announcedAt": iso(announced_at),
            **_encode(fields),
        }
        with transient_errors():
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        return announcement_id

    def announcements(self, environment: str, change_ticket: str | None = None) -> list[dict[str, Any]]:
        """The environment's announcements (only ``change_ticket``'s, if given), newest first."""
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _announcements_pk(environment)},
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if change_ticket is not None:
            query["FilterExpression"] = "changeTicket = :ticket"
            query["ExpressionAttributeValues"][":ticket"] = change_ticket
        found: list[dict[str, Any]] = []
        while True:
            with transient_errors():
                page = self.table.query(**query)
            found += [_decode(i) for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return found
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def lock_holder(self, environment: str) -> dict[str, Any] | None:
        with transient_errors():
            item = self.table.get_item(Key=_lock_key(environment), ConsistentRead=True).get("Item")
        return _decode(item) if item else None

    def keep_lock_until(self, environment: str, deployment_id: str, until: datetime) -> bool:
        """Make this deployment's lease end at ``until`` (never later than it did); False if it does not hold it.

        The caller caps ``until`` at the lease it read, so a refusal means the lock changed hands since.
        """
        epoch = int(until.timestamp())
        try:
            with transient_errors():
                self.table.update_item(
                    Key=_lock_key(environment),
                    UpdateExpression="SET lockExpiresAt = :until",
                    ConditionExpression="deploymentId = :me AND lockExpiresAt >= :until",
                    ExpressionAttributeValues={":me": deployment_id, ":until": epoch},
                )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def release_lock(self, environment: str, deployment_id: str) -> bool:
        """Release the lease if this deployment holds it; another holder's lease is left alone."""
        try:
            with transient_errors():
                self.table.delete_item(
                    Key=_lock_key(environment),
                    ConditionExpression="deploymentId = :me",
                    ExpressionAttributeValues={":me": deployment_id},
                )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True
