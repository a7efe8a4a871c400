"""Installs ``template.yaml`` into the sandbox, as ``sam deploy`` would but without containers.

Each resource type the template uses is created in moto with the properties the
template gives it; functions are also registered with the sandbox's Lambda runtime so
invoking them runs their real code. The template's Outputs are published as a
CloudFormation stack of the same name, so clients discover the stack the same way on
AWS and in the sandbox (``describe_stacks``).
"""

from __future__ import annotations

import io
import json
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
from sandbox.template import Resolver, TemplateError, cfn_string, load_template

LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
STATES_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
# Installed in this order, so a resource's Ref/GetAtt targets exist before it.
ORDER = [
    "AWS::Serverless::LayerVersion",
    "AWS::SecretsManager::Secret",
    "AWS::Serverless::Api",
    "AWS::DynamoDB::Table",
    "AWS::S3::Bucket",
    "AWS::S3::BucketPolicy",
    "AWS::Events::EventBus",
    "AWS::Serverless::Function",
    "AWS::Serverless::StateMachine",
]


def _placeholder_zip() -> bytes:
    """moto wants a code package; the code that runs is the repo's, via the runtime."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "Runs from the repository in the sandbox's Lambda runtime.\n")
    return buffer.getvalue()


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

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint, region_name=self.region)  # type: ignore[call-overload]

    def install(self) -> dict[str, str]:
        """Create every resource; returns the stack's outputs."""
        template = load_template(self.repo / "template.yaml")
        resolver = Resolver(template, self.stack_name, self.region, self.account, dict(self.parameters))
        resources = template["Resources"]
        unknown = sorted({r["Type"] for r in resources.values()} - set(ORDER))
        if unknown:
            raise TemplateError(f"the sandbox cannot install resource types {unknown}")
        installers: dict[str, Callable[[str, dict[str, Any], Resolver, dict[str, Any]], None]] = {
            "AWS::Serverless::LayerVersion": self._layer,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::Serverless::Api": self._api,
            "AWS::DynamoDB::Table": self._table,
            "AWS::S3::Bucket": self._bucket,
            "AWS::S3::BucketPolicy": self._bucket_policy,
            "AWS::Events::EventBus": self._event_bus,
            "AWS::Serverless::Function": self._function,
            "AWS::Serverless::StateMachine": self._state_machine,
        }
        globals_ = template.get("Globals", {})
        for resource_type in ORDER:
            for logical_id, resource in resources.items():
                if resource["Type"] == resource_type:
                    installers[resource_type](logical_id, resource.get("Properties", {}), resolver, globals_)
        outputs = {name: str(resolver.resolve(o["Value"])) for name, o in template.get("Outputs", {}).items()}
        outputs.update(self.output_overrides)
        self._publish_outputs(outputs)
        return outputs

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
        resolver.refs[logical_id] = f"sandbox{logical_id.lower()}"
        self.api_authorizers[logical_id] = props.get("Auth", {}).get("DefaultAuthorizer", "NONE")

    def _routes(self, function: str, events: dict[str, Any]) -> None:
        for event in events.values():
            if event["Type"] != "Api":
                raise TemplateError(f"the sandbox cannot deliver {event['Type']} events to {function}")
            p = event["Properties"]
            api = p.get("RestApiId", {}).get("Ref", "ServerlessRestApi")
            authorizer = p.get("Auth", {}).get("Authorizer", self.api_authorizers.get(api, "NONE"))
            assert self.api is not None, "a template with API routes needs the sandbox's API Gateway"
            self.api.add_route(Route(p["Method"].upper(), p["Path"], function, authorizer))

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
        document = p["PolicyDocument"]
        # The sandbox speaks plain HTTP on loopback, and moto enforces aws:SecureTransport,
        # so a deny-without-TLS statement would deny everything here; it alone is left out.
        statements = [
            s for s in document["Statement"] if "aws:SecureTransport" not in json.dumps(s.get("Condition", {}))
        ]
        if statements:
            policy = json.dumps({**document, "Statement": statements})
            self.client("s3").put_bucket_policy(Bucket=p["Bucket"], Policy=policy)

    def _event_bus(self, logical_id: str, props: dict[str, Any], resolver: Resolver, _: dict[str, Any]) -> None:
        name = resolver.resolve(props["Name"])
        arn = self.client("events").create_event_bus(Name=name)["EventBusArn"]
        resolver.refs[logical_id] = name
        resolver.attributes[(logical_id, "Arn")] = arn

    def _role(self, logical_id: str, trust: dict[str, Any]) -> str:
        role = self.client("iam").create_role(
            RoleName=self._name(f"{logical_id}Role")[:64], AssumeRolePolicyDocument=json.dumps(trust)
        )
        return str(role["Role"]["Arn"])

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
        self.client("lambda").create_function(
            FunctionName=name,
            Runtime=merged["Runtime"],
            Role=self._role(logical_id, LAMBDA_TRUST),
            Handler=merged["Handler"],
            Code={"ZipFile": _placeholder_zip()},
            Timeout=int(merged.get("Timeout", 3)),
            MemorySize=int(merged.get("MemorySize", 128)),
            Environment={"Variables": environment},
        )
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
            )
        )
        self._routes(name, props.get("Events", {}))

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
        arn = self.client("stepfunctions").create_state_machine(
            name=name,
            definition=definition,
            roleArn=self._role(logical_id, STATES_TRUST),
            type=props.get("Type", "STANDARD"),
        )["stateMachineArn"]
        resolver.refs[logical_id] = arn
        resolver.attributes[(logical_id, "Name")] = name

    def _publish_outputs(self, outputs: dict[str, str]) -> None:
        template = {
            "Description": "Outputs of the sandbox's installation of template.yaml",
            "Resources": {
                "Installed": {
                    "Type": "AWS::SSM::Parameter",
                    "Properties": {"Name": f"/{self.stack_name}/sandbox-installed", "Type": "String", "Value": "true"},
                }
            },
            "Outputs": {name: {"Value": value} for name, value in outputs.items()},
        }
        self.client("cloudformation").create_stack(StackName=self.stack_name, TemplateBody=json.dumps(template))
