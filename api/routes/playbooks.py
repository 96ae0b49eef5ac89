"""Playbooks: what a declaration would send, before anyone declares (the engineer's dry run)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AUTHORIZED, Principal, SettingsDep, StoreDep
from api.errors import NotFound, documented
from continuity.errors import PlaybookError
from continuity.models import IncidentKind
from continuity.plan import Plan, plan_incident
from playbooks import DEFAULT_PLAYBOOK, get_playbook

router = APIRouter(prefix="/playbooks", tags=["playbooks"], dependencies=AUTHORIZED)


@router.get("/{name}/plan", response_model=Plan, responses=documented(401, 403, 404, 422, 503))
async def plan_playbook(
    name: str,
    area: str,
    _: Principal,
    settings: SettingsDep,
    store: StoreDep,
    kind: IncidentKind = IncidentKind.SABOTAGE,
    segment: str | None = None,
    drill_devices: Annotated[list[str] | None, Query()] = None,
    also: Annotated[list[str] | None, Query()] = None,
) -> Plan:
    """The exact lines, per wave and device, that declaring `kind` in `area` (and, for a
    playbook that follows a cut, the cut cable `segment`) would send with this playbook and
    the inventory as it is now, and their hashes; a drill's (`drill_devices`, repeated) only
    on those devices. Touches no device. `default` names the playbook a declaration without
    one runs."""
    try:
        spec = get_playbook(DEFAULT_PLAYBOOK if name == "default" else name)
    except PlaybookError as e:
        raise NotFound(str(e)) from None
    inventory = await asyncio.to_thread(store.inventory)
    return plan_incident(
        spec,
        inventory,
        area=area,
        kind=kind,
        timings=settings.timings,
        segment=segment,
        drill_devices=drill_devices,
        also=also or (),
    )
