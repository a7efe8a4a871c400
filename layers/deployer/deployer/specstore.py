"""The spec store: environment specs in a versioned S3 bucket of the tooling account.

Every deployment pins the exact object version it ran with, so a record, an approval
or a re-run always refers to the same spec even after the file changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from deployer.aws import error_code, transient_errors
from deployer.errors import SpecNotFound
from deployer.spec import EnvironmentSpec, parse_spec


def spec_key(environment: str) -> str:
    return f"environments/{environment}.yaml"


@dataclass
class SpecStore:
    s3: Any
    bucket: str

    def put(self, environment: str, text: str) -> str:
        """Store a spec's text (validated first) and return its version id."""
        parse_spec(text, f"s3://{self.bucket}/{spec_key(environment)}", expected_environment=environment)
        with transient_errors():
            response = self.s3.put_object(
                Bucket=self.bucket, Key=spec_key(environment), Body=text.encode(), ContentType="application/yaml"
            )
        return str(response["VersionId"])

    def get(self, environment: str, version: str | None = None) -> tuple[EnvironmentSpec, str]:
        """Load and validate a spec; the latest version unless one is named."""
        key = spec_key(environment)
        extra = {"VersionId": version} if version else {}
        try:
            with transient_errors():
                response = self.s3.get_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "NoSuchVersion", "InvalidArgument", "404"):
                what = f"version {version} of " if version else ""
                raise SpecNotFound(
                    f"no {what}spec for environment {environment!r} in s3://{self.bucket}/{key}"
                ) from None
            raise
        source = f"s3://{self.bucket}/{key}?versionId={response['VersionId']}"
        spec = parse_spec(response["Body"].read().decode(), source, expected_environment=environment)
        return spec, str(response["VersionId"])
