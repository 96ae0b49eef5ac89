"""Declaring an incident: the checks that come before anything runs, and the workflow's input."""

from __future__ import annotations

from datetime import UTC, datetime

from continuity.dialects import check_timings
from continuity.errors import PlaybookError, ValidationFailed
from continuity.messages import IncidentInput, Timings
from continuity.models import Incident, IncidentKind, Inventory, inventory_sha256
from continuity.playbook import PlaybookSpec


class TimingsUnfit(ValidationFailed):
    """The deployment's confirmation window cannot be held by some device's timer."""


def area_inventory(inventory: Inventory, area: str) -> Inventory:
    """What an incident in `area` may touch: its circuits and their devices, and the people."""
    circuits = [c for c in inventory.circuits if c.area == area]
    names = {p.device for c in circuits for p in c.paths}
    return inventory.model_copy(
        update={
            "areas": [a for a in inventory.areas if a.id == area],
            "circuits": circuits,
            "devices": [d for d in inventory.devices if d.name in names],
        }
    )


def check_declarable(
    spec: PlaybookSpec, inventory: Inventory, *, kind: IncidentKind, area: str
) -> None:
    """The playbook handles `kind` and the inventory knows `area`, or a clear error."""
    if kind not in spec.incident_kinds:
        raise PlaybookError(f"playbook {spec.name} does not handle {kind.value} incidents")
    if area not in {a.id for a in inventory.areas}:
        known = ", ".join(sorted(a.id for a in inventory.areas))
        raise ValidationFailed(f"unknown area {area!r}; known: {known}")


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
) -> IncidentInput:
    """The workflow input for a declaration, or a clear error; nothing has started yet.

    The caller keeps the input's inventory in the store (`Store.save_snapshot`) before it
    starts the workflow: device steps read it there by its SHA-256.
    """
    check_declarable(spec, inventory, kind=kind, area=area)
    scoped = area_inventory(inventory, area)
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


__all__ = ["TimingsUnfit", "area_inventory", "check_declarable", "prepare_incident"]
