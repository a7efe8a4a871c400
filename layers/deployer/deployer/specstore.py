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


def commit_key(environment: str, commit: str) -> str:
    """Where the spec version pushed for a commit is written down."""
    return f"commits/{environment}/{commit}"


@dataclass
class SpecStore:
    s3: Any
    bucket: str

    def put(self, environment: str, text: str, commit: str | None = None) -> str:
        """Store a spec's text (validated first) and return its version id.

        With a commit, the version is also findable by that commit (``resolve_commit``),
        which is how CI names the spec it deploys.
        """
        parse_spec(text, f"s3://{self.bucket}/{spec_key(environment)}", expected_environment=environment)
        metadata = {"commit": commit} if commit else {}
        with transient_errors():
            response = self.s3.put_object(
                Bucket=self.bucket,
                Key=spec_key(environment),
                Body=text.encode(),
                ContentType="application/yaml",
                Metadata=metadata,
            )
        version = str(response["VersionId"])
        if commit:
            with transient_errors():
                self.s3.put_object(Bucket=self.bucket, Key=commit_key(environment, commit), Body=version.encode())
        return version

    def environments(self) -> list[str]:
        """The environments that have a spec stored."""
        with transient_errors():
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="environments/")
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return sorted(k.removeprefix("environments/").removesuffix(".yaml") for k in keys if k.endswith(".yaml"))

    def resolve_commit(self, environment: str, commit: str) -> tuple[str, str]:
        """The (full commit, spec version) pushed for ``commit``, which may be abbreviated."""
        with transient_errors():
            found = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=commit_key(environment, commit), MaxKeys=2)
        keys = [o["Key"] for o in found.get("Contents", [])]
        if not keys:
            raise SpecNotFound(f"no spec of environment {environment!r} was pushed for commit {commit}")
        if len(keys) > 1:
            raise SpecNotFound(f"commit {commit} is ambiguous for environment {environment!r}; give more digits")
        with transient_errors():
            version = self.s3.get_object(Bucket=self.bucket, Key=keys[0])["Body"].read().decode()
        return keys[0].rsplit("/", 1)[1], version

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
