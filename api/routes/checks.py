"""GET /checks: `continuity doctor`'s checks as the API's own process sees them, for the
console's health dots. Behind a token: the details name devices and credentials."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from api.deps import AUTHORIZED, Principal, SettingsDep, StoreDep, TemporalDep
from api.errors import documented
from continuity.checks import (
    database_check,
    devices_check,
    telephony_check,
    temporal_check,
    workers_check,
)

router = APIRouter(tags=["health"], dependencies=AUTHORIZED)


class CheckPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["ok", "warn", "FAIL"]
    subject: str  # temporal, database, devices, inventory, workers, telephony
    detail: str


class ChecksPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: list[CheckPublic]


@router.get("/checks", response_model=ChecksPublic, responses=documented(401, 403))
async def read_checks(
    _: Principal, settings: SettingsDep, store: StoreDep, temporal: TemporalDep
) -> ChecksPublic:
    """Temporal (reachable, its retention), the database (readable), every device's credential
    and host key, a worker on every queue, telephony: the doctor's checks. Not its public-URL
    check, which only makes sense from outside; nor its write probe (a screen polls this)."""

    found, inventory = await asyncio.to_thread(
        database_check, store, settings.masked_database_url, write=False
    )
    checks = [await temporal_check(temporal, settings), found]
    checks += devices_check(settings, inventory) if inventory else []
    checks.append(await workers_check(temporal, settings, inventory))
    checks.append(telephony_check(settings))
    return ChecksPublic(
        checks=[CheckPublic(verdict=c.verdict, subject=c.subject, detail=c.detail) for c in checks]
    )


__all__ = ["ChecksPublic", "router"]
