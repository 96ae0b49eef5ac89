"""PlaybookWorkflow and its children on the real Temporal server and the lab over SSH."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from continuity.messages import ChangeDecisionInput, PlaybookRunInput, StandDownInput
from continuity.models import (
    ChangeState,
    Decision,
    Incident,
    IncidentKind,
    IncidentStatus,
    PriorityClass,
)
from continuity.playbook import PlaybookSpec, RerouteWave, SelectCircuits
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


async def test_decision_by_operator_not_on_wave_confirmers_recorded_as_refused(stack):
    spec = PlaybookSpec(
        name="two-person-rule",
        version=1,
        title="Only the shift lead confirms",
        incident_kinds=[IncidentKind.SABOTAGE],
        steps=[
            SelectCircuits(priority_classes=list(PriorityClass)),
            RerouteWave(
                name="all", restoration_levels=[1, 2, 3, 4, 5], confirmers=["op-hoang-thu-ha"]
            ),
        ],
    )
    incident = Incident(
        id=f"INC-wf-{uuid.uuid4().hex[:8]}",
        kind=IncidentKind.SABOTAGE,
        area="dak-ha",
        declared_by="do-nguyen-van-an",
        declared_at=datetime.now(UTC),
    )
    handle = await stack.client.start_workflow(
        PlaybookWorkflow.run,
        PlaybookRunInput(
            incident=incident,
            playbook=spec,
            playbook_sha256=spec.sha256(),
            inventory=stack.store.inventory(),
            timings=TEST_TIMINGS,
        ),
        id=incident.id,
        task_queue=stack.settings.task_queue,
    )

    async def awaiting() -> str | None:
        st = await handle.query(PlaybookWorkflow.status)
        return next(
            (c.change_id for c in st.changes if c.state is ChangeState.AWAITING_CONFIRMATION), None
        )

    change = await wait_until(awaiting, timeout_s=60, what="a change awaiting confirmation")
    refused = await handle.execute_update(
        PlaybookWorkflow.decide_change,
        ChangeDecisionInput(
            change_id=change, decision=Decision.CONFIRM, operator_id="op-pham-quoc-dung"
        ),
    )
    assert refused.state is ChangeState.AWAITING_CONFIRMATION
    st = await handle.query(PlaybookWorkflow.status)
    assert st.decisions_refused == 1
    assert any(
        e.event == "decision refused" and "op-pham-quoc-dung" in e.detail for e in st.timeline
    )
    await handle.execute_update(
        PlaybookWorkflow.decide_change,
        ChangeDecisionInput(
            change_id=change, decision=Decision.REJECT, operator_id="op-hoang-thu-ha"
        ),
    )
    await wait_until(
        lambda: _state_of(handle, change, ChangeState.ROLLED_BACK),
        timeout_s=60,
        what="rejected by the shift lead",
    )
    # The history shows the refused decision: it was an accepted update, not a dropped request.
    history = await handle.fetch_history()
    updates = [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(updates) == 2
    await _reject_rest_and_close(stack, handle)


async def _state_of(handle, change_id: str, state: ChangeState) -> bool:  # type: ignore[no-untyped-def]
    st = await handle.query(PlaybookWorkflow.status)
    return any(c.change_id == change_id and c.state is state for c in st.changes)


async def _reject_rest_and_close(stack: Stack, handle) -> None:  # type: ignore[no-untyped-def]
    decided: set[str] = set()

    async def active() -> bool:
        st = await handle.query(PlaybookWorkflow.status)
        for c in st.changes:
            if c.state is ChangeState.AWAITING_CONFIRMATION and c.change_id not in decided:
                decided.add(c.change_id)
                await handle.execute_update(
                    PlaybookWorkflow.decide_change,
                    ChangeDecisionInput(
                        change_id=c.change_id,
                        decision=Decision.REJECT,
                        operator_id="op-hoang-thu-ha",
                    ),
                )
        return st.phase == "active"

    await wait_until(active, timeout_s=60, what="incident active")
    await handle.signal(PlaybookWorkflow.stand_down, StandDownInput(by="test"))
    await handle.result()
