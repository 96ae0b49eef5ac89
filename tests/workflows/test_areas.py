"""Areas as they are since 1 July 2025: communes and wards of Quảng Ngãi; the former province,
districts and city of Kon Tum kept as names that stand for their communes."""

from __future__ import annotations

import httpx

from app.stack import Stack
from continuity.models import AreaKind, CircuitState, IncidentPhase, Role
from tests.workflows.helpers import (
    auth,
    decide_until_active,
    part_on,
    stand_down,
    start_incident,
    two_waves,
)
from workflows.history_facts import history_facts

SPEC = two_waves(first=[1, 2, 3, 4, 5])


async def test_a_former_district_reroutes_the_circuits_of_its_communes(stack: Stack) -> None:
    inv = stack.store.inventory()
    district = inv.area("ngoc-hoi")
    assert district is not None and district.kind is AreaKind.FORMER_DISTRICT
    communes = [a for a in inv.areas if "ngoc-hoi" in a.former]
    assert {a.id for a in communes} == {"xa-ngoc-hoi", "xa-bo-y", "xa-sa-loong"}
    assert all(a.kind is AreaKind.COMMUNE and a.parent == "quang-ngai" for a in communes)
    theirs = {c.id for c in inv.circuits if c.area in {a.id for a in communes}}
    assert theirs == {"bgc-ngoc-hoi-post", "police-ngoc-hoi", "party-ngoc-hoi"}

    handle = await start_incident(stack, "ngoc-hoi", spec=SPEC)
    active = await decide_until_active(stack, handle)
    assert {c.circuit_id for c in active.circuits} == theirs
    assert all(c.state is CircuitState.ON_BACKUP for c in active.circuits)
    assert set(active.incident.areas) == {"ngoc-hoi", *(a.id for a in communes)}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        r = await api.get(
            "/circuits", params={"area": "ngoc-hoi"}, headers=auth(stack, Role.AUDITOR)
        )
        assert {c["id"] for c in r.json()} == theirs
        r = await api.get("/areas", headers=auth(stack, Role.DUTY_OFFICER))
        bo_y = next(a for a in r.json() if a["id"] == "xa-bo-y")
        assert bo_y["former"] == ["ngoc-hoi", "kon-tum"] and bo_y["kind"] == "commune"
    assert (await stand_down(handle)).phase is IncidentPhase.CLOSED

    # The reports name the units as they are now and the former ones.
    facts = await history_facts(await handle.fetch_history())
    en = facts.render("dossier_2c", "en")
    assert (
        "- Units now: Xã Bờ Y, Xã Ngọc Hồi, Xã Sa Loong (Tỉnh Quảng Ngãi); formerly: "
        "Tỉnh Kon Tum (cũ), Huyện Ngọc Hồi (cũ)" in en
    )
    vi = facts.render("dossier_2c", "vi")
    assert "Đơn vị hành chính hiện nay: Xã Bờ Y, Xã Ngọc Hồi, Xã Sa Loong" in vi


async def test_one_commune_moves_only_its_own_circuits(stack: Stack) -> None:
    handle = await start_incident(stack, "xa-bo-y", spec=SPEC)
    active = await decide_until_active(stack, handle)
    assert [c.circuit_id for c in active.circuits] == ["bgc-ngoc-hoi-post"]
    # The same device serves Xã Ngọc Hồi's circuits: they stay on their primary paths.
    assert part_on(stack, "bgc-ngoc-hoi-post", "nh-agg-01") == "backup"
    assert part_on(stack, "police-ngoc-hoi", "nh-agg-01") == "primary"
    assert active.incident.areas == ["xa-bo-y"]
    await stand_down(handle)


async def test_the_former_province_stands_for_all_of_it(stack: Stack) -> None:
    inv = stack.store.inventory()
    assert {c.area for c in inv.circuits} <= set(inv.expand_area("kon-tum"))
    assert {c.area for c in inv.circuits} <= set(inv.expand_area("quang-ngai"))  # and today's


async def test_a_set_of_communes_is_one_incident_signed_as_named(stack: Stack) -> None:
    from workflows.history_facts import history_facts as facts_of

    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        body = {"kind": "riot", "area": "xa-bo-y", "also": ["xa-dak-ha", "xa-bo-y"]}
        r = await api.post("/incidents", headers=auth(stack, Role.DUTY_OFFICER), json=body)
        assert r.status_code == 201, r.text
        incident_id = r.json()["id"]
        bad = {"kind": "riot", "area": "xa-bo-y", "also": ["atlantis"]}
        r = await api.post("/incidents", headers=auth(stack, Role.DUTY_OFFICER), json=bad)
        assert r.status_code == 422 and "unknown area 'atlantis'" in r.text
    from workflows import IncidentWorkflow

    handle = stack.client.get_workflow_handle_for(IncidentWorkflow.run, incident_id)
    active = await decide_until_active(stack, handle)
    assert {c.circuit_id for c in active.circuits} == {
        "bgc-ngoc-hoi-post",
        "pmc-dak-ha",
        "ppc-dak-ha",
    }
    assert active.incident.also == ["xa-dak-ha"]
    await stand_down(handle)
    history = await handle.fetch_history()
    from app.bundle import lines_not_rendered, verify_history
    from continuity.signing import load_public_key

    key = stack.settings.signing_key_path
    checked = await verify_history(history, [load_public_key(key.with_name(key.name + ".pub"))])
    assert checked.ok, checked.problems  # "also" is under the declaration's signature
    assert not lines_not_rendered(history)[1]
    assert "Xã Bờ Y, Xã Đăk Hà" in (await facts_of(history)).render("dossier_2c", "en")
