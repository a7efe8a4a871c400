"""The runbook's accounts, emulated: each gets the deployment role our users install.

moto keeps one backend per account and maps credentials to accounts: keys that
sts:AssumeRole issued for a role belong to that role's account; any other key is the
tooling account (moto's default account, where the deployer stack itself runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3

TOOLING_ACCOUNT = "123456789012"  # moto's default account
TOOLING_ACCESS_KEY = "AKIASANDBOXTOOLING00"
TOOLING_SECRET_KEY = "sandbox-tooling-secret"  # noqa: S105 - moto accepts any secret
TARGET_ACCOUNTS = {"dev": "536580886816", "sit": "815856636111", "prod": "093646564004"}
# moto lets any principal assume any role; a user setting up an account would use this one.
BOOTSTRAP_ROLE = "OrganizationAccountAccessRole"


def role_session(sts: Any, role_arn: str, session_name: str) -> boto3.Session:
    """A session of ``role_arn``, assumed with ``sts`` (whose caller IAM and the role's trust must allow it)."""
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def account_session(sts: Any, account: str) -> boto3.Session:
    """A session that acts in ``account`` (as an administrator setting the account up would)."""
    return role_session(sts, f"arn:aws:iam::{account}:role/{BOOTSTRAP_ROLE}", "sandbox-bootstrap")


def install_deployment_roles(
    tooling: boto3.Session, endpoint: str, region: str, role_template: Path, stack_name: str
) -> dict[str, str]:
    """Deploy target-account/deployment-role.yaml into every target account with CloudFormation."""
    sts = tooling.client("sts", endpoint_url=endpoint, region_name=region)
    arns = {}
    for environment, account in TARGET_ACCOUNTS.items():
        cfn = account_session(sts, account).client("cloudformation", endpoint_url=endpoint, region_name=region)
        cfn.create_stack(
            StackName=f"{stack_name}-role",
            TemplateBody=role_template.read_text(),
            Parameters=[{"ParameterKey": "ToolingAccountId", "ParameterValue": TOOLING_ACCOUNT}],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        outputs = cfn.describe_stacks(StackName=f"{stack_name}-role")["Stacks"][0].get("Outputs", [])
        arns[environment] = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "DeploymentRoleArn")
    return arns
