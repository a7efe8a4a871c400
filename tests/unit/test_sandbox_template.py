"""The sandbox's CloudFormation subset (sandbox/template.py), without a server.

What the sandbox installs is only as right as these intrinsics: a wrong Ref or Sub
would give a function the wrong table name or the state machine a wrong Lambda ARN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.template import Resolver, TemplateError, _Loader, load_template

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
        "!If [IsProd, a, b]",
        "!FindInMap [Map, Key, Value]",
        "!ImportValue other-stack-output",
        "!Select [0, !GetAZs '']",
        "{Variables: {X: !Base64 abc}}",
    ],
)
def test_an_unsupported_intrinsic_is_an_error_never_passed_through(text: str) -> None:
    with pytest.raises(TemplateError, match="does not resolve Fn::"):
        _resolver().resolve(_load(text))
