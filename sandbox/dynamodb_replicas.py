"""Emulates DynamoDB global tables (version 2019.11.21), which moto 5.2.5 lacks.

moto 5.2.5 answers ``UpdateTable`` with ``ReplicaUpdates`` as if it had done it and
ignores the replica updates: no table appears in the replica region, DescribeTable has
no ``Replicas`` and no ``GlobalTableVersion``, and writes stay where they were made.

What AWS does and this module repeats:
- ``ReplicaUpdates=[{"Create": {"RegionName": R}}]`` creates the table in region R of the
  same account: same name, key schema, attribute definitions, billing mode and
  throughput, GSIs and LSIs, stream specification, TTL setting and SSE (with the Create's
  ``KMSMasterKeyId`` when given); tags and deletion protection stay per replica. The
  table's items are copied into it. The replica is ``CREATING`` for
  ``DynamoDBReplicas.delay_seconds`` and then ``ACTIVE``; meanwhile DescribeTable says
  ``TableStatus: UPDATING`` for the other replicas and ``CREATING`` for the new one.
- ``{"Delete": {"RegionName": R}}`` deletes the replica table in R (DeleteTable in R does
  the same); the last replica left is a plain table again.
- DescribeTable (and every answer carrying a table description) in any replica region
  says ``GlobalTableVersion: "2019.11.21"`` and lists the *other* regions under
  ``Replicas`` with their ``ReplicaStatus``.
- Item writes in any replica (PutItem, UpdateItem, DeleteItem, BatchWriteItem,
  TransactWriteItems, PartiQL statements) are mirrored to every other replica after
  ``delay_seconds``, asynchronously as on AWS: what is mirrored is the item's image once
  the request has returned (the whole item, or its absence), so a failed or rolled back
  request mirrors nothing but the state it left. Mirrored writes are not mirrored again.
- Creation refuses (ValidationException) a replica in the table's own region, in a
  region that already has a replica, or where a table of that name exists; deletion
  refuses a region that holds no replica. Streams NEW_AND_OLD_IMAGES, which AWS requires
  for replicas, are not required.

Conflicts are "last mirrored wins" in the order the writes were made in this process, not
AWS's last-writer-wins by timestamp; with one writer per item (the pipeline's case) the
outcome is the same.

Pausing (``pause()``/``resume()``, as AWS FIS pauses global-table replication) holds every
mirrored write: each replica then only has its own writes. Nothing is lost: on
``resume()`` the held writes are applied, in order. Replica creation and the
CREATING -> ACTIVE transition are not paused (FIS does not stop them either).
``stop()`` (the sandbox stopping) drops whatever is still queued.

moto internals this depends on (pin: moto==5.2.5), patched once per process by
``install()``; the patches do nothing while no ``DynamoDBReplicas`` is started:
- ``DynamoHandler.update_table``: reads ``ReplicaUpdates`` (in ``self.body``) first.
- ``DynamoHandler.call_action``: one DynamoDB request; touched items are mirrored after it.
- ``Table.put_item`` / ``Table.delete_item``: where every item is stored or removed (PutItem,
  BatchWriteItem, transactions, PartiQL, UpdateItem of a new item);
  ``DynamoDBBackend.update_item``: updates an existing item in place.
- ``DynamoDBBackend.delete_table``: a deleted replica leaves its global table.
- ``Table.describe``: gains ``GlobalTableVersion``, ``Replicas`` and the statuses above.
- ``dynamodb_backends[account][region]``, ``DynamoDBBackend.create_table``/``tables``,
  ``Table`` attributes (``schema``, ``attr``, ``billing_mode``, ``throughput``,
  ``global_indexes``, ``indexes``, ``stream_specification``, ``ttl``,
  ``sse_specification``, ``all_items()``, ``get_item()``), ``Item.to_json()``.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sandbox.s3_replication import DEFAULT_DELAY_SECONDS, QueueControls, ReplicationQueue

logger = logging.getLogger(__name__)

GLOBAL_TABLE_VERSION = "2019.11.21"
CREATING, ACTIVE = "CREATING", "ACTIVE"
PATCHED = "__sandbox_dynamodb_replicas__"
_install_lock = threading.Lock()

# (account, region, table name, hash key, range key): an item, by its key's DynamoType values.
ItemRef = tuple[str, str, str, Any, Any]


class _Scope(threading.local):
    def __init__(self) -> None:
        self.depth = 0
        self.touched: dict[ItemRef, None] = {}
        self.mirroring = False


_scope = _Scope()


def _touched(ref: ItemRef) -> None:
    if _scope.mirroring:
        return
    if _scope.depth:
        _scope.touched[ref] = None
    else:  # written outside a DynamoDB request (another moto service)
        _release([ref])


def _release(refs: list[ItemRef]) -> None:
    controller = DynamoDBReplicas.active
    if controller is None:
        return
    for ref in refs:
        try:
            controller.item_written(ref)
        except Exception:  # the request itself succeeded; replication is DynamoDB's business
            logger.exception("dynamodb replicas: could not mirror %s", ref[:3])


@contextmanager
def _mirroring() -> Iterator[None]:
    _scope.mirroring = True
    try:
        yield
    finally:
        _scope.mirroring = False


def _backend(account: str, region: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[account][region]


def _validation(message: str) -> Exception:
    from moto.dynamodb.exceptions import MockValidationException

    return MockValidationException(message)


def _replica_sse(table: Any, create: dict[str, Any]) -> dict[str, Any] | None:
    sse = table.sse_specification
    if not sse or sse.get("Enabled") is not True:
        return None
    # A KMS key is regional: the replica's is the Create's, else the region's default.
    spec = {k: v for k, v in sse.items() if k != "KMSMasterKeyId"}
    if create.get("KMSMasterKeyId"):
        spec["KMSMasterKeyId"] = create["KMSMasterKeyId"]
    return spec


@dataclass
class DynamoDBReplicas(QueueControls):
    """Global tables for the sandbox's moto; one is active per process (moto's backends are)."""

    delay_seconds: float = DEFAULT_DELAY_SECONDS
    queue: ReplicationQueue = field(default_factory=lambda: ReplicationQueue("sandbox-dynamodb-replicas"))
    # (account, table name) -> {region: ReplicaStatus}, every replica of each global table.
    _tables: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    active: ClassVar[DynamoDBReplicas | None] = None

    def start(self) -> DynamoDBReplicas:
        install()
        DynamoDBReplicas.active = self
        self.queue.start()
        return self

    def stop(self) -> None:
        if DynamoDBReplicas.active is self:
            DynamoDBReplicas.active = None
        self.queue.stop()

    def replicas(self, account: str, table_name: str) -> dict[str, str]:
        """Every region of a global table with its ReplicaStatus; empty for a plain table."""
        with self._lock:
            return dict(self._tables.get((account, table_name), {}))

    # --- ReplicaUpdates ---------------------------------------------------------------------------

    def update_replicas(self, backend: Any, table_name: str, updates: list[dict[str, Any]]) -> None:
        """Apply UpdateTable's ReplicaUpdates, all validated before any is applied."""
        table = backend.get_table(table_name)
        account, home = backend.account_id, backend.region_name
        with self._lock:
            regions = set(self.replicas(account, table.name)) or {home}
            creates, deletes = [], []
            for update in updates:
                if "Create" in update:
                    create = update["Create"]
                    self._check_create(account, table.name, home, create["RegionName"], regions)
                    regions.add(create["RegionName"])
                    creates.append(create)
                if "Delete" in update:
                    region = update["Delete"]["RegionName"]
                    if region == home or region not in regions:
                        raise _validation(f"Cannot delete replica in {region}: it is not a replica of {table.name}")
                    regions.discard(region)
                    deletes.append(region)
            for create in creates:
                self._create_replica(table, create)
            for region in deletes:
                _backend(account, region).delete_table(table.name)

    @staticmethod
    def _check_create(account: str, table_name: str, home: str, region: str, regions: set[str]) -> None:
        from moto.dynamodb.models import dynamodb_backends

        if region == home:
            raise _validation(f"Cannot add a replica of {table_name} in its own region {region}")
        if region in regions:
            raise _validation(f"Cannot add replica in {region}: {table_name} already has one there")
        if region not in dynamodb_backends[account].regions:
            raise _validation(f"Invalid region: {region}")
        if table_name in _backend(account, region).tables:
            raise _validation(
                f"Failed to create a the new replica of table with name: '{table_name}' because one or more "
                "replicas already existed as tables."
            )

    def _create_replica(self, table: Any, create: dict[str, Any]) -> None:
        region = create["RegionName"]
        provisioned = table.billing_mode != "PAY_PER_REQUEST"
        replica = _backend(table.account_id, region).create_table(
            name=table.name,
            schema=copy.deepcopy(table.schema),
            throughput={k: table.throughput[k] for k in ("ReadCapacityUnits", "WriteCapacityUnits")}
            if provisioned
            else None,
            attr=copy.deepcopy(table.attr),
            global_indexes=[
                {k: v for k, v in index.describe().items() if k not in {"IndexStatus", "WarmThroughput"}}
                for index in table.global_indexes
            ],
            indexes=[index.describe() for index in table.indexes],
            streams=copy.deepcopy(table.stream_specification)
            if (table.stream_specification or {}).get("StreamEnabled")
            else None,
            billing_mode=table.billing_mode,
            sse_specification=_replica_sse(table, create),
            tags=[],
            deletion_protection_enabled=False,
            warm_throughput=None,
        )
        replica.ttl = copy.deepcopy(table.ttl)
        with _mirroring():
            for item in table.all_items():
                replica.put_item(copy.deepcopy(item.to_json()["Attributes"]))
        key = (table.account_id, table.name)
        self._tables.setdefault(key, {table.region_name: ACTIVE})[region] = CREATING
        self.queue.submit(
            functools.partial(self._activate, table.account_id, table.name, region), self.delay_seconds, pausable=False
        )
        logger.info("dynamodb replicas: %s now has a replica in %s", table.name, region)

    def _activate(self, account: str, table_name: str, region: str) -> None:
        with self._lock:
            replicas = self._tables.get((account, table_name), {})
            if replicas.get(region) == CREATING:
                replicas[region] = ACTIVE

    def table_deleted(self, account: str, region: str, table_name: str) -> None:
        with self._lock:
            replicas = self._tables.get((account, table_name))
            if replicas is None:
                return
            replicas.pop(region, None)
            if len(replicas) < 2:
                del self._tables[(account, table_name)]

    def describe(self, table: Any, description: dict[str, Any]) -> None:
        """Add what DescribeTable says of a global table to moto's description of ``table``."""
        replicas = self.replicas(table.account_id, table.name)
        if table.region_name not in replicas:
            return
        description["GlobalTableVersion"] = GLOBAL_TABLE_VERSION
        description["Replicas"] = [
            {"RegionName": region, "ReplicaStatus": status}
            for region, status in sorted(replicas.items())
            if region != table.region_name
        ]
        if replicas[table.region_name] == CREATING:
            description["TableStatus"] = CREATING
        elif CREATING in replicas.values():
            description["TableStatus"] = "UPDATING"

    # --- mirroring writes ---------------------------------------------------------------------------

    def item_written(self, ref: ItemRef) -> None:
        account, region, table_name, hash_key, range_key = ref
        others = [r for r in self.replicas(account, table_name) if r != region]
        if not others:
            return
        table = _backend(account, region).tables.get(table_name)
        if table is None:
            return
        item = table.get_item(hash_key, range_key)
        image = copy.deepcopy(item.to_json()["Attributes"]) if item is not None else None
        for other in others:
            self.queue.submit(
                functools.partial(self._mirror, (account, other, table_name, hash_key, range_key), image),
                self.delay_seconds,
            )

    @staticmethod
    def _mirror(ref: ItemRef, image: dict[str, Any] | None) -> None:
        account, region, table_name, hash_key, range_key = ref
        table = _backend(account, region).tables.get(table_name)
        if table is None:
            return  # the replica was deleted meanwhile
        with _mirroring():
            if image is None:
                table.delete_item(hash_key, range_key)
            else:
                table.put_item(image)


# --- the patches ------------------------------------------------------------------------------------


def _ref(table: Any, hash_key: Any, range_key: Any) -> ItemRef:
    return (table.account_id, table.region_name, table.name, hash_key, range_key)


def _key_of(table: Any, key: Any) -> tuple[Any, Any] | None:
    """(hash, range) DynamoTypes of an UpdateItem key; None for a key moto refused or its odd non-dict form."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    range_attr = table.range_key_attr
    if not isinstance(key, dict) or table.hash_key_attr not in key or (range_attr and range_attr not in key):
        return None
    return DynamoType(key[table.hash_key_attr]), DynamoType(key[range_attr]) if range_attr else None


def _wrap(original: Callable[..., Any], after: Callable[..., None]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        after(self, result, *args, **kwargs)
        return result

    return call


def _after_put(table: Any, item: Any, *_: Any, **__: Any) -> None:
    _touched(_ref(table, item.hash_key, item.range_key))


def _after_delete(table: Any, item: Any, *_: Any, **__: Any) -> None:
    if item is not None:
        _touched(_ref(table, item.hash_key, item.range_key))


def _after_delete_table(backend: Any, table: Any, *_: Any, **__: Any) -> None:
    controller = DynamoDBReplicas.active
    if controller is not None:
        controller.table_deleted(backend.account_id, backend.region_name, table.name)


def _describe_wrapper(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(original)
    def describe(self: Any, base_key: str = "TableDescription") -> dict[str, Any]:
        result = original(self, base_key)
        controller = DynamoDBReplicas.active
        if controller is not None:
            controller.describe(self, result[base_key])
        return result

    return describe


def _update_item_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def update_item(self: Any, table_name: str, key: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, table_name, key, *args, **kwargs)
        finally:  # an update may change the item in place and then fail: mirror whatever it left
            table = self.tables.get(table_name)
            parts = _key_of(table, key) if table is not None else None
            if parts is not None:
                _touched(_ref(table, *parts))

    return update_item


def _call_action_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        _scope.depth += 1
        try:
            return original(self)
        finally:
            _scope.depth -= 1
            if not _scope.depth:
                touched, _scope.touched = list(_scope.touched), {}
                _release(touched)

    return call_action


def _update_table_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def update_table(self: Any) -> Any:
        updates = self.body.get("ReplicaUpdates")
        controller = DynamoDBReplicas.active
        if updates and controller is not None:
            controller.update_replicas(self.dynamodb_backend, self.body["TableName"], updates)
        return original(self)  # applies the other updates and describes the table, replicas included

    return update_table


def install() -> None:
    """Patch moto (once per process); harmless while no DynamoDBReplicas is active."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler

    with _install_lock:
        if getattr(DynamoDBBackend, PATCHED, False):
            return
        Table.put_item = _wrap(Table.put_item, _after_put)  # type: ignore[method-assign]
        Table.delete_item = _wrap(Table.delete_item, _after_delete)  # type: ignore[method-assign]
        Table.describe = _describe_wrapper(Table.describe)  # type: ignore[method-assign]
        DynamoDBBackend.update_item = _update_item_wrapper(DynamoDBBackend.update_item)  # type: ignore[method-assign]
        DynamoDBBackend.delete_table = _wrap(DynamoDBBackend.delete_table, _after_delete_table)  # type: ignore[method-assign]
        DynamoHandler.call_action = _call_action_wrapper(DynamoHandler.call_action)  # type: ignore[method-assign]
        DynamoHandler.update_table = _update_table_wrapper(DynamoHandler.update_table)  # type: ignore[method-assign]
        setattr(DynamoDBBackend, PATCHED, True)
