"""A cable route cut by sabotage: the circuits crossing the cut segment, exactly, are moved,
whatever area they serve; the dossier names the route, the segment and the works along it."""

from __future__ import annotations

import pytest

from app.stack import Stack
from continuity.errors import ValidationFailed
from continuity.incidents import prepare_incident
from continuity.models import CircuitState, IncidentKind, IncidentPhase, Inventory, PriorityClass
from continuity.plan import plan_incident
from continuity.playbook import Notify, RerouteWave, SelectCircuits
from playbooks import get_playbook
from tests.conftest import TEST_TIMINGS, wait_until
from tests.workflows.helpers import (
    decide_until_active,
    part_on,
    stand_down,
    start_incident,
    status,
    two_waves,
)

CUT = "ql14-kt-dh"  # QL14 Kon Tum – Đắk Hà: Đắk Hà, Đắk Tô and Ngọc Hồi reach the city over it


def _crossing(inv: Inventory, segment: str) -> set[str]:
    return {c.id for c in inv.circuits if any(segment in p.crosses for p in c.paths)}


def test_the_plan_selects_exactly_the_circuits_crossing_each_segment(stack: Stack) -> None:
    inv = stack.store.inventory()
    spec = get_playbook("sabotage-cable-cut")
    segments = [s.id for r in inv.cable_routes for s in r.segments]
    assert len(segments) >= 4
    for segment in segments:
        plan = plan_incident(
            spec, inv, area="dak-ha", kind=IncidentKind.SABOTAGE, timings=TEST_TIMINGS,
            segment=segment,
        )  # fmt: skip
        assert set(plan.circuits) == _crossing(inv, segment), segment
        devices = {p.device for c in inv.circuits if c.id in plan.circuits for p in c.paths}
        assert {c.device for c in plan.changes} == devices
    # Across areas: the cut on QL14 south of Đắk Hà reaches Đắk Tô and Ngọc Hồi too.
    areas = {c.area for c in inv.circuits if c.id in _crossing(inv, CUT)}
    former = {f for a in inv.areas if a.id in areas for f in a.former}
    assert former == {"dak-ha", "dak-to", "ngoc-hoi", "kon-tum"}  # three former districts


def test_a_declaration_must_name_a_known_cut_segment(stack: Stack) -> None:
    inv = stack.store.inventory()

    def declare(segment: str | None) -> None:
        prepare_incident(
            spec=get_playbook("sabotage-cable-cut"), inventory=inv, incident_id="INC-x",
            kind=IncidentKind.SABOTAGE, area="dak-ha", description="", declared_by="do-1",
            timings=TEST_TIMINGS, segment=segment,
        )  # fmt: skip

    with pytest.raises(ValidationFailed, match="name the cable segment that was cut"):
        declare(None)
    with pytest.raises(ValidationFailed, match="unknown cable segment 'nowhere'; known: "):
        declare("nowhere")
    bad = inv.model_dump(mode="json")
    bad["circuits"][0]["paths"][0]["crosses"] = ["not-a-segment"]
    with pytest.raises(ValueError, match="crosses unknown cable segments"):
        Inventory.model_validate(bad)


async def test_a_step_for_other_kinds_is_skipped_and_recorded(stack: Stack) -> None:
    inv = stack.store.inventory()
    spec = two_waves(first=[1, 2], second=[3, 4, 5])
    steps = list(spec.steps)
    steps[1] = RerouteWave(
        name="riots only", restoration_levels=[1, 2], when_kinds=[IncidentKind.RIOT]
    )
    only_riots = spec.model_copy(update={"steps": steps})
    plans = {
        kind: plan_incident(only_riots, inv, area="ngoc-hoi", kind=kind, timings=TEST_TIMINGS)
        for kind in (IncidentKind.SABOTAGE, IncidentKind.RIOT)
    }
    assert {c.wave_name for c in plans[IncidentKind.RIOT].changes} == {"riots only", "second"}
    assert {c.wave_name for c in plans[IncidentKind.SABOTAGE].changes} == {"second"}

    handle = await start_incident(stack, "ngoc-hoi", spec=only_riots)
    active = await decide_until_active(stack, handle)
    skipped = [e.detail for e in active.timeline if e.event == "step skipped"]
    assert skipped == ["reroute_wave: only for riot incidents"]
    # The run numbers its waves as the plan does: a skipped wave is not counted.
    assert {c.wave for c in active.changes} == {
        c.wave for c in plans[IncidentKind.SABOTAGE].changes
    }
    assert (await stand_down(handle)).phase is IncidentPhase.CLOSED


def test_new_playbook_fields_at_their_defaults_leave_every_recorded_hash_as_it_was() -> None:
    spec = get_playbook("kon-tum-2a")
    select = spec.steps[0]
    assert isinstance(select, SelectCircuits)
    # The same spec written out with the fields added later, at their defaults, hashes alike.
    explicit = spec.model_copy(
        update={
            "steps": [
                select.model_copy(update={"owners": [], "tags": [], "crossing_cut_segment": False}),
                *spec.steps[1:],
            ]
        }
    )
    assert explicit.sha256() == spec.sha256()
    tagged = explicit.model_copy(
        update={"steps": [select.model_copy(update={"tags": ["command"]}), *spec.steps[1:]]}
    )
    assert tagged.sha256() != spec.sha256()  # once set, part of the hash
    assert Notify(message_vi="a", message_en="b", when_kinds=[IncidentKind.RIOT]).applies_to(
        IncidentKind.RIOT
    )


async def test_a_cut_segment_moves_its_circuits_in_three_areas_and_only_those(
    stack: Stack,
) -> None:
    inv = stack.store.inventory()
    crossing = _crossing(inv, CUT)
    spared = {c.id for c in inv.circuits} - crossing
    touched = {p.device for c in inv.circuits if c.id in crossing for p in c.paths}
    untouched = {d.name for d in inv.devices} - touched
    before = {name: len(stack.network.devices[name].received) for name in untouched}

    handle = await start_incident(
        stack, "dak-ha", spec=get_playbook("sabotage-cable-cut"), segment=CUT
    )
    active = await decide_until_active(stack, handle)
    assert {c.circuit_id for c in active.circuits} == crossing
    assert all(c.state is CircuitState.ON_BACKUP for c in active.circuits)
    for c in inv.circuits:
        for p in c.paths:
            assert part_on(stack, c.id, p.device) == ("backup" if c.id in crossing else "primary")
    assert {name: len(stack.network.devices[name].received) for name in untouched} == before
    selected = next(e.detail for e in active.timeline if e.event == "selected")
    assert f"crossing cut cable segment {CUT}" in selected

    result = await stand_down(handle)
    assert result.phase is IncidentPhase.CLOSED
    assert all(part_on(stack, c.id, p.device) == "primary" for c in inv.circuits for p in c.paths)
    st = await status(handle)
    assert st.incident.segment == CUT and spared.isdisjoint(c.circuit_id for c in st.circuits)

    async def dossier() -> str | None:
        rows = [r for r in stack.store.reports(handle.id) if r.form == "dossier_2c"]
        return rows[0].text if rows else None

    text: str = await wait_until(dossier, timeout_s=10, what="the dossier")  # type: ignore[assignment]
    assert (
        "Cable cut: segment **Kon Tum – Đắk Hà (QL14, km 0–22)** (ql14-kt-dh) of route "
        "**Tuyến cáp QL14 Kon Tum – Đắk Hà – Đắk Tô – Ngọc Hồi** (ql14-north)" in text
    )
    works = text.split("## Works along the cut segment")[1].split("\n## ")[0]
    assert "| mh-kt-014 | manhole | Hố ga MH-014 | QL14, phường Ngô Mây, trước số 312 |" in works
    assert "| pl-dh-118 | pole |" in works
    for cid in crossing:
        assert f"| {cid} |" in text
    assert [c for c in PriorityClass]  # every class selected by the shipped playbook
