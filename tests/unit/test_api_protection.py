"""The API's flood protection in template.yaml: a WAF web ACL rate-limits each client before the stage throttle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox.template import load_template

REPO = Path(__file__).resolve().parents[2]


def resources() -> dict[str, Any]:
    return dict(load_template(REPO / "template.yaml")["Resources"])


def test_a_rate_based_rule_blocks_a_flooding_client() -> None:
    acl = resources()["ApiWebAcl"]["Properties"]
    assert acl["Scope"] == "REGIONAL"
    assert acl["DefaultAction"] == {"Allow": {}}
    rate = next(r for r in acl["Rules"] if "RateBasedStatement" in r["Statement"])
    assert rate["Priority"] == 0
    assert rate["Action"] == {"Block": {}}
    statement = rate["Statement"]["RateBasedStatement"]
    assert statement["AggregateKeyType"] == "IP"
    assert statement["Limit"] == {"Ref": "ApiRateLimitPer5Minutes"}


def test_the_web_acl_guards_the_api_stage_and_logs_without_credentials() -> None:
    found = resources()
    association = found["ApiWebAclAssociation"]["Properties"]
    assert association["WebACLArn"] == {"Fn::GetAtt": ["ApiWebAcl", "Arn"]}
    assert association["ResourceArn"]["Fn::Sub"].endswith("/restapis/${DeployerApi}/stages/${DeployerApi.Stage}")
    logging = found["ApiWebAclLogging"]["Properties"]
    redacted = {f["SingleHeader"]["Name"] for f in logging["RedactedFields"]}
    assert redacted == {"authorization", "x-github-oidc-token"}
    assert found["ApiWebAclLogs"]["Properties"]["LogGroupName"]["Fn::Sub"].startswith("aws-waf-logs-")


def test_only_the_deployers_roles_may_put_its_events_on_its_bus() -> None:
    found = resources()
    policy = found["DeploymentBusPolicy"]["Properties"]
    statement = policy["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "events:PutEvents")
    assert statement["Condition"]["StringEquals"] == {"events:source": "bbws.deployer"}
    allowed = statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    assert allowed == [
        {"Fn::GetAtt": ["DeploymentStateMachineRole", "Arn"]},
        {"Fn::GetAtt": ["ApprovalRequestFunctionRole", "Arn"]},
        {"Fn::GetAtt": ["DeploymentsApiFunctionRole", "Arn"]},
        {"Fn::GetAtt": ["CloseStoppedFunctionRole", "Arn"]},
        {"Fn::GetAtt": ["StartDeploymentFunctionRole", "Arn"]},
    ]
    # AND those are the only roles whose policies put events on the bus
    putters = {
        logical_id
        for logical_id, resource in found.items()
        for policy in resource.get("Properties", {}).get("Policies", [])
        if "EventBridgePutEventsPolicy" in str(policy) or "events:PutEvents" in str(policy)
    }
    assert putters == {
        "DeploymentStateMachine",
        "ApprovalRequestFunction",
        "DeploymentsApiFunction",
        "CloseStoppedFunction",
        "StartDeploymentFunction",
    }
