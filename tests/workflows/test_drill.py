"""A drill: marked as one in every record, report, SMS and call, and it never reaches a device
outside its set, whatever the playbook selects."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from app.stack import Stack
from continuity.errors import ValidationFailed
from continuity.incidents import prepare_incident
from continuity.models import CircuitState, IncidentKind, IncidentPhase, Role
from continuity.plan import plan_incident
from continuity.playbook import CallDutyOfficers
from playbooks import get_playbook
from tests.conftest import TEST_TIMINGS, wait_until
from tests.workflows.helpers import auth, decide_until_active, part_on, stand_down, two_waves
from workflows import IncidentWorkflow, calls_workflow_id
from workflows.history_facts import history_facts

AREA = "thanh-pho-kon-tum"
DRILL_SET = ["kt-core-01"]  # its circuits wholly on it: police-hq-command, ppc-office, ...


async def test_a_drill_is_marked_everywhere_and_touches_only_its_devices(stack: Stack) -> None:
    inv = stack.store.inventory()
    on_set = {
        c.id
        for c in inv.circuits
        if c.area in inv.expand_area(AREA) and all(p.device in DRILL_SET for p in c.paths)
    }
    partly = {c.id for c in inv.circuits if c.area in inv.expand_area(AREA)} - on_set
    assert on_set and "pmc-hq-command" in partly  # it crosses kt-agg-01 too: not in the drill
    others = [d.name for d in inv.devices if d.name not in DRILL_SET]
    before = {n: len(stack.network.devices[n].received) for n in others}
    sms_before = len(stack.sandbox.messages)

    spec = two_waves(first=[1, 2, 3, 4, 5])
    spec.steps.insert(1, CallDutyOfficers(message_vi="Sự cố", message_en="Incident", rounds=1))
    plan = plan_incident(
        spec, inv, area=AREA, kind=IncidentKind.RIOT, timings=TEST_TIMINGS,
        drill_devices=DRILL_SET,
    )  # fmt: skip
    assert set(plan.circuits) == on_set and {c.device for c in plan.changes} == set(DRILL_SET)

    # Declared through the API, as a duty officer would (the API signs it).
    body = {"kind": "riot", "area": AREA, "drill": True, "drill_devices": DRILL_SET}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        # A playbook chosen by name: the shipped one, which would select every circuit.
        r = await api.post("/incidents", headers=auth(stack, Role.DUTY_OFFICER), json=body)
        assert r.status_code == 201, r.text
        incident_id = r.json()["id"]
        r = await api.post(
            "/incidents",
            headers=auth(stack, Role.DUTY_OFFICER),
            json={"kind": "riot", "area": AREA, "drill_devices": DRILL_SET},
        )
        assert r.status_code == 422 and "set drill to true" in r.text
    handle = stack.client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
    active = await decide_until_active(stack, handle)
    assert {c.circuit_id for c in active.circuits} == on_set
    assert all(c.state is CircuitState.ON_BACKUP for c in active.circuits)
    assert active.incident.drill and active.incident.drill_devices == DRILL_SET
    assert active.timeline[0].event == "declared"
    drill_note = next(e.detail for e in active.timeline if e.event == "drill")
    assert "Đây là diễn tập" in drill_note and "This is a drill" in drill_note
    assert {n: len(stack.network.devices[n].received) for n in others} == before
    for cid in partly:
        circuit = next(c for c in inv.circuits if c.id == cid)
        assert all(part_on(stack, cid, p.device) == "primary" for p in circuit.paths)

    # The calls say so, first, in both languages.
    calls = await stack.client.get_workflow_handle(calls_workflow_id(incident_id)).fetch_history()
    started = json.loads(calls.to_json())["events"][0]["workflowExecutionStartedEventAttributes"]
    call_input = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
    assert call_input["message_vi"].startswith("Đây là diễn tập. ")
    assert call_input["message_en"].startswith("This is a drill. ")

    assert (await stand_down(handle)).phase is IncidentPhase.CLOSED
    ended = [
        m.body
        for m in stack.sandbox.messages[sms_before:]
        if "kết thúc" in m.body or "stood down" in m.body
    ]
    assert ended and all(b.startswith(("Đây là diễn tập. ", "This is a drill. ")) for b in ended)
    assert {n: len(stack.network.devices[n].received) for n in others} == before

    # Every report says it was a drill.
    facts = await history_facts(await handle.fetch_history())
    for lang in ("vi", "en"):
        for form in ("timeline", "dossier_2c"):
            text = facts.render(form, lang)
            assert "**Đây là diễn tập / This is a drill" in text.split("\n- ")[0], (form, lang)

    async def stored() -> list[str] | None:
        rows = [r.text for r in stack.store.reports(incident_id)]
        return rows if len(rows) >= 2 else None

    texts: list[str] = await wait_until(stored, timeout_s=10, what="reports")  # type: ignore[assignment]
    assert all("This is a drill" in t for t in texts)


def test_a_drill_names_known_devices(stack: Stack) -> None:
    def declare(devices: list[str]) -> None:
        prepare_incident(
            spec=get_playbook("kon-tum-2a"), inventory=stack.store.inventory(),
            incident_id="INC-d", kind=IncidentKind.RIOT, area=AREA, description="",
            declared_by="do-1", timings=TEST_TIMINGS, drill_devices=devices,
        )  # fmt: skip

    with pytest.raises(ValidationFailed, match="names the devices it may touch"):
        declare([])
    with pytest.raises(ValidationFailed, match="not in the inventory: ghost-01"):
        declare(["ghost-01"])
