"""A playbook's plan is exactly what the lab then receives, line for line."""

from __future__ import annotations

import pytest

from app.stack import SAMPLE_INVENTORY, Stack
from continuity.models import Decision, Direction, IncidentKind, Role
from continuity.plan import plan_incident
from playbooks import get_playbook
from tests.conftest import TEST_TIMINGS, wait_until
from tests.workflows.helpers import (
    awaiting,
    decide_until_active,
    pending_changes,
    stand_down,
    start_incident,
    status,
)


@pytest.mark.parametrize("area", ["ngoc-hoi", "thanh-pho-kon-tum"])
async def test_plan_equals_what_the_lab_receives(stack: Stack, area: str):
    spec = get_playbook("kon-tum-2a")
    plan = plan_incident(
        spec, stack.store.inventory(), area=area, kind=IncidentKind.SABOTAGE, timings=TEST_TIMINGS
    )
    assert plan.changes and plan.restores
    devices = {c.device for c in plan.changes}
    before = {d: len(stack.network.devices[d].received) for d in devices}

    handle = await start_incident(stack, area, spec=spec)
    st = await decide_until_active(stack, handle)
    await stand_down(handle)
    final = await status(handle)

    # The record: each reroute change sent its planned lines, then its confirmation; each
    # stand-down restore its planned lines.
    rerouted = {(c.device, c.wave): c for c in st.changes if c.direction is Direction.REROUTE}
    assert set(rerouted) == {(c.device, c.wave) for c in plan.changes}
    for p in plan.changes:
        assert rerouted[(p.device, p.wave)].commands == p.reroute + p.confirm, p.device
    restored = {c.device: c for c in final.changes if c.direction is Direction.RESTORE}
    for r in plan.restores:
        assert restored[r.device].commands == r.commands, r.device

    # The devices: every configuration line they received, in order, is the plan's.
    planned = {ln for c in plan.changes for ln in c.reroute + c.confirm}
    planned |= {ln for r in plan.restores for ln in r.commands}
    for device in devices:
        got = [
            ln for ln in stack.network.devices[device].received[before[device] :] if ln in planned
        ]
        want = [ln for c in plan.changes if c.device == device for ln in c.reroute + c.confirm]
        want += next(r.commands for r in plan.restores if r.device == device)
        assert got == want, device


def test_plan_is_reproducible_and_changes_with_the_inventory(stack: Stack):
    spec = get_playbook("kon-tum-2a")
    inv = stack.store.inventory()
    a = plan_incident(spec, inv, area="ngoc-hoi", kind=IncidentKind.RIOT, timings=TEST_TIMINGS)
    b = plan_incident(spec, inv, area="ngoc-hoi", kind=IncidentKind.RIOT, timings=TEST_TIMINGS)
    assert a.sha256 == b.sha256
    circuit = next(c for c in inv.circuits if c.area in inv.expand_area("ngoc-hoi"))
    moved = circuit.paths[0].backup.model_copy(update={"address": "10.254.99.1"})
    circuit.paths[0] = circuit.paths[0].model_copy(update={"backup": moved})
    c = plan_incident(spec, inv, area="ngoc-hoi", kind=IncidentKind.RIOT, timings=TEST_TIMINGS)
    assert c.sha256 != a.sha256
    assert any("10.254.99.1" in ln for ch in c.changes for ln in ch.reroute)


async def test_plan_route_for_engineers_and_duty_officers(stack: Stack, api, auth):  # type: ignore[no-untyped-def]
    before = {n: len(d.received) for n, d in stack.network.devices.items()}
    r = await api.get(
        "/playbooks/kon-tum-2a/plan",
        params={"area": "ngoc-hoi", "kind": "riot"},
        headers=auth(Role.ENGINEER),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    want = plan_incident(
        get_playbook("kon-tum-2a"),
        stack.store.inventory(),
        area="ngoc-hoi",
        kind=IncidentKind.RIOT,
        timings=stack.settings.timings,
    )
    assert body["sha256"] == want.sha256
    assert (await api.get(
        "/playbooks/kon-tum-2a/plan", params={"area": "ngoc-hoi"}, headers=auth(Role.DUTY_OFFICER)
    )).status_code == 200  # fmt: skip
    assert (await api.get(
        "/playbooks/kon-tum-2a/plan", params={"area": "ngoc-hoi"}, headers=auth(Role.OPERATOR)
    )).status_code == 403  # fmt: skip
    r = await api.get(
        "/playbooks/no-such/plan", params={"area": "ngoc-hoi"}, headers=auth(Role.ENGINEER)
    )
    assert r.status_code == 404
    r = await api.get(
        "/playbooks/kon-tum-2a/plan", params={"area": "atlantis"}, headers=auth(Role.ENGINEER)
    )
    assert r.status_code == 422 and "unknown area" in r.text
    assert {n: len(d.received) for n, d in stack.network.devices.items()} == before


def test_cli_plan_prints_every_line(capsys: pytest.CaptureFixture[str], tmp_path):  # type: ignore[no-untyped-def]
    from app.cli import run

    plan = ["playbook", "plan", "kon-tum-2a", "--area", "ngoc-hoi",
            "--inventory", str(SAMPLE_INVENTORY)]  # fmt: skip
    assert run(plan) == 0
    out = capsys.readouterr().out
    assert "wave 1" in out and "commit trial" in out and "stand-down nh-agg-01" in out
    assert run([*plan, "--kind", "flood"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown incident kind 'flood'")


async def test_a_decision_on_a_stale_screen_is_refused_and_recorded(stack: Stack, api, auth):  # type: ignore[no-untyped-def]
    spec = get_playbook("kon-tum-2a")
    plan = plan_incident(
        spec, stack.store.inventory(), area="ngoc-hoi", kind=IncidentKind.SABOTAGE,
        timings=TEST_TIMINGS,
    )  # fmt: skip
    handle = await start_incident(stack, "ngoc-hoi", spec=spec)
    (cid,) = await awaiting(stack, handle, 1)
    r = await api.get(f"/incidents/{handle.id}/changes", headers=auth(Role.OPERATOR))
    shown = next(c for c in r.json() if c["change_id"] == cid)["lines_sha256"]
    # What the operator's screen shows is the plan's hash of the change: the plan, reviewed
    # before the declaration, is what is being confirmed.
    assert shown == next(c.sha256 for c in plan.changes if c.wave == 1)

    stale = "0" * 64
    r = await api.post(
        f"/incidents/{handle.id}/changes/{cid}/decision",
        headers=auth(Role.OPERATOR),
        json={"decision": "confirm", "lines_sha256": stale},
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "StaleChange" and "reload" in r.json()["detail"]
    attempts = stack.store.decision_attempts(handle.id)
    assert [a.outcome for a in attempts] == ["StaleChange"]

    async def refused_in_history() -> bool:
        st = await status(handle)
        return any("StaleChange" in e.detail for e in st.timeline)

    await wait_until(refused_in_history, what="the stale decision in the timeline")
    assert cid in await pending_changes(stack, handle.id)  # still awaiting, untouched
    row = stack.store.change(cid)
    assert row is not None and row.decision is None

    r = await api.post(
        f"/incidents/{handle.id}/changes/{cid}/decision",
        headers=auth(Role.OPERATOR),
        json={"decision": "confirm", "lines_sha256": shown},
    )
    assert r.status_code == 200, r.text
    await decide_until_active(stack, handle, lambda c: None if c == cid else Decision.CONFIRM)
    await stand_down(handle)
