"""The tooling account's side: its clients and the stack's resources, from the environment.

Built once per Lambda container; clients are created on first use so a cold start
pays only for what the function touches. For the same reason the modules behind a
property (the spec store with its YAML parser and spec models; the approval gate's
Slack and interactions) are imported by that property, so only the functions that
use them import them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3

from deployer import clock
from deployer.aws import TargetSession, assume_role, retry_config
from deployer.errors import SlackNotConfigured
from deployer.records import RecordStore
from deployer.resources import WaitConfig

if TYPE_CHECKING:
    from deployer.approvals import ApprovalStore
    from deployer.guardrails import Guardrails
    from deployer.identities import IdentityMap
    from deployer.interactions import InteractionContext
    from deployer.models import DeploymentContext
    from deployer.oidc import OidcVerifier
    from deployer.slack import Slack
    from deployer.spec import EnvironmentSpec
    from deployer.specstore import SpecStore

SECRET_MAX_AGE_SECONDS = 300


@dataclass
class Tooling:
    records_table: str
    specs_bucket: str
    event_bus: str
    wait: WaitConfig
    # Two secrets, each read only by the functions that need it: the bot token (every function
    # that posts to Slack) and the signing secret with the workspace id (the interactions endpoint).
    slack_bot_secret_arn: str = ""
    slack_signing_secret_arn: str = ""
    slack_api_url: str = "https://slack.com/api/"
    # Slack's response_url for a click is only ever posted to under this prefix.
    slack_response_url_prefix: str = "https://hooks.slack.com/"
    # The deployments API's: which state machine it starts, and its body limit.
    state_machine_arn: str = ""
    api_max_body_bytes: int = 16384
    # Resources per provisioning/validation shard (one Lambda invocation, its resources side by side).
    shard_size: int = 10
    # The deployments API's: whose GitHub OIDC tokens it takes, for which audience and repository, and
    # the name prefix of CI's per-environment roles (<prefix><environment>).
    oidc_issuer: str = "https://token.actions.githubusercontent.com"
    oidc_audience: str = "bbws-deployer"
    github_repository: str = ""
    ci_role_prefix: str = ""

    @classmethod
    def from_environment(cls) -> Tooling:
        return cls(
            records_table=os.environ["RECORDS_TABLE"],
            specs_bucket=os.environ["SPECS_BUCKET"],
            event_bus=os.environ.get("EVENT_BUS_NAME", ""),
            wait=WaitConfig(
                delay_seconds=float(os.environ.get("WAIT_DELAY_SECONDS", "5")),
                max_attempts=int(os.environ.get("WAIT_MAX_ATTEMPTS", "60")),
            ),
            slack_bot_secret_arn=os.environ.get("SLACK_BOT_SECRET_ARN", ""),
            slack_signing_secret_arn=os.environ.get("SLACK_SIGNING_SECRET_ARN", ""),
            slack_api_url=os.environ.get("SLACK_API_URL", cls.slack_api_url),
            slack_response_url_prefix=os.environ.get("SLACK_RESPONSE_URL_PREFIX", cls.slack_response_url_prefix),
            state_machine_arn=os.environ.get("STATE_MACHINE_ARN", ""),
            api_max_body_bytes=int(os.environ.get("API_MAX_BODY_BYTES", str(cls.api_max_body_bytes))),
            shard_size=int(os.environ.get("SHARD_SIZE", str(cls.shard_size))),
            oidc_issuer=os.environ.get("OIDC_ISSUER", cls.oidc_issuer),
            oidc_audience=os.environ.get("OIDC_AUDIENCE", cls.oidc_audience),
            github_repository=os.environ.get("GITHUB_REPOSITORY", ""),
            ci_role_prefix=os.environ.get("CI_ROLE_PREFIX", ""),
        )

    @cached_property
    def session(self) -> boto3.Session:
        return boto3.Session()

    def client(self, service: str) -> Any:
        return self.session.client(service, config=retry_config())  # type: ignore[call-overload]

    @cached_property
    def sts(self) -> Any:
        return self.client("sts")

    @cached_property
    def records(self) -> RecordStore:
        return RecordStore(self.session.resource("dynamodb", config=retry_config()).Table(self.records_table))

    @cached_property
    def specs(self) -> SpecStore:
        from deployer.specstore import SpecStore

        return SpecStore(self.client("s3"), self.specs_bucket)

    def spec_for(self, deployment: DeploymentContext) -> EnvironmentSpec:
        """The exact spec version the deployment pinned at its start."""
        spec, _ = self.specs.get(deployment.environment, deployment.spec_version)
        return spec

    @property
    def guardrails(self) -> Guardrails:
        from deployer.guardrails import packaged

        return packaged()

    @property
    def identities(self) -> IdentityMap:
        from deployer.identities import packaged

        return packaged()

    @cached_property
    def oidc(self) -> OidcVerifier:
        """CI's GitHub OIDC tokens, checked against the issuer's keys (cached for the container's life)."""
        from deployer.oidc import OidcVerifier

        return OidcVerifier(self.oidc_issuer, self.oidc_audience)

    def hold_lock(self, deployment: DeploymentContext) -> None:
        """Renew the deployment's lease on its environment, as every step does first; LockLost if it was taken."""
        self.records.renew_lock(
            deployment.environment,
            deployment.deployment_id,
            deployment.requested_by,
            deployment.policy.lock_lease_seconds,
            clock.now(),
        )

    def target_for(self, spec: EnvironmentSpec, deployment_id: str) -> TargetSession:
        """A session in the environment's account, through the deployment role its guardrails name."""
        self.guardrails.check_role(spec.account, spec.deployment_role_arn)
        return assume_role(self.sts, spec.deployment_role_arn, f"deployer-{deployment_id}")

    @cached_property
    def sfn(self) -> Any:
        return self.client("stepfunctions")

    @cached_property
    def events(self) -> Any:
        """EventBridge, for the events a function publishes itself (the state machine publishes the rest)."""
        return self.client("events")

    @cached_property
    def approvals(self) -> ApprovalStore:
        from deployer.approvals import ApprovalStore

        return ApprovalStore(self.records.table)

    def slack_bot_token(self) -> str:
        """The Slack bot token, from its secret ({"botToken"}), cached for five minutes."""
        return _secret(self.slack_bot_secret_arn, ("botToken",))["botToken"]

    def slack_signing(self) -> dict[str, str]:
        """{"signingSecret", "teamId"}: how a Slack request is verified, from its secret, cached for five minutes."""
        return _secret(self.slack_signing_secret_arn, ("signingSecret", "teamId"))

    @property
    def slack(self) -> Slack:
        from deployer.slack import Slack

        return Slack(self.slack_bot_token(), self.slack_api_url, self.slack_response_url_prefix)

    def interaction_context(self) -> InteractionContext:
        from deployer.interactions import InteractionContext

        signing = self.slack_signing()
        return InteractionContext(
            store=self.approvals,
            sfn=self.sfn,
            slack=self.slack,
            signing_secret=signing["signingSecret"],
            team_id=signing["teamId"],
            now=clock.now,
        )


def _secret(arn: str, keys: tuple[str, ...]) -> dict[str, str]:
    from aws_lambda_powertools.utilities import parameters

    secret = parameters.get_secret(arn, transform="json", max_age=SECRET_MAX_AGE_SECONDS)
    missing = [k for k in keys if not secret.get(k)]
    if missing:
        raise SlackNotConfigured(f"the Slack secret {arn} lacks {', '.join(missing)}")
    return {k: str(secret[k]) for k in keys}
