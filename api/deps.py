"""FastAPI dependencies as Annotated aliases: settings, store, Temporal, courier, the caller.

All are `async def`: none blocks, and FastAPI runs a plain `def` dependency in its thread
pool, a thread hop per dependency per request.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import State
from temporalio.client import Client

from api.access import allowed
from api.claims import DecisionClaims
from api.errors import Forbidden, Unauthenticated
from api.signals import DecisionCourier
from api.status_views import StatusViews
from continuity.attestation import Attester
from continuity.errors import TokenRefused
from continuity.models import Role
from continuity.oidc import OidcVerifier, oidc_config
from continuity.settings import ApiToken, Settings
from continuity.store import TOKEN_PREFIX, Store


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _store(request: Request) -> Store:
    return request.app.state.store


async def _temporal(request: Request) -> Client:
    return request.app.state.temporal


async def _attester(request: Request) -> Attester | None:
    return request.app.state.attester


_T = TypeVar("_T")


def _one_per_app(request: Request, name: str, make: Callable[[State], _T]) -> _T:
    """The app's one `name`, made on first use: what batches or shares every caller's work."""
    state = request.app.state
    made: _T | None = getattr(state, name, None)
    if made is None:
        made = make(state)
        setattr(state, name, made)
    return made


async def _courier(request: Request) -> DecisionCourier:
    # Its queues batch every caller's decision signals.
    return _one_per_app(request, "courier", lambda s: DecisionCourier(s.temporal))


async def _claims(request: Request) -> DecisionClaims:
    # Its queue batches every operator's decision claims.
    return _one_per_app(request, "claims", lambda s: DecisionClaims(s.store))


async def _status_views(request: Request) -> StatusViews:
    # Every screen's reads share its renderings.
    return _one_per_app(request, "status_views", lambda s: StatusViews(s.settings.status_fresh_s))


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Store, Depends(_store)]
TemporalDep = Annotated[Client, Depends(_temporal)]
CourierDep = Annotated[DecisionCourier, Depends(_courier)]
ClaimsDep = Annotated[DecisionClaims, Depends(_claims)]
StatusViewsDep = Annotated[StatusViews, Depends(_status_views)]
# The deployment's signer of human actions (None: no signing key outside production).
AttesterDep = Annotated[Attester | None, Depends(_attester)]

_bearer = HTTPBearer(auto_error=False)


def _oidc(request: Request) -> OidcVerifier:
    """One verifier per app (it caches the JWKS), rebuilt if the OIDC settings change."""
    s: Settings = request.app.state.settings
    key = oidc_config(s)
    cached = getattr(request.app.state, "oidc", None)
    if cached is None or cached[0] != key:
        cached = request.app.state.oidc = (key, OidcVerifier(s))
    return cached[1]


async def _authenticated(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthenticated("a bearer token is required")
    presented = creds.credentials
    for token, who in settings.api_tokens.items():  # the embedded demo's tokens
        if hmac.compare_digest(token.encode(), presented.encode()):
            return who
    if settings.oidc_issuer and presented.count(".") == 2:  # a JWT from the identity provider
        try:
            oidc = await asyncio.to_thread(_oidc(request).verify, presented)
        except TokenRefused as e:
            raise Unauthenticated(str(e)) from None
        return ApiToken(subject=oidc.subject, role=oidc.role, token_id=oidc.token_id)
    if not presented.startswith(TOKEN_PREFIX):
        raise Unauthenticated("unknown token")
    try:
        row = await asyncio.to_thread(store.principal_for_token, presented)
    except TokenRefused as e:
        raise Unauthenticated(str(e)) from None
    return ApiToken(subject=row.subject, role=Role(row.role), token_id=row.id)


async def _authorized(
    request: Request, who: Annotated[ApiToken, Depends(_authenticated)]
) -> ApiToken:
    """The one role check: the route's row of the matrix in api/access.py."""
    route = request.scope.get("route")
    name = getattr(route, "name", "")
    roles = allowed(name)
    if who.role not in roles:
        needs = ", ".join(sorted(r.value for r in roles)) or "a route the matrix lists"
        raise Forbidden(f"role {who.role.value} may not do this; needs {needs}")
    return who


# Every route that takes a bearer token names its caller with this, and nothing else.
Principal = Annotated[ApiToken, Depends(_authorized)]
# On each router of such routes too, so a route that forgets `Principal` is still checked
# (FastAPI runs the dependency once per request either way).
AUTHORIZED = [Depends(_authorized)]
