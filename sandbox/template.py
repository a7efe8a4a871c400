"""Read a SAM/CloudFormation template and resolve the intrinsics the sandbox needs.

Just enough of CloudFormation to install ``template.yaml`` the way ``sam local`` would:
short-form tags, Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Select, Fn::Split, Fn::If,
parameters with defaults and overrides, the pseudo parameters (``AWS::NoValue``
included), and the ``Conditions`` section (Fn::Equals, Fn::Not, Fn::And, Fn::Or and
Condition references) with resource- and output-level ``Condition``. It also says what
a resource refers to (``Resolver.dependencies``) and in which order to create the
resources (``dependency_order``), as CloudFormation does. An intrinsic it does not know
is an error, never a silent pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SHORT_TAGS = {
    "!Ref": "Ref",
    "!GetAtt": "Fn::GetAtt",
    "!Sub": "Fn::Sub",
    "!Join": "Fn::Join",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!If": "Fn::If",
    "!Equals": "Fn::Equals",
    "!Not": "Fn::Not",
    "!And": "Fn::And",
    "!Or": "Fn::Or",
    "!FindInMap": "Fn::FindInMap",
    "!GetAZs": "Fn::GetAZs",
    "!ImportValue": "Fn::ImportValue",
    "!Base64": "Fn::Base64",
    "!Condition": "Condition",
}
SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class TemplateError(Exception):
    """The template uses something the sandbox cannot resolve."""


class _NoValue:
    """``Ref: AWS::NoValue``: the property (or list item) it is the value of is left out."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()


class _Loader(yaml.SafeLoader):
    pass


def _tag_constructor(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = SHORT_TAGS.get(f"!{suffix}")
    if name is None:
        raise TemplateError(f"unknown tag {suffix}")
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_Loader.add_multi_constructor("!", _tag_constructor)


def load_template(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError(f"{path}: not a CloudFormation template")
    return data


def cfn_string(value: Any) -> str:
    """A scalar as CloudFormation renders it into a string (YAML true is "true", not "True")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def depends_on(resource: Mapping[str, Any]) -> set[str]:
    """The logical ids a resource's ``DependsOn`` names (a string or a list)."""
    declared = resource.get("DependsOn", [])
    return {declared} if isinstance(declared, str) else set(declared)


def dependency_order(dependencies: Mapping[str, Iterable[str]]) -> list[str]:
    """The nodes in an order where each comes after what it depends on, else template order.

    ``dependencies`` maps each node to the nodes it needs, in template order; a name that
    is not a node is not waited for. A cycle is an error, as CloudFormation says
    "Circular dependency between resources".
    """
    needs = {node: {d for d in deps if d in dependencies and d != node} for node, deps in dependencies.items()}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(needs):
        ready = [node for node, deps in needs.items() if node not in done and deps <= done]
        if not ready:
            cycle = sorted(node for node in needs if node not in done)
            raise TemplateError(f"circular dependency between resources: {cycle}")
        # One at a time, the first ready in template order, so independent resources keep the template's order.
        order.append(ready[0])
        done.add(ready[0])
    return order


@dataclass
class Resolver:
    """Resolves intrinsics against parameters, conditions and the physical ids/attributes of resources."""

    template: dict[str, Any]
    stack_name: str
    region: str
    account: str
    parameters: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    # AWS::StackId; CloudFormation knows it before it creates any resource.
    stack_id: str | None = None
    conditions: dict[str, bool] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for name, decl in self.template.get("Parameters", {}).items():
            if name not in self.parameters:
                if "Default" not in decl:
                    raise TemplateError(f"parameter {name} has no default and no override")
                self.parameters[name] = cfn_string(decl["Default"])
        undeclared = sorted(set(self.parameters) - set(self.template.get("Parameters", {})))
        if undeclared:
            raise TemplateError(f"overrides for parameters the template does not declare: {undeclared}")
        # Every condition is evaluated up front, as CloudFormation does, so a bad one fails the install early.
        for name in self.template.get("Conditions", {}):
            self.condition(name)

    def pseudo(self) -> dict[str, Any]:
        pseudo: dict[str, Any] = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        if self.stack_id is not None:
            pseudo["AWS::StackId"] = self.stack_id
        return pseudo

    def ref(self, name: str) -> Any:
        for table in (self.pseudo(), self.parameters, self.refs):
            if name in table:
                return table[name]
        raise TemplateError(f"Ref to {name}, which is not (yet) known")

    def get_att(self, logical_id: str, attribute: str) -> str:
        try:
            return self.attributes[(logical_id, attribute)]
        except KeyError:
            raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} is not known") from None

    # --- conditions ---------------------------------------------------------------------------

    def condition(self, name: str, _evaluating: tuple[str, ...] = ()) -> bool:
        """The value of a condition the template's ``Conditions`` section declares."""
        if name in self.conditions:
            return self.conditions[name]
        declared = self.template.get("Conditions", {})
        if not isinstance(name, str) or name not in declared:
            raise TemplateError(f"condition {name} is not declared in Conditions")
        if name in _evaluating:
            raise TemplateError(f"circular condition: {' -> '.join((*_evaluating, name))}")
        value = self._evaluate(declared[name], (*_evaluating, name))
        self.conditions[name] = value
        return value

    def _evaluate(self, expression: Any, evaluating: tuple[str, ...]) -> bool:
        if isinstance(expression, dict) and len(expression) == 1:
            ((key, arg),) = expression.items()
            if key == "Condition":
                return self.condition(arg, evaluating)
            if key == "Fn::Equals":
                if not isinstance(arg, list) or len(arg) != 2:
                    raise TemplateError(f"Fn::Equals takes two values, not {arg!r}")
                left, right = (self.resolve(v) for v in arg)
                if isinstance(left, list | dict) or isinstance(right, list | dict):
                    return bool(left == right)
                return cfn_string(left) == cfn_string(right)
            if key == "Fn::Not":
                if not isinstance(arg, list) or len(arg) != 1:
                    raise TemplateError(f"Fn::Not takes one condition, not {arg!r}")
                return not self._evaluate(arg[0], evaluating)
            if key in ("Fn::And", "Fn::Or"):
                if not isinstance(arg, list) or not 2 <= len(arg) <= 10:
                    raise TemplateError(f"{key} takes 2 to 10 conditions, not {arg!r}")
                values = [self._evaluate(item, evaluating) for item in arg]
                return all(values) if key == "Fn::And" else any(values)
        raise TemplateError(f"{expression!r} is not a condition (Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition)")

    def included(self, declaration: Mapping[str, Any]) -> bool:
        """Whether a resource or output is created: it has no ``Condition``, or its condition is true."""
        name = declaration.get("Condition")
        return True if name is None else self.condition(name)

    # --- what a value refers to ---------------------------------------------------------------

    def dependencies(self, value: Any) -> set[str]:
        """The names a value refers to (Ref, Fn::GetAtt, Fn::Sub) that are neither parameters nor pseudo
        parameters: the logical ids it needs created first. Only the taken branch of an Fn::If counts."""
        found: set[str] = set()
        self._collect(value, found)
        return found

    def _collect(self, value: Any, found: set[str]) -> None:
        if isinstance(value, list):
            for item in value:
                self._collect(item, found)
            return
        if not isinstance(value, dict):
            return
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                self._note(str(arg), found)
                return
            if key == "Fn::GetAtt":
                found.add(arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0])
                return
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                self._collect(variables, found)
                for name in SUB_VARIABLE.findall(text):
                    if name.startswith("!") or name in variables:
                        continue
                    self._note(name.split(".", 1)[0] if "." in name and not name.startswith("AWS::") else name, found)
                return
            if key == "Fn::If":
                condition, if_true, if_false = self._if_arguments(arg)
                self._collect(if_true if self.condition(condition) else if_false, found)
                return
        for item in value.values():
            self._collect(item, found)

    def _note(self, name: str, found: set[str]) -> None:
        if name not in self.parameters and not name.startswith("AWS::"):
            found.add(name)

    @staticmethod
    def _if_arguments(arg: Any) -> tuple[str, Any, Any]:
        if not isinstance(arg, list) or len(arg) != 3:
            raise TemplateError(f"Fn::If takes [condition, value if true, value if false], not {arg!r}")
        return arg[0], arg[1], arg[2]

    # --- resolving ----------------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:  # noqa: PLR0911 - one branch per intrinsic
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                separator, items = arg
                return separator.join(cfn_string(i) for i in self.resolve(items))
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                separator, text = arg
                return str(self.resolve(text)).split(separator)
            if key == "Fn::If":
                condition, if_true, if_false = self._if_arguments(arg)
                return self.resolve(if_true if self.condition(condition) else if_false)
            if key.startswith("Fn::"):
                raise TemplateError(f"the sandbox does not resolve {key}")
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return cfn_string(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            value = self.ref(name)
            if value is NO_VALUE:
                raise TemplateError("Fn::Sub cannot use ${AWS::NoValue}")
            return cfn_string(value)

        return SUB_VARIABLE.sub(replace, text)
