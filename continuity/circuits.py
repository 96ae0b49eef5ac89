"""Circuit rules, pure: which circuits an incident moves and in what order, a circuit's state
from its device parts, and which paths share a route. The workflow and `playbook plan` both
use them, so a plan lists exactly the changes an incident makes."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from continuity.errors import ValidationFailed
from continuity.models import (
    Circuit,
    CircuitPath,
    CircuitState,
    PartState,
    PriorityClass,
    RerouteMechanism,
    RouteChange,
)
from continuity.playbook import SelectCircuits

# Restoration order within a level: armed forces, then Party, then State bodies (2a).
CLASS_ORDER = [PriorityClass.ARMED_FORCES, PriorityClass.PARTY, PriorityClass.STATE]


def select_circuits(
    circuits: Iterable[Circuit],
    areas: Collection[str],
    step: SelectCircuits,
    *,
    segment: str | None = None,
) -> list[Circuit]:
    """What `step` selects for an incident covering `areas` (or, for a step that follows the
    cut, on the cable `segment`), in restoration order."""
    wanted = set(step.priority_classes)
    owners, tags = set(step.owners), set(step.tags)
    if step.crossing_cut_segment:
        if segment is None:
            raise ValidationFailed("this playbook selects by the cut cable segment: name one")
        chosen = [c for c in circuits if c.crosses(segment)]
    else:
        chosen = [c for c in circuits if c.area in areas]
    chosen = [
        c
        for c in chosen
        if c.priority_class in wanted
        and c.restoration_level <= step.max_restoration_level
        and (not owners or c.owner in owners)
        and (not tags or tags & set(c.tags))
    ]
    chosen.sort(key=lambda c: (c.restoration_level, CLASS_ORDER.index(c.priority_class), c.id))
    return chosen


def wave_batches(
    circuits: Iterable[Circuit], levels: Iterable[int]
) -> dict[str, list[RouteChange]]:
    """A wave's changes: device -> its routes, devices in the order their first circuit comes
    (the circuits given in restoration order: a level-1 circuit's devices come first)."""
    wanted = set(levels)
    batches: dict[str, list[RouteChange]] = {}
    for c in circuits:
        if c.restoration_level in wanted:
            for p in c.paths:
                batches.setdefault(p.device, []).append(RouteChange(circuit_id=c.id, path=p))
    return batches


_BACKUP_SIDE = {PartState.BACKUP, PartState.BACKUP_UNCONFIRMED}


def circuit_state(parts: Iterable[PartState]) -> CircuitState:
    """One state for a circuit from the states of its parts (a part never touched is primary).

    Anything unknown, or parts that disagree while nothing moves them, needs attention: a
    half-rerouted circuit is asymmetric and dead while its primary is cut.
    """
    states = list(parts) or [PartState.PRIMARY]
    if PartState.UNKNOWN in states:
        return CircuitState.NEEDS_ATTENTION
    if PartState.RETURNING in states:
        return CircuitState.RETURNING
    if PartState.APPLYING in states:
        return CircuitState.MOVING
    if all(s is PartState.PRIMARY for s in states):
        return CircuitState.ON_PRIMARY
    if all(s is PartState.BACKUP for s in states):
        return CircuitState.ON_BACKUP
    if all(s in _BACKUP_SIDE for s in states):
        return CircuitState.ON_BACKUP_UNCONFIRMED
    return CircuitState.NEEDS_ATTENTION


def path_key(path: CircuitPath, circuit_id: str) -> str:
    """What a path changes on its device: two circuits with the same key share device lines.

    A static route is the prefix and both next hops; a policy route is the circuit's own
    policy object, never shared.
    """
    if RerouteMechanism(path.mechanism) is RerouteMechanism.SOURCE_PBR:
        return f"pbr:{circuit_id}"
    return f"static:{path.prefix}:{path.primary.address}:{path.backup.address}"


def dedupe(changes: Sequence[RouteChange]) -> list[RouteChange]:
    """One change per distinct device line set, first circuit kept (the others ride along)."""
    seen: set[str] = set()
    out: list[RouteChange] = []
    for c in changes:
        key = path_key(c.path, c.circuit_id)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def parts_by_circuit(
    parts: Mapping[tuple[str, str], PartState], circuit_devices: Mapping[str, Sequence[str]]
) -> dict[str, CircuitState]:
    """Circuit id -> state, from part states keyed (circuit, device) and each circuit's devices."""
    return {
        cid: circuit_state(parts.get((cid, d), PartState.PRIMARY) for d in devices)
        for cid, devices in circuit_devices.items()
    }


__all__ = ["circuit_state", "dedupe", "parts_by_circuit", "path_key"]
