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
