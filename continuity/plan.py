"""What a playbook would send, before it sends anything: the engineer's dry run.

`plan_incident` walks a playbook's steps as the incident workflow does (the same circuit
selection and wave batching, continuity.circuits) and renders, with each device's dialect,
the exact lines of every change: the reroute (with its device-side auto-revert armed), the
confirmation an operator's "confirm" sends, and the restore a stand-down sends. It touches no
device and no store. The lines are what a device on its primary paths receives; a device
already on backup (another incident holds it) gets nothing, and a retry sends only what is
missing. Each change has the SHA-256 of its lines, and the plan the SHA-256 of all of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field

from pydantic import BaseModel

from continuity.circuits import dedupe, select_circuits, wave_batches
from continuity.dialects import check_timings, dialect_for
from continuity.dialects.base import Dialect
from continuity.incidents import Scope, area_inventory, check_declarable
from continuity.messages import StepTimings, Timings
from continuity.models import (
    Circuit,
    Device,
    Direction,
    IncidentKind,
    Inventory,
    RouteChange,
    inventory_sha256,
)
from continuity.playbook import PlaybookSpec, RerouteWave, SelectCircuits


class PlannedChange(BaseModel):
    wave: int
    wave_name: str
    device: str
    platform: str
    circuits: list[str]
    reroute: list[str]  # sent at once, the device's own revert timer armed
    confirm: list[str]  # sent when an operator confirms
    # lines_sha256(reroute): what the operator's screen shows for the change once it awaits
    # confirmation (GET /incidents/{id}/changes), and what a decision may name.
    sha256: str


def lines_sha256(lines: list[str]) -> str:
    """The hash of the lines a change sent: one line each, in order."""
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()


class PlannedRestore(BaseModel):
    """A stand-down's one restore per device, every wave's routes on it together."""

    device: str
    circuits: list[str]
    commands: list[str]  # restore and confirm, in one session


class Plan(BaseModel):
    playbook: str
    version: int
    playbook_sha256: str
    area: str
    kind: IncidentKind
    segment: str | None = None  # the cut cable segment, for a playbook that follows it
    also: list[str] = []  # further units covered with `area`
    inventory_sha256: str
    circuits: list[str]  # selected, in restoration order
    changes: list[PlannedChange]
    restores: list[PlannedRestore]
    sha256: str


@dataclass
class _Walk:
    """A playbook's steps walked as the incident workflow walks them."""

    scoped: Inventory
    devices: dict[str, Device]
    revert_s: float
    selected: list[Circuit] = field(default_factory=list)
    # (wave, its step, device -> the routes it moves there), in the order the run sends them
    waves: list[tuple[int, RerouteWave, dict[str, list[RouteChange]]]] = field(default_factory=list)


def _walk(
    spec: PlaybookSpec, inventory: Inventory, *, kind: IncidentKind, timings: Timings, scope: Scope
) -> _Walk:
    check_declarable(spec, inventory, kind=kind, scope=scope)
    scoped = area_inventory(inventory, scope)
    check_timings({d.platform for d in scoped.devices}, timings)
    step_t = StepTimings.of(timings)
    walk = _Walk(
        scoped=scoped,
        devices={d.name: d for d in scoped.devices},
        revert_s=step_t.revert_window_s * step_t.device_time_scale,
    )
    wave = 0
    for step in spec.steps:
        if not step.applies_to(kind):
            continue
        if isinstance(step, SelectCircuits):
            walk.selected = select_circuits(
                scoped.circuits, inventory.expand_areas(scope.named), step, segment=scope.segment
            )
        elif isinstance(step, RerouteWave):
            wave += 1
            walk.waves.append((wave, step, wave_batches(walk.selected, step.restoration_levels)))
    return walk


def plan_incident(
    spec: PlaybookSpec,
    inventory: Inventory,
    *,
    area: str,
    kind: IncidentKind,
    timings: Timings,
    segment: str | None = None,
    drill_devices: Collection[str] | None = None,
    also: Collection[str] = (),
) -> Plan:
    """The changes an incident of `kind` in `area` (and on the cut `segment`; a drill on
    `drill_devices` only) would make, for the inventory as it is."""
    scope = Scope.declared(area, also=also, segment=segment, drill_devices=drill_devices)
    walk = _walk(spec, inventory, kind=kind, timings=timings, scope=scope)
    changes: list[PlannedChange] = []
    on_device: dict[str, list[RouteChange]] = {}  # what a stand-down restores, per device
    for wave, step, batches in walk.waves:
        for device, routes in batches.items():
            dialect = dialect_for(walk.devices[device].platform)
            reroute = dialect.render_apply(
                dedupe(routes), direction=Direction.REROUTE, revert_s=walk.revert_s
            ).commands()
            changes.append(
                PlannedChange(
                    wave=wave,
                    wave_name=step.name,
                    device=device,
                    platform=walk.devices[device].platform.value,
                    circuits=[r.circuit_id for r in routes],
                    reroute=reroute,
                    confirm=_finish(dialect),
                    sha256=lines_sha256(reroute),
                )
            )
            on_device.setdefault(device, []).extend(routes)
    restores = []
    for device, routes in on_device.items():
        dialect = dialect_for(walk.devices[device].platform)
        revert = walk.revert_s if dialect.native_auto_revert else None
        lines = dialect.render_apply(dedupe(routes), direction=Direction.RESTORE, revert_s=revert)
        restores.append(
            PlannedRestore(
                device=device,
                circuits=[r.circuit_id for r in routes],
                commands=lines.commands() + _finish(dialect),
            )
        )
    digest = json.dumps(
        {
            "changes": [c.model_dump(mode="json") for c in changes],
            "restores": [r.model_dump(mode="json") for r in restores],
        },
        separators=(",", ":"),
    )
    return Plan(
        playbook=spec.name,
        version=spec.version,
        playbook_sha256=spec.sha256(),
        area=area,
        kind=kind,
        segment=segment,
        also=list(scope.also),
        inventory_sha256=inventory_sha256(walk.scoped),
        circuits=[c.id for c in walk.selected],
        changes=changes,
        restores=restores,
        sha256=hashlib.sha256(digest.encode()).hexdigest(),
    )


def device_lines(
    spec: PlaybookSpec, inventory: Inventory, *, kind: IncidentKind, timings: Timings, scope: Scope
) -> dict[str, set[str]]:
    """Every line the playbook may send each device of an incident, whatever happens: the
    reroute and the restore (with and without the device's timer, armed or not, any part of
    them a retry sends), the confirmation, the abort of a pending change and the inverse lines
    of an undo. The auditor's check that each line a history says was sent is one the playbook
    and the inventory recorded in that history render (`audit verify`)."""
    walk = _walk(spec, inventory, kind=kind, timings=timings, scope=scope)
    groups: dict[str, list[list[RouteChange]]] = {}  # device -> each wave's routes on it
    for _wave, _step, batches in walk.waves:
        for device, routes in batches.items():
            groups.setdefault(device, []).append(routes)
    out: dict[str, set[str]] = {}
    for device, waves in groups.items():
        dialect = dialect_for(walk.devices[device].platform)
        lines = set(dialect.render_confirm()) | set(dialect.persist_commands)
        for group in [*waves, [r for w in waves for r in w]]:
            unique = dedupe(group)
            for direction in (Direction.REROUTE, Direction.RESTORE):
                for revert in (walk.revert_s, None):
                    for armed in (False, True):
                        lines.update(
                            dialect.render_apply(
                                unique, direction=direction, revert_s=revert, armed=armed
                            ).commands()
                        )
                lines.update(dialect.render_inverse(unique, direction))
                lines.update(dialect.render_rollback(unique, direction))
        out[device] = lines
    return out


def _finish(dialect: Dialect) -> list[str]:
    """What accepts a change: confirm and save; only save where the platform has no timer
    (nothing is pending there)."""
    if dialect.native_auto_revert:
        return dialect.render_confirm()
    return list(dialect.persist_commands)


def render_plan(plan: Plan) -> str:
    """The plan as an engineer reads it in a terminal or a review."""
    lines = [
        f"plan of {plan.playbook} v{plan.version} for a {plan.kind.value} incident in "
        + " + ".join([plan.area, *plan.also])
        + (f", cable segment {plan.segment} cut" if plan.segment else ""),
        f"  playbook sha256 {plan.playbook_sha256[:16]}, inventory sha256 "
        f"{plan.inventory_sha256[:16]}, plan sha256 {plan.sha256}",
        f"  {len(plan.circuits)} circuits in restoration order: {', '.join(plan.circuits)}",
    ]
    for c in plan.changes:
        lines.append("")
        lines.append(
            f"wave {c.wave} ({c.wave_name}) {c.device} [{c.platform}] circuits "
            f"{', '.join(c.circuits)}  change sha256 {c.sha256[:16]}"
        )
        for title, cmds in (("reroute", c.reroute), ("on confirmation", c.confirm)):
            lines.append(f"  {title}:")
            lines += [f"    {line}" for line in cmds]
    for r in plan.restores:
        lines.append("")
        lines.append(f"stand-down {r.device}, circuits {', '.join(r.circuits)}:")
        lines += [f"    {line}" for line in r.commands]
    return "\n".join(lines)


__all__ = [
    "Plan",
    "PlannedChange",
    "PlannedRestore",
    "device_lines",
    "lines_sha256",
    "plan_incident",
    "render_plan",
]
