"""Emulates S3 replication of objects, which moto 5.2.5 stores the configuration for but never does.

What AWS does and this module repeats:
- An object version created in a bucket (PutObject, CopyObject, CompleteMultipartUpload)
  whose replication configuration has an ``Enabled`` rule matching the key (rule
  ``Prefix``, ``Filter.Prefix``, ``Filter.Tag`` or ``Filter.And``; the highest
  ``Priority`` wins; an SSE-KMS object only when the rule's
  ``SourceSelectionCriteria.SseKmsEncryptedObjects`` is enabled) gets replication status
  ``PENDING``. After a short delay (``S3Replication.delay_seconds``) the version is copied
  to the rule's destination bucket, in whatever region that bucket is: same version id,
  body, Content-Type, user metadata, tags, ACL, Last-Modified; the rule's StorageClass and
  ReplicaKmsKeyID when it has them. The source then reports ``COMPLETED`` and the replica
  ``REPLICA`` (HeadObject/GetObject ``ReplicationStatus``).
- The source reports ``FAILED`` when the destination bucket does not exist, belongs to
  another account than the rule's ``Destination.Account`` (the source's own account when
  absent), or when versioning is not enabled on either side; likewise an SSE-KMS object
  with no ``ReplicaKmsKeyID`` to encrypt the replica with.
- A delete marker (DELETE without a version id) is replicated when the matching rule has
  ``DeleteMarkerReplication`` ``Enabled``, or is a V1 rule (no ``Filter``), which always
  replicates them. Deleting a specific version is never replicated. Rules with tag
  filters never match delete markers.
- A replica is never replicated again, even when the destination has its own rules.
- Objects that existed before the configuration are not replicated (that is S3 Batch
  Replication's job on AWS).
- GetBucketReplication answers the rules as they were put: moto 5.2.5 answers every rule
  with ``Filter: {Prefix: ""}`` and ``DeleteMarkerReplication: Disabled`` and drops
  ``SourceSelectionCriteria``, which would make an idempotent configurator see a change on
  every run.

Pausing (``pause()``/``resume()``) holds every copy: versions stay ``PENDING`` and nothing
reaches the destination. Nothing is lost: on ``resume()`` the held copies run, in order.
``stop()`` (the sandbox stopping) drops whatever is still queued.

moto internals this depends on (pin: moto==5.2.5), patched once per process by
``install()``; the patches do nothing while no ``S3Replication`` is started:
- ``S3Backend.put_object``: every object version is created there (PutObject,
  CopyObject via ``S3Backend.copy_object``, ``complete_multipart_upload``).
- ``S3Backend._set_delete_marker``: every delete marker is created there.
- ``S3Response.key_response`` / ``bucket_response``: one S3 request each. A version is
  considered once its request has returned, because moto sets metadata, ACL and tags on
  the ``FakeKey`` only after ``put_object`` returns.
- ``S3Response.get_bucket_replication``: replaced to answer the stored rules.
- ``FakeKey.response_dict``: the headers of HeadObject/GetObject; gains
  ``x-amz-replication-status``, kept in the ``FakeKey`` attribute ``REPLICATION_STATUS``.
- ``FakeBucket.replication`` (the PutBucketReplication XML as parsed by xmltodict),
  ``FakeBucket.is_versioned``, ``FakeBucket.keys``, ``S3Backend.buckets``, ``s3_backends.bucket_accounts``,
  ``FakeKey._version_id`` / ``FakeDeleteMarker._version_id`` (replicas keep the source's).

``ReplicationQueue`` (the delayed, pausable worker) is shared with ``dynamodb_replicas``.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

logger = logging.getLogger(__name__)

DEFAULT_DELAY_SECONDS = 0.5
# The FakeKey attribute holding the version's replication status (PENDING, COMPLETED, FAILED, REPLICA).
REPLICATION_STATUS = "sandbox_replication_status"
PATCHED = "__sandbox_s3_replication__"
_install_lock = threading.Lock()


# --- the delayed, pausable worker both replication emulations use ------------------------------


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    run: Callable[[], None] = field(compare=False)
    pausable: bool = field(compare=False)


class ReplicationQueue:
    """Runs jobs one at a time on a daemon thread, each no sooner than its due time.

    Pausable jobs run in the order they were submitted; a pause holds them (and only
    them) until ``resume()``. ``stop()`` drops what is still queued.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: list[_Job] = []
        self._seq = itertools.count()
        self._last_due = 0.0
        self._paused = False
        self._stopping = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._jobs.clear()
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def submit(self, run: Callable[[], None], delay_seconds: float, *, pausable: bool = True) -> None:
        with self._cond:
            due = time.monotonic() + max(delay_seconds, 0.0)
            if pausable:  # never before an earlier pausable job: replication keeps the order of writes
                due = self._last_due = max(due, self._last_due)
            bisect.insort(self._jobs, _Job(due, next(self._seq), run, pausable))
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def pending(self) -> int:
        """Jobs not run yet (due or not, held or not)."""
        with self._cond:
            return len(self._jobs)

    @property
    def held(self) -> int:
        """Jobs that are due but held back by a pause."""
        now = time.monotonic()
        with self._cond:
            return sum(1 for job in self._jobs if self._paused and job.pausable and job.due <= now)

    def _take(self) -> tuple[_Job | None, float | None]:
        """The first runnable job that is due, else how long to wait for one (None: until notified)."""
        now = time.monotonic()
        for index, job in enumerate(self._jobs):
            if self._paused and job.pausable:
                continue
            if job.due <= now:
                return self._jobs.pop(index), None
            return None, job.due - now
        return None, None

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    job, wait = self._take()
                    if job is not None:
                        break
                    self._cond.wait(wait)
            try:
                job.run()
            except Exception:
                logger.exception("%s: a replication job failed", self.name)


# --- which versions to replicate, and where -------------------------------------------------------


class ReplicationFailedError(Exception):
    """The version cannot be replicated; its source reports FAILED."""


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _rule_filter(rule: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(prefix, tags) of a rule as moto stores it (PutBucketReplication's XML through xmltodict)."""
    if "Filter" not in rule:  # V1 rule
        return rule.get("Prefix") or "", {}
    flt = rule.get("Filter") or {}
    if "And" in flt:
        flt = flt.get("And") or {}
        tags = _as_list(flt.get("Tag"))
    else:
        tags = _as_list(flt.get("Tag"))
    return flt.get("Prefix") or "", {tag["Key"]: tag.get("Value") or "" for tag in tags}


def _enabled(block: Any) -> bool:
    return isinstance(block, dict) and block.get("Status") == "Enabled"


def matching_rule(
    config: dict[str, Any], key_name: str, tags: dict[str, str] | None, *, kms_encrypted: bool = False
) -> dict[str, Any] | None:
    """The rule that replicates ``key_name`` (highest priority wins); ``tags=None`` for a delete marker."""
    candidates = []
    for rule in _as_list(config.get("Rule")):
        prefix, rule_tags = _rule_filter(rule)
        if rule.get("Status") != "Enabled" or not key_name.startswith(prefix):
            continue
        if tags is None and rule_tags:
            continue
        if tags is not None and any(tags.get(k) != v for k, v in rule_tags.items()):
            continue
        if kms_encrypted and not _enabled((rule.get("SourceSelectionCriteria") or {}).get("SseKmsEncryptedObjects")):
            continue
        candidates.append(rule)
    return max(candidates, key=lambda rule: int(rule.get("Priority") or 0), default=None)


def replicates_delete_markers(rule: dict[str, Any]) -> bool:
    # V1 rules (no Filter) always replicate delete markers; V2 rules only when asked to.
    return "Filter" not in rule or _enabled(rule.get("DeleteMarkerReplication"))


def _backend(account: str, partition: str = "aws") -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[account][partition]


def _destination(rule: dict[str, Any], source_account: str) -> tuple[Any, Any]:
    """(backend, bucket) of the rule's destination, or ReplicationFailedError as S3 would see it."""
    from moto.s3.models import s3_backends

    destination = rule.get("Destination") or {}
    name = str(destination.get("Bucket") or "").rsplit(":", 1)[-1]
    entry = s3_backends.bucket_accounts.get(name)
    if entry is None:
        raise ReplicationFailedError(f"destination bucket {name!r} does not exist")
    partition, owner = entry
    if owner != (destination.get("Account") or source_account):
        raise ReplicationFailedError(f"destination bucket {name!r} belongs to another account")
    backend = _backend(owner, partition)
    bucket = backend.get_bucket(name)
    if not bucket.is_versioned:
        raise ReplicationFailedError(f"versioning is not enabled on destination bucket {name!r}")
    return backend, bucket


# --- per-request scope: a version is considered once its request has returned ------------------


class _Scope(threading.local):
    def __init__(self) -> None:
        self.depth = 0
        self.created: list[tuple[str, Any]] = []
        self.replicating = False


_scope = _Scope()


def _created(kind: str, thing: Any) -> None:
    if _scope.replicating:
        return
    if _scope.depth:
        _scope.created.append((kind, thing))
    else:  # created outside an S3 request (another moto service): nothing more will be set on it
        _release([(kind, thing)])


def _release(created: list[tuple[str, Any]]) -> None:
    controller = S3Replication.active
    if controller is None:
        return
    for kind, thing in created:
        try:
            if kind == "object":
                controller.object_created(thing)
            else:
                controller.delete_marker_created(thing)
        except Exception:  # the request itself succeeded; replication is S3's business, never the caller's
            logger.exception("s3 replication: could not consider %s", getattr(thing, "name", thing))


@contextmanager
def _replicating() -> Iterator[None]:
    _scope.replicating = True
    try:
        yield
    finally:
        _scope.replicating = False


# --- the emulation --------------------------------------------------------------------------------


class QueueControls:
    """Pausing for fault tests (as AWS FIS pauses replication), shared by the replication emulations."""

    queue: ReplicationQueue

    def pause(self) -> None:
        """Hold the replication work: it stays pending (S3 versions stay PENDING) until resume()."""
        self.queue.pause()

    def resume(self) -> None:
        """Run the held work, in order, and replicate as usual again."""
        self.queue.resume()

    @property
    def is_paused(self) -> bool:
        return self.queue.paused

    @property
    def pending(self) -> int:
        """Work not done yet."""
        return self.queue.pending

    @property
    def held(self) -> int:
        """Work that is due but held by a pause."""
        return self.queue.held


@dataclass
class S3Replication(QueueControls):
    """S3 replication for the sandbox's moto; one is active per process (moto's backends are)."""

    delay_seconds: float = DEFAULT_DELAY_SECONDS
    queue: ReplicationQueue = field(default_factory=lambda: ReplicationQueue("sandbox-s3-replication"))
    active: ClassVar[S3Replication | None] = None

    def start(self) -> S3Replication:
        install()
        S3Replication.active = self
        self.queue.start()
        return self

    def stop(self) -> None:
        if S3Replication.active is self:
            S3Replication.active = None
        self.queue.stop()

    def object_created(self, key: Any) -> None:
        backend = _backend(key.account_id, key.partition)
        config = getattr(backend.get_bucket(key.bucket_name), "replication", None)
        if not config:
            return
        tags = backend.tagger.get_tag_dict_for_resource(key.arn)
        rule = matching_rule(config, key.name, tags, kms_encrypted=key.encryption == "aws:kms")
        if rule is None:
            return
        setattr(key, REPLICATION_STATUS, "PENDING")
        self.queue.submit(functools.partial(self._replicate_object, key, rule), self.delay_seconds)

    def delete_marker_created(self, marker: Any) -> None:
        source = marker.key
        while not hasattr(source, "account_id"):  # a marker on a marker: moto chains them
            source = source.key
        config = getattr(
            _backend(source.account_id, source.partition).get_bucket(source.bucket_name), "replication", None
        )
        rule = matching_rule(config, marker.name, None) if config else None
        if rule is None or not replicates_delete_markers(rule):
            return
        self.queue.submit(
            functools.partial(self._replicate_delete_marker, marker, source.account_id, rule), self.delay_seconds
        )

    def _replicate_object(self, key: Any, rule: dict[str, Any]) -> None:
        source_bucket = _backend(key.account_id, key.partition).buckets.get(key.bucket_name)
        if source_bucket is None or not any(version is key for version in source_bucket.keys.getlist(key.name, [])):
            return  # the version (or its bucket) was deleted before S3 got to it
        try:
            if not source_bucket.is_versioned:
                raise ReplicationFailedError(f"versioning is not enabled on source bucket {key.bucket_name!r}")
            backend, bucket = _destination(rule, key.account_id)
            replica = self._copy(key, rule, backend, bucket.name)
        except ReplicationFailedError as exc:
            logger.info("s3 replication of %s/%s failed: %s", key.bucket_name, key.name, exc)
            setattr(key, REPLICATION_STATUS, "FAILED")
            return
        setattr(replica, REPLICATION_STATUS, "REPLICA")
        setattr(key, REPLICATION_STATUS, "COMPLETED")

    @staticmethod
    def _copy(key: Any, rule: dict[str, Any], backend: Any, bucket_name: str) -> Any:
        destination = rule.get("Destination") or {}
        encryption, kms_key_id = key.encryption, None
        if encryption == "aws:kms":
            kms_key_id = (destination.get("EncryptionConfiguration") or {}).get("ReplicaKmsKeyID")
            if not kms_key_id:
                raise ReplicationFailedError("an SSE-KMS object needs a ReplicaKmsKeyID")
        with _replicating():
            replica = backend.put_object(
                bucket_name,
                key.name,
                key.value,
                storage=destination.get("StorageClass") or key.storage_class,
                etag=key.etag.strip('"'),
                multipart=key.multipart,
                encryption=encryption,
                kms_key_id=kms_key_id,
                bucket_key_enabled=key.bucket_key_enabled,
                lock_mode=key.lock_mode,
                lock_legal_status=key.lock_legal_status,
                lock_until=key.lock_until,
                checksum_value=key.checksum_value,
            )
        replica._version_id = key.version_id  # replicas keep the source's version id
        replica.last_modified = key.last_modified
        replica.set_metadata(dict(key.metadata.items()))
        replica.set_acl(key.acl)
        replica.website_redirect_location = key.website_redirect_location
        replica.checksum_algorithm = key.checksum_algorithm
        tags = _backend(key.account_id, key.partition).tagger.get_tag_dict_for_resource(key.arn)
        if tags:
            backend.tagger.tag_resource(replica.arn, backend.tagger.convert_dict_to_tags_input(tags))
        return replica

    @staticmethod
    def _replicate_delete_marker(marker: Any, account: str, rule: dict[str, Any]) -> None:
        try:
            backend, bucket = _destination(rule, account)
        except ReplicationFailedError as exc:
            logger.info("s3 replication of a delete marker on %s failed: %s", marker.name, exc)
            return
        if marker.name not in bucket.keys:
            return  # moto can only put a delete marker on a key it has
        with _replicating():
            replica = backend._set_delete_marker(bucket.name, marker.name)  # what DeleteObject uses
        replica._version_id = marker.version_id  # replicas keep the source's version id


# --- the patches ------------------------------------------------------------------------------------


def _shaped(shape: Any, value: Any) -> Any:
    """Stored xmltodict data in the shape botocore's model (and so moto's serializer) expects."""
    if shape.type_name == "structure":
        value = value if isinstance(value, dict) else {}
        out = {}
        for name, member in shape.members.items():
            xml_name = member.serialization.get("name", name)
            if xml_name in value:
                out[name] = _shaped(member, value[xml_name])
        return out
    if shape.type_name == "list":
        return [_shaped(shape.member, item) for item in _as_list(value)]
    if shape.type_name in {"integer", "long"}:
        return int(value)
    if shape.type_name == "boolean":
        return value in {True, "true"}
    return "" if value is None else value


@functools.cache
def _replication_shape() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("s3").shape_for("ReplicationConfiguration")


def _get_bucket_replication(self: Any) -> Any:
    """GetBucketReplication with the rules as they were put (moto 5.2.5 rewrites Filter and DeleteMarkerReplication)."""
    from moto.core.responses import ActionResult
    from moto.s3.exceptions import ReplicationConfigurationNotFoundError

    self.data["Action"] = "GetBucketReplication"
    replication = self.backend.get_bucket_replication(self.bucket_name)
    if not replication:
        raise ReplicationConfigurationNotFoundError(bucket_name=self.bucket_name)
    return self.serialized(ActionResult({"ReplicationConfiguration": _shaped(_replication_shape(), replication)}))


def _request_scope(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def handle(self: Any, *args: Any, **kwargs: Any) -> Any:
        _scope.depth += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            _scope.depth -= 1
            if not _scope.depth:
                created, _scope.created = _scope.created, []
                _release(created)

    return handle


def install() -> None:
    """Patch moto (once per process); harmless while no S3Replication is active."""
    from moto.s3.models import FakeKey, S3Backend
    from moto.s3.responses import S3Response

    with _install_lock:
        if getattr(S3Backend, PATCHED, False):
            return
        put_object = S3Backend.put_object
        set_delete_marker = S3Backend._set_delete_marker  # moto's one place for delete markers
        response_dict = FakeKey.response_dict

        @functools.wraps(put_object)
        def put_object_replicated(self: Any, *args: Any, **kwargs: Any) -> Any:
            key = put_object(self, *args, **kwargs)
            _created("object", key)
            return key

        @functools.wraps(set_delete_marker)
        def set_delete_marker_replicated(self: Any, *args: Any, **kwargs: Any) -> Any:
            marker = set_delete_marker(self, *args, **kwargs)
            _created("delete-marker", marker)
            return marker

        def response_dict_with_status(self: Any) -> dict[str, Any]:
            headers: dict[str, Any] = response_dict.fget(self)  # type: ignore[attr-defined]
            status = getattr(self, REPLICATION_STATUS, None)
            if status:
                headers["x-amz-replication-status"] = status
            return headers

        S3Backend.put_object = put_object_replicated  # type: ignore[method-assign]
        S3Backend._set_delete_marker = set_delete_marker_replicated  # type: ignore[method-assign]
        FakeKey.response_dict = property(response_dict_with_status)  # type: ignore[assignment,method-assign]
        S3Response.key_response = _request_scope(S3Response.key_response)  # type: ignore[method-assign]
        S3Response.bucket_response = _request_scope(S3Response.bucket_response)  # type: ignore[method-assign]
        S3Response.get_bucket_replication = _get_bucket_replication  # type: ignore[method-assign]
        setattr(S3Backend, PATCHED, True)
