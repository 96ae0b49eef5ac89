"""Declaring an incident: the checks that come before anything runs, and the workflow's input."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from continuity.dialects import check_timings
from continuity.errors import PlaybookError, ValidationFailed
from continuity.messages import IncidentInput, Timings
from continuity.models import Incident, IncidentKind, Inventory, inventory_sha256
from continuity.playbook import PlaybookSpec


@dataclass(frozen=True)
class Scope:
    """Where an incident acts: the area named and further units named with it, the cable
    segment declared cut, and a drill's devices (None: not a drill)."""

    area: str
    also: tuple[str, ...] = ()
    segment: str | None = None
    drill_devices: tuple[str, ...] | None = None

    @classmethod
    def declared(
        cls,
        area: str,
        *,
        also: Collection[str] = (),
        segment: str | None = None,
        drill_devices: Collection[str] | None = None,
    ) -> Scope:
        """As a declaration names it: further units once each, the area itself not again."""
        return cls(
            area=area,
            also=tuple(sorted(set(also) - {area})),
            segment=segment,
            drill_devices=None if drill_devices is None else tuple(sorted(drill_devices)),
        )

    @classmethod
    def of(cls, incident: Incident) -> Scope:
        """An incident's scope, as its declaration recorded it."""
        return cls(
            area=incident.area,
            also=tuple(incident.also),
            segment=incident.segment,
            drill_devices=tuple(incident.drill_devices) if incident.drill else None,
        )

    @property
    def named(self) -> list[str]:
        return [self.area, *self.also]


class TimingsUnfit(ValidationFailed):
    """The deployment's confirmation window cannot be held by some device's timer."""


class TooManyDevices(ValidationFailed):
    """More devices than one incident's history can carry within Temporal's limits."""


def area_inventory(inventory: Inventory, scope: Scope) -> Inventory:
    """What an incident in its area may touch: its circuits (and, with a cut cable segment,
    every circuit whose paths run over it) and their devices, the cable routes they cross
    (and the cut's), and the people. A drill's keeps only the circuits lying wholly on its
    devices: the snapshot is all its device steps can reach."""
    covered = set(inventory.expand_areas(scope.named))
    segment = scope.segment
    circuits = [
        c for c in inventory.circuits if c.area in covered or (segment and c.crosses(segment))
    ]
    if scope.drill_devices is not None:
        allowed = set(scope.drill_devices)
        circuits = [c for c in circuits if all(p.device in allowed for p in c.paths)]
    names = {p.device for c in circuits for p in c.paths}
    # The units covered and served, and every unit they lie or lay in (reports name both).
    areas = covered | {c.area for c in circuits}
    todo = list(areas)
    while todo:
        unit = inventory.area(todo.pop())
        for ref in [unit.parent, *unit.former] if unit else []:
            if ref and ref not in areas:
                areas.add(ref)
                todo.append(ref)
    crossed = {s for c in circuits for p in c.paths for s in p.crosses} | {segment}
    return inventory.model_copy(
        update={
            "areas": [a for a in inventory.areas if a.id in areas],
            "circuits": circuits,
            "devices": [d for d in inventory.devices if d.name in names],
            "cable_routes": [
                r for r in inventory.cable_routes if crossed & {s.id for s in r.segments}
            ],
        }
    )


def check_declarable(
    spec: PlaybookSpec, inventory: Inventory, *, kind: IncidentKind, scope: Scope
) -> None:
    """The playbook handles `kind`, the inventory knows the scope's areas (and its cut
    segment, and a drill's devices), and a playbook that follows the cut is given one; or a
    clear error."""
    segment, drill_devices = scope.segment, scope.drill_devices
    if drill_devices is not None:
        if not drill_devices:
            raise ValidationFailed("a drill names the devices it may touch (drill_devices)")
        unknown = sorted(set(drill_devices) - {d.name for d in inventory.devices})
        if unknown:
            raise ValidationFailed(f"drill devices not in the inventory: {', '.join(unknown)}")
    if kind not in spec.incident_kinds:
        raise PlaybookError(f"playbook {spec.name} does not handle {kind.value} incidents")
    for named in scope.named:
        if named not in {a.id for a in inventory.areas}:
            known = ", ".join(sorted(a.id for a in inventory.areas))
            raise ValidationFailed(f"unknown area {named!r}; known: {known}")
    if segment is not None and inventory.segment(segment) is None:
        known = ", ".join(sorted(s.id for r in inventory.cable_routes for s in r.segments))
        raise ValidationFailed(f"unknown cable segment {segment!r}; known: {known or 'none'}")
    if segment is None and spec.needs_segment:
        raise ValidationFailed(
            f"playbook {spec.name} reroutes the circuits crossing the cut: name the cable "
            "segment that was cut (segment)"
        )


def prepare_incident(
    *,
    spec: PlaybookSpec,
    inventory: Inventory,
    incident_id: str,
    kind: IncidentKind,
    area: str,
    description: str,
    declared_by: str,
    timings: Timings,
    telephony: bool = True,
    segment: str | None = None,
    drill_devices: Collection[str] | None = None,
    also: Collection[str] = (),
    max_devices: int | None = None,
) -> IncidentInput:
    """The workflow input for a declaration, or a clear error; nothing has started yet.

    The caller keeps the input's inventory in the store (`Store.save_snapshot`) before it
    starts the workflow: device steps read it there by its SHA-256.
    """
    scope = Scope.declared(area, also=also, segment=segment, drill_devices=drill_devices)
    check_declarable(spec, inventory, kind=kind, scope=scope)
    scoped = area_inventory(inventory, scope)
    if max_devices is not None and len(scoped.devices) > max_devices:
        # Refused before anything starts: past its history's limits Temporal would end the
        # incident halfway, its circuits on backup (about 10 events and 5 KB a device).
        raise TooManyDevices(
            f"this declaration covers {len(scoped.devices)} devices; one incident takes at "
            f"most {max_devices} (CONTINUITY_MAX_DEVICES_PER_INCIDENT): declare its communes "
            "or cable segments as separate incidents"
        )
    try:
        check_timings({d.platform for d in scoped.devices}, timings)
    except ValidationFailed as e:
        raise TimingsUnfit(f"the configured confirmation window does not fit: {e}") from None
    incident = Incident(
        id=incident_id,
        kind=kind,
        area=area,
        description=description,
        declared_by=declared_by,
        declared_at=datetime.now(UTC),
        also=list(scope.also),
        areas=inventory.expand_areas(scope.named),
        segment=segment,
        drill=drill_devices is not None,
        drill_devices=list(scope.drill_devices or ()),
    )
    return IncidentInput(
        incident=incident,
        playbook=spec,
        playbook_sha256=spec.sha256(),
        inventory=scoped,
        inventory_sha256=inventory_sha256(scoped),
        timings=timings,
        telephony=telephony,
    )


__all__ = [
    "Scope",
    "TimingsUnfit",
    "TooManyDevices",
    "area_inventory",
    "check_declarable",
    "prepare_incident",
]
