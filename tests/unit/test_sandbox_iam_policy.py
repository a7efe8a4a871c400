"""The sandbox's offline IAM policy evaluator (sandbox.iam_policy): AWS's decision for identity and trust policies."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.iam_policy import (
    Decision,
    PolicyError,
    Principal,
    Request,
    evaluate,
    statements,
    trust_allows,
)

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"
TARGET_ACCOUNT = "536580886816"
REGION = "af-south-1"
BUCKET_ARN = "arn:aws:s3:::bbws-data"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{TARGET_ACCOUNT}:table/Site-Generation-State"
DEPLOYER_FUNCTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-PlanFunctionRole-ABC"

ALLOWED = Decision(allowed=True, explicit_deny=False, statement="S")
IMPLICIT_DENY = Decision(allowed=False, explicit_deny=False, statement=None)


def document(*statement_list: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statement_list)}


def allow(action: Any = "s3:GetObject", resource: Any = "*", sid: str = "S", **elements: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": action, "Resource": resource, **elements}


def deny(action: Any = "s3:GetObject", resource: Any = "*", sid: str = "D", **elements: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Deny", "Action": action, "Resource": resource, **elements}


def request(action: str = "s3:GetObject", resource: str = "*", **keys: list[str]) -> Request:
    """A request; keyword keys use '__' for ':' (aws__PrincipalArn -> aws:PrincipalArn)."""
    return Request(action, resource, {name.replace("__", ":"): values for name, values in keys.items()})


# --- documents and statements ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param({"Statement": {"Effect": "Allow"}}, [{"Effect": "Allow"}], id="single-object"),
        pytest.param(
            {"Version": "2012-10-17", "Id": "x", "Statement": [{"Sid": "A"}, {"Sid": "B"}]},
            [{"Sid": "A"}, {"Sid": "B"}],
            id="list",
        ),
        pytest.param({"Version": "2008-10-17", "Statement": []}, [], id="old-version-empty"),
    ],
)
def test_statements_normalises_statement_to_a_list(doc: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    # GIVEN a document whose Statement is one object or a list
    # WHEN its statements are listed
    result = statements(doc)
    # THEN they come back as a list of dicts, copies that leave the document untouched when changed
    assert result == expected
    for item in result:
        item["Sid"] = "changed"
    assert statements(doc) == expected


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param("not a document", "JSON object", id="not-an-object"),
        pytest.param({"Statement": [], "Extra": 1}, "Extra", id="unknown-top-level-element"),
        pytest.param({"Version": "2020-01-01", "Statement": []}, "Version", id="unknown-version"),
        pytest.param({"Version": "2012-10-17"}, "no Statement", id="missing-statement"),
        pytest.param({"Statement": "Allow"}, "Statement must be", id="statement-a-string"),
        pytest.param({"Statement": ["Allow"]}, "statement #0", id="statement-item-a-string"),
    ],
)
def test_statements_refuses_malformed_documents(doc: Any, message: str) -> None:
    # GIVEN a document of the wrong shape
    # WHEN its statements are listed
    # THEN PolicyError names the problem
    with pytest.raises(PolicyError, match=message):
        statements(doc)


# --- Deny wins, Allow, implicit deny --------------------------------------------------------------


@pytest.mark.parametrize(
    ("documents", "req", "expected"),
    [
        pytest.param([document(allow(sid="ReadAll"))], request(), Decision(True, False, "ReadAll"), id="allow"),
        pytest.param([], request(), IMPLICIT_DENY, id="no-documents-implicit-deny"),
        pytest.param(
            [document(allow(action="s3:PutObject"))], request("s3:GetObject"), IMPLICIT_DENY, id="no-match-implicit"
        ),
        pytest.param(
            [document(allow(sid="ReadAll")), document(deny(sid="NoReads"))],
            request(),
            Decision(False, True, "NoReads"),
            id="deny-in-second-document-beats-allow-in-first",
        ),
        pytest.param(
            [document(deny(sid="NoReads"), allow(sid="ReadAll"))],
            request(),
            Decision(False, True, "NoReads"),
            id="deny-before-allow-same-document",
        ),
        pytest.param(
            [document(allow(sid="ReadAll"), deny(sid="NoReads"))],
            request(),
            Decision(False, True, "NoReads"),
            id="deny-after-allow-same-document",
        ),
        pytest.param(
            [document(allow(sid="First"), allow(sid="Second"))],
            request(),
            Decision(True, False, "First"),
            id="first-matching-allow-decides",
        ),
        pytest.param(
            [document(deny(action="s3:PutObject", sid="NoWrites"), allow(sid="ReadAll"))],
            request(),
            Decision(True, False, "ReadAll"),
            id="non-matching-deny-ignored",
        ),
        pytest.param(
            [
                document({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}),
                document(
                    {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"},
                    {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*"},
                ),
            ],
            request(),
            Decision(False, True, "#1"),
            id="unnamed-statement-labelled-by-index-in-its-document",
        ),
        pytest.param(
            [document({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})],
            request(),
            Decision(True, False, "#0"),
            id="unnamed-allow-labelled-hash-zero",
        ),
    ],
)
def test_deny_wins_then_allow_then_implicit_deny(
    documents: list[dict[str, Any]], req: Request, expected: Decision
) -> None:
    # GIVEN a principal's policy documents
    # WHEN a request is evaluated against all of them
    decision = evaluate(documents, req)
    # THEN an explicit Deny wins over any Allow, an Allow allows, and nothing matching is an implicit deny
    assert decision == expected


def test_a_single_document_instead_of_a_list_is_refused() -> None:
    # GIVEN a caller passing one document where a list is expected
    # WHEN it is evaluated
    # THEN the mistake is loud rather than iterating the document's keys
    with pytest.raises(TypeError, match="sequence of policy documents"):
        evaluate(document(allow()), request())  # type: ignore[arg-type]


# --- Action / NotAction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "action", "matches"),
    [
        ("s3:GetObject", "s3:GetObject", True),
        ("s3:getobject", "S3:GetObject", True),  # case-insensitive
        ("S3:GETOBJECT", "s3:getObject", True),
        ("s3:GetObject", "s3:GetObjectAcl", False),  # whole string, not a prefix
        ("s3:Get*", "s3:GetObjectVersion", True),
        ("s3:Get*", "s3:PutObject", False),
        ("s3:*", "s3:DeleteBucket", True),
        ("s3:*", "s3express:CreateSession", False),  # the ':' is literal
        ("*", "dynamodb:DeleteItem", True),
        ("s3:*Object", "s3:PutObject", True),
        ("s3:*Object", "s3:PutObjectAcl", False),
        ("s3:GetObjec?", "s3:GetObject", True),
        ("s3:GetObjec?", "s3:GetObjec", False),  # '?' is exactly one character
        ("s3:GetObjec?", "s3:GetObjectAcl", False),
        ("iam:?assRole", "iam:PassRole", True),
        ("dynamodb:*Item", "dynamodb:DeleteItem", True),
        ("dynamodb:*Item", "dynamodb:DeleteTable", False),
        (["s3:PutObject", "s3:GetObject"], "s3:GetObject", True),  # a list ORs
        (["s3:PutObject", "s3:DeleteObject"], "s3:GetObject", False),
    ],
)
def test_action_matching(pattern: Any, action: str, matches: bool) -> None:
    # GIVEN an Allow for an action pattern
    policy = document(allow(action=pattern))
    # WHEN a request for an action is evaluated
    decision = evaluate([policy], request(action))
    # THEN it is allowed exactly when the pattern matches the whole action, ignoring case
    assert decision == (ALLOWED if matches else IMPLICIT_DENY)


@pytest.mark.parametrize(
    ("not_action", "action", "allowed"),
    [
        ("s3:DeleteBucket", "s3:GetObject", True),
        ("s3:DeleteBucket", "s3:DeleteBucket", False),
        ("s3:deletebucket", "s3:DeleteBucket", False),  # case-insensitive here too
        (["s3:Delete*", "s3:Put*"], "s3:PutObject", False),
        (["s3:Delete*", "s3:Put*"], "s3:ListBucket", True),
        ("iam:*", "sts:AssumeRole", True),
        ("*", "s3:GetObject", False),
    ],
)
def test_not_action_matches_actions_outside_the_list(not_action: Any, action: str, allowed: bool) -> None:
    # GIVEN an Allow with NotAction
    policy = document({"Sid": "S", "Effect": "Allow", "NotAction": not_action, "Resource": "*"})
    # WHEN an action is requested
    decision = evaluate([policy], request(action))
    # THEN it is allowed only when it matches none of the listed patterns
    assert decision == (ALLOWED if allowed else IMPLICIT_DENY)


def test_not_action_deny_carves_out_of_an_allow() -> None:
    # GIVEN an Allow of everything and a Deny of all but reads
    policy = document(
        allow(action="*", sid="All"), {"Sid": "OnlyReads", "Effect": "Deny", "NotAction": "s3:Get*", "Resource": "*"}
    )
    # WHEN a read and a write are requested
    read, write = evaluate([policy], request("s3:GetObject")), evaluate([policy], request("s3:PutObject"))
    # THEN the read is allowed and the write explicitly denied by the NotAction Deny
    assert read == Decision(True, False, "All")
    assert write == Decision(False, True, "OnlyReads")


# --- Resource / NotResource -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "resource", "matches"),
    [
        pytest.param("*", BUCKET_ARN, True, id="star-matches-an-arn"),
        pytest.param("*", "*", True, id="star-matches-star"),
        pytest.param("arn:aws:s3:::*", "*", False, id="request-star-only-matched-by-star"),
        pytest.param("arn:aws:s3:::bbws-*", "arn:aws:s3:::bbws-x", True, id="bucket-prefix"),
        pytest.param("arn:aws:s3:::bbws-*", "arn:aws:s3:::other-x", False, id="bucket-prefix-other-bucket"),
        pytest.param("arn:aws:s3:::BBWS-*", "arn:aws:s3:::bbws-x", False, id="case-sensitive"),
        pytest.param("arn:aws:s3:::bbws-data", "arn:aws:s3:::bbws-data/key", False, id="bucket-is-not-its-objects"),
        pytest.param("arn:aws:s3:::bbws-*/*", "arn:aws:s3:::bbws-data/a/b.json", True, id="objects-any-depth"),
        pytest.param(
            "arn:aws:s3:::bbws-*/_deployer/validation/*",
            "arn:aws:s3:::bbws-data/_deployer/validation/check-1",
            True,
            id="validation-object",
        ),
        pytest.param(
            "arn:aws:s3:::bbws-*/_deployer/validation/*",
            "arn:aws:s3:::bbws-data/site/index.html",
            False,
            id="non-validation-object",
        ),
        pytest.param(
            f"arn:aws:dynamodb:*:{ACCOUNT}:table/Site-*",
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/Site-Generation-State",
            True,
            id="table-pattern-any-region",
        ),
        pytest.param(
            f"arn:aws:dynamodb:*:{ACCOUNT}:table/Site-*",
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/Other",
            False,
            id="table-pattern-other-table",
        ),
        pytest.param(
            f"arn:aws:dynamodb:*:{ACCOUNT}:table/Site-*",
            f"arn:aws:dynamodb:{REGION}:{OTHER_ACCOUNT}:table/Site-Generation-State",
            False,
            id="table-pattern-other-account",
        ),
        pytest.param(
            "arn:aws:iam::*:role/bbws-deployer",
            f"arn:aws:iam::{OTHER_ACCOUNT}:role/bbws-deployer",
            True,
            id="role-in-any-account",
        ),
        pytest.param(
            "arn:aws:iam::*:role/bbws-deployer",
            f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-ci",
            False,
            id="role-other-name",
        ),
        pytest.param("arn:aws:s3:::bucket-?", "arn:aws:s3:::bucket-1", True, id="question-mark-one-char"),
        pytest.param("arn:aws:s3:::bucket-?", "arn:aws:s3:::bucket-12", False, id="question-mark-not-two"),
        pytest.param("arn:aws:s3:::bucket-?", "arn:aws:s3:::bucket-", False, id="question-mark-not-zero"),
        pytest.param("arn:???:s3:::bbws-data", BUCKET_ARN, True, id="question-marks-in-partition"),
        pytest.param("arn:*:s3:::bbws-data", BUCKET_ARN, True, id="star-partition"),
        pytest.param("arn:aws:s3:::bbws-data", "arn:aws:sqs:::bbws-data", False, id="other-service"),
        pytest.param(
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:plan",
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:plan:live",
            False,
            id="unqualified-function-is-not-its-alias",
        ),
        pytest.param(
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:plan:*",
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:plan:live",
            True,
            id="function-qualifiers",
        ),
        pytest.param(
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:plan:live",
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:plan:live",
            True,
            id="colons-in-last-segment-exact",
        ),
        pytest.param("arn:aws:s3:::specs/*", "arn:aws:s3:::specs/key:with:colon", True, id="object-key-with-colons"),
        pytest.param(
            "arn:aws:s3:::specs/a?b", "arn:aws:s3:::specs/a:b", True, id="question-mark-matches-colon-in-last-segment"
        ),
        pytest.param(
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/T/index/*",
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/T/index/I",
            True,
            id="table-index",
        ),
        pytest.param(
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/T",
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/T/index/I",
            False,
            id="table-is-not-its-index",
        ),
        pytest.param(
            "arn:aws:dynamodb:af*1:table/T",
            f"arn:aws:dynamodb:{REGION}:123456789011:table/T",
            False,
            id="mid-segment-star-does-not-span-a-colon",
        ),
        pytest.param(
            "arn:aws:dynamodb:af-*-1:*:table/T",
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/T",
            True,
            id="mid-segment-star-within-segment",
        ),
        pytest.param(
            "arn:aws:dynamodb:a?-south-1:*:table/T",
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/T",
            True,
            id="question-mark-within-segment",
        ),
        pytest.param(
            "arn:aws:sqs:*",
            f"arn:aws:sqs:{REGION}:{ACCOUNT}:notify-dlq",
            True,
            id="segment-ending-star-expands-beyond-colons-as-aws-documents",
        ),
        pytest.param(
            "arn:aws:sqs:*", f"arn:aws:sns:{REGION}:{ACCOUNT}:alarms", False, id="expanding-star-other-service"
        ),
        pytest.param("bbws-data", BUCKET_ARN, False, id="not-an-arn-matches-nothing"),
        pytest.param("s3:::bbws-data", BUCKET_ARN, False, id="missing-arn-prefix"),
        pytest.param("arn:aws:s3", BUCKET_ARN, False, id="truncated-arn"),
    ],
)
def test_resource_matching(pattern: str, resource: str, matches: bool) -> None:
    # GIVEN an Allow on a resource pattern
    policy = document(allow(resource=pattern))
    # WHEN a request on a resource is evaluated
    decision = evaluate([policy], request(resource=resource))
    # THEN it is allowed exactly when the ARN pattern matches, segment by segment and case-sensitively
    assert decision == (ALLOWED if matches else IMPLICIT_DENY)


@pytest.mark.parametrize(
    ("not_resource", "resource", "allowed"),
    [
        ("arn:aws:s3:::specs/*", "arn:aws:s3:::specs/commits/abc", False),
        ("arn:aws:s3:::specs/*", "arn:aws:s3:::bbws-data/x", True),
        ("arn:aws:s3:::specs/*", "*", True),
        ("*", BUCKET_ARN, False),
        ("*", "*", False),
        (["arn:aws:s3:::specs", "arn:aws:s3:::specs/*"], "arn:aws:s3:::specs", False),
        ("arn:aws:s3:::Specs/*", "arn:aws:s3:::specs/x", True),  # case-sensitive, so outside
    ],
)
def test_not_resource_matches_resources_outside_the_list(not_resource: Any, resource: str, allowed: bool) -> None:
    # GIVEN an Allow with NotResource
    policy = document({"Sid": "S", "Effect": "Allow", "Action": "s3:GetObject", "NotResource": not_resource})
    # WHEN a resource is requested
    decision = evaluate([policy], request(resource=resource))
    # THEN it is allowed only when the resource matches none of the patterns
    assert decision == (ALLOWED if allowed else IMPLICIT_DENY)


def test_not_resource_deny_protects_all_but_one_bucket() -> None:
    # GIVEN an Allow of all S3 and a Deny on everything but the specs bucket
    policy = document(
        allow(action="s3:*", resource="*", sid="All"),
        {"Sid": "OnlySpecs", "Effect": "Deny", "Action": "s3:*", "NotResource": ["arn:aws:s3:::specs/*"]},
    )
    # WHEN an object in specs and one elsewhere are read
    inside = evaluate([policy], request(resource="arn:aws:s3:::specs/commits/1"))
    outside = evaluate([policy], request(resource="arn:aws:s3:::bbws-data/x"))
    # THEN only the specs object is readable
    assert inside == Decision(True, False, "All")
    assert outside == Decision(False, True, "OnlySpecs")


# --- Condition operators --------------------------------------------------------------------------

KEY = "aws:RequestTag/Env"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-PlanFunctionRole-ABC"
ABSENT: list[str] | None = None


@pytest.mark.parametrize(
    ("operator", "policy_values", "request_values", "holds"),
    [
        # StringEquals: exact, case-sensitive; absent -> false
        ("StringEquals", "dev", ["dev"], True),
        ("StringEquals", "dev", ["Dev"], False),
        ("StringEquals", "dev", ["prod"], False),
        ("StringEquals", "dev*", ["dev1"], False),  # no wildcards in StringEquals
        ("StringEquals", "dev", ABSENT, False),
        ("StringEquals", ["dev", "sit"], ["sit"], True),  # policy values OR
        # StringNotEquals: negated, values NOR; absent -> true
        ("StringNotEquals", "dev", ["dev"], False),
        ("StringNotEquals", "dev", ["prod"], True),
        ("StringNotEquals", ["dev", "sit"], ["sit"], False),
        ("StringNotEquals", ["dev", "sit"], ["prod"], True),
        ("StringNotEquals", "dev", ABSENT, True),
        # StringEqualsIgnoreCase / StringNotEqualsIgnoreCase
        ("StringEqualsIgnoreCase", "DEV", ["dev"], True),
        ("StringEqualsIgnoreCase", "dev", ["prod"], False),
        ("StringEqualsIgnoreCase", "dev", ABSENT, False),
        ("StringNotEqualsIgnoreCase", "DEV", ["dev"], False),
        ("StringNotEqualsIgnoreCase", "dev", ["prod"], True),
        ("StringNotEqualsIgnoreCase", "dev", ABSENT, True),
        # StringLike: '*' and '?', case-sensitive; absent -> false
        ("StringLike", "environments/*", ["environments/dev.yaml"], True),
        ("StringLike", "environments/*", ["Environments/dev.yaml"], False),
        ("StringLike", "environments/*", ["environments/"], True),  # '*' matches empty
        ("StringLike", "d?v", ["dev"], True),
        ("StringLike", "d?v", ["deev"], False),
        ("StringLike", "d?v", ["dv"], False),
        ("StringLike", "dev", ["dev"], True),
        ("StringLike", "dev", ["devx"], False),
        ("StringLike", "dev", ABSENT, False),
        # StringNotLike: absent -> true
        ("StringNotLike", "prod*", ["prod-eu"], False),
        ("StringNotLike", "prod*", ["dev"], True),
        ("StringNotLike", ["prod*", "sit*"], ["sit-1"], False),
        ("StringNotLike", "prod*", ABSENT, True),
        # Arn operators: component-wise globs; ArnEquals takes wildcards like ArnLike
        ("ArnLike", f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-*", [ROLE], True),
        ("ArnLike", f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-*", [f"arn:aws:iam::{ACCOUNT}:role/other"], False),
        ("ArnLike", f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-*", [ROLE.replace(ACCOUNT, OTHER_ACCOUNT)], False),
        ("ArnLike", "arn:aws:iam::*:role/bbws-deployer-*", [ROLE], True),
        ("ArnLike", "*", [ROLE], True),
        ("ArnLike", f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-*", ["not-an-arn"], False),
        ("ArnLike", f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-*", ABSENT, False),
        ("ArnEquals", f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-*", [ROLE], True),
        ("ArnEquals", ROLE, [ROLE], True),
        ("ArnEquals", ROLE, [ROLE + "X"], False),
        ("ArnEquals", ROLE, ABSENT, False),
        ("ArnNotLike", f"arn:aws:iam::{ACCOUNT}:role/bbws-*", [ROLE], False),
        ("ArnNotLike", f"arn:aws:iam::{ACCOUNT}:role/ci-*", [ROLE], True),
        ("ArnNotLike", f"arn:aws:iam::{ACCOUNT}:role/ci-*", ABSENT, True),
        ("ArnNotEquals", ROLE, [ROLE], False),
        ("ArnNotEquals", ROLE, [f"arn:aws:iam::{ACCOUNT}:role/other"], True),
        ("ArnNotEquals", ROLE, ABSENT, True),
        # Bool: "true"/"false", case-insensitive; JSON booleans accepted; absent -> false
        ("Bool", "true", ["true"], True),
        ("Bool", "true", ["True"], True),
        ("Bool", "TRUE", ["true"], True),
        ("Bool", "true", ["false"], False),
        ("Bool", False, ["false"], True),
        ("Bool", True, ["false"], False),
        ("Bool", "false", ABSENT, False),
        # ...IfExists: absent -> true; present -> as the operator
        ("StringEqualsIfExists", "dev", ABSENT, True),
        ("StringEqualsIfExists", "dev", ["dev"], True),
        ("StringEqualsIfExists", "dev", ["prod"], False),
        ("StringLikeIfExists", "dev*", ABSENT, True),
        ("StringLikeIfExists", "dev*", ["prod"], False),
        ("StringNotEqualsIfExists", "dev", ABSENT, True),
        ("StringNotEqualsIfExists", "dev", ["dev"], False),
        ("StringEqualsIgnoreCaseIfExists", "DEV", ["dev"], True),
        ("ArnLikeIfExists", "arn:aws:iam::*:role/bbws-*", ABSENT, True),
        ("ArnLikeIfExists", "arn:aws:iam::*:role/ci-*", [ROLE], False),
        ("ArnEqualsIfExists", ROLE, [ROLE], True),
        ("ArnNotLikeIfExists", "arn:aws:iam::*:role/bbws-*", [ROLE], False),
        ("BoolIfExists", "true", ABSENT, True),
        ("BoolIfExists", "true", ["false"], False),
        ("BoolIfExists", "true", ["true"], True),
        # Null: "true" -> the key is absent; "false" -> it is present
        ("Null", "true", ABSENT, True),
        ("Null", "true", ["dev"], False),
        ("Null", "false", ABSENT, False),
        ("Null", "false", ["dev"], True),
        ("Null", True, ABSENT, True),
        ("Null", "True", ABSENT, True),
        ("Null", "true", [], True),  # no values counts as absent
        # operator names are case-insensitive
        ("stringequals", "dev", ["dev"], True),
    ],
)
def test_condition_operators(operator: str, policy_values: Any, request_values: list[str] | None, holds: bool) -> None:
    # GIVEN an Allow whose one condition tests a key with an operator
    policy = document(allow(Condition={operator: {KEY: policy_values}}))
    # WHEN the request has the key with some values, or lacks it
    keys = {} if request_values is None else {KEY: request_values}
    decision = evaluate([policy], Request("s3:GetObject", "*", keys))
    # THEN the statement applies exactly when the condition holds
    assert decision == (ALLOWED if holds else IMPLICIT_DENY)


@pytest.mark.parametrize(
    ("operator", "policy_values", "request_values", "holds"),
    [
        # ForAllValues: every request value matches some policy value; absent or empty -> true
        (
            "ForAllValues:StringLike",
            "_deployer-validation-*",
            ["_deployer-validation-1", "_deployer-validation-2"],
            True,
        ),
        ("ForAllValues:StringLike", "_deployer-validation-*", ["_deployer-validation-1", "site-001"], False),
        ("ForAllValues:StringLike", "_deployer-validation-*", ABSENT, True),
        ("ForAllValues:StringLike", "_deployer-validation-*", [], True),
        ("ForAllValues:StringEquals", ["a", "b"], ["a"], True),
        ("ForAllValues:StringEquals", ["a", "b"], ["a", "b"], True),
        ("ForAllValues:StringEquals", ["a", "b"], ["a", "c"], False),
        ("ForAllValues:StringNotLike", "key1*", ["key2:audit"], True),
        ("ForAllValues:StringNotLike", "key1*", ["key2:audit", "key1:hr"], False),
        ("ForAllValues:StringNotLike", "key1*", ABSENT, True),
        ("ForAllValues:StringEqualsIgnoreCase", "A", ["a", "A"], True),
        ("ForAllValues:ArnLike", "arn:aws:iam::*:role/bbws-*", [ROLE, ROLE], True),
        ("ForAllValues:ArnLike", "arn:aws:iam::*:role/bbws-*", [ROLE, f"arn:aws:iam::{ACCOUNT}:role/x"], False),
        ("ForAllValues:StringLikeIfExists", "x*", ABSENT, True),
        # ForAnyValue: at least one request value matches; absent or empty -> false (IfExists included)
        ("ForAnyValue:StringEquals", ["DataClass", "Owner"], ["DataClass", "Dept"], True),
        ("ForAnyValue:StringEquals", ["DataClass", "Owner"], ["Dept", "SIC"], False),
        ("ForAnyValue:StringEquals", ["DataClass", "Owner"], ABSENT, False),
        ("ForAnyValue:StringEquals", ["DataClass", "Owner"], [], False),
        ("ForAnyValue:StringLike", "Data*", ["Dept", "DataClass"], True),
        ("ForAnyValue:StringNotEquals", ["DataClass", "Owner"], ["DataClass", "Dept"], True),
        ("ForAnyValue:StringNotEquals", ["DataClass", "Owner"], ["DataClass", "Owner"], False),
        ("ForAnyValue:StringNotEquals", ["DataClass", "Owner"], ABSENT, False),
        ("ForAnyValue:ArnEquals", ROLE, [f"arn:aws:iam::{ACCOUNT}:role/x", ROLE], True),
        ("ForAnyValue:StringEqualsIfExists", "team", ABSENT, False),
        ("foranyvalue:stringequals", "team", ["team"], True),
        # a plain operator with several request values: positive -> any matches; negated -> none matches
        ("StringEquals", "a", ["b", "a"], True),
        ("StringEquals", "a", ["b", "c"], False),
        ("StringLike", "a*", ["b", "ab"], True),
        ("StringNotEquals", "a", ["b", "a"], False),
        ("StringNotEquals", "a", ["b", "c"], True),
        ("ArnNotLike", "arn:aws:iam::*:role/bbws-*", ["arn:aws:iam::1:role/x", ROLE], False),
    ],
)
def test_set_operators_and_multivalued_keys(
    operator: str, policy_values: Any, request_values: list[str] | None, holds: bool
) -> None:
    # GIVEN an Allow whose condition tests a multivalued key
    policy = document(allow(Condition={operator: {"aws:TagKeys": policy_values}}))
    # WHEN the request carries several values for the key, none, or lacks it
    keys = {} if request_values is None else {"aws:TagKeys": request_values}
    decision = evaluate([policy], Request("s3:GetObject", "*", keys))
    # THEN ForAllValues/ForAnyValue decide over the set, with AWS's answers for an absent key
    assert decision == (ALLOWED if holds else IMPLICIT_DENY)


@pytest.mark.parametrize(
    ("policy_key", "request_key"),
    [
        ("aws:PrincipalArn", "aws:principalarn"),
        ("aws:principalarn", "aws:PrincipalArn"),
        ("AWS:PRINCIPALARN", "aws:PrincipalArn"),
        ("dynamodb:leadingkeys", "dynamodb:LeadingKeys"),
    ],
)
def test_condition_key_names_are_case_insensitive(policy_key: str, request_key: str) -> None:
    # GIVEN a condition key spelled in one case in the policy and another in the request
    policy = document(allow(Condition={"StringEquals": {policy_key: ROLE}}))
    # WHEN the request carries the key with the right value, and with the value in another case
    right = evaluate([policy], Request("s3:GetObject", "*", {request_key: [ROLE]}))
    wrong_case_value = evaluate([policy], Request("s3:GetObject", "*", {request_key: [ROLE.upper()]}))
    # THEN the key is found whatever its case, but the value is still compared case-sensitively
    assert right == ALLOWED
    assert wrong_case_value == IMPLICIT_DENY


@pytest.mark.parametrize(
    ("keys", "holds"),
    [
        ({"aws:RequestTag/Env": ["dev"], "aws:RequestTag/Team": ["web"]}, True),
        ({"aws:RequestTag/Env": ["sit"], "aws:RequestTag/Team": ["data"]}, True),
        ({"aws:RequestTag/Env": ["dev"], "aws:RequestTag/Team": ["ops"]}, False),  # second key fails
        ({"aws:RequestTag/Env": ["prod"], "aws:RequestTag/Team": ["web"]}, False),  # first key fails
        ({"aws:RequestTag/Env": ["dev"]}, False),  # second key absent
    ],
)
def test_condition_keys_in_an_operator_are_anded_and_values_ored(keys: dict[str, list[str]], holds: bool) -> None:
    # GIVEN one operator with two keys, each with two allowed values
    condition = {"StringEquals": {"aws:RequestTag/Env": ["dev", "sit"], "aws:RequestTag/Team": ["web", "data"]}}
    policy = document(allow(Condition=condition))
    # WHEN requests carry different combinations
    decision = evaluate([policy], Request("s3:GetObject", "*", keys))
    # THEN every key must match one of its values
    assert decision == (ALLOWED if holds else IMPLICIT_DENY)


@pytest.mark.parametrize(
    ("keys", "holds"),
    [
        ({"s3:prefix": ["environments/dev"], "aws:SecureTransport": ["true"]}, True),
        ({"s3:prefix": ["environments/dev"], "aws:SecureTransport": ["false"]}, False),
        ({"s3:prefix": ["secrets/x"], "aws:SecureTransport": ["true"]}, False),
        ({"s3:prefix": ["environments/dev"], "aws:SecureTransport": ["true"], "aws:TokenIssueTime": ["t"]}, False),
    ],
)
def test_condition_operators_are_anded(keys: dict[str, list[str]], holds: bool) -> None:
    # GIVEN three operators in one Condition block
    condition = {
        "StringLike": {"s3:prefix": "environments/*"},
        "Bool": {"aws:SecureTransport": "true"},
        "Null": {"aws:TokenIssueTime": "true"},
    }
    policy = document(allow(action="s3:ListBucket", Condition=condition))
    # WHEN requests satisfy all or all but one
    decision = evaluate([policy], Request("s3:ListBucket", "*", keys))
    # THEN the statement applies only when all hold
    assert decision == (ALLOWED if holds else IMPLICIT_DENY)


def test_conditions_on_a_deny_decide_whether_it_denies() -> None:
    # GIVEN the project's DenyInsecureTransport shape: Deny when aws:SecureTransport is false
    policy = document(
        allow(action="s3:*", sid="All"),
        deny(action="s3:*", sid="DenyInsecureTransport", Condition={"Bool": {"aws:SecureTransport": False}}),
    )
    # WHEN requests come over TLS, without it, and without the key
    secure = evaluate([policy], request(aws__SecureTransport=["true"]))
    insecure = evaluate([policy], request(aws__SecureTransport=["false"]))
    unknown = evaluate([policy], request())
    # THEN only the insecure request is explicitly denied (Bool on an absent key does not hold)
    assert secure == Decision(True, False, "All")
    assert insecure == Decision(False, True, "DenyInsecureTransport")
    assert unknown == Decision(True, False, "All")


# --- the project's own policies -------------------------------------------------------------------

VALIDATION_ITEMS_ONLY = {
    "Sid": "ValidationItemsOnly",
    "Effect": "Allow",
    "Action": "dynamodb:DeleteItem",
    "Resource": f"arn:aws:dynamodb:*:{TARGET_ACCOUNT}:table/Site-*",
    "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["_deployer-validation-*"]}},
}
LIST_SPECS = {
    "Effect": "Allow",
    "Action": "s3:ListBucket",
    "Resource": "arn:aws:s3:::specs",
    "Condition": {"StringLike": {"s3:prefix": ["environments/*", "commits/*"]}},
}
REPLICATION_ROLE = f"arn:aws:iam::{TARGET_ACCOUNT}:role/bbws-s3-replication"
PASS_REPLICATION_ROLE = {
    "Sid": "PassReplicationRole",
    "Effect": "Allow",
    "Action": "iam:PassRole",
    "Resource": REPLICATION_ROLE,
    "Condition": {"StringEquals": {"iam:PassedToService": "s3.amazonaws.com"}},
}
SERVICE_LINKED_ROLE = (
    f"arn:aws:iam::{TARGET_ACCOUNT}:role/aws-service-role/replication.dynamodb.amazonaws.com/"
    "AWSServiceRoleForDynamoDBReplication"
)
GLOBAL_TABLE_SERVICE_ROLE = {
    "Sid": "GlobalTableServiceRole",
    "Effect": "Allow",
    "Action": "iam:CreateServiceLinkedRole",
    "Resource": f"arn:aws:iam::{TARGET_ACCOUNT}:role/aws-service-role/replication.dynamodb.amazonaws.com/*",
    "Condition": {"StringEquals": {"iam:AWSServiceName": "replication.dynamodb.amazonaws.com"}},
}


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        pytest.param(
            request("dynamodb:DeleteItem", TABLE_ARN, dynamodb__LeadingKeys=["_deployer-validation-abc"]),
            Decision(True, False, "ValidationItemsOnly"),
            id="validation-item",
        ),
        pytest.param(
            request("dynamodb:DeleteItem", TABLE_ARN, dynamodb__LeadingKeys=["site-001"]),
            IMPLICIT_DENY,
            id="site-item",
        ),
        pytest.param(
            request("dynamodb:DeleteItem", TABLE_ARN, dynamodb__LeadingKeys=["_deployer-validation-abc", "site-001"]),
            IMPLICIT_DENY,
            id="batch-with-one-site-item",
        ),
        pytest.param(
            request(
                "dynamodb:DeleteItem",
                f"arn:aws:dynamodb:{REGION}:{TARGET_ACCOUNT}:table/Other",
                dynamodb__LeadingKeys=["_deployer-validation-abc"],
            ),
            IMPLICIT_DENY,
            id="unmanaged-table",
        ),
        pytest.param(
            request("dynamodb:DeleteTable", TABLE_ARN, dynamodb__LeadingKeys=["_deployer-validation-abc"]),
            IMPLICIT_DENY,
            id="other-action",
        ),
    ],
)
def test_project_policy_validation_items_only(req: Request, expected: Decision) -> None:
    # GIVEN the deployment role's DeleteItem statement (ForAllValues:StringLike on dynamodb:LeadingKeys)
    # WHEN items are deleted
    decision = evaluate([document(VALIDATION_ITEMS_ONLY)], req)
    # THEN only validation items of managed tables may go
    assert decision == expected


@pytest.mark.parametrize(
    ("req", "allowed"),
    [
        (request("s3:ListBucket", "arn:aws:s3:::specs", s3__prefix=["environments/"]), True),
        (request("s3:ListBucket", "arn:aws:s3:::specs", s3__prefix=["commits/abc123/"]), True),
        (request("s3:ListBucket", "arn:aws:s3:::specs", s3__prefix=["secrets/"]), False),
        (request("s3:ListBucket", "arn:aws:s3:::specs", s3__prefix=["Environments/"]), False),
        (request("s3:ListBucket", "arn:aws:s3:::specs"), False),  # no prefix: lists the whole bucket
        (request("s3:ListBucket", "arn:aws:s3:::other", s3__prefix=["environments/"]), False),
    ],
)
def test_project_policy_list_specs_by_prefix(req: Request, allowed: bool) -> None:
    # GIVEN the API function's ListBucket statement limited by s3:prefix
    # WHEN the specs bucket is listed under various prefixes
    decision = evaluate([document(LIST_SPECS)], req)
    # THEN only the environments/ and commits/ prefixes are listable
    assert decision == (Decision(True, False, "#0") if allowed else IMPLICIT_DENY)


@pytest.mark.parametrize(
    ("req", "allowed"),
    [
        (request("iam:PassRole", REPLICATION_ROLE, iam__PassedToService=["s3.amazonaws.com"]), True),
        (request("iam:PassRole", REPLICATION_ROLE, iam__PassedToService=["lambda.amazonaws.com"]), False),
        (request("iam:PassRole", REPLICATION_ROLE), False),
        (
            request(
                "iam:PassRole",
                f"arn:aws:iam::{TARGET_ACCOUNT}:role/admin",
                iam__PassedToService=["s3.amazonaws.com"],
            ),
            False,
        ),
    ],
)
def test_project_policy_pass_replication_role(req: Request, allowed: bool) -> None:
    # GIVEN the deployment role's iam:PassRole statement limited to S3
    # WHEN the replication role (or another) is passed to a service
    decision = evaluate([document(PASS_REPLICATION_ROLE)], req)
    # THEN only passing the replication role to S3 is allowed
    assert decision == (Decision(True, False, "PassReplicationRole") if allowed else IMPLICIT_DENY)


@pytest.mark.parametrize(
    ("req", "allowed"),
    [
        (
            request(
                "iam:CreateServiceLinkedRole",
                SERVICE_LINKED_ROLE,
                iam__AWSServiceName=["replication.dynamodb.amazonaws.com"],
            ),
            True,
        ),
        (
            request(
                "iam:CreateServiceLinkedRole",
                SERVICE_LINKED_ROLE,
                iam__AWSServiceName=["elasticmapreduce.amazonaws.com"],
            ),
            False,
        ),
        (request("iam:CreateServiceLinkedRole", SERVICE_LINKED_ROLE), False),
    ],
)
def test_project_policy_create_service_linked_role(req: Request, allowed: bool) -> None:
    # GIVEN the deployment role's CreateServiceLinkedRole statement limited by iam:AWSServiceName
    # WHEN a service-linked role is created for DynamoDB replication or another service
    decision = evaluate([document(GLOBAL_TABLE_SERVICE_ROLE)], req)
    # THEN only DynamoDB replication's role may be created
    assert decision == (Decision(True, False, "GlobalTableServiceRole") if allowed else IMPLICIT_DENY)


# --- trust policies -------------------------------------------------------------------------------

DEPLOYMENT_ROLE_TRUST = document(
    {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "sts:AssumeRole",
        "Condition": {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-*"}},
    }
)
LAMBDA_TRUST = document(
    {"Sid": "Lambda", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
)


def assume(principal_arn: str | None = None) -> Request:
    keys = {} if principal_arn is None else {"aws:PrincipalArn": [principal_arn]}
    return Request("sts:AssumeRole", "*", keys)


@pytest.mark.parametrize(
    ("principal", "req", "expected"),
    [
        pytest.param(
            Principal("AWS", DEPLOYER_FUNCTION_ROLE, ACCOUNT),
            assume(DEPLOYER_FUNCTION_ROLE),
            Decision(True, False, "#0"),
            id="deployer-function-role",
        ),
        pytest.param(
            Principal("AWS", DEPLOYER_FUNCTION_ROLE),
            assume(DEPLOYER_FUNCTION_ROLE),
            Decision(True, False, "#0"),
            id="account-read-from-the-arn",
        ),
        pytest.param(
            Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/other-role", ACCOUNT),
            assume(f"arn:aws:iam::{ACCOUNT}:role/other-role"),
            IMPLICIT_DENY,
            id="role-of-another-name",
        ),
        pytest.param(
            Principal("AWS", f"arn:aws:iam::{OTHER_ACCOUNT}:role/bbws-deployer-X", OTHER_ACCOUNT),
            assume(f"arn:aws:iam::{OTHER_ACCOUNT}:role/bbws-deployer-X"),
            IMPLICIT_DENY,
            id="principal-of-another-account",
        ),
        pytest.param(
            Principal("AWS", DEPLOYER_FUNCTION_ROLE, ACCOUNT),
            assume(),
            IMPLICIT_DENY,
            id="no-principal-arn-key",
        ),
        pytest.param(
            Principal("AWS", DEPLOYER_FUNCTION_ROLE, ACCOUNT),
            Request("sts:AssumeRoleWithWebIdentity", "*", {"aws:PrincipalArn": [DEPLOYER_FUNCTION_ROLE]}),
            IMPLICIT_DENY,
            id="other-sts-action",
        ),
        pytest.param(
            Principal("Service", "lambda.amazonaws.com"),
            assume(),
            IMPLICIT_DENY,
            id="service-principal-is-not-an-account-principal",
        ),
    ],
)
def test_project_trust_policy_deployment_role(principal: Principal, req: Request, expected: Decision) -> None:
    # GIVEN the target account's deployment role trust: the tooling account, bbws-deployer-* roles only
    # WHEN principals try to assume it
    decision = trust_allows(DEPLOYMENT_ROLE_TRUST, principal, req)
    # THEN only the deployer stack's roles in the tooling account may
    assert decision == expected


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [
        (Principal("Service", "lambda.amazonaws.com"), True),
        (Principal("Service", "states.amazonaws.com"), False),
        (Principal("AWS", "lambda.amazonaws.com", ACCOUNT), False),
        (Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/lambda", ACCOUNT), False),
        (Principal("Federated", "lambda.amazonaws.com"), False),
    ],
)
def test_project_trust_policy_lambda_service(principal: Principal, allowed: bool) -> None:
    # GIVEN a Lambda function role's trust policy (Principal Service lambda.amazonaws.com)
    # WHEN principals of each kind try to assume it
    decision = trust_allows(LAMBDA_TRUST, principal, assume())
    # THEN only the Lambda service principal may
    assert decision == (Decision(True, False, "Lambda") if allowed else IMPLICIT_DENY)


@pytest.mark.parametrize(
    ("principal_element", "principal", "matches"),
    [
        pytest.param("*", Principal("AWS", f"arn:aws:iam::{OTHER_ACCOUNT}:role/x"), True, id="star-any-aws"),
        pytest.param("*", Principal("Service", "s3.amazonaws.com"), True, id="star-any-service"),
        pytest.param({"AWS": "*"}, Principal("AWS", f"arn:aws:iam::{OTHER_ACCOUNT}:role/x"), True, id="aws-star"),
        pytest.param({"AWS": "*"}, Principal("Federated", "cognito-identity.amazonaws.com"), True, id="aws-star-any"),
        pytest.param({"AWS": ACCOUNT}, Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/x"), True, id="account-id"),
        pytest.param(
            {"AWS": ACCOUNT}, Principal("AWS", f"arn:aws:iam::{OTHER_ACCOUNT}:role/x"), False, id="other-acct"
        ),
        pytest.param(
            {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, Principal("AWS", f"arn:aws:iam::{ACCOUNT}:user/u"), True, id="root"
        ),
        pytest.param(
            {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            Principal("AWS", f"arn:aws:iam::{OTHER_ACCOUNT}:role/x", OTHER_ACCOUNT),
            False,
            id="root-other-account",
        ),
        pytest.param(
            {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            Principal("AWS", "arn:aws:iam::unknown:role/x"),
            False,
            id="root-account-unknown",
        ),
        pytest.param(
            {"AWS": f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer"},
            Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer", ACCOUNT),
            True,
            id="exact-role",
        ),
        pytest.param(
            {"AWS": f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer"},
            Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/bbws-deployer-ci", ACCOUNT),
            False,
            id="exact-role-other-name",
        ),
        pytest.param(
            {"AWS": [f"arn:aws:iam::{OTHER_ACCOUNT}:root", f"arn:aws:iam::{ACCOUNT}:role/ci"]},
            Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/ci", ACCOUNT),
            True,
            id="list-of-aws-values",
        ),
        pytest.param(
            {"Service": ["s3.amazonaws.com", "lambda.amazonaws.com"]},
            Principal("Service", "lambda.amazonaws.com"),
            True,
            id="list-of-services",
        ),
        pytest.param(
            {"Service": "lambda.amazonaws.com", "AWS": ACCOUNT},
            Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/x"),
            True,
            id="several-kinds",
        ),
        pytest.param(
            {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"},
            Principal("Federated", f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"),
            True,
            id="federated",
        ),
        pytest.param(
            {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"},
            Principal("AWS", f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com", ACCOUNT),
            False,
            id="federated-kind-mismatch",
        ),
        pytest.param(
            {"Service": "lambda.amazonaws.com"},
            Principal("Federated", "lambda.amazonaws.com"),
            False,
            id="service-kind-mismatch",
        ),
    ],
)
def test_principal_element(principal_element: Any, principal: Principal, matches: bool) -> None:
    # GIVEN a trust statement naming principals
    trust = document({"Sid": "T", "Effect": "Allow", "Principal": principal_element, "Action": "sts:AssumeRole"})
    # WHEN a principal asks to assume the role
    decision = trust_allows(trust, principal, assume())
    # THEN the statement applies exactly when the Principal element names it
    assert decision == (Decision(True, False, "T") if matches else IMPLICIT_DENY)


def test_trust_policy_deny_wins() -> None:
    # GIVEN a trust policy allowing the account but denying one role
    trust = document(
        {"Sid": "Account", "Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"},
        {
            "Sid": "NotCi",
            "Effect": "Deny",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/ci"},
            "Action": "sts:*",
        },
    )
    # WHEN the denied role and another role of the account ask
    ci = trust_allows(trust, Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/ci"), assume())
    other = trust_allows(trust, Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/plan"), assume())
    # THEN the Deny wins for the named role only
    assert ci == Decision(False, True, "NotCi")
    assert other == Decision(True, False, "Account")


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        pytest.param(
            Request(
                "sqs:SendMessage",
                f"arn:aws:sqs:{REGION}:{ACCOUNT}:notify-dlq",
                {"aws:SourceArn": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/notify"], "aws:SecureTransport": ["true"]},
            ),
            Decision(True, False, "EventBridgeUndeliverable"),
            id="eventbridge-rule-over-tls",
        ),
        pytest.param(
            Request(
                "sqs:SendMessage",
                f"arn:aws:sqs:{REGION}:{ACCOUNT}:notify-dlq",
                {"aws:SourceArn": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/notify"], "aws:SecureTransport": ["false"]},
            ),
            Decision(False, True, "DenyInsecureTransport"),
            id="insecure-transport-denied",
        ),
        pytest.param(
            Request(
                "sqs:SendMessage",
                f"arn:aws:sqs:{REGION}:{ACCOUNT}:other-queue",
                {"aws:SourceArn": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/notify"], "aws:SecureTransport": ["true"]},
            ),
            IMPLICIT_DENY,
            id="resource-element-still-applies",
        ),
    ],
)
def test_resource_policy_with_resource_element(req: Request, expected: Decision) -> None:
    # GIVEN the project's dead-letter queue policy (a resource-based policy with Resource)
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:notify-dlq"
    policy = document(
        {
            "Sid": "EventBridgeUndeliverable",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue,
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/*"}},
        },
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": queue,
            "Condition": {"Bool": {"aws:SecureTransport": False}},
        },
    )
    # WHEN EventBridge sends to the queue
    decision = trust_allows(policy, Principal("Service", "events.amazonaws.com"), req)
    # THEN Principal, Resource and Condition all decide
    assert decision == expected


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        pytest.param(allow(Condition={"NumericLessThan": {"s3:max-keys": "10"}}), "NumericLessThan", id="numeric"),
        pytest.param(
            allow(Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}),
            "DateGreaterThan",
            id="date",
        ),
        pytest.param(allow(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}), "IpAddress", id="ip-address"),
        pytest.param(allow(Condition={"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}), "NotIpAddress", id="not-ip"),
        pytest.param(allow(Condition={"BinaryEquals": {"k:k": "QmluYXJ5"}}), "BinaryEquals", id="binary"),
        pytest.param(allow(Condition={"StringEqualz": {"k:k": "v"}}), "StringEqualz", id="typo"),
        pytest.param(allow(Condition={"ForSomeValues:StringEquals": {"k:k": "v"}}), "ForSomeValues", id="bad-set-op"),
        pytest.param(allow(Condition={"NullIfExists": {"k:k": "true"}}), "IfExists on Null", id="null-if-exists"),
        pytest.param(allow(Condition={"ForAllValues:Null": {"k:k": "true"}}), "set operators", id="set-on-null"),
        pytest.param(allow(Condition={"ForAnyValue:Bool": {"k:k": "true"}}), "set operators", id="set-on-bool"),
        pytest.param(allow(Condition={"Bool": {"k:k": "yes"}}), "'true' or 'false'", id="bool-value"),
        pytest.param(allow(Condition={"Null": {"k:k": "maybe"}}), "'true' or 'false'", id="null-value"),
        pytest.param(allow(Condition={"StringEquals": {}}), "needs an object", id="empty-operator-block"),
        pytest.param(allow(Condition={"StringEquals": {"k:k": []}}), "empty list", id="empty-condition-values"),
        pytest.param(allow(Condition={"StringEquals": {"k:k": {"x": 1}}}), "not a string", id="object-value"),
        pytest.param(allow(Condition="StringEquals"), "Condition must be an object", id="condition-not-object"),
        pytest.param(
            allow(Condition={"StringEquals": {"aws:PrincipalArn": "arn:aws:iam::1:user/${aws:username}"}}),
            "policy variable",
            id="variable-in-condition",
        ),
        pytest.param(
            allow(resource="arn:aws:s3:::home/${aws:username}/*"), "policy variable", id="variable-in-resource"
        ),
        pytest.param(
            {"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::${aws:username}"},
            "policy variable",
            id="variable-in-not-resource",
        ),
        pytest.param({"Action": "s3:GetObject", "Resource": "*"}, "Effect", id="missing-effect"),
        pytest.param({"Effect": "allow", "Action": "s3:GetObject", "Resource": "*"}, "Effect", id="lowercase-effect"),
        pytest.param({"Effect": "Permit", "Action": "s3:GetObject", "Resource": "*"}, "Effect", id="bad-effect"),
        pytest.param({"Effect": "Allow", "Resource": "*"}, "needs Action or NotAction", id="no-action"),
        pytest.param(
            {"Effect": "Allow", "Action": "s3:GetObject", "NotAction": "s3:PutObject", "Resource": "*"},
            "both Action and NotAction",
            id="action-and-not-action",
        ),
        pytest.param({"Effect": "Allow", "Action": "s3:GetObject"}, "needs Resource or NotResource", id="no-resource"),
        pytest.param(
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "NotResource": "*"},
            "both Resource and NotResource",
            id="resource-and-not-resource",
        ),
        pytest.param(allow(Principal="*"), "Principal is not allowed in an identity-based policy", id="principal"),
        pytest.param(allow(NotPrincipal={"AWS": ACCOUNT}), "NotPrincipal", id="not-principal"),
        pytest.param(allow(Effects="Allow"), "unknown statement element", id="unknown-element"),
        pytest.param(allow(action="GetObject"), "service prefix", id="action-without-service"),
        pytest.param(allow(action=[]), "empty list", id="empty-action-list"),
        pytest.param(allow(action=["s3:GetObject", 3]), "non-empty strings", id="non-string-action"),
        pytest.param(allow(resource=""), "non-empty strings", id="empty-resource"),
        pytest.param(allow(resource="arn:aws:*:::bucket"), "service segment", id="wildcard-service-segment"),
        pytest.param(allow(resource="arn:aws:s?:::bucket"), "service segment", id="question-mark-service-segment"),
        pytest.param(allow(resource="arn:*"), "service segment", id="star-spanning-the-service"),
        pytest.param({**allow(), "Sid": 7}, "Sid must be a string", id="non-string-sid"),
    ],
)
def test_identity_policy_refusals(statement: dict[str, Any], message: str) -> None:
    # GIVEN a statement using something unsupported or malformed
    policy = document(statement)
    # WHEN it is evaluated, even for a request it would not match
    # THEN PolicyError names the problem instead of deciding
    with pytest.raises(PolicyError, match=message):
        evaluate([policy], request("sqs:SendMessage", "*"))


def test_a_refusal_anywhere_stops_evaluation_even_after_a_deny() -> None:
    # GIVEN a document whose first statement denies and whose second uses an unsupported operator
    policy = document(deny(sid="First"), allow(Condition={"NumericEquals": {"k:k": "1"}}))
    # WHEN a request the Deny matches is evaluated
    # THEN the unsupported operator is still reported
    with pytest.raises(PolicyError, match="NumericEquals"):
        evaluate([policy], request())


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        pytest.param(
            {"Effect": "Allow", "NotPrincipal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"},
            "NotPrincipal",
            id="not-principal",
        ),
        pytest.param({"Effect": "Allow", "Action": "sts:AssumeRole"}, "must have a Principal", id="no-principal"),
        pytest.param(
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/bbws-*"},
                "Action": "sts:AssumeRole",
            },
            "wildcard",
            id="wildcard-in-principal-arn",
        ),
        pytest.param(
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::*:root"}, "Action": "sts:AssumeRole"},
            "wildcard",
            id="wildcard-account-in-principal",
        ),
        pytest.param(
            {"Effect": "Allow", "Principal": {"Service": "*.amazonaws.com"}, "Action": "sts:AssumeRole"},
            "wildcard",
            id="wildcard-in-service",
        ),
        pytest.param(
            {"Effect": "Allow", "Principal": {"Service": "*"}, "Action": "sts:AssumeRole"},
            "wildcard",
            id="lone-star-service",
        ),
        pytest.param(
            {"Effect": "Allow", "Principal": {"CanonicalUser": "abc"}, "Action": "sts:AssumeRole"},
            "CanonicalUser",
            id="canonical-user",
        ),
        pytest.param(
            {"Effect": "Allow", "Principal": {"AWS": "AROAEXAMPLEUNIQUEID"}, "Action": "sts:AssumeRole"},
            "unique ids",
            id="unique-id",
        ),
        pytest.param(
            {"Effect": "Allow", "Principal": f"arn:aws:iam::{ACCOUNT}:root", "Action": "sts:AssumeRole"},
            "Principal must be",
            id="principal-bare-string",
        ),
        pytest.param({"Effect": "Allow", "Principal": {}, "Action": "sts:AssumeRole"}, "empty", id="empty-principal"),
        pytest.param(
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::${aws:PrincipalAccount}:root"}, "Action": "sts:*"},
            "policy variable",
            id="variable-in-principal",
        ),
        pytest.param(
            {"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole", "Condition": {"IpAddress": {}}},
            "IpAddress",
            id="unsupported-operator",
        ),
        pytest.param(
            {"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole", "Bogus": 1},
            "unknown statement element",
            id="unknown-element",
        ),
    ],
)
def test_trust_policy_refusals(statement: dict[str, Any], message: str) -> None:
    # GIVEN a trust statement using something unsupported or malformed
    trust = document(statement)
    # WHEN it is evaluated
    # THEN PolicyError names the problem
    with pytest.raises(PolicyError, match=message):
        trust_allows(trust, Principal("AWS", f"arn:aws:iam::{ACCOUNT}:role/x", ACCOUNT), assume())


def test_trust_policy_resource_is_optional_but_applies_when_present() -> None:
    # GIVEN one trust statement without Resource and one with
    without = document({"Sid": "T", "Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"})
    scoped = document(
        {"Sid": "T", "Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole", "Resource": BUCKET_ARN}
    )
    anyone = Principal("Service", "lambda.amazonaws.com")
    # WHEN a request on a resource is evaluated against each
    # THEN the absent Resource matches, and a present one must match the request's resource
    assert trust_allows(without, anyone, assume()) == Decision(True, False, "T")
    assert trust_allows(scoped, anyone, assume()) == IMPLICIT_DENY
    assert trust_allows(scoped, anyone, Request("sts:AssumeRole", BUCKET_ARN)) == Decision(True, False, "T")


@pytest.mark.parametrize(
    ("req", "message"),
    [
        pytest.param(Request("GetObject", "*"), "service:action", id="action-without-service"),
        pytest.param(Request("s3:GetObject", "bucket"), "ARN or", id="resource-not-an-arn"),
        pytest.param(Request("s3:GetObject", "arn:aws:s3"), "ARN or", id="resource-truncated-arn"),
        pytest.param(Request("s3:GetObject", "*", {"s3:prefix": "env/"}), "list of strings", id="bare-string-value"),
        pytest.param(
            Request("s3:GetObject", "*", {"s3:prefix": [1]}),  # type: ignore[list-item]
            "not a string",
            id="non-string-value",
        ),
        pytest.param(
            Request("s3:GetObject", "*", {"s3:prefix": ["a"], "S3:Prefix": ["b"]}),
            "differ only in case",
            id="keys-differing-in-case",
        ),
    ],
)
def test_malformed_requests_raise_value_error(req: Request, message: str) -> None:
    # GIVEN a request built wrongly by the caller
    # WHEN it is evaluated
    # THEN ValueError (not a silent deny) names the mistake
    with pytest.raises(ValueError, match=message):
        evaluate([document(allow())], req)


def test_policy_error_is_a_value_error() -> None:
    # GIVEN the documented contract
    # THEN callers catching ValueError also catch PolicyError
    assert issubclass(PolicyError, ValueError)
