"""Installs ``template.yaml`` into the sandbox, as ``sam deploy`` would but without containers.

Resources are created in dependency order (whatever a resource's Ref, Fn::GetAtt, Fn::Sub
or DependsOn names comes first, as CloudFormation orders them), and only those whose
``Condition`` holds. Each resource type the template uses is created in moto with the
properties the template gives it; functions are also registered with the sandbox's
Lambda runtime so invoking them runs their real code. A SAM function's ``Events`` become
what SAM makes of them, each after its function: API routes on the sandbox's API Gateway,
and EventBridge rules with the function as their target (delivering to that target is
``sandbox.eventbridge_delivery``'s job, as moto 5.2.5 cannot invoke Lambda targets). A
function's ``EventInvokeConfig`` is put in moto's Lambda, where that module reads it.

The CloudFormation stack is created first (so ``AWS::StackId`` is known, as on AWS) and
gets the template's Outputs once every resource exists, so clients discover the stack
the same way on AWS and in the sandbox (``describe_stacks``).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import re
import secrets
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from sandbox.api_gateway import ApiGateway, Route
from sandbox.lambda_runtime import FunctionConfig, LambdaRuntime
from sandbox.sam_roles import FUNCTION, STATE_MACHINE, execution_role, role_logical_id
from sandbox.template import Resolver, TemplateError, cfn_string, dependency_order, depends_on, load_template

INSTALLED_PARAMETER = "/{stack}/sandbox-installed"
# Resource types the sandbox accepts and does not install, and why: the stack installs as it deploys,
# and what is missing is said, not silently dropped.
NOT_EMULATED = {
    "AWS::WAFv2::WebACL": "moto does not emulate WAF; the sandbox's API is not rate-limited by it",
    "AWS::WAFv2::WebACLAssociation": "moto does not emulate WAF; nothing is associated with the API stage",
    "AWS::WAFv2::LoggingConfiguration": "moto does not emulate WAF; no WAF logs are written",
}
logger = logging.getLogger(__name__)
# What SAM's EventBridgeRule event takes; anything else is refused rather than ignored.
EVENTBRIDGE_RULE_PROPERTIES = {
    "EventBusName",
    "Pattern",
    "RetryPolicy",
    "DeadLetterConfig",
    "Input",
    "InputPath",
    "InputTransformer",
    "RuleName",
    "State",
    "Target",
}
# AWS::SNS::Topic properties that are SetTopicAttributes attributes of the same name.
TOPIC_ATTRIBUTES = {
    "ArchivePolicy",
    "ContentBasedDeduplication",
    "DisplayName",
    "FifoThroughputScope",
    "FifoTopic",
    "KmsMasterKeyId",
    "SignatureVersion",
    "TracingConfig",
}

Installer = Callable[[str, dict[str, Any], Resolver, dict[str, Any]], None]


def _placeholder_zip() -> bytes:
    """moto wants a code package; the code that runs is the repo's, via the runtime."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "Runs from the repository in the sandbox's Lambda runtime.\n")
    return buffer.getvalue()


def _typed(shape: Any, value: Any) -> Any:  # noqa: PLR0911 - one answer per kind of shape
    """A resolved value in the types an API's input shape wants, as CloudFormation converts them.

    A Ref to a Number parameter resolves to a string ("300"); CloudFormation hands the
    service an integer. botocore's model of the operation says which.
    """
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {k: _typed(shape.members[k], v) if k in shape.members else v for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_typed(shape.member, v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _typed(shape.value, v) for k, v in value.items()}
    if isinstance(value, str):
        if kind in {"integer", "long"}:
            return int(value)
        if kind in {"double", "float"}:
            return float(value)
        if kind == "boolean":
            return value.lower() == "true"
    if kind == "string" and isinstance(value, bool | int | float):
        return cfn_string(value)
    return value


def _api_params(client: Any, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    shape = client.meta.service_model.operation_model(operation).input_shape
    return dict(_typed(shape, params))


def _attribute_string(value: Any) -> str:
    """A property as a queue/topic/subscription attribute: JSON documents as JSON text."""
    return json.dumps(value) if isinstance(value, dict | list) else cfn_string(value)


def _tags(props: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: cfn_string(t["Value"]) for t in props.get("Tags", [])}


def _without_insecure_transport_deny(document: dict[str, Any]) -> dict[str, Any] | None:
    """The policy without its deny-without-TLS statement; None when nothing else is left."""
    # The sandbox speaks plain HTTP on loopback, and moto enforces aws:SecureTransport,
    # so a deny-without-TLS statement would deny everything here; it alone is left out.
    statements = [s for s in document["Statement"] if "aws:SecureTransport" not in json.dumps(s.get("Condition", {}))]
    return {**document, "Statement": statements} if statements else None


@dataclass
class StackInstaller:
    repo: Path
    session: boto3.Session
    endpoint: str
    region: str
    account: str
    stack_name: str
    runtime: LambdaRuntime
    api: ApiGateway | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    # SecretString per logical id; a secret not named here gets its template's generated value.
    secret_values: dict[str, str] = field(default_factory=dict)
    layer_dirs: dict[str, Path] = field(default_factory=dict)
    api_authorizers: dict[str, str] = field(default_factory=dict)
    # Outputs whose deployed value means nothing locally (the API's URL, say).
    output_overrides: dict[str, str] = field(default_factory=dict)
    # Logical ids in the order they were installed (SAM function events as <Function><Event>).
    installed: list[str] = field(default_factory=list)
    # Resources accepted but not installed (NOT_EMULATED), each with why.
    skipped: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint, region_name=self.region)  # type: ignore[call-overload]

    def install(self) -> dict[str, str]:
        """Create every resource whose condition holds; returns the stack's outputs."""
        template = load_template(self.repo / "template.yaml")
        installers: dict[str, Installer] = {
            "AWS::Serverless::LayerVersion": self._layer,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::Serverless::Api": self._api,
            "AWS::ApiGateway::Account": self._api_gateway_account,
            "AWS::DynamoDB::Table": self._table,
            "AWS::S3::Bucket": self._bucket,
            "AWS::S3::BucketPolicy": self._bucket_policy,
            "AWS::Logs::LogGroup": self._log_group,
            "AWS::SQS::Queue": self._queue,
            "AWS::SQS::QueuePolicy": self._queue_policy,
            "AWS::SNS::Topic": self._topic,
            "AWS::SNS::Subscription": self._subscription,
            "AWS::CloudWatch::Alarm": self._alarm,
            "AWS::CloudWatch::Dashboard": self._dashboard,
            "AWS::IAM::Role": self._iam_role,
            "AWS::IAM::OIDCProvider": self._oidc_provider,
            "AWS::Events::EventBus": self._event_bus,
            "AWS::Events::EventBusPolicy": self._event_bus_policy,
            "AWS::Serverless::Function": self._function,
            "AWS::Serverless::StateMachine": self._state_machine,
            **{kind: functools.partial(self._not_emulated, kind) for kind in NOT_EMULATED},
        }
        resources = template["Resources"]
        # Every type must be known, also of resources a condition leaves out today.
        unknown = sorted({r["Type"] for r in resources.values()} - set(installers))
        if unknown:
            raise TemplateError(f"the sandbox cannot install resource types {unknown}")
        stack_id = self._create_stack()
        resolver = Resolver(
            template, self.stack_name, self.region, self.account, dict(self.parameters), stack_id=stack_id
        )
        globals_ = template.get("Globals", {})
        steps = self._steps(resources, resolver, globals_, installers)
        for logical_id in dependency_order({lid: needs for lid, (needs, _) in steps.items()}):
            steps[logical_id][1]()
            self.installed.append(logical_id)
        outputs = {
            name: cfn_string(resolver.resolve(o["Value"]))
            for name, o in template.get("Outputs", {}).items()
            if resolver.included(o)
        }
        outputs.update({k: v for k, v in self.output_overrides.items() if k in outputs})
        self._publish_outputs(outputs)
        return outputs

    def _steps(
        self,
        resources: dict[str, Any],
        resolver: Resolver,
        globals_: dict[str, Any],
        installers: dict[str, Installer],
    ) -> dict[str, tuple[set[str], Callable[[], None]]]:
        """What to install, each with the logical ids it needs first."""
        included = {lid: r for lid, r in resources.items() if resolver.included(r)}
        steps: dict[str, tuple[set[str], Callable[[], None]]] = {}
        # The roles SAM makes (<Function>Role) are made with their function or state machine.
        implicit = {role_logical_id(lid): lid for lid, r in included.items() if r["Type"] in (FUNCTION, STATE_MACHINE)}

        def needs(logical_id: str, value: Any, resource: dict[str, Any]) -> set[str]:
            names = {implicit.get(n, n) for n in resolver.dependencies(value) | depends_on(resource)}
            excluded = sorted(n for n in names if n in resources and n not in included)
            if excluded:
                # CloudFormation refuses such a template: "Unresolved resource dependencies".
                raise TemplateError(f"{logical_id} refers to {excluded}, which a false Condition leaves out")
            return names

        for logical_id, resource in included.items():
            props = resource.get("Properties", {})
            install = functools.partial(installers[resource["Type"]], logical_id, props, resolver, globals_)
            if resource["Type"] != "AWS::Serverless::Function":
                steps[logical_id] = (needs(logical_id, props, resource), install)
                continue
            # SAM turns a function's Events into resources of their own (rules, permissions), made after it.
            body = {k: v for k, v in props.items() if k != "Events"}
            steps[logical_id] = (needs(logical_id, [globals_.get("Function", {}), body], resource), install)
            for event_id, event in props.get("Events", {}).items():
                event_step = functools.partial(self._function_event, logical_id, event_id, event, resolver)
                steps[f"{logical_id}{event_id}"] = (needs(logical_id, event, {}) | {logical_id}, event_step)
        return steps

    def _not_emulated(self, kind: str, logical_id: str, _: dict[str, Any], __: Resolver, ___: dict[str, Any]) -> None:
        # Accepted, so the template installs as it deploys; said aloud, so nobody takes the sandbox for WAF.
        self.skipped[logical_id] = f"{kind}: {NOT_EMULATED[kind]}"
        logger.warning("sandbox: %s (%s) is not installed: %s", logical_id, kind, NOT_EMULATED[kind])

    def _name(self, logical_id: str) -> str:
        return f"{self.stack_name}-{logical_id}"

    def _arn(self, service: str, resource: str, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account}:{resource}"

    def _layer(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        name = resolver.resolve(props.get("LayerName", self._name(logical_id)))
        arn = self._arn("lambda", f"layer:{name}:1")
        resolver.refs[logical_id] = arn
        self.layer_dirs[arn] = self.repo / resolver.resolve(props["ContentUri"])

    def _secret(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        value = self.secret_values.get(logical_id) or p.get("SecretString")
        if value is None:
            generate = p.get("GenerateSecretString", {})
            generated = secrets.token_hex(int(generate.get("PasswordLength", 32)) // 2)
            template = json.loads(generate.get("SecretStringTemplate", "{}"))
            value = json.dumps({**template, generate["GenerateStringKey"]: generated}) if template else generated
        arn = self.client("secretsmanager").create_secret(
            Name=p.get("Name", self._name(logical_id)), SecretString=value
        )["ARN"]
        resolver.refs[logical_id] = arn

    def _api(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        # Resolved so a wrong reference fails the install; of the rest only Auth means anything to the
        # sandbox's API (sandbox/api_gateway.py): it keeps no access logs, stage metrics or throttles.
        p = resolver.resolve(props)
        resolver.refs[logical_id] = f"sandbox{logical_id.lower()}"
        self.api_authorizers[logical_id] = p.get("Auth", {}).get("DefaultAuthorizer", "NONE")

    def _api_gateway_account(
        self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]
    ) -> None:
        # The account's API Gateway settings name the role API Gateway writes its CloudWatch logs
        # with. The sandbox's API is not moto's API Gateway and writes no CloudWatch logs, so locally
        # the setting is only recorded (in moto's API Gateway account, where GetAccount shows it).
        p = resolver.resolve(props)
        if "CloudWatchRoleArn" in p:
            self.client("apigateway").update_account(
                patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": p["CloudWatchRoleArn"]}]
            )
        resolver.refs[logical_id] = self._name(logical_id)

    def _function_event(self, function_id: str, event_id: str, event: dict[str, Any], resolver: Resolver) -> None:
        function = resolver.ref(function_id)
        if event["Type"] == "Api":
            p = event["Properties"]
            api = p.get("RestApiId", {}).get("Ref", "ServerlessRestApi")
            authorizer = p.get("Auth", {}).get("Authorizer", self.api_authorizers.get(api, "NONE"))
            assert self.api is not None, "a template with API routes needs the sandbox's API Gateway"
            self.api.add_route(Route(p["Method"].upper(), p["Path"], function, authorizer))
        elif event["Type"] == "EventBridgeRule":
            self._eventbridge_rule(function_id, event_id, event.get("Properties", {}), resolver)
        else:
            raise TemplateError(f"the sandbox cannot deliver {event['Type']} events to {function}")

    def _eventbridge_rule(self, function_id: str, event_id: str, props: dict[str, Any], resolver: Resolver) -> None:
        """What SAM makes of an EventBridgeRule event: a rule, the function as its target, a permission."""
        logical_id = f"{function_id}{event_id}"
        unsupported = sorted(set(props) - EVENTBRIDGE_RULE_PROPERTIES)
        if unsupported:
            raise TemplateError(f"{logical_id}: the sandbox does not install EventBridgeRule properties {unsupported}")
        p = resolver.resolve(props)
        function_arn = resolver.get_att(function_id, "Arn")
        events = self.client("events")
        bus = {"EventBusName": p["EventBusName"]} if "EventBusName" in p else {}
        name = p.get("RuleName", self._name(logical_id)[:64])
        rule_arn = events.put_rule(
            Name=name, EventPattern=json.dumps(p["Pattern"]), State=p.get("State", "ENABLED"), **bus
        )["RuleArn"]
        # SAM's target id unless the event names one.
        target: dict[str, Any] = {"Id": p.get("Target", {}).get("Id", f"{logical_id}LambdaTarget"), "Arn": function_arn}
        for key in ("Input", "InputPath", "InputTransformer", "RetryPolicy"):
            if key in p:
                target[key] = p[key]
        if "DeadLetterConfig" in p:
            if "Arn" not in p["DeadLetterConfig"]:
                raise TemplateError(f"{logical_id}: give DeadLetterConfig an Arn (SAM-made queues are not installed)")
            target["DeadLetterConfig"] = {"Arn": p["DeadLetterConfig"]["Arn"]}
        targets = _api_params(events, "PutTargets", {"Targets": [target]})["Targets"]
        failed = events.put_targets(Rule=name, Targets=targets, **bus)
        if failed["FailedEntryCount"]:
            raise TemplateError(f"{logical_id}: EventBridge refused the target: {failed['FailedEntries']}")
        self.client("lambda").add_permission(
            FunctionName=function_arn,
            StatementId=f"{logical_id}Permission"[:100],
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
            SourceArn=rule_arn,
        )
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = rule_arn

    def _table(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        name = p.get("TableName", self._name(logical_id))
        kwargs = {
            "TableName": name,
            "AttributeDefinitions": p["AttributeDefinitions"],
            "KeySchema": p["KeySchema"],
            "BillingMode": p.get("BillingMode", "PROVISIONED"),
            "DeletionProtectionEnabled": bool(p.get("DeletionProtectionEnabled", False)),
        }
        if "GlobalSecondaryIndexes" in p:
            kwargs["GlobalSecondaryIndexes"] = p["GlobalSecondaryIndexes"]
        if p.get("SSESpecification", {}).get("SSEEnabled"):
            kwargs["SSESpecification"] = {"Enabled": True}
        ddb = self.client("dynamodb")
        arn = ddb.create_table(**kwargs)["TableDescription"]["TableArn"]
        if p.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
            ddb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
        if "TimeToLiveSpecification" in p:
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification=_api_params(
                    ddb, "UpdateTimeToLive", {"TimeToLiveSpecification": p["TimeToLiveSpecification"]}
                )["TimeToLiveSpecification"],
            )
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = arn

    def _bucket(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        name = p.get("BucketName", self._name(logical_id).lower())
        s3 = self.client("s3")
        create: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        s3.create_bucket(**create)
        if "VersioningConfiguration" in p:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=p["VersioningConfiguration"])
        if "BucketEncryption" in p:
            # CloudFormation's property names differ from the API's here.
            rules = [
                {"ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"]}
                for r in p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in p:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
        if "OwnershipControls" in p:
            s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=p["OwnershipControls"])
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"

    def _bucket_policy(self, _: str, props: dict[str, Any], resolver: Resolver, __: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        # Without its aws:SecureTransport deny statement: see _without_insecure_transport_deny.
        policy = _without_insecure_transport_deny(p["PolicyDocument"])
        if policy:
            self.client("s3").put_bucket_policy(Bucket=p["Bucket"], Policy=json.dumps(policy))

    def _log_group(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        name = p.get("LogGroupName", self._name(logical_id))
        logs = self.client("logs")
        create: dict[str, Any] = {"logGroupName": name}
        if "KmsKeyId" in p:
            create["kmsKeyId"] = p["KmsKeyId"]
        if "Tags" in p:
            create["tags"] = _tags(p)
        logs.create_log_group(**create)
        if "RetentionInDays" in p:
            logs.put_retention_policy(logGroupName=name, retentionInDays=int(p["RetentionInDays"]))
        groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        resolver.refs[logical_id] = name
        # CloudFormation's Arn of a log group ends in ":*", as DescribeLogGroups' "arn".
        resolver.attributes[(logical_id, "Arn")] = next(g["arn"] for g in groups if g["logGroupName"] == name)

    def _queue(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        fifo = cfn_string(p.get("FifoQueue", "false")) == "true"
        name = p.get("QueueName") or (self._name(logical_id)[: 75 if fifo else 80] + (".fifo" if fifo else ""))
        # Every other property of AWS::SQS::Queue is a queue attribute of the same name.
        attributes = {k: _attribute_string(v) for k, v in p.items() if k not in {"QueueName", "Tags"}}
        sqs = self.client("sqs")
        create: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
        if "Tags" in p:
            create["tags"] = _tags(p)
        url = sqs.create_queue(**create)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        resolver.refs[logical_id] = url
        resolver.attributes.update(
            {(logical_id, "Arn"): arn, (logical_id, "QueueName"): name, (logical_id, "QueueUrl"): url}
        )

    def _queue_policy(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        # Without its aws:SecureTransport deny statement: see _without_insecure_transport_deny.
        policy = _without_insecure_transport_deny(p["PolicyDocument"])
        if policy:
            sqs = self.client("sqs")
            for url in p["Queues"]:
                sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        resolver.refs[logical_id] = self._name(logical_id)

    def _topic(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        unsupported = sorted(set(p) - TOPIC_ATTRIBUTES - {"TopicName", "Tags", "Subscription"})
        if unsupported:
            raise TemplateError(f"{logical_id}: the sandbox does not install AWS::SNS::Topic properties {unsupported}")
        fifo = cfn_string(p.get("FifoTopic", "false")) == "true"
        name = p.get("TopicName") or (self._name(logical_id)[: 251 if fifo else 256] + (".fifo" if fifo else ""))
        sns = self.client("sns")
        create: dict[str, Any] = {
            "Name": name,
            "Attributes": {k: _attribute_string(v) for k, v in p.items() if k in TOPIC_ATTRIBUTES},
        }
        if "Tags" in p:
            create["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(p).items()]
        arn = sns.create_topic(**create)["TopicArn"]
        for subscription in p.get("Subscription", []):
            sns.subscribe(TopicArn=arn, Protocol=subscription["Protocol"], Endpoint=subscription["Endpoint"])
        resolver.refs[logical_id] = arn
        resolver.attributes.update({(logical_id, "TopicArn"): arn, (logical_id, "TopicName"): name})

    def _subscription(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        if p.get("Region", self.region) != self.region:
            raise TemplateError(f"{logical_id}: the sandbox does not subscribe across regions")
        # Every other property of AWS::SNS::Subscription is a subscription attribute of the same name.
        attributes = {
            k: _attribute_string(v) for k, v in p.items() if k not in {"TopicArn", "Protocol", "Endpoint", "Region"}
        }
        arn = self.client("sns").subscribe(
            TopicArn=p["TopicArn"],
            Protocol=p["Protocol"],
            Endpoint=p["Endpoint"],
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        resolver.refs[logical_id] = arn

    def _alarm(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        # AWS::CloudWatch::Alarm's properties are PutMetricAlarm's parameters, the metric-math Metrics included.
        p = {**resolver.resolve(props)}
        name = p.setdefault("AlarmName", self._name(logical_id))
        cloudwatch = self.client("cloudwatch")
        cloudwatch.put_metric_alarm(**_api_params(cloudwatch, "PutMetricAlarm", p))
        alarms = cloudwatch.describe_alarms(AlarmNames=[name])
        arn = next(a["AlarmArn"] for a in [*alarms["MetricAlarms"], *alarms["CompositeAlarms"]])
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = arn

    def _dashboard(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        name = p.get("DashboardName", self._name(logical_id))
        body = p["DashboardBody"]
        answer = self.client("cloudwatch").put_dashboard(
            DashboardName=name, DashboardBody=body if isinstance(body, str) else json.dumps(body)
        )
        if answer.get("DashboardValidationMessages"):
            raise TemplateError(f"{logical_id}: CloudWatch refused the body: {answer['DashboardValidationMessages']}")
        resolver.refs[logical_id] = name

    def _iam_role(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        name = p.get("RoleName", self._name(logical_id)[:64])
        iam = self.client("iam")
        create = {"RoleName": name, "AssumeRolePolicyDocument": json.dumps(p["AssumeRolePolicyDocument"])}
        for key in ("Path", "Description", "MaxSessionDuration", "PermissionsBoundary", "Tags"):
            if key in p:
                create[key] = p[key]
        role = iam.create_role(**_api_params(iam, "CreateRole", create))["Role"]
        for policy in p.get("Policies", []):
            # SAM writes its policies without a Version, which IAM reads as 2008-10-17 and moto refuses; the
            # two differ only in policy variables, which none of ours use (sandbox.iam_policy refuses them).
            document = {"Version": "2012-10-17", **policy["PolicyDocument"]}
            iam.put_role_policy(RoleName=name, PolicyName=policy["PolicyName"], PolicyDocument=json.dumps(document))
        for arn in p.get("ManagedPolicyArns", []):
            try:
                iam.attach_role_policy(RoleName=name, PolicyArn=arn)
            except iam.exceptions.NoSuchEntityException:
                if ":iam::aws:policy/" not in arn:
                    raise
                self._load_aws_managed_policy(arn)
                iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        resolver.refs[logical_id] = name
        resolver.attributes.update({(logical_id, "Arn"): role["Arn"], (logical_id, "RoleId"): role["RoleId"]})

    def _load_aws_managed_policy(self, arn: str) -> None:
        """Give the account one of AWS's managed policies, as every AWS account has them.

        moto 5.2.5 has them all only when told to load them (``iam.load_aws_managed_policies``),
        which adds seconds to every sandbox start for over a thousand policies; this adds the one
        the template attaches, from moto's own copy of AWS's policies, to moto's IAM in this process.
        """
        from moto.iam.aws_managed_policies import aws_managed_policies_data
        from moto.iam.models import AWSManagedPolicy, iam_backends

        name = arn.rsplit("/", 1)[-1]
        data = json.loads(aws_managed_policies_data).get(name)
        if data is None:
            raise TemplateError(f"{arn} is not one of AWS's managed policies")
        backend = iam_backends[self.account]["aws"]
        policy = AWSManagedPolicy.from_data(name, self.account, self.region, data)
        backend.aws_managed_policies.append(policy)
        backend.managed_policies[policy.arn] = policy

    def _oidc_provider(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        p = resolver.resolve(props)
        create: dict[str, Any] = {"Url": p["Url"], "ClientIDList": p.get("ClientIdList", [])}
        if "ThumbprintList" in p:
            create["ThumbprintList"] = p["ThumbprintList"]
        if "Tags" in p:
            create["Tags"] = p["Tags"]
        arn = self.client("iam").create_open_id_connect_provider(**create)["OpenIDConnectProviderArn"]
        resolver.refs[logical_id] = arn
        resolver.attributes[(logical_id, "Arn")] = arn

    def _event_bus(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        name = resolver.resolve(props["Name"])
        arn = self.client("events").create_event_bus(Name=name)["EventBusArn"]
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = arn
        resolver.attributes[(logical_id, "Name")] = name

    def _event_bus_policy(self, _: str, props: dict[str, Any], resolver: Resolver, __: dict[str, Any]) -> None:
        # Stored on the bus as PutPermission does; the sandbox evaluates no resource policy (see iam.py).
        p = resolver.resolve(props)
        statement = {"Sid": p["StatementId"], **p["Statement"]}
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        self.client("events").put_permission(EventBusName=p["EventBusName"], Policy=json.dumps(policy))

    def _execution_role(
        self, logical_id: str, resource: dict[str, Any], resolver: Resolver, globals_: dict[str, Any]
    ) -> str:
        """The role SAM makes for a function or state machine (sandbox.sam_roles), created in IAM; its ARN."""
        role_id = role_logical_id(logical_id)
        role = execution_role(logical_id, resource, globals_)
        self._iam_role(role_id, role["Properties"], resolver, globals_)
        return resolver.get_att(role_id, "Arn")

    def _function(self, logical_id: str, props: dict[str, Any], resolver: Resolver, globals_: dict[str, Any]) -> None:
        merged = {**globals_.get("Function", {}), **props}
        variables = {
            **globals_.get("Function", {}).get("Environment", {}).get("Variables", {}),
            **props.get("Environment", {}).get("Variables", {}),
        }
        name = resolver.resolve(merged.get("FunctionName", self._name(logical_id)))
        arn = self._arn("lambda", f"function:{name}")
        # Registered before its variables resolve, so functions can refer to each other.
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = arn
        environment = {k: cfn_string(v) for k, v in resolver.resolve(variables).items()}
        # SAM adds a function's own Layers to the Globals' ones.
        declared = [*globals_.get("Function", {}).get("Layers", []), *props.get("Layers", [])]
        layers = [resolver.resolve(layer) for layer in declared]
        role_arn = self._execution_role(logical_id, {"Type": FUNCTION, "Properties": props}, resolver, globals_)
        lambda_ = self.client("lambda")
        create: dict[str, Any] = {
            "FunctionName": name,
            "Runtime": merged["Runtime"],
            "Role": role_arn,
            "Handler": merged["Handler"],
            "Code": {"ZipFile": _placeholder_zip()},
            "Timeout": int(merged.get("Timeout", 3)),
            "MemorySize": int(merged.get("MemorySize", 128)),
            "Environment": {"Variables": environment},
        }
        if "Description" in merged:
            create["Description"] = resolver.resolve(merged["Description"])
        if "Architectures" in merged:
            create["Architectures"] = resolver.resolve(merged["Architectures"])
        if "Tracing" in merged:
            create["TracingConfig"] = {"Mode": resolver.resolve(merged["Tracing"])}
        if "LoggingConfig" in merged:
            # Accepted and dropped by moto 5.2.5; the sandbox's functions log to files (Sandbox.log_dir).
            create["LoggingConfig"] = resolver.resolve(merged["LoggingConfig"])
        lambda_.create_function(**create)
        if "EventInvokeConfig" in merged:
            self._event_invoke_config(logical_id, name, resolver.resolve(merged["EventInvokeConfig"]))
        # The code directory is read when the function is first invoked (as Lambda unpacks its package
        # on a cold start), so a function whose code is not written yet installs and fails only when run.
        self.runtime.register(
            FunctionConfig(
                name=name,
                arn=arn,
                handler=merged["Handler"],
                code_dir=self.repo / resolver.resolve(merged["CodeUri"]),
                layer_dirs=tuple(self.layer_dirs[layer] for layer in layers),
                environment=environment,
                timeout_seconds=int(merged.get("Timeout", 3)),
                memory_mb=int(merged.get("MemorySize", 128)),
                role_arn=role_arn,
            )
        )

    def _event_invoke_config(self, logical_id: str, function_name: str, config: dict[str, Any]) -> None:
        """Asynchronous invocation settings, put in moto's Lambda; sandbox.eventbridge_delivery reads them there."""
        params: dict[str, Any] = {"FunctionName": function_name}
        for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
            if key in config:
                params[key] = config[key]
        destinations = {}
        for kind, destination in config.get("DestinationConfig", {}).items():
            if "Destination" not in destination:
                raise TemplateError(f"{logical_id}: give {kind} a Destination (SAM-created queues are not installed)")
            destinations[kind] = {"Destination": destination["Destination"]}  # SAM's Type is not the API's
        if destinations:
            params["DestinationConfig"] = destinations
        lambda_ = self.client("lambda")
        lambda_.put_function_event_invoke_config(**_api_params(lambda_, "PutFunctionEventInvokeConfig", params))

    def _state_machine(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        definition = (self.repo / props["DefinitionUri"]).read_text()
        substitutions = resolver.resolve(props.get("DefinitionSubstitutions", {}))

        def substitute(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in substitutions:
                raise TemplateError(f"{props['DefinitionUri']}: ${{{key}}} has no DefinitionSubstitutions entry")
            return str(substitutions[key])

        definition = re.sub(r"\$\{([A-Za-z0-9_]+)\}", substitute, definition)
        name = resolver.resolve(props.get("Name", self._name(logical_id)))
        create: dict[str, Any] = {
            "name": name,
            "definition": definition,
            "roleArn": self._execution_role(logical_id, {"Type": STATE_MACHINE, "Properties": props}, resolver, {}),
            "type": props.get("Type", "STANDARD"),
        }
        if "Logging" in props:
            # Kept as configured; moto 5.2.5's interpreter writes no execution logs to the group.
            logging_ = resolver.resolve(props["Logging"])
            create["loggingConfiguration"] = {
                "level": logging_.get("Level", "OFF"),
                "includeExecutionData": cfn_string(logging_.get("IncludeExecutionData", False)) == "true",
                "destinations": [
                    {"cloudWatchLogsLogGroup": {"logGroupArn": d["CloudWatchLogsLogGroup"]["LogGroupArn"]}}
                    for d in logging_.get("Destinations", [])
                ],
            }
        if "Tracing" in props:
            # Kept as configured; no X-Ray runs in the sandbox.
            enabled = resolver.resolve(props["Tracing"]).get("Enabled", False)
            create["tracingConfiguration"] = {"enabled": cfn_string(enabled) == "true"}
        arn = self.client("stepfunctions").create_state_machine(**create)["stateMachineArn"]
        resolver.refs[logical_id] = arn
        resolver.attributes[(logical_id, "Arn")] = arn
        resolver.attributes[(logical_id, "Name")] = name

    def _stack_template(self, installed: bool, outputs: dict[str, str]) -> str:
        template: dict[str, Any] = {
            "Description": "Outputs of the sandbox's installation of template.yaml",
            "Resources": {
                "Installed": {
                    "Type": "AWS::SSM::Parameter",
                    "Properties": {
                        "Name": INSTALLED_PARAMETER.format(stack=self.stack_name),
                        "Type": "String",
                        "Value": cfn_string(installed),
                    },
                }
            },
        }
        if outputs:
            template["Outputs"] = {name: {"Value": value} for name, value in outputs.items()}
        return json.dumps(template)

    def _create_stack(self) -> str:
        cloudformation = self.client("cloudformation")
        created = cloudformation.create_stack(StackName=self.stack_name, TemplateBody=self._stack_template(False, {}))
        return str(created["StackId"])

    def _publish_outputs(self, outputs: dict[str, str]) -> None:
        self.client("cloudformation").update_stack(
            StackName=self.stack_name, TemplateBody=self._stack_template(True, outputs)
        )
