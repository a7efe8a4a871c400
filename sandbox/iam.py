"""IAM as AWS enforces it, in front of moto: every call a restricted principal makes is authorized.

moto evaluates no policies for most services, so a function that lacks a grant works in the
sandbox and fails on its first real deployment. This WSGI layer sits in front of the AWS
endpoint (inside ``call_counter``, which counts denied calls too, as CloudTrail does) and:

1. identifies the principal from the request's access key: keys that STS issued for a role
   (moto keeps them, ``AssumeRole``) are that role's session; a fixed key may stand for a role
   (``sandbox.sfn_roles`` signs each of the state machine's service integrations with a key
   standing for the execution's role). Every other key (the sandbox's bootstrap, the tooling admin key), and the
   sessions of ``exempt_roles`` (an administrator setting up an account), is unrestricted.
2. maps the request to the IAM action(s) and resource ARN(s) it needs (``iam_actions.yaml``,
   ``ActionMap``): an operation the map lacks is denied, naming it;
3. evaluates the role's identity policies (inline and managed, as IAM holds them in moto) with
   ``sandbox.iam_policy``; for ``sts:AssumeRole`` also the target role's trust policy;
4. answers a denial in the protocol the request came in, with AWS's message, and records
   every (role, action, resource, decision) it evaluated (``usage()``), for the least-privilege
   report (``scripts/iam_report.py``).

Resource-based policies (bucket, queue, secret policies) are not evaluated: every call the
deployer makes is within one account except AssumeRole, whose trust policy is.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs

import yaml
from werkzeug.wrappers import Response

from sandbox import call_counter
from sandbox.iam_policy import PolicyError, Principal, Request, evaluate, trust_allows

ACTIONS_FILE = Path(__file__).with_name("iam_actions.yaml")
WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
PLACEHOLDER = re.compile(r"\{(arn:)?([A-Za-z]+)\}")
# What creating / deleting a global-table replica (version 2019.11.21) needs in the replica's region.
REPLICA_CREATE = (
    "dynamodb:CreateTable",
    "dynamodb:CreateTableReplica",
    "dynamodb:Scan",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
    "dynamodb:PutItem",
    "dynamodb:GetItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
)
REPLICA_DELETE = ("dynamodb:DeleteTable", "dynamodb:DeleteTableReplica")
DYNAMODB_REPLICATION = "replication.dynamodb.amazonaws.com"
DYNAMODB_REPLICATION_ROLE = "AWSServiceRoleForDynamoDBReplication"


class Unmapped(Exception):
    """The action map cannot authorize this call (an operation or parameter it does not know)."""


@dataclass(frozen=True)
class ApiCall:
    """One AWS API call, identified: moto's service and operation names, and its parameters."""

    service: str
    operation: str
    region: str
    account: str
    params: Mapping[str, Any]
    body: bytes = b""
    # The request's x-amz-* headers, lower-cased (S3 takes some parameters there).
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Authorization:
    """One thing IAM checks for a call: an action on a resource, with the request's condition keys."""

    action: str
    resource: str
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class Lookups(Protocol):
    """What mapping a call needs to know of the account's resources."""

    def partition_key(self, account: str, region: str, table: str) -> str | None: ...

    def secret_arn(self, account: str, region: str, secret_id: str) -> str: ...

    def role_exists(self, arn: str) -> bool: ...


@dataclass(frozen=True)
class ActionMap:
    """``iam_actions.yaml``: each operation's IAM action(s) and resource(s)."""

    entries: Mapping[str, Mapping[str, Mapping[str, Any]]]

    @classmethod
    def load(cls, path: Path = ACTIONS_FILE) -> ActionMap:
        return cls(yaml.safe_load(path.read_text()))

    def actions(self) -> set[str]:
        """Every IAM action the map can ask for, extras included."""
        named = {
            str(entry[key])
            for operations in self.entries.values()
            for entry in operations.values()
            for key in ("action", "versioned")
            if key in entry
        }
        extras = {"iam:PassRole", "iam:CreateServiceLinkedRole", "s3:PutBucketOwnershipControls"}
        return named | set(REPLICA_CREATE) | set(REPLICA_DELETE) | extras

    def authorizations(self, call: ApiCall, lookups: Lookups) -> list[Authorization]:
        entry = self.entries.get(call.service, {}).get(call.operation)
        if entry is None:
            raise Unmapped(f"{call.service}:{call.operation} is not in sandbox/iam_actions.yaml")
        if entry.get("free"):
            return []
        params = _normalised(call, lookups)
        action = str(entry["action"])
        if "versioned" in entry and params.get("versionId"):
            action = str(entry["versioned"])
        keys = {k: (str(params[p]),) for k, p in entry.get("keys", {}).items() if params.get(p) is not None}
        found = []
        for item in _each(entry.get("each"), params):
            resource = _resource(str(entry["resource"]), call, item)
            if entry.get("index") and item.get("IndexName"):
                resource = f"{resource}/index/{item['IndexName']}"
            item_keys = dict(keys)
            if entry.get("leading_keys"):
                leading = _leading_keys(call, item, lookups)
                if leading:
                    item_keys["dynamodb:LeadingKeys"] = leading
            found.append(Authorization(action, resource, item_keys))
        for extra in entry.get("also", []):
            found += EXTRAS[extra](call, params, lookups)
        unique = {(a.action, a.resource, tuple(sorted(a.keys.items()))): a for a in found}
        return list(unique.values())


def _normalised(call: ApiCall, lookups: Lookups) -> dict[str, Any]:
    """Parameters in the form the map's templates use (a queue's name from its URL, a secret's ARN)."""
    params = dict(call.params)
    if "QueueUrl" in params:
        params["QueueName"] = str(params["QueueUrl"]).rstrip("/").rsplit("/", 1)[-1]
    if call.service == "secretsmanager" and "SecretId" in params:
        params["SecretId"] = lookups.secret_arn(call.account, call.region, str(params["SecretId"]))
    return params


def _each(each: str | None, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The parameter sets one authorization each is made for: the call's own, or one per listed resource."""
    if each is None:
        return [params]
    if "[]." in each:
        listed, member = each.split("[].", 1)
        names = {str(e.get(member) or "default") for e in params.get(listed) or []}
        return [{**params, member: name} for name in sorted(names)]
    return [{**params, "TableName": name, "_items": items} for name, items in (params.get(each) or {}).items()]


def _resource(template: str, call: ApiCall, params: Mapping[str, Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        if name in ("region", "account"):
            return call.region if name == "region" else call.account
        if params.get(name) is None:
            raise Unmapped(f"{call.service}:{call.operation} without {name}: the map cannot name its resource")
        return str(params[name])

    for match in PLACEHOLDER.finditer(template):
        value = params.get(match.group(2))
        # A parameter that may be an ARN (a table, function or bus named by ARN) is the resource itself.
        if match.group(1) and isinstance(value, str) and value.startswith("arn:"):
            return value
    return PLACEHOLDER.sub(fill, template)


def _leading_keys(call: ApiCall, params: Mapping[str, Any], lookups: Lookups) -> tuple[str, ...]:
    """dynamodb:LeadingKeys: the partition key values of the item(s) the call reads or writes."""
    table = str(params.get("TableName", "")).rsplit("/", 1)[-1]
    attribute = lookups.partition_key(call.account, call.region, table)
    if attribute is None:
        return ()
    if "_items" in params:  # BatchWriteItem / BatchGetItem: every request of the table
        requests = params["_items"]
        items = list(requests.get("Keys", [])) if isinstance(requests, dict) else []
        for request in requests if isinstance(requests, list) else []:
            for kind in ("PutRequest", "DeleteRequest"):
                if kind in request:
                    items.append(request[kind].get("Item") or request[kind].get("Key") or {})
    else:
        items = [params.get("Key") or params.get("Item") or {}]
    values = [_attribute_text(item[attribute]) for item in items if attribute in item]
    return tuple(dict.fromkeys(values))


def _attribute_text(value: Mapping[str, Any]) -> str:
    ((kind, raw),) = value.items()
    return base64.b64encode(raw).decode() if kind == "B" and isinstance(raw, bytes) else str(raw)


def _pass_replication_role(call: ApiCall, _: Mapping[str, Any], __: Lookups) -> list[Authorization]:
    try:
        # The body is a request to the sandbox on loopback, which moto parses the same way next.
        document = ET.fromstring(call.body)  # noqa: S314
        role = next((e.text for e in document.iter() if e.tag.rsplit("}", 1)[-1] == "Role"), None)
    except ET.ParseError:
        role = None
    if not role:
        raise Unmapped("s3:PutBucketReplication without a Role: the map cannot name the role S3 is passed")
    return [Authorization("iam:PassRole", role, {"iam:PassedToService": ("s3.amazonaws.com",)})]


def _replica_updates(call: ApiCall, params: Mapping[str, Any], lookups: Lookups) -> list[Authorization]:
    table = str(params.get("TableName", "")).rsplit("/", 1)[-1]
    found = []
    for update in params.get("ReplicaUpdates") or []:
        for kind, actions in (
            ("Create", REPLICA_CREATE),
            ("Delete", REPLICA_DELETE),
            ("Update", ("dynamodb:UpdateTable",)),
        ):
            if kind in update:
                arn = f"arn:aws:dynamodb:{update[kind]['RegionName']}:{call.account}:table/{table}"
                found += [Authorization(action, arn) for action in actions]
        service_role = (
            f"arn:aws:iam::{call.account}:role/aws-service-role/{DYNAMODB_REPLICATION}/{DYNAMODB_REPLICATION_ROLE}"
        )
        if "Create" in update and not lookups.role_exists(service_role):
            # The account's first global-table replica: DynamoDB creates its service-linked role as the caller.
            keys = {"iam:AWSServiceName": (DYNAMODB_REPLICATION,)}
            found.append(Authorization("iam:CreateServiceLinkedRole", service_role, keys))
    return found


def _object_ownership(call: ApiCall, params: Mapping[str, Any], _: Lookups) -> list[Authorization]:
    """CreateBucket with an ObjectOwnership setting also puts the bucket's ownership controls."""
    if "x-amz-object-ownership" not in call.headers:
        return []
    return [Authorization("s3:PutBucketOwnershipControls", f"arn:aws:s3:::{params['Bucket']}")]


EXTRAS: dict[str, Callable[[ApiCall, Mapping[str, Any], Lookups], list[Authorization]]] = {
    "pass_replication_role": _pass_replication_role,
    "replica_updates": _replica_updates,
    "object_ownership": _object_ownership,
}


class Use(NamedTuple):
    """One authorization IAM evaluated: who, what, on which resource (with which keys), and whether it was allowed."""

    role: str
    action: str
    resource: str
    allowed: bool
    keys: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Session:
    role_arn: str
    session_arn: str
    account: str


class MotoLookups:
    """Lookups and identities from moto's backends, in this process."""

    def partition_key(self, account: str, region: str, table: str) -> str | None:
        from moto.dynamodb.models import dynamodb_backends

        try:
            return str(dynamodb_backends[account][region].get_table(table).hash_key_attr) or None
        except Exception:  # no such table: the call fails on its own, after authorization
            return None

    def secret_arn(self, account: str, region: str, secret_id: str) -> str:
        if secret_id.startswith("arn:"):
            return secret_id
        from moto.secretsmanager.models import secretsmanager_backends

        secrets = secretsmanager_backends[account][region].secrets
        return (
            str(secrets[secret_id].arn)
            if secret_id in secrets
            else f"arn:aws:secretsmanager:{region}:{account}:secret:{secret_id}"
        )

    def role_exists(self, arn: str) -> bool:
        return self.role(arn) is not None

    def role(self, arn: str) -> Any:
        from moto.iam.models import iam_backends

        account = arn.split(":")[4]
        try:
            return iam_backends[account]["aws"].get_role_by_arn(arn)
        except Exception:
            return None

    def policies(self, arn: str) -> list[dict[str, Any]] | None:
        """The role's identity policies (inline and attached), or None if there is no such role."""
        role = self.role(arn)
        if role is None:
            return None
        documents = [_document(text) for text in role.policies.values()]
        for policy in role.managed_policies.values():
            documents += [_document(v.document) for v in policy.versions if v.is_default]
        return documents

    def policy_names(self, arn: str) -> dict[str, Any]:
        """The role's inline policies by name and its managed policies' ARNs (empty if there is no such role)."""
        role = self.role(arn)
        if role is None:
            return {"inline": {}, "managed": []}
        return {"inline": {n: _document(t) for n, t in role.policies.items()}, "managed": sorted(role.managed_policies)}

    def trust(self, arn: str) -> dict[str, Any] | None:
        role = self.role(arn)
        return None if role is None else _document(role.assume_role_policy_document)

    def session(self, access_key: str) -> Session | None:
        """The role session a key belongs to (None: not a role's)."""
        from moto.iam.models import get_account_id_from, iam_backends
        from moto.sts.models import sts_backends

        account = get_account_id_from(access_key)
        key = iam_backends[account]["aws"].access_keys.get(access_key)
        role_arn = getattr(key, "role_arn", None)
        if not role_arn:
            return None
        assumed = next(
            (r for r in reversed(sts_backends[account]["aws"].assumed_roles) if r.access_key_id == access_key), None
        )
        session_arn = assumed.arn if assumed else role_arn
        return Session(role_arn, session_arn, role_arn.split(":")[4])


def _document(text: str | Mapping[str, Any]) -> dict[str, Any]:
    return dict(json.loads(text)) if isinstance(text, str) else dict(text)


@dataclass
class IamEnforcer:
    """The WSGI layer: authorizes every call of a restricted principal (see the module's docstring)."""

    action_map: ActionMap = field(default_factory=ActionMap.load)
    # Access keys standing for a role without STS: sandbox.sfn_roles registers one per state machine role.
    fixed_keys: dict[str, str] = field(default_factory=dict)
    # Role names whose sessions are unrestricted (an administrator bootstrapping an account).
    exempt_roles: frozenset[str] = frozenset()
    lookups: MotoLookups = field(default_factory=MotoLookups)
    _sessions: dict[str, Session | None] = field(default_factory=dict)
    _usage: Counter[Use] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, app: WsgiApp) -> WsgiApp:
        def enforced(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            denial = self.check(environ)
            if denial is not None:
                return denial(environ, start_response)
            return app(environ, start_response)

        return enforced

    def usage(self) -> Counter[Use]:
        """Every authorization evaluated so far, with how often."""
        with self._lock:
            return Counter(self._usage)

    def report(self) -> dict[str, Any]:
        """What ``scripts/iam_report.py`` reads: every use, and the policies of every role that made one."""
        usage = self.usage()
        roles = {use.role for use in usage}
        return {
            "usage": [{**use._asdict(), "keys": dict(use.keys), "count": count} for use, count in usage.items()],
            "policies": {arn: self.lookups.policy_names(arn) for arn in sorted(roles)},
        }

    def session(self, access_key: str) -> Session | None:
        """The restricted role session an access key acts as; None for an unrestricted key."""
        if access_key in self.fixed_keys:
            arn = self.fixed_keys[access_key]
            return Session(
                arn, arn.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/") + "/states", arn.split(":")[4]
            )
        with self._lock:
            if access_key in self._sessions:
                return self._sessions[access_key]
        session = self.lookups.session(access_key)
        if session is not None and session.role_arn.rsplit("/", 1)[-1] in self.exempt_roles:
            session = None
        with self._lock:
            self._sessions[access_key] = session
        return session

    def check(self, environ: dict[str, Any]) -> Response | None:
        """None if the call may go on to moto; else AWS's AccessDenied answer."""
        credential = call_counter.credential(environ)
        if credential is None:
            return None
        access_key, region, _ = credential
        session = self.session(access_key)
        if session is None:
            return None
        protocol = _protocol(environ)
        service = call_counter.service_of(environ, credential)
        try:
            call = self._call(environ, credential, service, session, protocol)
            authorizations = self.action_map.authorizations(call, self.lookups)
        except Unmapped as exc:
            self._record(Use(session.role_arn, f"unmapped:{exc}", "*", False))
            message = f"User: {session.session_arn} is not authorized to perform this call: {exc}"
            return _denied(protocol, message, _query_compatible(service))
        for authorization in authorizations:
            message = self._authorize(session, authorization, region)
            if message is not None:
                return _denied(protocol, message, _query_compatible(service))
        return None

    def _authorize(self, session: Session, authorization: Authorization, region: str) -> str | None:
        """None if allowed; else AWS's message saying why not."""
        keys = {
            "aws:PrincipalArn": (session.role_arn,),
            "aws:PrincipalAccount": (session.account,),
            "aws:RequestedRegion": (region,),
            **authorization.keys,
        }
        request = Request(authorization.action, authorization.resource, keys)
        documents = self.lookups.policies(session.role_arn) or []
        decision = evaluate(documents, request)
        message = None
        if not decision.allowed:
            why = (
                "with an explicit deny in an identity-based policy"
                if decision.explicit_deny
                else f"because no identity-based policy allows the {authorization.action} action"
            )
            message = (
                f"User: {session.session_arn} is not authorized to perform: {authorization.action} "
                f"on resource: {authorization.resource} {why}"
            )
        elif authorization.action.lower() == "sts:assumerole":
            message = self._trusted(session, request)
        keys = tuple(sorted(authorization.keys.items()))
        self._record(Use(session.role_arn, authorization.action, authorization.resource, message is None, keys))
        return message

    def _trusted(self, session: Session, request: Request) -> str | None:
        """A cross-account AssumeRole needs the target role's trust policy to allow the caller too."""
        trust = self.lookups.trust(request.resource)
        principal = Principal("AWS", session.role_arn, session.account)
        try:
            allowed = trust is not None and trust_allows(trust, principal, request).allowed
        except PolicyError as exc:
            return f"User: {session.session_arn} is not authorized to perform: sts:AssumeRole ({exc})"
        if allowed:
            return None
        return (
            f"User: {session.session_arn} is not authorized to perform: sts:AssumeRole on resource: "
            f"{request.resource} because no resource-based policy allows the sts:AssumeRole action"
        )

    def _call(
        self,
        environ: dict[str, Any],
        credential: tuple[str, str, str],
        service: str | None,
        session: Session,
        protocol: str,
    ) -> ApiCall:
        if service is None:
            raise Unmapped(f"a call to {credential[2]}, which the sandbox cannot identify")
        try:
            operation, path_params = call_counter.route(environ, service)
        except LookupError:
            raise Unmapped(f"a {service} call that moto's router cannot identify") from None
        params: dict[str, Any] = {
            k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()
        }
        body = b""
        if protocol != "rest-xml" or operation == "PutBucketReplication":
            body = _body(environ)
        if protocol in ("json", "rest-json") and body:
            params.update(json.loads(body))
        elif protocol == "query":
            params.update({k: v[0] for k, v in parse_qs(body.decode()).items()})
        params.update(path_params)
        headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_X_AMZ_")}
        return ApiCall(service, operation, credential[1], session.account, params, body, headers)

    def _record(self, use: Use) -> None:
        with self._lock:
            self._usage[use] += 1


def _body(environ: dict[str, Any]) -> bytes:
    """The request's body, read once and put back for moto."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)
    return bytes(body)


def _protocol(environ: dict[str, Any]) -> str:
    """The wire protocol a request came in, which its error must go back in."""
    if environ.get("HTTP_SMITHY_PROTOCOL") == "rpc-v2-cbor":
        return "cbor"
    if environ.get("HTTP_X_AMZ_TARGET"):
        return "json"
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return "query"
    credential = call_counter.credential(environ)
    return "rest-xml" if credential and credential[2] == "s3" else "rest-json"


@functools.cache
def _query_compatible(service: str | None) -> bool:
    """Whether a JSON or CBOR service answers errors with their query-protocol codes (CloudWatch, SQS)."""
    if service is None:
        return False
    import botocore.session

    try:
        model = botocore.session.get_session().get_service_model(service)
    except Exception:  # a service botocore does not know by moto's name
        return False
    return "awsQueryCompatible" in model.metadata


def _denied(protocol: str, message: str, query_compatible: bool = False) -> Response:
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id}
    if query_compatible:
        # The code a query-protocol client knows (AccessDenied), which botocore reads from this header.
        headers["x-amzn-query-error"] = "AccessDenied;Sender"
    if protocol == "json":
        body = json.dumps({"__type": "AccessDeniedException", "message": message})
        return Response(body, 400, {**headers, "Content-Type": "application/x-amz-json-1.0"})
    if protocol == "rest-json":
        body = json.dumps({"Type": "User", "message": message})
        return Response(
            body, 403, {**headers, "x-amzn-ErrorType": "AccessDeniedException", "Content-Type": "application/json"}
        )
    if protocol == "cbor":
        body_cbor = _cbor({"__type": "AccessDenied", "message": message})
        return Response(
            body_cbor, 400, {**headers, "smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"}
        )
    escaped = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if protocol == "query":
        xml = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{escaped}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    else:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>AccessDenied</Code><Message>{escaped}</Message><RequestId>{request_id}</RequestId></Error>"
        )
    return Response(xml, 403, {**headers, "Content-Type": "application/xml"})


def _cbor(document: Mapping[str, str]) -> bytes:
    """A CBOR map of text strings (RFC 8949), all an error body in the rpc-v2-cbor protocol needs."""

    def head(major: int, length: int) -> bytes:
        if length < 24:
            return bytes([major << 5 | length])
        for info, size in ((24, 1), (25, 2), (26, 4)):
            if length < 1 << (8 * size):
                return bytes([major << 5 | info]) + length.to_bytes(size, "big")
        raise ValueError("too long")

    def text(value: str) -> bytes:
        encoded = value.encode()
        return head(3, len(encoded)) + encoded

    return head(5, len(document)) + b"".join(text(k) + text(v) for k, v in document.items())
