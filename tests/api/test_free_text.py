"""No free text can ever fail a running incident: control characters are refused at the edge
with a clear 422 that changes nothing, and a signal that bypasses the API with one is dropped."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from app.stack import Stack
from continuity.models import ChangeState, IncidentPhase, Role
from tests.conftest import wait_until
from workflows.incident import IncidentWorkflow

# NUL (PostgreSQL refuses the whole row), an ANSI escape, a C1 control, a bidi override that
# makes a report read other than it says, a line separator.
BAD_TEXT = ["checked\x00", "ok \x1b[31mred", "next\x85line", "fine \u202edesrever", "a\u2028b"]


async def _signals_handled(handle: WorkflowHandle) -> bool:
    """A workflow task completed after the last signal: the worker has seen every signal."""
    events = (await handle.fetch_history()).events
    signalled = [i for i, e in enumerate(events) if e.HasField(_SIGNALLED)]
    done = [i for i, e in enumerate(events) if e.HasField(_TASK_COMPLETED)]
    return bool(signalled and done and done[-1] > signalled[-1])


_SIGNALLED = "workflow_execution_signaled_event_attributes"
_TASK_COMPLETED = "workflow_task_completed_event_attributes"


async def _first_awaiting(stack: Stack, incident_id: str) -> str:
    async def awaiting() -> str | None:
        rows = stack.store.changes(incident_id, state="awaiting_confirmation")
        return rows[0].change_id if rows else None

    return await wait_until(awaiting, timeout_s=60, what="a change awaiting")  # type: ignore[return-value]


@pytest.mark.parametrize("text", BAD_TEXT)
async def test_declare_description_with_control_character_unprocessable_nothing_started(
    stack, api, auth, text
):
    incident_id = f"INC-ctl-{uuid.uuid4().hex[:8]}"
    r = await api.post(
        "/incidents",
        headers=auth(Role.DUTY_OFFICER),
        json={"id": incident_id, "kind": "riot", "area": "dak-ha", "description": text},
    )
    assert r.status_code == 422, r.text
    assert "control character" in r.text
    with pytest.raises(RPCError) as e:
        await stack.client.get_workflow_handle(incident_id).describe()
    assert e.value.status is RPCStatusCode.NOT_FOUND


async def test_reasons_with_control_characters_refused_incident_goes_on_and_closes(
    stack, api, auth
):
    description = "Cáp quang bị cắt tại Ngọc Hồi\r\nCable cut near the pass\tsee map"
    r = await api.post(
        "/incidents",
        headers=auth(Role.DUTY_OFFICER),
        json={"kind": "sabotage", "area": "ngoc-hoi", "description": description},
    )
    assert r.status_code == 201, r.text  # prose keeps its line ends, tabs and diacritics
    incident_id = r.json()["id"]
    change_id = await _first_awaiting(stack, incident_id)
    base = f"/incidents/{incident_id}"

    for text in BAD_TEXT:
        r = await api.post(
            f"{base}/changes/{change_id}/decision",
            headers=auth(Role.OPERATOR),
            json={"decision": "confirm", "reason": text},
        )
        assert r.status_code == 422 and "control character" in r.text, r.text
        for order in ("stand-down", "abort"):
            r = await api.post(
                f"{base}/{order}", headers=auth(Role.DUTY_OFFICER), json={"reason": text}
            )
            assert r.status_code == 422 and "control character" in r.text, r.text

    # Nothing was decided and nothing ended: the change still waits for a real answer.
    (row,) = [c for c in stack.store.changes(incident_id) if c.change_id == change_id]
    assert row.state == ChangeState.AWAITING_CONFIRMATION and row.decided_by is None
    r = await api.post(
        f"{base}/changes/{change_id}/decision",
        headers=auth(Role.OPERATOR),
        json={"decision": "confirm", "reason": "đã kiểm tra\nchecked"},
    )
    assert r.status_code == 200, r.text
    r = await api.post(
        f"{base}/stand-down", headers=auth(Role.DUTY_OFFICER), json={"reason": "đã sửa xong"}
    )
    assert r.status_code == 202, r.text
    result = await stack.client.get_workflow_handle(incident_id).result()
    assert result["phase"] == IncidentPhase.CLOSED
    dossier = [x for x in stack.store.reports(incident_id) if x.form == "dossier_2c"]
    assert dossier and "Cáp quang bị cắt tại Ngọc Hồi" in dossier[-1].text  # stood down early
    assert all("\r" not in x.text for x in stack.store.reports(incident_id))  # one line end
    r = await api.get(
        f"{base}/report",
        params={"form": "dossier_2c", "format": "html"},
        headers=auth(Role.AUDITOR),
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<h1>" in r.text and "Cáp quang bị cắt tại Ngọc Hồi" in r.text


async def test_signal_with_control_character_bypassing_api_dropped_incident_unharmed(
    stack, api, auth
):
    r = await api.post(
        "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "riot", "area": "ngoc-hoi"}
    )
    incident_id = r.json()["id"]
    change_id = await _first_awaiting(stack, incident_id)
    handle = stack.client.get_workflow_handle(incident_id)
    # Straight to Temporal, as a client on the host could: the payloads fail to decode, the
    # worker drops them, and the incident is as it was.
    await handle.signal("stand_down", {"by": "someone", "reason": "gone\x00"})
    bad_decision = {"change_id": change_id, "decision": "confirm", "operator_id": "op-x"}
    await handle.signal(
        "decisions", {"decisions": [{**bad_decision, "reason": "\x00"}], "refusals": []}
    )
    await handle.signal("decide", {**bad_decision, "reason": "x\u202e"})

    await wait_until(lambda: _signals_handled(handle), what="the signals' workflow task")
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    status = await handle.query(IncidentWorkflow.status)
    assert status.phase in (IncidentPhase.REROUTING, IncidentPhase.ACTIVE)
    assert not status.stood_down_by
    (row,) = [c for c in stack.store.changes(incident_id) if c.change_id == change_id]
    assert row.state == ChangeState.AWAITING_CONFIRMATION
    r = await api.post(
        f"/incidents/{incident_id}/stand-down", headers=auth(Role.DUTY_OFFICER), json={}
    )
    assert r.status_code == 202, r.text
    result = await handle.result()
    assert result["phase"] == IncidentPhase.CLOSED
