"""The mission through the HTTP API, on the real stack: Temporal, lab over SSH, Twilio sandbox."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from temporalio.service import RPCError, RPCStatusCode

from api.app import create_app
from api.schemas import ChangePublic
from app.audit import replay
from app.stack import Stack
from continuity.messages import StandDownInput
from continuity.models import (
    ChangeState,
    CircuitState,
    IncidentPhase,
    IncidentStatus,
    RerouteMechanism,
    Role,
)
from continuity.settings import Settings
from continuity.store import CHANGE_LIST_COLUMNS
from tests.conftest import wait_until
from tests.workflows.helpers import signed


def _routes_point_to(stack: Stack, area: str, which: str) -> bool:
    """Static-route circuits forward via `which`; policy-routed ones carry the policy or not."""
    inv = stack.store.inventory()
    for c in inv.circuits:
        if c.area not in inv.expand_area(area):
            continue
        for p in c.paths:
            device = stack.network.devices[p.device]
            if p.mechanism is RerouteMechanism.SOURCE_PBR:
                if (f"CT-{c.id}" in device.running_config()) != (which == "backup"):
                    return False
                continue
            want = p.backup.address if which == "backup" else p.primary.address
            if device.static_routes().get(p.prefix, []) != [want]:
                return False
    return True


async def _status(api: httpx.AsyncClient, auth, incident_id: str) -> IncidentStatus:  # type: ignore[no-untyped-def]
    r = await api.get(f"/incidents/{incident_id}", headers=auth(Role.AUDITOR))
    assert r.status_code == 200, r.text
    return IncidentStatus.model_validate(r.json()["status"])


async def _decide_all_until_active(api, auth, incident_id: str, decision: str) -> IncidentStatus:  # type: ignore[no-untyped-def]
    """What an operator's screen does: answer each change listed as awaiting, once."""
    decided: set[str] = set()

    async def step() -> IncidentStatus | None:
        r = await api.get(
            f"/incidents/{incident_id}/changes",
            params={"state": "awaiting_confirmation"},
            headers=auth(Role.OPERATOR),
        )
        assert r.status_code == 200, r.text
        for change in r.json():
            if change["change_id"] in decided:
                continue
            r = await api.post(
                f"/incidents/{incident_id}/changes/{change['change_id']}/decision",
                headers=auth(Role.OPERATOR),
                json={"decision": decision, "reason": "checked from the NOC"},
            )
            # 409 AlreadyDecided: the test itself answered it first.
            ok = r.status_code == 200 or r.json().get("error") == "AlreadyDecided"
            assert ok, r.text
            decided.add(change["change_id"])
        st = await _status(api, auth, incident_id)
        settled = all(c.state.settled for c in st.changes)
        return st if st.phase is IncidentPhase.ACTIVE and settled else None

    return await wait_until(step, timeout_s=90, what="incident active")  # type: ignore[return-value]


async def _confirm_all_until_active(api, auth, incident_id: str) -> IncidentStatus:  # type: ignore[no-untyped-def]
    return await _decide_all_until_active(api, auth, incident_id, "confirm")


async def test_incident_declared_confirmed_acknowledged_stood_down_completes(stack, api, auth):
    area = "thanh-pho-kon-tum"
    assert _routes_point_to(stack, area, "primary")
    r = await api.post(
        "/incidents",
        headers=auth(Role.DUTY_OFFICER),
        json={"kind": "sabotage", "area": area, "description": "fibre cut at Ya Chim"},
    )
    assert r.status_code == 201, r.text
    incident_id = r.json()["id"]

    active = await _confirm_all_until_active(api, auth, incident_id)

    inv = stack.store.inventory()
    selected = [c.id for c in inv.circuits if c.area in inv.expand_area(area)]
    ids = [c.circuit_id for c in active.circuits]
    assert sorted(ids) == sorted(selected)
    assert all(rec.state is ChangeState.CONFIRMED and rec.verified for rec in active.changes)
    assert all(c.state is CircuitState.ON_BACKUP for c in active.circuits)
    assert _routes_point_to(stack, area, "backup")
    levels = {c.id: c.restoration_level for c in inv.circuits}
    assert [levels[c] for c in ids] == sorted(levels[c] for c in ids)
    r = await api.get("/circuits", params={"area": area}, headers=auth(Role.AUDITOR))
    assert {c["id"]: (c["state"], c["held_by"]) for c in r.json()} == {
        c: ("on_backup", [incident_id]) for c in selected
    }

    r = await api.post(
        f"/incidents/{incident_id}/stand-down",
        headers=auth(Role.DUTY_OFFICER),
        json={"reason": "route repaired"},
    )
    assert r.status_code == 202
    result = await stack.client.get_workflow_handle(incident_id).result()
    assert "stood down" in result["outcome"]
    assert _routes_point_to(stack, area, "primary")
    r = await api.get(f"/circuits/{selected[0]}", headers=auth(Role.AUDITOR))
    assert r.json()["state"] == "on_primary" and r.json()["held_by"] == []
    # Closed: the report is the copy stored at close, after the calls settled.
    r = await api.get(
        f"/incidents/{incident_id}/report",
        params={"form": "dossier_2c"},
        headers=auth(Role.AUDITOR),
    )
    assert r.headers["content-type"].startswith("text/markdown")
    stored = [x for x in stack.store.reports(incident_id) if x.form == "dossier_2c"]
    assert stored and r.text == stored[-1].text
    closed = await _status(api, auth, incident_id)
    assert closed.acknowledged_by and f"Acknowledged by: {closed.acknowledged_by}" in r.text
    # The dossier names the right circuits, with owners and times in order, and who pressed 1.
    table = r.text.split("## Affected circuits")[1].split("\n## ")[0]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines()[4:] if ln]
    owners = {c.id: c.owner for c in inv.circuits}
    assert sorted(row[0] for row in rows) == sorted(selected)
    declared = closed.incident.declared_at.astimezone(timezone(timedelta(hours=7)))
    for row in rows:
        assert row[2] == owners[row[0]] and row[5] == "on_primary"
        times = [datetime.fromisoformat(t) for t in row[6:9]]  # rerouted, confirmed, restored
        assert declared.replace(tzinfo=None, microsecond=0) <= times[0] <= times[1] <= times[2]
    officer = next(o for o in inv.duty_officers if o.id == closed.acknowledged_by)
    assert f"{officer.name} ({officer.id}) |" in r.text.split("## Calls")[1]
    assert "| yes |" in r.text.split("## Calls")[1]
    r = await api.get(
        f"/incidents/{incident_id}/report",
        params={"form": "dossier_2c", "lang": "vi", "format": "html"},
        headers=auth(Role.AUDITOR),
    )
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "Hồ sơ gửi Công an" in r.text and f"Người xác nhận cuộc gọi: {officer.id}" in r.text

    r = await api.get(f"/incidents/{incident_id}/history", headers=auth(Role.AUDITOR))
    assert r.status_code == 200
    history = await stack.client.get_workflow_handle(incident_id).fetch_history()
    outcome = await replay(history)
    assert outcome.ok, outcome.failure
    # Credentials never travel in the history.
    assert stack.settings.device_credentials["lab"].password.get_secret_value() not in r.text
    assert stack.settings.twilio_auth_token.get_secret_value() not in r.text


async def test_incident_declared_twice_same_id_conflict_one_run(stack, api, auth):
    incident_id = f"INC-dup-{uuid.uuid4().hex[:8]}"
    body = {"id": incident_id, "kind": "riot", "area": "dak-ha"}
    first = await api.post("/incidents", headers=auth(Role.DUTY_OFFICER), json=body)
    second = await api.post("/incidents", headers=auth(Role.DUTY_OFFICER), json=body)
    assert first.status_code == 201, first.text
    assert second.status_code == 409
    assert second.json()["error"] == "AlreadyDeclared"
    runs = [wf async for wf in stack.client.list_workflows(f"WorkflowId = '{incident_id}'")]
    assert len({wf.run_id for wf in runs}) <= 1
    desc = await stack.client.get_workflow_handle(incident_id).describe()
    assert desc.run_id == first.json()["run_id"]
    await _reject_all_and_close(stack, api, auth, incident_id)


async def _reject_all_and_close(stack, api, auth, incident_id: str) -> IncidentStatus:  # type: ignore[no-untyped-def]
    st = await _decide_all_until_active(api, auth, incident_id, "reject")
    await api.post(f"/incidents/{incident_id}/stand-down", headers=auth(Role.DUTY_OFFICER), json={})
    await stack.client.get_workflow_handle(incident_id).result()
    return st


async def test_change_rejected_by_operator_device_back_to_original(stack, api, auth):
    area = "dak-to"
    device = "dt-agg-01"
    before = stack.network.devices[device].static_routes()
    r = await api.post(
        "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "unrest", "area": area}
    )
    incident_id = r.json()["id"]
    st = await _reject_all_and_close(stack, api, auth, incident_id)
    assert st.changes and all(rec.state is ChangeState.ROLLED_BACK for rec in st.changes)
    assert all(rec.decision == "reject" for rec in st.changes)
    assert _routes_point_to(stack, area, "primary")
    assert not stack.network.devices[device].pending_revert()
    assert stack.network.devices[device].static_routes() == before


async def test_decision_on_change_not_pending_conflict(stack, api, auth):
    r = await api.post(
        "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "riot", "area": "ngoc-hoi"}
    )
    incident_id = r.json()["id"]
    r = await api.post(
        f"/incidents/{incident_id}/changes/change-nope/decision",
        headers=auth(Role.OPERATOR),
        json={"decision": "confirm"},
    )
    assert r.status_code == 404
    assert r.json()["error"] == "UnknownChange"
    await _reject_all_and_close(stack, api, auth, incident_id)


@pytest.mark.parametrize(
    ("role", "method", "path", "expected"),
    [
        (None, "post", "/incidents", 401),
        (Role.OPERATOR, "post", "/incidents", 403),
        (Role.AUDITOR, "post", "/incidents", 403),
        (None, "get", "/incidents", 401),
        (Role.DUTY_OFFICER, "get", "/incidents/INC-none/history", 403),
    ],
)
async def test_auth_missing_or_wrong_role_refused(api, auth, role, method, path, expected):
    headers = auth(role) if role else {}
    r = await getattr(api, method)(
        path,
        headers=headers,
        **({"json": {"kind": "riot", "area": "dak-ha"}} if method == "post" else {}),
    )
    assert r.status_code == expected, r.text


async def test_unknown_token_unauthenticated(api):
    r = await api.get("/incidents", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "riot", "area": "atlantis"},
        {"kind": "earthquake", "area": "dak-ha"},
        {"kind": "riot", "area": "dak-ha; reload"},
        {"kind": "riot", "area": "dak-ha", "playbook": "no-such-playbook"},
        {"kind": "riot", "area": "dak-ha", "description": "x" * 2001},
    ],
)
async def test_declare_bad_input_unprocessable_nothing_started(stack, api, auth, body):
    incident_id = f"INC-bad-{uuid.uuid4().hex[:8]}"
    r = await api.post(
        "/incidents", headers=auth(Role.DUTY_OFFICER), json={"id": incident_id, **body}
    )
    assert r.status_code == 422, r.text
    with pytest.raises(RPCError) as e:
        await stack.client.get_workflow_handle(incident_id).describe()
    assert e.value.status is RPCStatusCode.NOT_FOUND


async def test_declare_malformed_incident_id_unprocessable(api, auth):
    r = await api.post(
        "/incidents",
        headers=auth(Role.DUTY_OFFICER),
        json={"id": "INC 1 `reload`", "kind": "riot", "area": "dak-ha"},
    )
    assert r.status_code == 422


async def test_twilio_webhook_forged_signature_forbidden(api):
    r = await api.post(
        "/twilio/voice/gather?incident=INC-x&attempt=1&nonce=abc",
        data={"CallSid": "CA123", "Digits": "1"},
        headers={"X-Twilio-Signature": "Zm9yZ2Vk"},
    )
    assert r.status_code == 403
    r = await api.post(
        "/twilio/voice/status?incident=INC-x&attempt=1&nonce=abc",
        data={"CallSid": "CA123", "CallStatus": "completed"},
    )
    assert r.status_code == 403


async def test_health_reports_temporal_and_database(api):
    r = await api.get("/healthz")
    assert r.json() == {"status": "ok", "temporal": True, "database": True}


async def test_second_decision_on_same_change_conflict_first_stands(stack, api, auth):
    r = await api.post(
        "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "riot", "area": "ngoc-hoi"}
    )
    incident_id = r.json()["id"]

    async def first_awaiting() -> str | None:
        rows = stack.store.changes(incident_id, state="awaiting_confirmation")
        return rows[0].change_id if rows else None

    change_id = await wait_until(first_awaiting, timeout_s=60, what="a change awaiting")
    url = f"/incidents/{incident_id}/changes/{change_id}/decision"
    first = await api.post(url, headers=auth(Role.OPERATOR), json={"decision": "reject"})
    second = await api.post(url, headers=auth(Role.OPERATOR), json={"decision": "confirm"})
    assert first.status_code == 200, first.text
    assert first.json()["decided_by"] == "op-pham-quoc-dung"
    assert second.status_code == 409
    assert second.json()["error"] == "AlreadyDecided"
    assert "already decided" in second.json()["detail"]
    st = await _reject_all_and_close(stack, api, auth, incident_id)
    assert next(c for c in st.changes if c.change_id == change_id).decision == "reject"


async def test_declare_with_window_longer_than_device_timers_refused_nothing_started(stack):
    too_long = stack.settings.timings.model_copy(update={"confirm_window_s": 7200})
    app = create_app(
        stack.settings.model_copy(update={"timings": too_long}),
        store=stack.store,
        temporal=stack.client,
    )
    incident_id = f"INC-win-{uuid.uuid4().hex[:8]}"
    token = stack.tokens[Role.DUTY_OFFICER]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://continuity.test"
    ) as client:
        r = await client.post(
            "/incidents",
            headers={"Authorization": f"Bearer {token}"},
            json={"id": incident_id, "kind": "riot", "area": "dak-to"},
        )
    assert r.status_code == 503
    assert "revert timer" in r.json()["detail"]
    with pytest.raises(RPCError):
        await stack.client.get_workflow_handle(incident_id).describe()


async def test_abort_through_the_api_ends_aborted_second_order_conflict(stack, api, auth):
    r = await api.post(
        "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "riot", "area": "dak-ha"}
    )
    incident_id = r.json()["id"]
    await _confirm_all_until_active(api, auth, incident_id)
    r = await api.post(
        f"/incidents/{incident_id}/abort",
        headers=auth(Role.DUTY_OFFICER),
        json={"reason": "declared on the wrong district"},
    )
    assert r.status_code == 202, r.text
    await stack.client.get_workflow_handle(incident_id).result()
    st = await _status(api, auth, incident_id)
    assert st.phase is IncidentPhase.ABORTED and st.aborted_by
    assert _routes_point_to(stack, "dak-ha", "primary")
    again = await api.post(
        f"/incidents/{incident_id}/stand-down", headers=auth(Role.DUTY_OFFICER), json={}
    )
    assert again.status_code == 409 and again.json()["error"] == "IncidentEnded"
    r = await api.post(
        f"/incidents/{incident_id}/abort", headers=auth(Role.OPERATOR), json={"reason": "x"}
    )
    assert r.status_code == 403


async def test_unknown_circuit_not_found(api, auth):
    r = await api.get("/circuits/no-such-circuit", headers=auth(Role.AUDITOR))
    assert r.status_code == 404


class _BusyTemporal:
    """A Temporal frontend answering every signal with RESOURCE_EXHAUSTED, as when overloaded."""

    def __init__(self, real) -> None:  # type: ignore[no-untyped-def]
        self._real = real
        self.signals = 0

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._real, name)

    def get_workflow_handle(self, workflow_id: str, **kw):  # type: ignore[no-untyped-def]
        handle = self._real.get_workflow_handle(workflow_id, **kw)
        outer = self

        class _Handle:
            id = workflow_id

            async def describe(self):  # type: ignore[no-untyped-def]
                return await handle.describe()

            async def query(self, *a, **k):  # type: ignore[no-untyped-def]
                return await handle.query(*a, **k)

            async def signal(self, *_a, **_k):  # type: ignore[no-untyped-def]
                outer.signals += 1
                raise RPCError(
                    "namespace rate limit exceeded", RPCStatusCode.RESOURCE_EXHAUSTED, b""
                )

        return _Handle()


async def test_overloaded_workflow_engine_answers_503_retry_after_never_409(stack, auth):
    busy = _BusyTemporal(stack.client)
    app = create_app(stack.settings, store=stack.store, temporal=busy)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://continuity.test"
    ) as client:
        r0 = await client.post(
            "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "riot", "area": "dak-ha"}
        )
    assert r0.status_code == 201, r0.text
    incident_id = r0.json()["id"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://continuity.test"
    ) as client:
        r = await client.post(
            f"/incidents/{incident_id}/stand-down", headers=auth(Role.DUTY_OFFICER), json={}
        )
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"]
    assert busy.signals >= 2  # retried before giving up
    order = signed(StandDownInput(by="test"), incident_id, "stand_down")
    await stack.client.get_workflow_handle(incident_id).signal("stand_down", order)
    await stack.client.get_workflow_handle(incident_id).result()


async def test_second_ending_order_conflict_first_one_carried_out(stack, api, auth):
    r = await api.post(
        "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "riot", "area": "dak-to"}
    )
    incident_id = r.json()["id"]
    await _confirm_all_until_active(api, auth, incident_id)
    first = await api.post(
        f"/incidents/{incident_id}/stand-down", headers=auth(Role.DUTY_OFFICER), json={}
    )
    second = await api.post(
        f"/incidents/{incident_id}/abort", headers=auth(Role.DUTY_OFFICER), json={"reason": "x"}
    )
    assert first.status_code == 202
    assert second.status_code == 409, second.text
    assert second.json()["error"] in ("IncidentEnding", "IncidentEnded")
    await stack.client.get_workflow_handle(incident_id).result()
    assert (await _status(api, auth, incident_id)).phase is IncidentPhase.CLOSED


async def test_changes_of_unknown_incident_not_found_unknown_state_unprocessable(api, auth):
    r = await api.get("/incidents/INC-nope/changes", headers=auth(Role.OPERATOR))
    assert r.status_code == 404
    r = await api.get(
        "/incidents/INC-nope/changes", params={"state": "sideways"}, headers=auth(Role.OPERATOR)
    )
    assert r.status_code == 422


async def test_areas_listed_for_declaration(api, auth, stack):
    r = await api.get("/areas", headers=auth(Role.DUTY_OFFICER))
    assert {a["id"] for a in r.json()} == {a.id for a in stack.store.inventory().areas}


async def test_a_cable_cut_declaration_names_a_known_segment(stack, api, auth):
    headers = auth(Role.DUTY_OFFICER)
    body = {"kind": "sabotage", "area": "dak-ha", "playbook": "sabotage-cable-cut"}
    r = await api.post("/incidents", headers=headers, json=body)
    assert r.status_code == 422 and "name the cable segment that was cut" in r.text
    r = await api.post("/incidents", headers=headers, json={**body, "segment": "nowhere"})
    assert r.status_code == 422 and "unknown cable segment 'nowhere'" in r.text
    r = await api.post("/incidents", headers=headers, json={**body, "segment": "x; reload"})
    assert r.status_code == 422  # not an identifier: never reaches anything
    # The engineer's dry run of the same declaration: the circuits crossing the segment.
    r = await api.get(
        "/playbooks/sabotage-cable-cut/plan",
        params={"area": "dak-ha", "segment": "ql14-dt-nh"},
        headers=auth(Role.ENGINEER),
    )
    assert r.status_code == 200, r.text
    assert set(r.json()["circuits"]) == {"bgc-ngoc-hoi-post", "police-ngoc-hoi", "party-ngoc-hoi"}
    assert r.json()["segment"] == "ql14-dt-nh"


async def test_changes_polled_by_etag_unchanged_not_modified_changed_new_etag(stack, api, auth):
    incident_id = f"INC-etag-{uuid.uuid4().hex[:8]}"
    stack.store.open_change(
        change_id=f"change-{incident_id}-kt-agg-01-w1",
        incident_id=incident_id,
        device="kt-agg-01",
        wave=1,
        direction="reroute",
        circuits=[],
        step={},
        declared_by="duty-1",
        confirmers=[],
        state=ChangeState.APPLYING.value,
    )
    url = f"/incidents/{incident_id}/changes"
    first = await api.get(url, headers=auth(Role.OPERATOR))
    assert first.status_code == 200, first.text
    etag = first.headers["ETag"]

    again = await api.get(url, headers={**auth(Role.OPERATOR), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag
    listed = await api.get(url, headers={**auth(Role.OPERATOR), "If-None-Match": f'"x", W/{etag}'})
    assert listed.status_code == 304

    stack.store.set_change_state(
        f"change-{incident_id}-kt-agg-01-w1", ChangeState.AWAITING_CONFIRMATION.value
    )
    moved = await api.get(url, headers={**auth(Role.OPERATOR), "If-None-Match": etag})
    assert moved.status_code == 200
    assert moved.json()[0]["state"] == "awaiting_confirmation"
    assert moved.headers["ETag"] != etag
    # Each row as the store gives it is the documented model, field for field and in order.
    assert [list(c) for c in moved.json()] == [list(ChangePublic.model_fields)]
    assert ChangePublic.model_validate(moved.json()[0]).change_id.endswith("-w1")


def test_the_listed_columns_are_the_documented_fields_in_order():
    assert CHANGE_LIST_COLUMNS == tuple(ChangePublic.model_fields)


async def test_declare_more_devices_than_one_history_carries_refused_nothing_started(stack, auth):
    # The deployment's limit set below the area's size: the declaration is refused, clearly.
    settings = stack.settings.model_copy(update={"max_devices_per_incident": 1})
    app = create_app(settings, store=stack.store, temporal=stack.client)
    incident_id = f"INC-big-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        r = await c.post(
            "/incidents",
            headers=auth(Role.DUTY_OFFICER),
            json={"id": incident_id, "kind": "sabotage", "area": "thanh-pho-kon-tum"},
        )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "TooManyDevices"
    assert "one incident takes at most 1" in r.json()["detail"]
    assert "CONTINUITY_MAX_DEVICES_PER_INCIDENT" in r.json()["detail"]
    with pytest.raises(RPCError) as e:
        await stack.client.get_workflow_handle(incident_id).describe()
    assert e.value.status is RPCStatusCode.NOT_FOUND
    # The same declaration under the default limit would be taken: the limit is what refused it.
    assert len(stack.store.inventory().devices) < Settings().max_devices_per_incident


async def test_checks_are_the_doctors_behind_a_token_health_stays_public_and_bare(stack, api, auth):
    r = await api.get("/checks")
    assert r.status_code == 401  # device and credential names: not for the public
    r = await api.get("/checks", headers=auth(Role.OPERATOR))
    assert r.status_code == 200, r.text
    got = {c["subject"]: c for c in r.json()["checks"]}
    assert set(got) == {"temporal", "database", "devices", "workers", "telephony"}
    # The same verdicts `continuity doctor` gives for these settings (its public-URL check
    # and its write probe aside): the test stack keeps no archive and calls the sandbox.
    assert got["temporal"]["verdict"] == "warn"
    assert "CONTINUITY_ARCHIVE_DIR" in got["temporal"]["detail"]
    assert got["database"]["verdict"] == "ok" and "readable" in got["database"]["detail"]
    n = len(stack.store.inventory().devices)
    assert got["devices"] == {
        "verdict": "ok",
        "subject": "devices",
        "detail": f"{n} devices: each credential defined, each host key known",
    }
    # The stack's worker polls the central queue and every site of the inventory.
    assert got["workers"]["verdict"] == "ok", got["workers"]
    sites = sorted({d.site for d in stack.store.inventory().devices})
    assert got["workers"]["detail"].endswith(", ".join(f"{site} 1" for site in sites))
    assert got["telephony"]["verdict"] == "warn"
    health = (await api.get("/healthz")).json()
    assert set(health) == {"status", "temporal", "database"}
