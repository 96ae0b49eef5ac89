"""Circuits (each one's state, its parts per device, who holds it) and the areas they serve."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from api.deps import AUTHORIZED, Principal, StoreDep
from api.errors import NotFound, documented
from api.schemas import AreaPublic, CircuitPartPublic, CircuitPublic, SegmentPublic
from continuity.models import CircuitStatus
from continuity.store import Store

router = APIRouter(tags=["circuits"], dependencies=AUTHORIZED)


def _public(view: dict[str, Any]) -> CircuitPublic:
    c = view["circuit"]
    parts = []
    for device, state in view["parts"].items():
        row = view["part_rows"].get(device)
        parts.append(
            CircuitPartPublic(
                device=device,
                state=state,
                incident_id=row.incident_id if row else "",
                change_id=row.change_id if row else "",
                detail=row.detail if row else "",
                updated_at=row.updated_at if row else None,
            )
        )
    return CircuitPublic(
        id=c.id,
        name=c.name,
        owner=c.owner,
        area=c.area,
        priority_class=c.priority_class,
        restoration_level=c.restoration_level,
        state=view["state"],
        held_by=view["holders"],
        parts=parts,
    )


def circuit_statuses(store: Store, seen: list[CircuitStatus]) -> list[CircuitStatus]:
    """An incident's circuits with their state and parts as the ledger has them now."""
    views = {v["circuit"].id: v for v in store.circuit_views([c.circuit_id for c in seen])}
    out = []
    for c in seen:
        v = views.get(c.circuit_id)
        if v is None:
            out.append(c)
            continue
        out.append(c.model_copy(update={"state": v["state"], "parts": v["parts"]}))
    return out


@router.get("/areas", response_model=list[AreaPublic], responses=documented(401, 403, 503))
async def list_areas(_: Principal, store: StoreDep) -> list[AreaPublic]:
    """The areas a duty officer can declare an incident for."""
    inv = await asyncio.to_thread(store.inventory)
    return [
        AreaPublic(id=a.id, name=a.name, kind=a.kind.value, parent=a.parent, former=a.former)
        for a in inv.areas
    ]


@router.get(
    "/cable-segments", response_model=list[SegmentPublic], responses=documented(401, 403, 503)
)
async def list_segments(_: Principal, store: StoreDep) -> list[SegmentPublic]:
    """The cable segments of the inventory's routes: what a cut can be declared on."""
    inv = await asyncio.to_thread(store.inventory)
    return [
        SegmentPublic(
            id=seg.id,
            name=seg.name,
            route_id=route.id,
            route_name=route.name,
            works=len(seg.works),
            circuits=[c.id for c in inv.circuits if c.crosses(seg.id)],
        )
        for route in inv.cable_routes
        for seg in route.segments
    ]


@router.get(
    "/circuits", response_model=list[CircuitPublic], responses=documented(401, 403, 422, 503)
)
async def list_circuits(
    _: Principal, store: StoreDep, area: str | None = None
) -> list[CircuitPublic]:
    """Every circuit (of `area` and the units under it: a former district, its communes)."""
    views = await asyncio.to_thread(store.circuit_views)
    if area is None:
        return [_public(v) for v in views]
    covered = set((await asyncio.to_thread(store.inventory)).expand_area(area))
    return [_public(v) for v in views if v["circuit"].area in covered]


@router.get(
    "/circuits/{circuit_id}",
    response_model=CircuitPublic,
    responses=documented(401, 403, 404, 422, 503),
)
async def read_circuit(circuit_id: str, _: Principal, store: StoreDep) -> CircuitPublic:
    views = await asyncio.to_thread(store.circuit_views, [circuit_id])
    if not views:
        raise NotFound(f"no circuit {circuit_id!r}")
    return _public(views[0])
