"""The execution role SAM makes for a function or a state machine, as an ``AWS::IAM::Role`` resource.

aws-sam-translator cannot join the development environment (it pins an older pydantic), so
what it does with ``Policies`` is written out here, for the forms this template uses, and
checked against the translator itself (it runs in the SAM CLI's own environment) by
``tests/unit/test_sandbox_sam_roles.py``:

- an entry ``{Version: ..., Statement: [...]}`` is an inline policy ``<LogicalId>RolePolicy<i>``;
- an entry naming one of SAM's policy templates (only those in ``POLICY_TEMPLATES``) is that
  template's statements, as an inline policy of the same kind;
- an entry that is a managed policy's ARN is attached;
- a function gets AWS's ``AWSLambdaBasicExecutionRole`` (logs), and ``AWSXrayWriteOnlyAccess``
  with ``Tracing: Active``; a state machine gets ``AWSXrayWriteOnlyAccess`` with tracing enabled;
- a function's ``EventInvokeConfig`` destinations get ``<LogicalId>EventInvokeConfigOn<Kind><Type>Policy``
  (what Lambda needs to deliver there on the function's behalf).

Anything else (a managed policy by name, another policy template, an explicit ``Role``, a
permissions boundary, a destination type other than SQS) is refused with a TemplateError
rather than approximated: a role the sandbox made up would test nothing.
"""

from __future__ import annotations

from typing import Any

from sandbox.template import TemplateError

LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Action": ["sts:AssumeRole"], "Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}}
    ],
}
STATES_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Action": ["sts:AssumeRole"], "Effect": "Allow", "Principal": {"Service": ["states.amazonaws.com"]}}
    ],
}
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
XRAY_WRITE = "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"
FUNCTION = "AWS::Serverless::Function"
STATE_MACHINE = "AWS::Serverless::StateMachine"
# SAM's policy templates (samtranslator/policy_templates_data/policy_templates.json) that this template uses.
POLICY_TEMPLATES: dict[str, tuple[str, str | list[str], str, str]] = {
    # name: (its parameter, its Action as SAM writes it, its Resource's Fn::Sub pattern, that pattern's variable)
    "LambdaInvokePolicy": (
        "FunctionName",
        ["lambda:InvokeFunction"],
        "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${functionName}*",
        "functionName",
    ),
    "EventBridgePutEventsPolicy": (
        "EventBusName",
        "events:PutEvents",
        "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${eventBusName}",
        "eventBusName",
    ),
}
# Properties that change the role SAM makes in ways not written out here.
UNSUPPORTED = ("Role", "PermissionsBoundary", "RolePath", "AssumeRolePolicyDocument")
# SQS destinations: the only type the template uses.
DESTINATION_ACTIONS = {"SQS": "sqs:SendMessage"}


def role_logical_id(logical_id: str) -> str:
    return f"{logical_id}Role"


def execution_role(logical_id: str, resource: dict[str, Any], globals_: dict[str, Any]) -> dict[str, Any]:
    """The ``AWS::IAM::Role`` resource SAM adds for a serverless function or state machine (unresolved)."""
    kind = resource["Type"]
    if kind not in (FUNCTION, STATE_MACHINE):
        raise TemplateError(f"{logical_id}: SAM makes no execution role for {kind}")
    props = resource.get("Properties", {})
    merged = {**globals_.get("Function", {}), **props} if kind == FUNCTION else props
    unsupported = sorted(k for k in UNSUPPORTED if k in merged)
    if unsupported:
        raise TemplateError(f"{logical_id}: the sandbox makes no execution role with {unsupported}")
    managed: list[Any] = []
    policies: list[dict[str, Any]] = []
    if kind == FUNCTION:
        managed.append(BASIC_EXECUTION)
        if merged.get("Tracing") == "Active":
            managed.append(XRAY_WRITE)
        policies += _destination_policies(logical_id, merged.get("EventInvokeConfig", {}))
    elif str(merged.get("Tracing", {}).get("Enabled", False)).lower() == "true":
        managed.append(XRAY_WRITE)
    for index, entry in enumerate(merged.get("Policies", [])):
        if isinstance(entry, str) or (isinstance(entry, dict) and set(entry) <= {"Fn::Sub", "Ref", "Fn::GetAtt"}):
            if isinstance(entry, str) and not entry.startswith("arn:"):
                raise TemplateError(
                    f"{logical_id}: managed policy {entry!r} by name needs IAM to look it up: use its ARN"
                )
            managed.append(entry)
            continue
        policies.append(
            {"PolicyName": f"{logical_id}RolePolicy{index}", "PolicyDocument": _document(logical_id, entry)}
        )
    properties: dict[str, Any] = {
        "AssumeRolePolicyDocument": LAMBDA_TRUST if kind == FUNCTION else STATES_TRUST,
        "ManagedPolicyArns": managed,
        "Tags": [{"Key": "lambda:createdBy" if kind == FUNCTION else "stateMachine:createdBy", "Value": "SAM"}],
    }
    if policies:
        properties["Policies"] = policies
    return {"Type": "AWS::IAM::Role", "Properties": properties}


def _document(logical_id: str, entry: Any) -> dict[str, Any]:
    if isinstance(entry, dict) and "Statement" in entry and set(entry) <= {"Version", "Statement"}:
        return dict(entry)
    if not isinstance(entry, dict) or len(entry) != 1:
        raise TemplateError(f"{logical_id}: a Policies entry must be a policy document, a policy template or an ARN")
    ((name, value),) = entry.items()
    if name not in POLICY_TEMPLATES:
        raise TemplateError(f"{logical_id}: the sandbox does not expand SAM policy template {name}")
    parameter, action, pattern, variable = POLICY_TEMPLATES[name]
    if set(value or {}) != {parameter}:
        raise TemplateError(f"{logical_id}: {name} takes exactly {parameter}")
    return {
        "Statement": [
            {
                "Action": action,
                "Effect": "Allow",
                "Resource": {"Fn::Sub": [pattern, {variable: value[parameter]}]},
            }
        ]
    }


def _destination_policies(logical_id: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    policies = []
    for kind, destination in config.get("DestinationConfig", {}).items():
        action = DESTINATION_ACTIONS.get(destination.get("Type", ""))
        if action is None or "Destination" not in destination:
            raise TemplateError(f"{logical_id}: the sandbox supports SQS {kind} destinations given by ARN only")
        policies.append(
            {
                "PolicyName": f"{logical_id}EventInvokeConfig{kind}{destination['Type']}Policy",
                "PolicyDocument": {
                    "Statement": [{"Action": action, "Effect": "Allow", "Resource": destination["Destination"]}]
                },
            }
        )
    return policies
