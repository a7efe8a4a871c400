"""Documents packaged with the functions (guardrails, the identity map): YAML, validated, read once per container.

They sit beside this module in the layer, so they change only when the stack is deployed.
"""

from __future__ import annotations

from importlib import resources

import yaml
from pydantic import BaseModel, ValidationError


class DocumentInvalid(ValueError):
    """A packaged document does not validate: a defect of the deployed stack, named by its file."""


def parse_document[M: BaseModel](model: type[M], text: str, source: str) -> M:
    """``text`` as ``model``; DocumentInvalid naming ``source`` and every problem otherwise."""
    try:
        return model.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise DocumentInvalid(f"{source}: {exc}") from None


def packaged_document[M: BaseModel](model: type[M], name: str) -> M:
    """The document ``name`` of the deployer package, as ``model``."""
    return parse_document(model, resources.files("deployer").joinpath(name).read_text(), f"deployer/{name}")
