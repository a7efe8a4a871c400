"""The sandbox's CloudFormation subset (sandbox/template.py), without a server.

What the sandbox installs is only as right as these intrinsics: a wrong Ref or Sub
would give a function the wrong table name or the state machine a wrong Lambda ARN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.template import NO_VALUE, Resolver, TemplateError, _Loader, dependency_order, depends_on, load_template

REPO = Path(__file__).resolve().parents[2]
STACK = "my-stack"
REGION = "af-south-1"
ACCOUNT = "123456789012"


def _load(text: str) -> Any:
    """YAML with CloudFormation's short tags, as load_template reads a template."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass


def _resolver(template: dict[str, Any] | None = None, **parameters: str) -> Resolver:
    return Resolver(template or {"Resources": {}}, STACK, REGION, ACCOUNT, dict(parameters))


# --- short tags -----------------------------------------------------------------------------------


def test_short_tags_load_as_their_long_form() -> None:
    # GIVEN a template fragment written with short tags
    text = """
    getatt: !GetAtt Table.Arn
    nested_getatt: !GetAtt Db.Endpoint.Address
    getatt_list: !GetAtt [Table, Arn]
    ref: !Ref Bucket
    sub: !Sub ${AWS::StackName}-records
    sub_list: !Sub ["${Name}-x", {Name: !Ref Bucket}]
    join: !Join ["-", [a, !Ref Bucket]]
    select: !Select [1, !Split [",", "a,b,c"]]
    """
    # WHEN it is loaded
    data = _load(text)

    # THEN each tag became the intrinsic's long form, nested tags included
    assert data["getatt"] == {"Fn::GetAtt": ["Table", "Arn"]}
    assert data["nested_getatt"] == {"Fn::GetAtt": ["Db", "Endpoint.Address"]}
    assert data["getatt_list"] == {"Fn::GetAtt": ["Table", "Arn"]}
    assert data["ref"] == {"Ref": "Bucket"}
    assert data["sub"] == {"Fn::Sub": "${AWS::StackName}-records"}
    assert data["sub_list"] == {"Fn::Sub": ["${Name}-x", {"Name": {"Ref": "Bucket"}}]}
    assert data["join"] == {"Fn::Join": ["-", ["a", {"Ref": "Bucket"}]]}
    assert data["select"] == {"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]}


def test_an_unknown_short_tag_is_an_error() -> None:
    with pytest.raises(TemplateError, match="Bogus"):
        _load("value: !Bogus x")


def test_load_template_rejects_a_file_without_resources(tmp_path: Path) -> None:
    path = tmp_path / "not-a-template.yaml"
    path.write_text("Parameters: {}\n")
    with pytest.raises(TemplateError, match="not a CloudFormation template"):
        load_template(path)


# --- Ref and parameters ---------------------------------------------------------------------------

PARAMETERS = {
    "Parameters": {
        "Level": {"Type": "String", "Default": "INFO"},
        "Delay": {"Type": "Number", "Default": 5},
        "Attempts": {"Type": "Number", "Default": 60},
    },
    "Resources": {},
}


def test_ref_resolves_parameter_defaults_as_strings_and_overrides_win() -> None:
    # GIVEN parameters with defaults, one of them overridden
    resolver = _resolver(PARAMETERS, Attempts="50")

    # THEN a Ref gives the default, as a string as CloudFormation gives it, unless overridden
    assert resolver.resolve({"Ref": "Level"}) == "INFO"
    assert resolver.resolve({"Ref": "Delay"}) == "5"
    assert resolver.resolve({"Ref": "Attempts"}) == "50"


def test_ref_resolves_pseudo_parameters() -> None:
    resolver = _resolver()
    assert resolver.resolve({"Ref": "AWS::StackName"}) == STACK
    assert resolver.resolve({"Ref": "AWS::Region"}) == REGION
    assert resolver.resolve({"Ref": "AWS::AccountId"}) == ACCOUNT
    assert resolver.resolve({"Ref": "AWS::Partition"}) == "aws"
    assert resolver.resolve({"Ref": "AWS::URLSuffix"}) == "amazonaws.com"


def test_ref_resolves_a_registered_resource() -> None:
    # GIVEN a resource the installer has created and registered
    resolver = _resolver()
    resolver.refs["RecordsTable"] = "my-stack-records"

    # THEN a Ref to it gives its physical id, also deep inside properties
    resolved = resolver.resolve({"Variables": {"TABLE": {"Ref": "RecordsTable"}}, "List": [{"Ref": "RecordsTable"}]})
    assert resolved == {"Variables": {"TABLE": "my-stack-records"}, "List": ["my-stack-records"]}


def test_a_ref_to_an_unknown_name_is_an_error() -> None:
    with pytest.raises(TemplateError, match="NotCreatedYet"):
        _resolver().resolve({"Ref": "NotCreatedYet"})


def test_a_parameter_without_default_or_override_is_an_error() -> None:
    template = {"Parameters": {"ToolingAccountId": {"Type": "String"}}, "Resources": {}}

    with pytest.raises(TemplateError, match="ToolingAccountId"):
        _resolver(template)
    # An override is enough.
    assert _resolver(template, ToolingAccountId="111122223333").ref("ToolingAccountId") == "111122223333"


def test_a_boolean_parameter_default_resolves_as_cloudformation_gives_it() -> None:
    # GIVEN a parameter whose default YAML reads as a boolean
    template = _load("Parameters: {Enabled: {Type: String, Default: true}}\nResources: {}")

    # THEN its Ref is the string CloudFormation gives, "true"
    assert _resolver(template).ref("Enabled") == "true"


# --- GetAtt ---------------------------------------------------------------------------------------


def test_get_att_resolves_a_registered_attribute_in_both_forms() -> None:
    resolver = _resolver()
    resolver.attributes[("Fn", "Arn")] = "arn:aws:lambda:af-south-1:123456789012:function:fn"

    assert resolver.resolve({"Fn::GetAtt": ["Fn", "Arn"]}) == "arn:aws:lambda:af-south-1:123456789012:function:fn"
    assert resolver.resolve({"Fn::GetAtt": "Fn.Arn"}) == "arn:aws:lambda:af-south-1:123456789012:function:fn"


def test_get_att_of_an_unknown_attribute_is_an_error() -> None:
    resolver = _resolver()
    resolver.attributes[("Fn", "Arn")] = "arn"
    with pytest.raises(TemplateError, match=r"Fn\.Name"):
        resolver.resolve({"Fn::GetAtt": ["Fn", "Name"]})


# --- Sub ------------------------------------------------------------------------------------------


def test_sub_replaces_pseudo_parameters_parameters_refs_and_attributes() -> None:
    # GIVEN a parameter, a registered bucket and its Arn
    resolver = _resolver(PARAMETERS)
    resolver.refs["SpecsBucket"] = "specs"
    resolver.attributes[("SpecsBucket", "Arn")] = "arn:aws:s3:::specs"

    # WHEN Sub strings name them
    # THEN each ${...} is replaced by what it names
    assert resolver.resolve({"Fn::Sub": "${AWS::StackName}-specs-${AWS::AccountId}-${AWS::Region}"}) == (
        "my-stack-specs-123456789012-af-south-1"
    )
    assert resolver.resolve({"Fn::Sub": "${SpecsBucket.Arn}/environments/*"}) == "arn:aws:s3:::specs/environments/*"
    assert resolver.resolve({"Fn::Sub": "bucket=${SpecsBucket} level=${Level}"}) == "bucket=specs level=INFO"


def test_sub_keeps_an_escaped_literal() -> None:
    # ${!Name} is CloudFormation's escape for a literal ${Name}
    assert _resolver().resolve({"Fn::Sub": "${!Literal}-${AWS::Region}"}) == "${Literal}-af-south-1"


def test_sub_two_argument_form_uses_its_variables_first() -> None:
    # GIVEN Sub's list form, whose variables are themselves intrinsics
    resolver = _resolver()
    resolver.refs["Bus"] = "my-bus"
    value = _load('!Sub ["${Name}/${Region}/${AWS::StackName}", {Name: !Ref Bus, Region: eu-west-1}]')

    # THEN its variables resolve and win over the template's names; the rest resolve as usual
    assert resolver.resolve(value) == "my-bus/eu-west-1/my-stack"


def test_sub_of_an_unknown_name_is_an_error() -> None:
    with pytest.raises(TemplateError, match="Missing"):
        _resolver().resolve({"Fn::Sub": "${Missing}-x"})


# --- Join, Select, Split --------------------------------------------------------------------------


def test_join_select_and_split() -> None:
    resolver = _resolver()
    resolver.refs["Bus"] = "my-bus"

    assert resolver.resolve(_load('!Join [":", [a, !Ref Bus, !Ref "AWS::Region"]]')) == "a:my-bus:af-south-1"
    assert resolver.resolve(_load('!Split [",", "a,b,c"]')) == ["a", "b", "c"]
    assert resolver.resolve(_load('!Select [2, !Split [":", !Sub "x:y:${Bus}"]]')) == "my-bus"
    assert resolver.resolve(_load('!Select ["0", [first, second]]')) == "first"


# --- what the sandbox does not resolve ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "!FindInMap [Map, Key, Value]",
        "!ImportValue other-stack-output",
        "!Select [0, !GetAZs '']",
        "{Variables: {X: !Base64 abc}}",
    ],
)
def test_an_unsupported_intrinsic_is_an_error_never_passed_through(text: str) -> None:
    with pytest.raises(TemplateError, match="does not resolve Fn::"):
        _resolver().resolve(_load(text))


def test_condition_functions_are_errors_outside_conditions() -> None:
    # CloudFormation takes Fn::Equals and its kin only in Conditions (and Fn::If's first argument names one).
    with pytest.raises(TemplateError, match="does not resolve Fn::Equals"):
        _resolver().resolve(_load("{X: !Equals [a, a]}"))


# --- Conditions -----------------------------------------------------------------------------------

CONDITIONS = """
Parameters:
  AlarmEmail: {Type: String, Default: ""}
  Repository: {Type: String, Default: ""}
  ProviderArn: {Type: String, Default: ""}
  Stage: {Type: String, Default: dev}
  Replicas: {Type: Number, Default: 2}
Conditions:
  HasAlarmEmail: !Not [!Equals [!Ref AlarmEmail, ""]]
  HasCiRole: !Not [!Equals [!Ref Repository, ""]]
  CreateProvider: !And [!Condition HasCiRole, !Equals [!Ref ProviderArn, ""]]
  IsProdOrSit: !Or [!Equals [!Ref Stage, prod], !Equals [!Ref Stage, sit]]
  TwoReplicas: !Equals [2, !Ref Replicas]
  StageIsAccount: !Equals [!Sub "${Stage}", !Join ["", [d, e, v]]]
Resources: {}
"""


def test_conditions_evaluate_from_parameters_defaults_and_overrides() -> None:
    # GIVEN the template's conditions with every parameter at its default
    template = _load(CONDITIONS)
    defaults = _resolver(template)

    # THEN each condition has the value CloudFormation would give it
    assert defaults.conditions == {
        "HasAlarmEmail": False,
        "HasCiRole": False,
        "CreateProvider": False,
        "IsProdOrSit": False,
        "TwoReplicas": True,  # a number in the template equals the parameter's string "2"
        "StageIsAccount": True,  # Fn::Equals compares resolved values: Sub and Join included
    }

    # WHEN parameters are overridden THEN the conditions follow, Condition references included
    ci = _resolver(template, Repository="org/repo", Stage="prod")
    assert ci.condition("HasCiRole") is True
    assert ci.condition("CreateProvider") is True
    assert ci.condition("IsProdOrSit") is True
    existing = _resolver(template, Repository="org/repo", ProviderArn="arn:aws:iam::1:oidc-provider/x")
    assert existing.condition("HasCiRole") is True
    assert existing.condition("CreateProvider") is False


def test_fn_if_picks_a_branch_and_no_value_removes_the_property_or_item() -> None:
    # GIVEN a false and a true condition
    template = _load(CONDITIONS)
    resolver = _resolver(template, Repository="org/repo")
    resolver.refs["Provider"] = "arn:aws:iam::123456789012:oidc-provider/github"
    value = _load(
        """
        Federated: !If [CreateProvider, !Ref Provider, !Ref ProviderArn]
        Email: !If [HasAlarmEmail, !Ref AlarmEmail, !Ref "AWS::NoValue"]
        Actions: [a, !If [HasAlarmEmail, b, !Ref "AWS::NoValue"], c]
        Nested: {Keep: x, Drop: !Ref "AWS::NoValue"}
        """
    )

    # WHEN it resolves
    resolved = resolver.resolve(value)

    # THEN Fn::If took the true branch, and AWS::NoValue left out the property and the list item
    assert resolved == {
        "Federated": "arn:aws:iam::123456789012:oidc-provider/github",
        "Actions": ["a", "c"],
        "Nested": {"Keep": "x"},
    }
    assert resolver.resolve({"Ref": "AWS::NoValue"}) is NO_VALUE


def test_fn_if_resolves_only_its_taken_branch() -> None:
    # GIVEN an Fn::If whose untaken branch names a resource that is never created
    resolver = _resolver(_load(CONDITIONS))

    # THEN it resolves without that resource
    assert resolver.resolve(_load("!If [CreateProvider, !Ref NeverCreated, fallback]")) == "fallback"


def test_resources_and_outputs_with_a_false_condition_are_not_included() -> None:
    resolver = _resolver(_load(CONDITIONS))

    assert resolver.included({"Type": "AWS::IAM::Role"}) is True
    assert resolver.included({"Type": "AWS::IAM::Role", "Condition": "HasCiRole"}) is False
    assert resolver.included({"Value": "x", "Condition": "TwoReplicas"}) is True


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ("A: !Condition Missing", "Missing is not declared"),
        ("A: !Condition B\n  B: !Not [!Condition A]", "circular condition"),
        ("A: !Equals [a]", "Fn::Equals takes two values"),
        ("A: !Not [!Equals [a, a], !Equals [b, b]]", "Fn::Not takes one condition"),
        ("A: !And [!Equals [a, a]]", "Fn::And takes 2 to 10 conditions"),
        ("A: !Or [!Equals [a, a]]", "Fn::Or takes 2 to 10 conditions"),
        ("A: !Ref Stage", "is not a condition"),
        ("A: !Equals [!FindInMap [M, K, V], x]", "does not resolve Fn::FindInMap"),
    ],
)
def test_a_condition_that_cannot_be_evaluated_is_an_error_when_the_template_is_read(
    conditions: str, message: str
) -> None:
    template = _load(
        f"Parameters: {{Stage: {{Type: String, Default: dev}}}}\nConditions:\n  {conditions}\nResources: {{}}"
    )

    with pytest.raises(TemplateError, match=message):
        _resolver(template)


def test_fn_if_naming_an_undeclared_condition_is_an_error() -> None:
    with pytest.raises(TemplateError, match="IsProd is not declared"):
        _resolver().resolve(_load("!If [IsProd, a, b]"))


def test_stack_id_is_a_pseudo_parameter_once_known() -> None:
    with pytest.raises(TemplateError, match="AWS::StackId"):
        _resolver().ref("AWS::StackId")
    stack_id = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/0f6e2bd0"
    resolver = Resolver({"Resources": {}}, STACK, REGION, ACCOUNT, stack_id=stack_id)
    assert resolver.resolve({"Fn::Sub": "${AWS::StackId}"}) == stack_id


# --- dependencies and install order ---------------------------------------------------------------


def test_dependencies_are_the_resources_a_value_refers_to() -> None:
    # GIVEN properties that name resources in every form, plus parameters and pseudo parameters
    resolver = _resolver(_load(CONDITIONS), Repository="org/repo")
    value = _load(
        """
        A: !Ref Table
        B: !GetAtt Queue.Arn
        C: !GetAtt [Topic, TopicArn]
        D: !Sub "${Bucket.Arn}/x/${Api}/${AWS::Region}/${Stage}/${!Literal}"
        E: !Sub ["${Name}", {Name: !Ref Function}]
        F: [!Ref Stage, !Ref "AWS::AccountId"]
        G: !If [CreateProvider, !Ref Provider, !Ref ProviderArn]
        H: !If [HasAlarmEmail, !Ref NotTaken, plain]
        I: {Nested: [{Deep: !Sub "${Alarm.Arn}"}]}
        """
    )

    # THEN they are the resources it needs first: only Fn::If's taken branch counts
    assert resolver.dependencies(value) == {
        "Table",
        "Queue",
        "Topic",
        "Bucket",
        "Api",
        "Function",
        "Provider",
        "Alarm",
    }


def test_depends_on_in_both_forms() -> None:
    assert depends_on({"DependsOn": "A"}) == {"A"}
    assert depends_on({"DependsOn": ["A", "B"]}) == {"A", "B"}
    assert depends_on({}) == set()


def test_dependency_order_puts_what_is_needed_first_and_keeps_template_order_otherwise() -> None:
    # GIVEN resources in template order, some needing others declared after them
    graph = {
        "Function": {"Layer", "Table", "Role"},
        "Layer": set(),
        "StateMachine": {"Function", "LogGroup"},
        "Table": set(),
        "Rule": {"Function", "StateMachine"},
        "LogGroup": set(),
        "Role": {"ImplicitSamResource"},  # a name that is not a node is not waited for
    }

    # WHEN ordered
    order = dependency_order(graph)

    # THEN everything comes after what it needs, and independent ones keep their template order
    assert order == ["Layer", "Table", "LogGroup", "Role", "Function", "StateMachine", "Rule"]


def test_a_dependency_cycle_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"circular dependency between resources: \['A', 'B'\]"):
        dependency_order({"A": {"B"}, "B": {"A"}, "C": set()})


def test_the_repository_template_reads_and_orders() -> None:
    # GIVEN the real template, with its defaults
    template = load_template(REPO / "template.yaml")
    resolver = _resolver(template)

    # THEN its conditions evaluate, and an order exists for the resources it includes
    assert set(resolver.conditions) == set(template.get("Conditions", {}))
    included = {lid: r for lid, r in template["Resources"].items() if resolver.included(r)}
    # SAM function events become resources of their own (rules, permissions), so they are left out here.
    graph = {
        lid: resolver.dependencies({k: v for k, v in r.get("Properties", {}).items() if k != "Events"}) | depends_on(r)
        for lid, r in included.items()
    }
    order = dependency_order(graph)
    assert sorted(order) == sorted(included)
    assert order.index("StateMachineLogGroup") < order.index("DeploymentStateMachine")
    assert order.index("DeploymentStateMachine") < order.index("Dashboard")
