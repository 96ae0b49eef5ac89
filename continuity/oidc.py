"""The one seam to the carrier's identity provider: verify an OIDC access token (a JWT).

Signature by a key of the configured JWKS (URL or file), issuer, audience, expiry; the role
from a configured claim. Blocking (the JWKS URL is fetched with urllib): call it in a thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jwt

from continuity.errors import TokenRefused, ValidationFailed
from continuity.models import Role
from continuity.settings import Settings
from continuity.validation import check_identifier

# Asymmetric only: an HS256 token would be signed with a secret the verifier must share.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
LEEWAY_S = 30  # clock skew between the IdP and this host


@dataclass(frozen=True)
class OidcPrincipal:
    subject: str
    role: Role
    token_id: str  # "jwt:" + the token's jti, for the record


def oidc_config(settings: Settings) -> tuple[object, ...]:
    """What a verifier is built from: a cached one is stale when this changes."""
    return (
        settings.oidc_issuer,
        settings.oidc_audience,
        settings.oidc_jwks_url,
        settings.oidc_jwks_file,
    )


class OidcVerifier:
    def __init__(self, settings: Settings) -> None:
        if not (settings.oidc_issuer and settings.oidc_audience):
            raise ValidationFailed("OIDC needs both an issuer and an audience")
        if bool(settings.oidc_jwks_url) == bool(settings.oidc_jwks_file):
            raise ValidationFailed("OIDC needs exactly one of a JWKS URL and a JWKS file")
        self._s = settings
        self._client = (
            jwt.PyJWKClient(settings.oidc_jwks_url, cache_keys=True, lifespan=300, timeout=5)
            if settings.oidc_jwks_url
            else None
        )
        self._keys = (
            jwt.PyJWKSet.from_dict(json.loads(settings.oidc_jwks_file.read_text("utf-8")))
            if settings.oidc_jwks_file
            else None
        )

    def verify(self, token: str) -> OidcPrincipal:
        s = self._s
        try:
            key = self._signing_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=s.oidc_audience,
                issuer=s.oidc_issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", s.oidc_subject_claim]},
            )
        except jwt.PyJWTError as e:
            raise TokenRefused(f"OIDC token refused: {e}") from None
        try:
            subject = check_identifier(str(claims[s.oidc_subject_claim]))
        except ValidationFailed as e:
            raise TokenRefused(f"OIDC token refused: subject {e}") from None
        return OidcPrincipal(
            subject=subject, role=self._role(claims), token_id=f"jwt:{claims.get('jti', '')}"
        )

    def _signing_key(self, token: str) -> jwt.PyJWK:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token)
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        matching = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if len(matching) != 1:
            raise jwt.InvalidKeyError(f"no single key of the JWKS file has kid {kid!r}")
        return matching[0]

    def _role(self, claims: dict[str, object]) -> Role:
        """Exactly one of the claim's values is a role: one subject, one role."""
        raw = claims.get(self._s.oidc_role_claim)
        values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles = set()
        for v in values:
            name = str(v)
            if name in self._s.oidc_role_map:
                roles.add(self._s.oidc_role_map[name])
            elif name in {r.value for r in Role}:
                roles.add(Role(name))
        if len(roles) != 1:
            found = ", ".join(sorted(r.value for r in roles)) or "none"
            raise TokenRefused(
                f"OIDC token refused: claim {self._s.oidc_role_claim!r} must name exactly one "
                f"continuity role (found: {found})"
            )
        return roles.pop()


__all__ = ["ALGORITHMS", "OidcPrincipal", "OidcVerifier", "oidc_config"]
