"""CI's identity: a GitHub Actions OIDC token, verified against its issuer's published keys.

A workflow asks GitHub for a token whose audience is the deployer and sends it with its
API request (``X-GitHub-OIDC-Token``; ``Authorization`` carries SigV4). The token is a JWT
signed by the issuer: its signature, issuer, audience and expiry are checked with PyJWT
against the issuer's JWKS, found through its OpenID configuration and cached per container.
Its claims say who ran what: ``actor``, ``repository``, ``environment``, ``ref`` and ``sha``.

PyJWT (and ``cryptography`` under it) is imported only when a token is verified, so the
cold start of every other function, and of this one without a token, does not pay for it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TOKEN_HEADER = "X-GitHub-OIDC-Token"  # noqa: S105 - a header name, not a secret
REQUIRED_CLAIMS = ("actor", "repository", "environment", "ref", "sha")
# Clock skew allowed between GitHub and Lambda when checking exp, nbf and iat.
LEEWAY_SECONDS = 30
FETCH_TIMEOUT_SECONDS = 5


class TokenRefused(Exception):
    """A token that proves nothing (401: bad signature, issuer, audience, expiry, shape)."""


class IssuerUnavailable(Exception):
    """The issuer's configuration or keys could not be read: try again (503)."""


@dataclass(frozen=True)
class CiClaims:
    actor: str
    repository: str
    environment: str
    ref: str
    sha: str


@dataclass
class OidcVerifier:
    issuer: str
    audience: str
    # PyJWT's JWK client for the issuer's keys: made on first use, then its cache serves.
    _jwks: Any = field(default=None, repr=False)

    def verify(self, token: str) -> CiClaims:
        """The token's claims, once its signature, issuer, audience and expiry hold; TokenRefused otherwise."""
        import jwt

        try:
            key = self._client().get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused(f"the token expired at {_expiry(token)}") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused(f"the token's audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused(f"the token was not issued by {self.issuer}") from None
        except jwt.PyJWKClientConnectionError as exc:
            raise IssuerUnavailable(f"cannot read the signing keys of {self.issuer}: {exc}") from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise TokenRefused(f"the token is not valid: {exc}") from None
        missing = [name for name in REQUIRED_CLAIMS if not isinstance(claims.get(name), str) or not claims[name]]
        if missing:
            raise TokenRefused(f"the token has no {', '.join(missing)} claim (a job that names its environment has)")
        return CiClaims(**{name: str(claims[name]) for name in REQUIRED_CLAIMS})

    def _client(self) -> Any:
        if self._jwks is None:
            import jwt

            self._jwks = jwt.PyJWKClient(_jwks_uri(self.issuer), cache_keys=True, timeout=FETCH_TIMEOUT_SECONDS)
        return self._jwks


def _jwks_uri(issuer: str) -> str:
    """The issuer's key set URL, from its OpenID configuration."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 - the issuer is a stack parameter
            return str(json.loads(response.read())["jwks_uri"])
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise IssuerUnavailable(f"cannot read the OpenID configuration of {issuer}: {exc}") from None


def _expiry(token: str) -> str:
    import jwt

    exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    return datetime.fromtimestamp(int(exp), UTC).isoformat() if isinstance(exp, int | float) else "an unknown time"
