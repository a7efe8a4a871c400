"""Offline evaluation of AWS IAM policy documents, deciding as AWS decides, for the sandbox's emulated services.

Two questions are answered, both with AWS's rule that a matching ``Deny`` beats any ``Allow``
and that nothing matching means an implicit deny:

- ``evaluate(documents, request)``: identity-based policies (every policy a principal holds);
- ``trust_allows(document, principal, request)``: a resource-based policy, here an IAM role's
  trust policy (``AssumeRolePolicyDocument``), whose statements must also name the caller in
  ``Principal``.

Everything here is a pure function of its arguments: no I/O, no AWS SDK, no moto.

Supported
---------
- Documents: ``Version`` ("2012-10-17" or "2008-10-17", optional), ``Id``, ``Statement`` (one
  object or a list). Statements: ``Sid``, ``Effect`` (``Allow``/``Deny``), ``Action`` /
  ``NotAction``, ``Resource`` / ``NotResource``, ``Condition``, and in trust policies
  ``Principal``. Element values are a string or a non-empty list of strings.
- Actions: whole ``service:action`` strings, case-insensitive, with ``*`` (any run, empty
  included) and ``?`` (exactly one character).
- Resources: case-sensitive ARN patterns. ``"*"`` matches everything, a request resource of
  ``"*"`` included; any other pattern matches only ARNs. ARNs are compared segment by segment:
  ``arn:partition:service:region:account:resource``, the sixth segment being everything after the
  fifth colon (``function:name:qualifier``, ``table/T/index/I``, ``bucket/key:with:colon``). Within
  the first five segments a wildcard does not cross a colon, except that a ``*`` that is the *last*
  character of a segment may, as AWS documents ("If the * wildcard is the last character of a
  resource ARN segment, it can expand to match beyond the colon boundaries", IAM User Guide, IAM
  JSON policy elements: Resource). So ``arn:aws:sqs:*`` matches every SQS ARN, while
  ``arn:aws:dynamodb:*:123456789012:table/Site-*`` matches no table of another account or name.
  Within the sixth segment ``*`` and ``?`` match any character, colons included. A pattern that is
  neither ``"*"`` nor an ARN matches nothing.
- Condition operators: ``StringEquals``, ``StringNotEquals``, ``StringEqualsIgnoreCase``,
  ``StringNotEqualsIgnoreCase``, ``StringLike``, ``StringNotLike``, ``ArnEquals``, ``ArnLike``,
  ``ArnNotEquals``, ``ArnNotLike`` (``ArnEquals`` takes wildcards exactly as ``ArnLike``, as in
  AWS), ``Bool`` and ``Null``; every one but ``Null`` with the ``IfExists`` suffix; the
  ``String*`` and ``Arn*`` ones with the ``ForAllValues:`` / ``ForAnyValue:`` set prefixes.
  Operator names are matched case-insensitively, as AWS does.
- Condition logic (IAM User Guide, "Conditions with multiple context keys or values" and
  "Condition operators"): operators AND, keys within an operator AND, a key's policy values OR
  (NOR for the negated operators: the condition holds when no policy value matches). Key names are
  case-insensitive, values case-sensitive except for ``*IgnoreCase`` and ``Bool``.
- A key absent from the request (or present with no values):
  * positive operators (``StringEquals``, ``StringLike``, ``ArnLike``, ``Bool``, ...): does not hold;
  * negated operators (``StringNotEquals``, ``StringNotLike``, ``ArnNotLike``, ...): holds;
  * ``...IfExists``: holds;
  * ``ForAllValues:...``: holds (vacuous truth, as AWS documents);
  * ``ForAnyValue:...``: does not hold, even with ``IfExists`` (the suffix applies to each value
    inside the set loop, so an absent set still has no value that matches; this is how AWS behaves);
  * ``Null``: ``"true"`` holds, ``"false"`` does not (and the reverse when the key is present).
- Several request values for a key used with a plain (non-set) operator: a positive operator holds
  when any request value matches a policy value; a negated operator holds when no request value
  matches any policy value (the negation of its positive form). AWS says to use set operators
  with multivalued keys; this is the choice made for requests that do not.
- ``Principal`` (trust policies): ``"*"`` and ``{"AWS": "*"}`` match every principal; ``{"AWS": X}``
  with X a 12-digit account or ``arn:<partition>:iam::<account>:root`` matches every AWS principal
  of that account; any other AWS ARN matches that exact principal ARN (a role in a trust policy is
  matched by its role ARN, which is what ``Principal.arn`` carries for a role's caller);
  ``{"Service": name}`` matches that service principal; ``{"Federated": X}`` that provider. A
  principal of another kind never matches.

Refused (``PolicyError``, never silently ignored)
-------------------------------------------------
Any other operator (``Numeric*``, ``Date*``, ``IpAddress``, ``BinaryEquals``, ...); ``NullIfExists``
and set prefixes on ``Null`` or ``Bool``; ``NotPrincipal``; ``Principal`` in an identity policy; a
trust statement without ``Principal``; unknown document or statement elements; a missing or bad
``Effect``; both or neither of ``Action``/``NotAction`` (and, in identity policies, of
``Resource``/``NotResource``); an action without a service prefix; a wildcard in a resource ARN's
service segment (AWS: "You can't use a wildcard in the service segment"); policy variables
(``${...}``) anywhere, the caller resolves templates first; wildcards inside a ``Principal`` value
other than the lone ``"*"`` of ``AWS``; ``Principal`` values that are neither an account, an ARN
nor (for ``Service``/``Federated``) a name, such as unique ids (``AROA...``); empty value lists.

A malformed *request* (an action without ``:``, a resource that is neither ``"*"`` nor an ARN, a key
given a bare string instead of a list, two keys differing only in case) raises ``ValueError``.

Decisions name the deciding statement: its ``Sid``, else ``#<index>`` with the statement's
0-based position in its own document's ``Statement`` list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

__all__ = [
    "Decision",
    "PolicyError",
    "Principal",
    "Request",
    "evaluate",
    "statements",
    "trust_allows",
]


@dataclass(frozen=True)
class Request:
    """One authorization question: may the principal perform action on resource, given these condition keys."""

    action: str  # e.g. "s3:GetObject" (service prefix + action name)
    resource: str  # an ARN, or "*" for actions that take no resource
    keys: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # condition keys present in the request context, e.g. {"aws:PrincipalArn": ["arn:aws:iam::123456789012:role/r"],
    # "s3:prefix": ["environments/"], "dynamodb:LeadingKeys": ["_deployer-validation-1"],
    # "iam:PassedToService": ["s3.amazonaws.com"]}
    # Key NAMES are case-insensitive (match "aws:principalarn" to "aws:PrincipalArn"); values are case-sensitive.


@dataclass(frozen=True)
class Decision:
    allowed: bool
    explicit_deny: bool  # True when a Deny statement matched (that wins over any Allow)
    # the deciding statement: its Sid, else "#<index>" within its document; None for implicit deny
    statement: str | None


@dataclass(frozen=True)
class Principal:
    """Who is asking, for resource-based (trust) policies."""

    kind: Literal["AWS", "Service", "Federated"]
    # for AWS: the principal's ARN (a role ARN like arn:aws:iam::123456789012:role/name);
    # for Service: e.g. "lambda.amazonaws.com"; for Federated: the provider ARN or name
    arn: str
    account: str | None = None  # for AWS principals: the 12-digit account id


class PolicyError(ValueError):
    """A policy uses something this evaluator does not implement; raised, never silently ignored."""


# --- documents and statements -------------------------------------------------------------------

_DOCUMENT_ELEMENTS = frozenset({"Version", "Id", "Statement"})
_VERSIONS = frozenset({"2012-10-17", "2008-10-17"})
_STATEMENT_ELEMENTS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition", "Principal"}
)
_ACCOUNT_ID = re.compile(r"\d{12}")
_ROOT_ARN = re.compile(r"arn:([^:]+):iam::(\d{12}):root")


def statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The document's statements as a list of (shallow-copied) dicts, whether ``Statement`` is one object or a list.

    Checks the document's shape (known top-level elements, a known ``Version``, ``Statement``
    present and made of objects); the statements' own elements are checked when evaluated.
    """
    if not isinstance(document, Mapping):
        raise PolicyError(f"a policy document must be a JSON object, not {type(document).__name__}")
    unknown = sorted(str(name) for name in document if name not in _DOCUMENT_ELEMENTS)
    if unknown:
        raise PolicyError(f"unknown policy document element(s): {', '.join(unknown)}")
    version = document.get("Version")
    if version is not None and (not isinstance(version, str) or version not in _VERSIONS):
        raise PolicyError(f"unknown policy Version {version!r} (known: {', '.join(sorted(_VERSIONS))})")
    if "Statement" not in document:
        raise PolicyError("the policy document has no Statement")
    raw = document["Statement"]
    if isinstance(raw, Mapping):
        items: list[Any] = [raw]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise PolicyError(f"Statement must be an object or a list of objects, not {type(raw).__name__}")
    result: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise PolicyError(f"statement #{index} must be a JSON object, not {type(item).__name__}")
        result.append(dict(item))
    return result


@dataclass(frozen=True)
class _Condition:
    operator: str  # as written in the policy, for messages
    base: str  # canonical operator without prefix or suffix, e.g. "StringNotLike"
    set_operator: Literal["ForAllValues", "ForAnyValue"] | None
    if_exists: bool
    key: str  # lower-cased key name
    values: tuple[str, ...]  # policy values ("true"/"false" lower-cased for Bool and Null)


@dataclass(frozen=True)
class _PrincipalMatch:
    anyone: bool = False
    aws_accounts: frozenset[tuple[str | None, str]] = frozenset()  # (partition or None for a bare id, account)
    aws_arns: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    federated: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Statement:
    label: str
    effect: Literal["Allow", "Deny"]
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...] | None  # None: no Resource/NotResource (trust policies only): matches
    not_resource: bool
    principal: _PrincipalMatch | None  # None in identity policies
    conditions: tuple[_Condition, ...]


def _parse_document(document: Mapping[str, Any], *, trust: bool) -> list[_Statement]:
    return [_parse_statement(raw, index, trust=trust) for index, raw in enumerate(statements(document))]


def _parse_statement(raw: Mapping[str, Any], index: int, *, trust: bool) -> _Statement:
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise PolicyError(f"statement #{index}: Sid must be a string, not {type(sid).__name__}")
    label = sid if sid else f"#{index}"
    where = f"statement {label}"

    if "NotPrincipal" in raw:
        raise PolicyError(f"{where}: NotPrincipal is not supported by this evaluator")
    unknown = sorted(str(name) for name in raw if name not in _STATEMENT_ELEMENTS)
    if unknown:
        raise PolicyError(f"{where}: unknown statement element(s): {', '.join(unknown)}")

    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"{where}: Effect must be 'Allow' or 'Deny', got {effect!r}")

    actions, not_action = _one_of(raw, "Action", "NotAction", where, required=True)
    assert actions is not None
    for action in actions:
        if action != "*" and ":" not in action:
            raise PolicyError(f"{where}: action {action!r} has no service prefix (expected 'service:action')")
        _refuse_variables(action, where, "Action")

    resources, not_resource = _one_of(raw, "Resource", "NotResource", where, required=not trust)
    for resource in resources or ():
        _refuse_variables(resource, where, "Resource")
        _check_resource_pattern(resource, where)

    principal: _PrincipalMatch | None = None
    if "Principal" in raw:
        if not trust:
            raise PolicyError(f"{where}: Principal is not allowed in an identity-based policy")
        principal = _parse_principal(raw["Principal"], where)
    elif trust:
        raise PolicyError(f"{where}: a trust policy statement must have a Principal")

    conditions = _parse_conditions(raw.get("Condition"), where)
    return _Statement(
        label=label,
        effect="Allow" if effect == "Allow" else "Deny",
        actions=actions,
        not_action=not_action,
        resources=resources,
        not_resource=not_resource,
        principal=principal,
        conditions=conditions,
    )


def _one_of(
    raw: Mapping[str, Any], positive: str, negative: str, where: str, *, required: bool
) -> tuple[tuple[str, ...] | None, bool]:
    """The values of whichever of ``positive``/``negative`` the statement has, and whether it was ``negative``."""
    if positive in raw and negative in raw:
        raise PolicyError(f"{where}: has both {positive} and {negative}")
    if positive in raw:
        return _strings(raw[positive], where, positive), False
    if negative in raw:
        return _strings(raw[negative], where, negative), True
    if required:
        raise PolicyError(f"{where}: needs {positive} or {negative}")
    return None, False


def _strings(value: Any, where: str, element: str) -> tuple[str, ...]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise PolicyError(f"{where}: {element} is an empty list")
    for item in items:
        if not isinstance(item, str) or not item:
            raise PolicyError(f"{where}: {element} values must be non-empty strings, got {item!r}")
    return tuple(items)


def _refuse_variables(value: str, where: str, element: str) -> None:
    if "${" in value:
        raise PolicyError(
            f"{where}: {element} value {value!r} holds a policy variable; resolve templates before evaluating"
        )


def _check_resource_pattern(pattern: str, where: str) -> None:
    """AWS: "You can't use a wildcard in the service segment that identifies the AWS product"."""
    if not pattern.startswith("arn:"):
        return
    segments = pattern.split(":", 5)
    # With fewer than three segments a trailing '*' would stand for the service too.
    reaches_service = segments[1:3] if len(segments) < 3 else segments[2:3]
    if any("*" in segment or "?" in segment for segment in reaches_service):
        raise PolicyError(f"{where}: resource {pattern!r} has a wildcard in the ARN's service segment")


# --- Principal ------------------------------------------------------------------------------------

_PRINCIPAL_KINDS = ("AWS", "Service", "Federated")


def _parse_principal(raw: Any, where: str) -> _PrincipalMatch:
    if raw == "*":
        return _PrincipalMatch(anyone=True)
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: Principal must be '*' or an object such as {{'AWS': ...}}, got {raw!r}")
    unknown = sorted(str(kind) for kind in raw if kind not in _PRINCIPAL_KINDS)
    if unknown:
        raise PolicyError(f"{where}: Principal type(s) not supported by this evaluator: {', '.join(unknown)}")
    if not raw:
        raise PolicyError(f"{where}: Principal is empty")
    found: dict[str, set[Any]] = {
        "anyone": set(),
        "accounts": set(),
        "arns": set(),
        "Service": set(),
        "Federated": set(),
    }
    for kind, value in raw.items():
        for item in _strings(value, where, f"Principal {kind}"):
            category, entry = _principal_entry(kind, item, where)
            found[category].add(entry)
    return _PrincipalMatch(
        anyone=bool(found["anyone"]),
        aws_accounts=frozenset(found["accounts"]),
        aws_arns=frozenset(found["arns"]),
        services=frozenset(found["Service"]),
        federated=frozenset(found["Federated"]),
    )


def _principal_entry(kind: str, item: str, where: str) -> tuple[str, Any]:
    """Which part of a ``_PrincipalMatch`` one ``Principal`` value fills, and with what."""
    _refuse_variables(item, where, f"Principal {kind}")
    if kind == "AWS" and item == "*":
        return "anyone", True
    if "*" in item or "?" in item:
        raise PolicyError(f"{where}: Principal {kind} value {item!r} has a wildcard; only a lone '*' (AWS) is allowed")
    if kind != "AWS":
        return kind, item
    if _ACCOUNT_ID.fullmatch(item):
        return "accounts", (None, item)
    if root := _ROOT_ARN.fullmatch(item):
        return "accounts", (root.group(1), root.group(2))
    if _is_arn(item):
        return "arns", item
    raise PolicyError(
        f"{where}: Principal AWS value {item!r} is neither an account id nor an ARN "
        "(unique ids are not supported by this evaluator)"
    )


def _principal_matches(spec: _PrincipalMatch, principal: Principal) -> bool:
    if spec.anyone:
        return True
    if principal.kind == "Service":
        return principal.arn in spec.services
    if principal.kind == "Federated":
        return principal.arn in spec.federated
    if principal.arn in spec.aws_arns:
        return True
    partition, account = _principal_account(principal)
    if account is None:
        return False
    return any(
        account == wanted and (wanted_partition is None or partition in (None, wanted_partition))
        for wanted_partition, wanted in spec.aws_accounts
    )


def _principal_account(principal: Principal) -> tuple[str | None, str | None]:
    """The AWS principal's (partition, account): ``account`` if given, else read from its ARN."""
    segments = principal.arn.split(":", 5)
    partition = segments[1] if len(segments) == 6 and segments[0] == "arn" else None
    if principal.account is not None:
        return partition, principal.account
    if partition is not None and _ACCOUNT_ID.fullmatch(segments[4]):
        return partition, segments[4]
    return partition, None


# --- matching -------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _glob(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """``*`` any run of characters (empty included), ``?`` exactly one; everything else literal."""
    body = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@lru_cache(maxsize=4096)
def _arn_regex(pattern: str) -> re.Pattern[str]:
    """An ARN pattern as a regex: wildcards stay within their colon-separated segment, except a ``*`` ending one.

    The sixth segment (after the fifth colon) is one segment whose colons are ordinary characters.
    """
    segments = pattern.split(":", 5)
    parts: list[str] = []
    for index, segment in enumerate(segments):
        resource_segment = index == 5
        pieces: list[str] = []
        for position, char in enumerate(segment):
            if char == "*":
                ends_segment = position == len(segment) - 1
                pieces.append(".*" if resource_segment or ends_segment else "[^:]*")
            elif char == "?":
                pieces.append("." if resource_segment else "[^:]")
            else:
                pieces.append(re.escape(char))
        parts.append("".join(pieces))
    return re.compile(":".join(parts), re.DOTALL)


def _arn_matches(pattern: str, value: str) -> bool:
    if pattern == "*":
        return True
    if not pattern.startswith("arn:"):  # nor does it match a request resource of "*"
        return False
    return _arn_regex(pattern).fullmatch(value) is not None


def _action_matches(statement: _Statement, action: str) -> bool:
    hit = any(pattern == "*" or _glob(pattern, ignore_case=True).fullmatch(action) for pattern in statement.actions)
    return hit != statement.not_action


def _resource_matches(statement: _Statement, resource: str) -> bool:
    if statement.resources is None:
        return True
    hit = any(_arn_matches(pattern, resource) for pattern in statement.resources)
    return hit != statement.not_resource


# --- conditions -----------------------------------------------------------------------------------

_NEGATED_OF = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}
_SET_OPERATORS: dict[str, Literal["ForAllValues", "ForAnyValue"]] = {
    "forallvalues:": "ForAllValues",
    "foranyvalue:": "ForAnyValue",
}
_IF_EXISTS = "ifexists"


def _string_equals(pattern: str, value: str) -> bool:
    return pattern == value


def _string_equals_ignore_case(pattern: str, value: str) -> bool:
    return pattern.lower() == value.lower()


def _string_like(pattern: str, value: str) -> bool:
    return _glob(pattern, ignore_case=False).fullmatch(value) is not None


def _bool_equals(pattern: str, value: str) -> bool:
    return pattern == value.lower()  # the policy value is already lower-cased


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": _string_equals,
    "StringEqualsIgnoreCase": _string_equals_ignore_case,
    "StringLike": _string_like,
    "ArnEquals": _arn_matches,
    "ArnLike": _arn_matches,
    "Bool": _bool_equals,
}
_OPERATOR_NAMES = {name.lower(): name for name in [*_MATCHERS, *_NEGATED_OF, "Null"]}
_SUPPORTED = ", ".join(sorted(_OPERATOR_NAMES.values()))


def _parse_operator(operator: str, where: str) -> tuple[str, Literal["ForAllValues", "ForAnyValue"] | None, bool]:
    rest = operator
    set_operator: Literal["ForAllValues", "ForAnyValue"] | None = None
    for prefix, name in _SET_OPERATORS.items():
        if rest.lower().startswith(prefix):
            set_operator, rest = name, rest[len(prefix) :]
            break
    if_exists = rest.lower().endswith(_IF_EXISTS)
    if if_exists:
        rest = rest[: -len(_IF_EXISTS)]
    base = _OPERATOR_NAMES.get(rest.lower())
    if base is None:
        raise PolicyError(
            f"{where}: condition operator {operator!r} is not supported by this evaluator (supported: {_SUPPORTED}, "
            "with IfExists, and ForAllValues:/ForAnyValue: on the String and Arn operators)"
        )
    if base == "Null" and if_exists:
        raise PolicyError(f"{where}: condition operator {operator!r}: AWS does not allow IfExists on Null")
    if base in ("Null", "Bool") and set_operator is not None:
        raise PolicyError(f"{where}: condition operator {operator!r}: set operators are not supported on {base}")
    return base, set_operator, if_exists


def _parse_conditions(raw: Any, where: str) -> tuple[_Condition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: Condition must be an object, not {type(raw).__name__}")
    conditions: list[_Condition] = []
    for operator, block in raw.items():
        if not isinstance(operator, str):
            raise PolicyError(f"{where}: condition operator {operator!r} must be a string")
        base, set_operator, if_exists = _parse_operator(operator, where)
        if not isinstance(block, Mapping) or not block:
            raise PolicyError(
                f"{where}: condition operator {operator} needs an object of keys to values, got {block!r}"
            )
        for key, value in block.items():
            if not isinstance(key, str) or not key:
                raise PolicyError(f"{where}: {operator} has a condition key {key!r} that is not a non-empty string")
            values = _condition_values(value, f"{where}: {operator} {key}")
            if base in ("Bool", "Null"):
                values = tuple(item.lower() for item in values)
                bad = [item for item in values if item not in ("true", "false")]
                if bad:
                    raise PolicyError(f"{where}: {operator} {key} takes 'true' or 'false', got {bad[0]!r}")
            conditions.append(_Condition(operator, base, set_operator, if_exists, key.lower(), values))
    return tuple(conditions)


def _condition_values(value: Any, where: str) -> tuple[str, ...]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise PolicyError(f"{where}: empty list of condition values")
    result: list[str] = []
    for item in items:
        if isinstance(item, bool):  # JSON true/false, as AWS accepts for Bool and Null
            text = "true" if item else "false"
        elif isinstance(item, str):
            text = item
        elif isinstance(item, int | float):
            text = str(item)
        else:
            raise PolicyError(f"{where}: condition value {item!r} is not a string, number or boolean")
        _refuse_variables(text, where, "condition")
        result.append(text)
    return tuple(result)


def _condition_holds(condition: _Condition, keys: Mapping[str, tuple[str, ...]]) -> bool:
    present = keys.get(condition.key)  # None when absent (or given no values)
    if condition.base == "Null":
        # "true": the key is absent; "false": it is present. Several policy values OR.
        return any((value == "true") == (present is None) for value in condition.values)

    negated = condition.base in _NEGATED_OF
    matcher = _MATCHERS[_NEGATED_OF.get(condition.base, condition.base)]

    def matches_any_policy_value(request_value: str) -> bool:
        return any(matcher(pattern, request_value) for pattern in condition.values)

    def satisfies(request_value: str) -> bool:
        return matches_any_policy_value(request_value) != negated

    if condition.set_operator == "ForAllValues":
        return present is None or all(satisfies(value) for value in present)
    if condition.set_operator == "ForAnyValue":
        return present is not None and any(satisfies(value) for value in present)
    if present is None:
        return condition.if_exists or negated
    hit = any(matches_any_policy_value(value) for value in present)
    return hit != negated


# --- requests and decisions -----------------------------------------------------------------------


def _request_keys(request: Request) -> dict[str, tuple[str, ...]]:
    """The request's condition keys by lower-cased name; a key given no values counts as absent."""
    if not isinstance(request.action, str) or ":" not in request.action:
        raise ValueError(f"request action {request.action!r} must be 'service:action'")
    resource = request.resource
    if not isinstance(resource, str) or (resource != "*" and not _is_arn(resource)):
        raise ValueError(f"request resource {resource!r} must be an ARN or '*'")
    seen: dict[str, str] = {}
    keys: dict[str, tuple[str, ...]] = {}
    for name, values in request.keys.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"request condition key {name!r} must be a non-empty string")
        lowered = name.lower()
        if lowered in seen:
            raise ValueError(f"request condition keys {seen[lowered]!r} and {name!r} differ only in case")
        seen[lowered] = name
        if isinstance(values, str) or not isinstance(values, Sequence | set | frozenset):
            raise ValueError(f"request condition key {name!r} needs a list of strings, got {values!r}")
        items = tuple(values)
        if not all(isinstance(item, str) for item in items):
            raise ValueError(f"request condition key {name!r} has a value that is not a string: {items!r}")
        if items:
            keys[lowered] = items
    return keys


def _is_arn(value: str) -> bool:
    segments = value.split(":", 5)
    return len(segments) == 6 and segments[0] == "arn" and all(segments[1:3])


def _decide(
    parsed: Sequence[_Statement], request: Request, keys: Mapping[str, tuple[str, ...]], principal: Principal | None
) -> Decision:
    allowed_by: str | None = None
    for statement in parsed:
        if statement.principal is not None and (
            principal is None or not _principal_matches(statement.principal, principal)
        ):
            continue
        if not _action_matches(statement, request.action):
            continue
        if not _resource_matches(statement, request.resource):
            continue
        if not all(_condition_holds(condition, keys) for condition in statement.conditions):
            continue
        if statement.effect == "Deny":
            return Decision(allowed=False, explicit_deny=True, statement=statement.label)
        if allowed_by is None:
            allowed_by = statement.label
    if allowed_by is not None:
        return Decision(allowed=True, explicit_deny=False, statement=allowed_by)
    return Decision(allowed=False, explicit_deny=False, statement=None)


def evaluate(documents: Sequence[Mapping[str, Any]], request: Request) -> Decision:
    """Identity-based evaluation over all the principal's policy documents: an explicit Deny in any
    statement that matches -> denied (explicit_deny=True); else any matching Allow -> allowed; else implicit deny.

    Every document is checked in full before any is evaluated, so an unsupported construct raises
    ``PolicyError`` whatever the request and wherever it sits.
    """
    if isinstance(documents, Mapping | str):
        raise TypeError("evaluate() takes a sequence of policy documents, not a single document")
    parsed = [statement for document in documents for statement in _parse_document(document, trust=False)]
    return _decide(parsed, request, _request_keys(request), principal=None)


def trust_allows(document: Mapping[str, Any], principal: Principal, request: Request) -> Decision:
    """Resource-based evaluation (an IAM role's trust policy, AssumeRolePolicyDocument): statements must also
    match the Principal element. Same Deny-wins rule."""
    if principal.kind not in _PRINCIPAL_KINDS:
        raise ValueError(f"principal kind {principal.kind!r} must be one of {', '.join(_PRINCIPAL_KINDS)}")
    parsed = _parse_document(document, trust=True)
    return _decide(parsed, request, _request_keys(request), principal=principal)
