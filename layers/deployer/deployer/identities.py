"""The identity map: each person's GitHub login, Slack user id and AWS principals, deployed with the stack.

A deployment's requester is known by whatever started it: a GitHub login (CI, verified by
its OIDC token), an AWS principal (the API's SigV4 caller) or only a claimed name (a
console or plain CLI start). Approvers are Slack users. ``identities.yaml`` beside this
module links them, so self-approval is refused across identities: the Slack ids of every
person the requester is cannot vote on the deployment.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated

from pydantic import Field, model_validator

from deployer.documents import packaged_document, parse_document
from deployer.models import Requester
from deployer.spec import SLACK_USER_ID, Model

DOCUMENT = "identities.yaml"
GITHUB_LOGIN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$"
PRINCIPAL_ARN = r"^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:[A-Za-z0-9+=,.@_/-]+$"
# How CI's workflow names its actor when it only claims it (`--requested-by github:<login>`).
GITHUB_PREFIX = "github:"


class Person(Model):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    slack_user_id: Annotated[str, Field(pattern=SLACK_USER_ID)]
    github_login: Annotated[str, Field(pattern=GITHUB_LOGIN)] | None = None
    aws_principals: list[Annotated[str, Field(pattern=PRINCIPAL_ARN)]] = []

    def is_requester(self, requester: Requester) -> bool:
        """Whether ``requester`` is this person, by a verified identity or by the name it claims."""
        login = (self.github_login or "").casefold()
        if requester.github_login and login == requester.github_login.casefold():
            return True
        if requester.aws_principal and requester.aws_principal in self.aws_principals:
            return True
        names = {self.name.casefold(), self.slack_user_id.casefold(), *([login] if login else [])}
        claims = [c for c in (requester.claimed, None if requester.verified_by else requester.name) if c]
        return any(c.casefold().removeprefix(GITHUB_PREFIX) in names for c in claims)


class IdentityMap(Model):
    people: list[Person]

    @model_validator(mode="after")
    def _each_identity_once(self) -> IdentityMap:
        for what, values in (
            ("slackUserId", [p.slack_user_id for p in self.people]),
            ("githubLogin", [p.github_login.casefold() for p in self.people if p.github_login]),
            ("awsPrincipals", [a for p in self.people for a in p.aws_principals]),
        ):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"{what} names more than one person: {', '.join(dupes)}")
        return self

    def slack_ids_of(self, requester: Requester) -> list[str]:
        """The Slack ids of every person the requester is: they may not vote on the deployment."""
        return [p.slack_user_id for p in self.people if p.is_requester(requester)]


def parse_identities(text: str, source: str) -> IdentityMap:
    return parse_document(IdentityMap, text, source)


@cache
def packaged() -> IdentityMap:
    """The identity map deployed with these functions, read once per container."""
    return packaged_document(IdentityMap, DOCUMENT)
