"""PlaybookWorkflow and its children on the real Temporal server and the lab over SSH."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from continuity.messages import PlaybookRunInput, StandDownInput
from continuity.models import ChangeState, Incident, IncidentKind, IncidentStatus
from continuity.stack import Stack
from lab.gear import Fault
from playbooks import get_playbook
from tests.conftest import TEST_TIMINGS, wait_until
from workflows import PlaybookWorkflow


async def _start(stack: Stack, area: str, **timings: float) -> str:
    spec = get_playbook("kon-tum-2a")
    incident = Incident(
        id=f"INC-wf-{uuid.uuid4().hex[:8]}",
        kind=IncidentKind.SABOTAGE,
        area=area,
        declared_by="do-nguyen-van-an",
        declared_at=datetime.now(UTC),
    )
    await stack.client.start_workflow(
        PlaybookWorkflow.run,
        PlaybookRunInput(
            incident=incident,
            playbook=spec,
            playbook_sha256=spec.sha256(),
            inventory=stack.store.inventory(),
            timings=TEST_TIMINGS.model_copy(update=timings),
        ),
        id=incident.id,
        task_queue=stack.settings.task_queue,
    )
    return incident.id


async def _until_active(stack: Stack, incident_id: str) -> IncidentStatus:
    handle = stack.client.get_workflow_handle(incident_id)

    async def active() -> IncidentStatus | None:
        st = await handle.query(PlaybookWorkflow.status)
        return st if st.phase == "active" else None

    return await wait_until(active, timeout_s=90, what=f"{incident_id} active")  # type: ignore[return-value]


async def _close(stack: Stack, incident_id: str) -> None:
    handle = stack.client.get_workflow_handle(incident_id)
    await handle.signal(PlaybookWorkflow.stand_down, StandDownInput(by="test"))
    await handle.result()


async def test_change_not_confirmed_device_reverts_by_itself(stack):
    device = "nh-agg-01"
    before = stack.network.devices[device].static_routes()
    incident_id = await _start(
        stack, "ngoc-hoi", confirm_window_s=1, revert_margin_s=1, verify_timeout_s=3
    )
    st = await _until_active(stack, incident_id)
    assert st.changes
    for rec in st.changes:
        assert rec.state is ChangeState.REVERTED_BY_DEVICE, rec
        assert rec.decided_by is None
    assert stack.network.devices[device].static_routes() == before
    assert not stack.network.devices[device].pending_revert()
    await _close(stack, incident_id)


async def test_device_with_changed_host_key_refused_nothing_changed(stack):
    device = "dh-agg-01"
    before = stack.network.devices[device].static_routes()
    stack.network.set_fault(device, Fault.HOST_KEY_CHANGE)
    try:
        incident_id = await _start(stack, "dak-ha")
        st = await _until_active(stack, incident_id)
    finally:
        stack.network.set_fault(device, None)
    assert st.changes
    for rec in st.changes:
        assert rec.state is ChangeState.FAILED
        assert rec.error_type == "HostKeyRejected"
        assert rec.retryable is False
        assert rec.commands == []
    assert stack.network.devices[device].static_routes() == before
    await _close(stack, incident_id)
