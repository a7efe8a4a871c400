"""IAM as AWS enforces it, in the sandbox: denials only IAM can cause, in each protocol's own shape.

Each function runs as the role SAM makes for it (sandbox.sam_roles); a test acts as one by assuming
it with the sandbox's unrestricted key, as the Lambda service does, and then calls AWS the way the
function's code would, so every call below is evaluated by sandbox/iam.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from sandbox.accounts import TARGET_ACCOUNTS, TOOLING_ACCESS_KEY, TOOLING_ACCOUNT, account_session, role_session
from sandbox.lambda_runtime import FunctionConfig
from sandbox.server import Sandbox
from sandbox.template import load_template
from tests.sandbox_fixtures import REPO

DEV = TARGET_ACCOUNTS["dev"]
Session = Callable[[str], boto3.Session]


@pytest.fixture(scope="module")
def function_role(sandbox: Sandbox) -> Session:
    """A session as a function's execution role (by logical id), as Lambda gives its container."""
    iam = sandbox.client("iam")

    def assume(logical_id: str) -> boto3.Session:
        arn = iam.get_role(RoleName=f"{sandbox.stack_name}-{logical_id}Role")["Role"]["Arn"]
        return role_session(sandbox.client("sts"), arn, logical_id)

    return assume


def client(sandbox: Sandbox, session: boto3.Session, service: str, region: str | None = None) -> Any:
    return session.client(service, endpoint_url=sandbox.endpoint, region_name=region or sandbox.region)  # type: ignore[call-overload]


def denied(call: Callable[[], Any]) -> ClientError:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value


def test_validations_deployment_role_session_cannot_delete_an_item_outside_the_validation_prefix(
    sandbox: Sandbox, function_role: Session
) -> None:
    # GIVEN a managed DEV table holding a site and a validation item
    admin = account_session(sandbox.client("sts"), DEV).client(
        "dynamodb", endpoint_url=sandbox.endpoint, region_name=sandbox.region
    )
    admin.create_table(
        TableName="Site-Iam-Test",
        KeySchema=[{"AttributeName": "SiteId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "SiteId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for site in ("site-001", "_deployer-validation-iam"):
        admin.put_item(TableName="Site-Iam-Test", Item={"SiteId": {"S": site}})
    # AND the Validate function's session in DEV: its role assumes the deployment role, as Tooling.target_for does
    validate = client(sandbox, function_role("ValidateFunction"), "sts")
    target = role_session(validate, sandbox.deployment_roles["dev"], "validate")
    ddb = client(sandbox, target, "dynamodb")

    # WHEN it deletes the site THEN IAM refuses, naming the action and the table, and the item stays
    error = denied(lambda: ddb.delete_item(TableName="Site-Iam-Test", Key={"SiteId": {"S": "site-001"}}))
    assert error.response["Error"]["Code"] == "AccessDeniedException"
    message = error.response["Error"]["Message"]
    assert "assumed-role/bbws-deployer/validate is not authorized to perform: dynamodb:DeleteItem" in message
    assert f"arn:aws:dynamodb:{sandbox.region}:{DEV}:table/Site-Iam-Test" in message
    assert admin.get_item(TableName="Site-Iam-Test", Key={"SiteId": {"S": "site-001"}}).get("Item")
    # AND the validation item it may delete is deleted
    ddb.delete_item(TableName="Site-Iam-Test", Key={"SiteId": {"S": "_deployer-validation-iam"}})
    assert not admin.get_item(TableName="Site-Iam-Test", Key={"SiteId": {"S": "_deployer-validation-iam"}}).get("Item")


def test_notifys_role_cannot_start_an_execution(sandbox: Sandbox, function_role: Session) -> None:
    machine = sandbox.outputs["StateMachineArn"]
    sfn = sandbox.client("stepfunctions")
    before = len(sfn.list_executions(stateMachineArn=machine)["executions"])
    notify = client(sandbox, function_role("NotifyFunction"), "stepfunctions")

    error = denied(lambda: notify.start_execution(stateMachineArn=machine, input="{}"))

    assert error.response["Error"]["Code"] == "AccessDeniedException"
    assert "states:StartExecution" in error.response["Error"]["Message"]
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == before


def readers_of(sandbox: Sandbox, function_role: Session, secret: str) -> set[str]:
    """The functions whose roles can read ``secret``; every other one is refused AccessDeniedException."""
    functions = [
        logical_id
        for logical_id, resource in load_template(REPO / "template.yaml")["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    ]
    readers, refused = set(), set()
    for logical_id in functions:
        secrets = client(sandbox, function_role(logical_id), "secretsmanager")
        try:
            secrets.get_secret_value(SecretId=secret)
        except ClientError as exc:
            refused.add((logical_id, exc.response["Error"]["Code"]))
            continue
        readers.add(logical_id)
    assert {code for _, code in refused} == {"AccessDeniedException"}
    assert len(readers) + len(refused) == len(functions) == 21
    return readers


def test_only_the_functions_that_post_to_slack_can_read_the_bot_token(sandbox: Sandbox, function_role: Session) -> None:
    assert readers_of(sandbox, function_role, sandbox.outputs["SlackBotSecretArn"]) == {
        "ApprovalRequestFunction",
        "ApprovalTimeoutFunction",
        "SlackInteractionsFunction",
        "NotifyFunction",
    }


def test_only_the_interactions_endpoint_can_read_the_signing_secret(sandbox: Sandbox, function_role: Session) -> None:
    # Notify, which posts to Slack, cannot read what signs Slack's requests (nor can any other function)
    secret = sandbox.outputs["SlackSigningSecretArn"]
    assert readers_of(sandbox, function_role, secret) == {"SlackInteractionsFunction"}
    interactions = client(sandbox, function_role("SlackInteractionsFunction"), "secretsmanager")
    value = json.loads(interactions.get_secret_value(SecretId=secret)["SecretString"])
    assert value == {"signingSecret": sandbox.slack_signing_secret, "teamId": sandbox.slack.team_id}


@pytest.fixture(scope="module")
def nothing_allowed(sandbox: Sandbox) -> boto3.Session:
    """A role with one explicit deny and nothing else allowed, assumed with the sandbox's unrestricted key."""
    iam = sandbox.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": TOOLING_ACCOUNT}, "Action": "sts:AssumeRole"}],
    }
    arn = iam.create_role(RoleName="iam-test-nothing", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:*", "sts:AssumeRole"], "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"},
        ],
    }
    iam.put_role_policy(RoleName="iam-test-nothing", PolicyName="p", PolicyDocument=json.dumps(policy))
    return role_session(sandbox.client("sts"), arn, "probe")


@pytest.mark.parametrize(
    ("service", "call", "code", "action", "resource"),
    [
        (
            "dynamodb",
            lambda c: c.describe_table(TableName="t"),
            "AccessDeniedException",
            "dynamodb:DescribeTable",
            ":table/t",
        ),
        (
            "stepfunctions",
            lambda c: c.send_task_success(taskToken="x", output="{}"),
            "AccessDeniedException",
            "states:SendTaskSuccess",
            "*",
        ),
        (
            "lambda",
            lambda c: c.invoke(FunctionName="f"),
            "AccessDeniedException",
            "lambda:InvokeFunction",
            ":function:f",
        ),
        (
            "cloudwatch",
            lambda c: c.list_metrics(Namespace="AWS/DynamoDB"),
            "AccessDenied",
            "cloudwatch:ListMetrics",
            "*",
        ),
        ("iam", lambda c: c.get_role(RoleName="x"), "AccessDenied", "iam:GetRole", ""),
    ],
    ids=["json", "json-1.0", "rest-json", "rpc-v2-cbor", "query"],
)
def test_a_denial_comes_back_in_the_protocol_the_call_came_in(
    sandbox: Sandbox,
    nothing_allowed: boto3.Session,
    service: str,
    call: Callable[[Any], Any],
    code: str,
    action: str,
    resource: str,
) -> None:
    error = denied(lambda: call(client(sandbox, nothing_allowed, service)))
    assert error.response["Error"]["Code"] == code
    message = error.response["Error"]["Message"]
    assert message.startswith(
        f"User: arn:aws:sts::{TOOLING_ACCOUNT}:assumed-role/iam-test-nothing/probe is not authorized"
    )
    if service == "iam":
        # GetRole is in no map of ours: refused by name, so a new call never slips through.
        assert "iam:GetRole is not in sandbox/iam_actions.yaml" in message
    else:
        assert f"to perform: {action} on resource: " in message
        assert resource in message
        assert message.endswith(f"because no identity-based policy allows the {action} action")


def test_s3_denials_are_xml_403s_and_an_explicit_deny_says_so(sandbox: Sandbox, nothing_allowed: boto3.Session) -> None:
    sandbox.client("s3").create_bucket(
        Bucket="iam-test-kept", CreateBucketConfiguration={"LocationConstraint": sandbox.region}
    )
    s3 = client(sandbox, nothing_allowed, "s3")
    # GIVEN s3:* is allowed THEN reads pass
    assert s3.get_bucket_versioning(Bucket="iam-test-kept")["ResponseMetadata"]["HTTPStatusCode"] == 200
    # AND the explicitly denied delete is a 403 AccessDenied saying why, and the bucket stays
    error = denied(lambda: s3.delete_bucket(Bucket="iam-test-kept"))
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error.response["Error"]["Code"] == "AccessDenied"
    assert error.response["Error"]["Message"].endswith(
        "s3:DeleteBucket on resource: arn:aws:s3:::iam-test-kept with an explicit deny in an identity-based policy"
    )
    sandbox.client("s3").head_bucket(Bucket="iam-test-kept")


def test_assume_role_needs_the_roles_trust_as_well_as_the_callers_grant(
    sandbox: Sandbox, nothing_allowed: boto3.Session
) -> None:
    # GIVEN a role only Lambda may assume, and a caller allowed sts:AssumeRole on everything
    iam = sandbox.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    arn = iam.create_role(
        RoleName=f"iam-test-lambda-{uuid.uuid4().hex[:6]}", AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    # WHEN the caller assumes it THEN the trust policy refuses
    error = denied(lambda: client(sandbox, nothing_allowed, "sts").assume_role(RoleArn=arn, RoleSessionName="caller"))
    assert error.response["Error"]["Code"] == "AccessDenied"
    assert error.response["Error"]["Message"].endswith(
        "because no resource-based policy allows the sts:AssumeRole action"
    )


def test_a_functions_role_may_assume_only_the_guardrails_deployment_roles(
    sandbox: Sandbox, function_role: Session
) -> None:
    # GIVEN roles that trust the tooling account as the deployment role does: another in DEV, and one of the
    # deployment role's name in an account the guardrails do not list
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{TOOLING_ACCOUNT}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    strays = []
    for account, name in ((DEV, "bbws-admin"), ("111122223333", "bbws-deployer")):
        iam = client(sandbox, account_session(sandbox.client("sts"), account), "iam")
        strays.append(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])
    provision = client(sandbox, function_role("ProvisionFunction"), "sts")
    # WHEN Provision's role assumes them THEN IAM refuses each: its grant names only the guardrails' roles
    for arn in strays:
        error = denied(lambda arn=arn: provision.assume_role(RoleArn=arn, RoleSessionName="stray"))
        assert error.response["Error"]["Code"] == "AccessDenied"
        assert f"is not authorized to perform: sts:AssumeRole on resource: {arn}" in error.response["Error"]["Message"]
    # AND DEV's deployment role, which the guardrails list, is assumed
    assert provision.assume_role(RoleArn=sandbox.deployment_roles["dev"], RoleSessionName="listed")["Credentials"]


WHO_AM_I = """
import os

import boto3


def handler(event, context):
    arn = boto3.client("sts").get_caller_identity()["Arn"]
    return {"arn": arn, "key": os.environ["AWS_ACCESS_KEY_ID"]}
"""


def test_a_functions_worker_acts_as_its_own_role_and_one_without_a_role_has_no_credentials(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # GIVEN a function with an execution role Lambda may assume, and one without any role
    code = tmp_path_factory.mktemp("who-am-i")
    (code / "app.py").write_text(WHO_AM_I)
    iam = sandbox.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName="iam-test-who-am-i", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    assert sandbox.runtime is not None
    for name, role_arn in (("who-am-i", role), ("no-role", None)):
        sandbox.runtime.register(
            FunctionConfig(
                name=name,
                arn=f"arn:aws:lambda:{sandbox.region}:{TOOLING_ACCOUNT}:function:{name}",
                handler="app.handler",
                code_dir=code,
                layer_dirs=(),
                environment={},
                timeout_seconds=10,
                memory_mb=128,
                role_arn=role_arn,
            )
        )
    lambda_ = sandbox.client("lambda")

    # WHEN each is invoked
    answer = json.loads(lambda_.invoke(FunctionName="who-am-i")["Payload"].read())
    failed = lambda_.invoke(FunctionName="no-role")

    # THEN the first is its role's session, named after the function, never the sandbox's own key
    assert answer["arn"] == f"arn:aws:sts::{TOOLING_ACCOUNT}:assumed-role/iam-test-who-am-i/who-am-i"
    assert answer["key"] != TOOLING_ACCESS_KEY
    # AND the one without a role gets no credentials at all
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorType"] == "NoCredentialsError"
