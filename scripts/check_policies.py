"""Lint every IAM policy the project defines with parliament (duo-labs), after resolving intrinsics.

What is linted:

1. The execution role SAM makes for every ``AWS::Serverless::Function`` and
   ``AWS::Serverless::StateMachine`` of ``template.yaml`` (``sandbox.sam_roles.execution_role``):
   its inline policies (``Policies``, policy templates expanded, EventInvokeConfig destinations)
   and its trust policy.
2. Every ``AWS::IAM::Role`` of ``template.yaml`` and ``target-account/deployment-role.yaml``: its
   inline ``Policies`` (identity policies) and its ``AssumeRolePolicyDocument`` (trust policy),
   and the ``PolicyDocument`` of any ``AWS::IAM::ManagedPolicy`` or ``AWS::IAM::Policy``.
3. The resource policies (``AWS::S3::BucketPolicy``, ``AWS::SQS::QueuePolicy``,
   ``AWS::SNS::TopicPolicy``, ``AWS::SecretsManager::ResourcePolicy``): parliament checks their
   ``Principal`` as well as actions, resources and conditions.

Managed policies attached by ARN that are AWS's (``arn:aws:iam::aws:policy/...``, e.g. SAM's
``AWSLambdaBasicExecutionRole`` and ``AWSXrayWriteOnlyAccess``) are AWS's to get right, not ours:
they are skipped and counted. Any other managed policy must be one the template defines, which is
linted as a resource of its own; an ARN that is neither is an error (we could not lint it).

Trust policies: parliament reads a statement with a ``Principal`` as a resource-policy statement,
but insists on a ``Resource`` element (without one it reports MALFORMED and checks nothing
else), which a trust policy never has. A trust policy is the role's own resource policy, so each of
its statements gets the role's ARN as ``Resource`` before linting: parliament then checks the
actions (sts:AssumeRole, ...), the principals and the conditions as it does for any resource policy.

Intrinsics are resolved with ``sandbox.template.Resolver``, as the sandbox installs the stack, but
with no installed resources: every resource gets a plausible physical id and the attributes it has
(an ARN in the form AWS gives it, from its type and its declared name, else ``<stack>-<LogicalId>``).
Parameters take their defaults, except those that switch optional parts on: ``GitHubRepository``
and ``AlarmEmail`` get example values, so every condition of ``template.yaml`` holds and the
``Fn::If`` in the CI role's trust policy takes the branch of the OIDC provider the stack creates
(the other branch is the same kind of ARN, given as a parameter). Every role is linted whatever its
``Condition``: a role a condition leaves out today (``GitHubCiRole``) is still ours to get right.

Output: one line per finding, ``file: RoleOrResource/PolicyName: ISSUE_KEY severity: detail``, and a
summary. Exit 1 if a finding is not in ``REVIEWED`` or a ``REVIEWED`` entry matches no finding any
more (a stale exception hides the next real one); else 0.

parliament runs its own auditors only, as its CLI does by default. Its community auditors are left
out: here they only flag what the design needs (CREDENTIALS_EXPOSURE for every sts:AssumeRole,
trust policies included; PERMISSIONS_MANAGEMENT_ACTIONS for the deployment role's IAM actions and the
state machine's log delivery), with no detail to key a review by.

Why there are reviewed exceptions (``REVIEWED``), each for a reason parliament cannot see:

- NO_VERSION: SAM writes its policy templates and EventInvokeConfig destination policies itself,
  without ``Version`` (ours all name 2012-10-17). IAM then reads them as 2008-10-17, which differs
  from 2012-10-17 only in policy variables (``${aws:...}``), and none of them has any.
- RESOURCE_MISMATCH for states:DescribeExecution: parliament wants every resource type an action
  can take (execution and express executions); the state machine is STANDARD, so only the first.
- The CI role's trust policy: parliament knows neither IAM OIDC providers (GitHub's) nor their
  claim keys (``token.actions.githubusercontent.com:aud``/``:sub``).

Each entry is keyed by issue, policy and the action/resource/principal it is about, never by issue
alone, and says in one line why the finding does not call for a change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sandbox.sam_roles import FUNCTION, STATE_MACHINE, execution_role, role_logical_id
from sandbox.template import Resolver, TemplateError, load_template

with warnings.catch_warnings():
    # parliament 1.6.4 imports the deprecated pkg_resources and has invalid escapes in its regex strings.
    warnings.simplefilter("ignore", SyntaxWarning)
    warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
    import parliament  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parent.parent
REGION = "af-south-1"
STACK_UUID = "6f1c2d3e-4a5b-11ef-8c9d-0a1b2c3d4e5f"
AWS_MANAGED = re.compile(r"^arn:[^:]+:iam::aws:policy/")
Kind = Literal["identity", "trust", "resource"]
# Resource policies: their type and the property that holds the document.
RESOURCE_POLICIES = {
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::SecretsManager::ResourcePolicy": "ResourcePolicy",
}
IDENTITY_POLICIES = ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy")
# The property that names a resource, per type (its physical id is derived from it when it resolves).
NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::Serverless::StateMachine": "Name",
    "AWS::Serverless::LayerVersion": "LayerName",
    "AWS::Serverless::Api": "Name",
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Events::EventBus": "Name",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::CloudWatch::Dashboard": "DashboardName",
}


@dataclass(frozen=True)
class Source:
    """A template, and the stack, account and parameters it is linted as."""

    path: str
    stack_name: str
    account: str
    parameters: dict[str, str] = field(default_factory=dict)


SOURCES = (
    Source(
        "template.yaml",
        "bbws-deployer",
        "123456789012",
        # Switch the optional parts on (HasCiRole, CreateOidcProvider, HasAlarmEmail): see the docstring.
        {"GitHubRepository": "example-org/bbws-deployer", "AlarmEmail": "alarms@example.com"},
    ),
    Source(
        "target-account/deployment-role.yaml",
        "bbws-deployer-role",
        "536580886816",
        {"ToolingAccountId": "123456789012"},
    ),
)


@dataclass(frozen=True)
class LintedPolicy:
    """One policy document, resolved, and where it comes from."""

    file: str
    owner: str  # the role's or resource's logical id
    name: str  # the inline policy's name, AssumeRolePolicyDocument, or the property holding the document
    kind: Kind
    document: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.file}: {self.owner}/{self.name}"


@dataclass(frozen=True)
class Finding:
    policy: str  # LintedPolicy.label
    issue: str
    severity: str
    subject: str  # the action, resource, principal or condition it is about: what REVIEWED is keyed by
    detail: str

    def line(self) -> str:
        return f"{self.policy}: {self.issue} {self.severity}: {self.detail}"


@dataclass(frozen=True)
class Reviewed:
    """A finding checked by a person and kept: parliament is wrong here, or the policy is right as written."""

    issue: str
    policy: str  # LintedPolicy.label
    subject: str
    reason: str

    def covers(self, finding: Finding) -> bool:
        return (self.issue, self.policy, self.subject) == (finding.issue, finding.policy, finding.subject)


_STATE_MACHINE_ROLE = "template.yaml: DeploymentStateMachineRole/DeploymentStateMachineRolePolicy"
# CI's roles, one per GitHub environment.
_CI_TRUSTS = tuple(f"template.yaml: GitHubCi{env}Role/AssumeRolePolicyDocument" for env in ("Dev", "Sit", "Prod"))
_GITHUB = "token.actions.githubusercontent.com"

REVIEWED: tuple[Reviewed, ...] = (
    # What SAM writes itself: its policy templates' documents and the destination policy have no Version.
    *(
        Reviewed(
            "NO_VERSION",
            f"{_STATE_MACHINE_ROLE}{index}",
            "",
            "SAM's LambdaInvokePolicy/EventBridgePutEventsPolicy template has no Version element and no variables.",
        )
        for index in range(1, 19)  # Policies 1-17: LambdaInvokePolicy; 18: EventBridgePutEventsPolicy
    ),
    Reviewed(
        "NO_VERSION",
        "template.yaml: NotifyFunctionRole/NotifyFunctionEventInvokeConfigOnFailureSQSPolicy",
        "",
        "SAM writes the EventInvokeConfig destination policy itself, without Version (and without variables).",
    ),
    Reviewed(
        "NO_VERSION",
        "template.yaml: CloseStoppedFunctionRole/CloseStoppedFunctionEventInvokeConfigOnFailureSQSPolicy",
        "",
        "SAM writes the EventInvokeConfig destination policy itself, without Version (and without variables).",
    ),
    Reviewed(
        "RESOURCE_MISMATCH",
        "template.yaml: DeploymentsApiFunctionRole/DeploymentsApiFunctionRolePolicy0",
        "states:DescribeExecution",
        "The state machine is STANDARD: its executions have execution ARNs, never the express ones parliament wants.",
    ),
    *(
        Reviewed(
            "UNKNOWN_FEDERATION_SOURCE",
            trust,
            f"arn:aws:iam::123456789012:oidc-provider/{_GITHUB}",
            "GitHub Actions' IAM OIDC provider; parliament knows SAML providers and four fixed web identities only.",
        )
        for trust in _CI_TRUSTS
    ),
    *(
        Reviewed(
            "UNKNOWN_CONDITION_FOR_ACTION",
            trust,
            f"sts:AssumeRoleWithWebIdentity {_GITHUB}:{key}",
            "The OIDC provider's claim keys (aud, sub) scope GitHub's tokens; parliament lists no OIDC provider keys.",
        )
        for trust in _CI_TRUSTS
        for key in ("aud", "sub")
    ),
)


# --- plausible physical ids ---------------------------------------------------------------------


def _api_id(logical_id: str) -> str:
    """A REST API id as API Gateway makes them (10 lowercase letters and digits), fixed per logical id."""
    return hashlib.sha256(logical_id.encode()).hexdigest()[:10]


def physical_values(  # noqa: PLR0911, PLR0912 - one case per resource type
    kind: str, logical_id: str, *, name: str, region: str, account: str, props: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """What ``Ref`` returns for a resource of this type, and its ``Fn::GetAtt`` attributes."""

    def arn(service: str, resource: str, in_region: bool = True) -> str:
        return f"arn:aws:{service}:{region if in_region else ''}:{account}:{resource}"

    match kind:
        case "AWS::DynamoDB::Table":
            table = arn("dynamodb", f"table/{name}")
            return name, {"Arn": table, "StreamArn": f"{table}/stream/2024-01-01T00:00:00.000"}
        case "AWS::S3::Bucket":
            return name, {
                "Arn": f"arn:aws:s3:::{name}",
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{region}.amazonaws.com",
            }
        case "AWS::SQS::Queue":
            url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
            return url, {"Arn": arn("sqs", name), "QueueName": name, "QueueUrl": url}
        case "AWS::SNS::Topic":
            topic = arn("sns", name)
            return topic, {"TopicArn": topic, "TopicName": name}
        case "AWS::SNS::Subscription":
            return f"{arn('sns', name)}:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", {}
        case "AWS::SecretsManager::Secret":
            # Secrets Manager appends six random characters to the name.
            return arn("secretsmanager", f"secret:{name}-AbCdEf"), {
                "Id": arn("secretsmanager", f"secret:{name}-AbCdEf")
            }
        case "AWS::Serverless::Function":
            return name, {"Arn": arn("lambda", f"function:{name}")}
        case "AWS::Serverless::StateMachine":
            machine = arn("states", f"stateMachine:{name}")
            return machine, {"Arn": machine, "Name": name}
        case "AWS::Serverless::LayerVersion":
            return arn("lambda", f"layer:{name}:1"), {}
        case "AWS::Serverless::Api":
            api = _api_id(logical_id)
            return api, {"RootResourceId": hashlib.sha256(api.encode()).hexdigest()[:10]}
        case "AWS::IAM::Role":
            return name, {"Arn": arn("iam", f"role/{name}", in_region=False), "RoleId": f"AROA{_api_id(name).upper()}"}
        case "AWS::IAM::ManagedPolicy":
            policy = arn("iam", f"policy/{name}", in_region=False)
            return policy, {"PolicyArn": policy}
        case "AWS::IAM::OIDCProvider":
            provider = arn("iam", f"oidc-provider/{str(props['Url']).removeprefix('https://')}", in_region=False)
            return provider, {"Arn": provider}
        case "AWS::Logs::LogGroup":
            return name, {"Arn": arn("logs", f"log-group:{name}:*")}
        case "AWS::Events::EventBus":
            return name, {"Arn": arn("events", f"event-bus/{name}"), "Name": name}
        case "AWS::CloudWatch::Alarm":
            return name, {"Arn": arn("cloudwatch", f"alarm:{name}")}
        case "AWS::WAFv2::WebACL":
            acl = arn("wafv2", f"regional/webacl/{name}/{_api_id(name)}")
            return f"{name}|{_api_id(name)}|REGIONAL", {"Arn": acl, "Id": _api_id(name)}
        case (
            "AWS::CloudWatch::Dashboard"
            | "AWS::ApiGateway::Account"
            | "AWS::S3::BucketPolicy"
            | "AWS::SQS::QueuePolicy"
            | "AWS::SNS::TopicPolicy"
            | "AWS::SecretsManager::ResourcePolicy"
            | "AWS::IAM::Policy"
            | "AWS::Events::EventBusPolicy"
            | "AWS::WAFv2::WebACLAssociation"
            | "AWS::WAFv2::LoggingConfiguration"
        ):
            return name, {}
    raise TemplateError(f"{logical_id}: no plausible values for {kind}; add the type to physical_values")


def resolver_for(template: dict[str, Any], source: Source) -> Resolver:
    """A Resolver that knows a plausible physical id and attributes for every resource of the template."""
    stack_id = f"arn:aws:cloudformation:{REGION}:{source.account}:stack/{source.stack_name}/{STACK_UUID}"

    def new_resolver() -> Resolver:
        return Resolver(template, source.stack_name, REGION, source.account, dict(source.parameters), stack_id=stack_id)

    names, resolver = new_resolver(), new_resolver()  # names: for name properties, which refer to no resource

    def add(logical_id: str, kind: str, name: str, props: dict[str, Any]) -> None:
        ref, attributes = physical_values(
            kind, logical_id, name=name, region=REGION, account=source.account, props=props
        )
        resolver.refs[logical_id] = ref
        resolver.attributes.update({(logical_id, attribute): value for attribute, value in attributes.items()})

    for logical_id, resource in template["Resources"].items():
        kind, props = resource["Type"], resource.get("Properties", {})
        name = f"{source.stack_name}-{logical_id}"
        if NAME_PROPERTY.get(kind) in props:
            with contextlib.suppress(TemplateError):  # named after another resource: keep the generated name
                name = str(names.resolve(props[NAME_PROPERTY[kind]]))
        add(logical_id, kind, name, props)
        if kind in (FUNCTION, STATE_MACHINE):
            # The execution role SAM adds, which a template may name (!GetAtt <Id>Role.Arn).
            role = role_logical_id(logical_id)
            add(role, "AWS::IAM::Role", f"{source.stack_name}-{role}"[:64], {})
    return resolver


# --- the policies -------------------------------------------------------------------------------


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = document.get("Statement", [])
    return found if isinstance(found, list) else [found]


def _trust_as_resource_policy(document: dict[str, Any], role_arn: str) -> dict[str, Any]:
    """The trust policy with the role itself as each statement's Resource (see the module docstring)."""
    return {
        **document,
        "Statement": [
            s if "Resource" in s or "NotResource" in s else {**s, "Resource": role_arn} for s in statements(document)
        ],
    }


def _role_policies(
    file: str, logical_id: str, role: dict[str, Any], resolver: Resolver, managed_here: set[str]
) -> tuple[list[LintedPolicy], list[str]]:
    props = resolver.resolve(role.get("Properties", {}))
    policies = [
        LintedPolicy(file, logical_id, str(p["PolicyName"]), "identity", p["PolicyDocument"])
        for p in props.get("Policies", [])
    ]
    role_arn = resolver.get_att(logical_id, "Arn")
    policies.append(
        LintedPolicy(
            file,
            logical_id,
            "AssumeRolePolicyDocument",
            "trust",
            _trust_as_resource_policy(props["AssumeRolePolicyDocument"], role_arn),
        )
    )
    skipped = []
    for arn in props.get("ManagedPolicyArns", []):
        if AWS_MANAGED.match(arn):
            skipped.append(f"{file}: {logical_id}/{arn}")
        elif arn not in managed_here:
            raise TemplateError(f"{file}: {logical_id} attaches {arn}, which is neither AWS's nor defined here")
    return policies, skipped


def policies_of(source: Source, repo: Path = REPO) -> tuple[list[LintedPolicy], list[str]]:
    """The resolved policies of one template, and the AWS managed policies its roles attach (skipped)."""
    template = load_template(repo / source.path)
    resolver = resolver_for(template, source)
    resources: dict[str, Any] = template["Resources"]
    globals_ = template.get("Globals", {})
    managed_here = {resolver.refs[lid] for lid, r in resources.items() if r["Type"] == "AWS::IAM::ManagedPolicy"}
    policies: list[LintedPolicy] = []
    skipped: list[str] = []
    for logical_id, resource in resources.items():
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind in (FUNCTION, STATE_MACHINE):
            role = execution_role(logical_id, resource, globals_)
            found, aws = _role_policies(source.path, role_logical_id(logical_id), role, resolver, managed_here)
        elif kind == "AWS::IAM::Role":
            found, aws = _role_policies(source.path, logical_id, resource, resolver, managed_here)
        elif kind in IDENTITY_POLICIES:
            name = "PolicyDocument"
            found, aws = [LintedPolicy(source.path, logical_id, name, "identity", resolver.resolve(props[name]))], []
        elif kind in RESOURCE_POLICIES:
            name = RESOURCE_POLICIES[kind]
            found, aws = [LintedPolicy(source.path, logical_id, name, "resource", resolver.resolve(props[name]))], []
        else:
            continue
        policies += found
        skipped += aws
    return policies, skipped


def collect_policies(repo: Path = REPO) -> tuple[list[LintedPolicy], list[str]]:
    policies: list[LintedPolicy] = []
    skipped: list[str] = []
    for source in SOURCES:
        found, aws = policies_of(source, repo)
        policies += found
        skipped += aws
    return policies, skipped


# --- linting ------------------------------------------------------------------------------------

_UNKNOWN_CONDITION = re.compile(r"^Unknown condition (\S+) for action (\S+)$")


def _ours(policy: LintedPolicy, finding: Any, statement: dict[str, Any] | None, where: str) -> list[Finding]:
    """parliament's finding as ours: one per action when it names several, each with the subject it is about."""
    parliament.enhance_finding(finding)  # its severity and title, from parliament's config.yaml
    issue, severity, detail, title = str(finding.issue), str(finding.severity), finding.detail, str(finding.title)
    resources = json.dumps((statement or {}).get("Resource"))

    def make(subject: str, text: str) -> Finding:
        return Finding(policy.label, issue, severity, subject, where + text)

    if issue == "RESOURCE_STAR" and isinstance(detail, list):
        return [make(str(action), f'{action} on Resource "*", which it can be scoped below') for action in detail]
    if issue == "RESOURCE_MISMATCH" and isinstance(detail, list):
        return [
            make(
                str(item["action"]),
                f"{item['action']} on {resources} never applies: it takes {item['required_format']}",
            )
            for item in detail
        ]
    if issue == "UNKNOWN_CONDITION_FOR_ACTION" and (match := _UNKNOWN_CONDITION.match(str(detail))):
        return [make(f"{match.group(2)} {match.group(1)}", str(detail))]
    if issue == "RESOURCE_EFFECTIVELY_STAR":
        return [make(resources, f"{title.strip()}: {resources}")]
    # Otherwise the subject is the string parliament points at (an action, a principal), else its detail.
    located = finding.location.get("string") if isinstance(finding.location, dict) else None
    subject = located if isinstance(located, str) else str(detail or "")
    text = str(detail) if detail else title.strip()
    return [make(subject, text if subject in text else f"{text}: {subject}")]


def lint(policy: LintedPolicy) -> list[Finding]:
    """parliament's findings for one policy, from its own auditors (neither private nor community ones)."""
    analysed = parliament.analyze_policy_string(
        json.dumps(policy.document), filepath=policy.label, ignore_private_auditors=True
    )
    documents = statements(policy.document)
    found: list[Finding] = []
    of_statements: set[int] = set()
    for index, statement in enumerate(analysed.statements):
        document = documents[index] if index < len(documents) and isinstance(documents[index], dict) else None
        sid = document.get("Sid") if document else None
        for finding in statement.findings:
            of_statements.add(id(finding))
            found += _ours(policy, finding, document, f"statement {sid or f'#{index + 1}'}: ")
    for finding in analysed.findings:
        if id(finding) not in of_statements:  # about the policy as a whole (Version, duplicate Sids, ...)
            found += _ours(policy, finding, None, "")
    return found


def report(findings: Iterable[Finding], reviewed: Iterable[Reviewed]) -> tuple[int, list[str], str]:
    """The exit status (1 for an unreviewed finding or a stale review), the lines of findings and stale
    reviews, and the summary."""
    reviews = list(reviewed)
    used: set[Reviewed] = set()
    lines: list[str] = []
    new = 0
    for finding in sorted(findings, key=lambda f: (f.policy, f.issue, f.subject)):
        review = next((r for r in reviews if r.covers(finding)), None)
        if review is None:
            new += 1
            lines.append(finding.line())
        else:
            used.add(review)
            lines.append(f"{finding.line()}  (reviewed)")
    stale = [r for r in reviews if r not in used]
    lines += [
        f"stale reviewed exception, matches no finding (remove it): {r.issue} {r.policy} {r.subject}" for r in stale
    ]
    total = len(lines) - len(stale)
    summary = f"{total} findings: {total - new} reviewed, {new} new; {len(stale)} stale exceptions"
    return (1 if new or stale else 0), lines, summary


def main() -> int:
    try:
        policies, skipped = collect_policies()
    except TemplateError as error:  # a form this script cannot resolve: say which, rather than lint less
        print(f"check_policies: {error}", file=sys.stderr)
        return 1
    kinds = Counter(p.kind for p in policies)
    status, lines, summary = report([finding for policy in policies for finding in lint(policy)], REVIEWED)
    for line in lines:
        print(line)
    print(
        f"parliament {parliament.__version__}: {len(policies)} policies linted "
        f"({kinds['identity']} identity, {kinds['trust']} trust, {kinds['resource']} resource; "
        f"{len(skipped)} attachments of AWS managed policies skipped); {summary}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
