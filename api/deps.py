"""FastAPI dependencies as Annotated aliases: settings, store, Temporal, courier, the caller.

All are `async def`: none blocks, and FastAPI runs a plain `def` dependency in its thread
pool, a thread hop per dependency per request.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from api.errors import Forbidden, Unauthenticated
from api.signals import DecisionCourier
from continuity.models import Role
from continuity.settings import ApiToken, Settings
from continuity.store import Store


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _store(request: Request) -> Store:
    return request.app.state.store


async def _temporal(request: Request) -> Client:
    return request.app.state.temporal


async def _courier(request: Request) -> DecisionCourier:
    state = request.app.state
    courier = getattr(state, "courier", None)
    if courier is None:  # one per app: its queues batch every caller's decisions
        courier = state.courier = DecisionCourier(state.temporal)
    return courier


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Store, Depends(_store)]
TemporalDep = Annotated[Client, Depends(_temporal)]
CourierDep = Annotated[DecisionCourier, Depends(_courier)]

_bearer = HTTPBearer(auto_error=False)


async def _principal(
    settings: SettingsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthenticated("a bearer token is required")
    for token, who in settings.api_tokens.items():
        if hmac.compare_digest(token.encode(), creds.credentials.encode()):
            return who
    raise Unauthenticated("unknown token")


def require(*roles: Role) -> Callable[..., Awaitable[ApiToken]]:
    async def _check(who: Annotated[ApiToken, Depends(_principal)]) -> ApiToken:
        if who.role not in roles:
            raise Forbidden(
                f"role {who.role.value} may not do this; needs {', '.join(r.value for r in roles)}"
            )
        return who

    return _check


DutyOfficer = Annotated[ApiToken, Depends(require(Role.DUTY_OFFICER))]
Operator = Annotated[ApiToken, Depends(require(Role.OPERATOR))]
Auditor = Annotated[ApiToken, Depends(require(Role.AUDITOR))]
AnyRole = Annotated[ApiToken, Depends(require(Role.DUTY_OFFICER, Role.OPERATOR, Role.AUDITOR))]
