"""CI's GitHub OIDC token: verified against the issuer's keys, and its claims held to the request."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from deployer.oidc import CiClaims, OidcVerifier, TokenRefused
from sandbox.oidc_issuer import OidcIssuer

ISSUER = "https://token.actions.example.test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class StaticKeys:
    """PyJWKClient's one method, over a key set given up front (the unit tests have no HTTP issuer)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.keys = jwt.PyJWKSet.from_dict(jwks).keys

    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK:
        kid = jwt.get_unverified_header(token).get("kid")
        key = next((k for k in self.keys if k.key_id == kid), None)
        if key is None:
            raise jwt.PyJWKClientError(f'Unable to find a signing key that matches: "{kid}"')
        return key


@pytest.fixture(scope="module")
def issuer() -> OidcIssuer:
    return OidcIssuer(url=ISSUER)


@pytest.fixture
def verifier(issuer: OidcIssuer) -> OidcVerifier:
    return OidcVerifier(ISSUER, issuer.audience, _jwks=StaticKeys(issuer.jwks()))


def test_a_valid_token_gives_its_claims(issuer: OidcIssuer, verifier: OidcVerifier) -> None:
    token = issuer.mint(environment="dev", sha=COMMIT, actor="bbws-sit-lead", ref="refs/heads/dev-x")
    assert verifier.verify(token) == CiClaims(
        actor="bbws-sit-lead", repository=issuer.repository, environment="dev", ref="refs/heads/dev-x", sha=COMMIT
    )


@pytest.mark.parametrize(
    ("mint", "reason"),
    [
        ({"issued_seconds_ago": 3600}, "the token expired at "),
        ({"audience": "sts.amazonaws.com"}, "the token's audience is not 'bbws-deployer'"),
        ({"forged": True}, "the token is not valid: Signature verification failed"),
    ],
    ids=["expired", "wrong-audience", "forged-signature"],
)
def test_a_token_that_proves_nothing_is_refused(
    issuer: OidcIssuer, verifier: OidcVerifier, mint: dict[str, Any], reason: str
) -> None:
    token = issuer.mint(environment="dev", sha=COMMIT, **mint)
    with pytest.raises(TokenRefused) as refused:
        verifier.verify(token)
    assert str(refused.value).startswith(reason)


def test_another_issuer_or_key_or_a_token_without_an_environment_is_refused(
    issuer: OidcIssuer, verifier: OidcVerifier
) -> None:
    other = OidcIssuer(url="https://elsewhere.example.test", kid=issuer.kid, key=issuer.key)
    with pytest.raises(TokenRefused, match=r"not issued by https://token\.actions\.example\.test"):
        verifier.verify(other.mint(environment="dev", sha=COMMIT))
    stranger = OidcIssuer(url=ISSUER)
    with pytest.raises(TokenRefused, match="Unable to find a signing key"):
        verifier.verify(stranger.mint(environment="dev", sha=COMMIT))
    claims = jwt.decode(issuer.mint(environment="dev", sha=COMMIT), options={"verify_signature": False})
    del claims["environment"]
    bare = jwt.encode(claims, issuer.key, algorithm="RS256", headers={"kid": issuer.kid})
    with pytest.raises(TokenRefused, match="no environment claim"):
        verifier.verify(bare)
