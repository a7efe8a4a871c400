"""Run by the SAM CLI's interpreter (.venv-sam): template.yaml as aws-sam-translator turns it into CloudFormation.

Prints the translated template as JSON. Code locations become placeholder S3 URIs (the translator
wants uploaded packages); nothing is looked up in AWS (no managed policy is named without its ARN).
"""

import json
import sys
from pathlib import Path

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicyLookups:
    def load(self) -> dict[str, str]:
        raise RuntimeError("the template names a managed policy without its ARN")


template = yaml_parse(Path(sys.argv[1]).read_text())
for resource in template["Resources"].values():
    for key in ("CodeUri", "DefinitionUri", "ContentUri"):
        if key in resource.get("Properties", {}):
            resource["Properties"][key] = "s3://sandbox/package.zip"
json.dump(transform(template, {}, NoManagedPolicyLookups()), sys.stdout)
