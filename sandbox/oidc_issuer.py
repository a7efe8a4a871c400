"""GitHub Actions' OIDC issuer, for the sandbox: keys made at start, its documents over HTTP, tokens on demand.

GitHub's issuer (``https://token.actions.githubusercontent.com``) publishes an OpenID
configuration and the keys it signs workflow tokens with; the deployments API verifies
CI's tokens against them (``deployer.oidc``). The sandbox serves the same two documents on
loopback from an RSA key made when it starts, and mints RS256 tokens with the claims
GitHub puts in them: for tests, and for ``deployer run --via-api`` (``POST /mint``, which
only a sandbox has). ``mint`` can also make the tokens the API must refuse: expired, for
another audience, or signed with another key under the issuer's key id.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.wrappers import Request, Response

CONFIGURATION_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks"
MINT_PATH = "/mint"
DEFAULT_AUDIENCE = "bbws-deployer"
DEFAULT_REPOSITORY = "bbws/bbws-deployer"
TOKEN_LIFETIME_SECONDS = 300


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class OidcIssuer:
    audience: str = DEFAULT_AUDIENCE
    repository: str = DEFAULT_REPOSITORY
    # The base URL it is served at (the tokens' ``iss``), known once the sandbox serves it.
    url: str = ""
    key: rsa.RSAPrivateKey = field(default_factory=_new_key, repr=False)
    kid: str = field(default_factory=lambda: secrets.token_hex(8))

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def mint(
        self,
        *,
        environment: str,
        sha: str,
        actor: str = "octo-dev",
        ref: str = "refs/heads/main",
        repository: str | None = None,
        audience: str | None = None,
        lifetime_seconds: int = TOKEN_LIFETIME_SECONDS,
        issued_seconds_ago: int = 0,
        forged: bool = False,
    ) -> str:
        """A workflow token as GitHub issues it; ``forged`` signs it with a key the issuer never published."""
        repository = repository or self.repository
        now = int(time.time()) - issued_seconds_ago
        claims = {
            "iss": self.url,
            "aud": audience or self.audience,
            "sub": f"repo:{repository}:environment:{environment}",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_seconds,
            "jti": secrets.token_hex(16),
            "actor": actor,
            "repository": repository,
            "repository_owner": repository.split("/", 1)[0],
            "environment": environment,
            "ref": ref,
            "ref_type": "branch" if ref.startswith("refs/heads/") else "tag",
            "sha": sha,
            "event_name": "workflow_dispatch",
            "workflow": "deploy",
            "run_id": str(secrets.randbelow(10**10)),
        }
        key = _new_key() if forged else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        if request.method == "GET" and request.path == CONFIGURATION_PATH:
            body: dict[str, Any] = {
                "issuer": self.url,
                "jwks_uri": self.url + JWKS_PATH,
                "id_token_signing_alg_values_supported": ["RS256"],
                "claims_supported": ["sub", "aud", "exp", "iat", "iss", "actor", "repository", "environment", "ref"],
            }
            response = Response(json.dumps(body), content_type="application/json")
        elif request.method == "GET" and request.path == JWKS_PATH:
            response = Response(json.dumps(self.jwks()), content_type="application/json")
        elif request.method == "POST" and request.path == MINT_PATH:
            response = self._mint(request)
        else:
            response = Response(json.dumps({"message": f"no {request.method} {request.path}"}), status=404)
        return response(environ, start_response)

    def _mint(self, request: Request) -> Response:
        try:
            asked = json.loads(request.get_data() or b"{}")
            allowed = {"environment", "sha", "actor", "ref", "repository", "audience"}
            if not isinstance(asked, dict) or not {"environment", "sha"} <= asked.keys() or asked.keys() - allowed:
                raise ValueError(f"give environment and sha, and optionally {', '.join(sorted(allowed))}")
            token = self.mint(**{k: str(v) for k, v in asked.items()})
        except ValueError as exc:
            return Response(json.dumps({"message": str(exc)}), status=400, content_type="application/json")
        return Response(json.dumps({"value": token}), content_type="application/json")
