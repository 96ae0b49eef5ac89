"""PlaybookWorkflow and its children on the real Temporal server and the lab over SSH."""

from __future__ import annotations

from continuity.messages import ChangeDecisionInput
from continuity.models import ChangeState, Decision, IncidentKind, PriorityClass
from continuity.playbook import PlaybookSpec, RerouteWave, SelectCircuits
from lab.gear import Fault
from tests.conftest import TEST_TIMINGS, wait_until
from tests.workflows.helpers import decide_until_active, stand_down, start_playbook
from workflows import PlaybookWorkflow


async def test_change_not_confirmed_device_reverts_by_itself(stack):
    device = "nh-agg-01"
    before = stack.network.devices[device].static_routes()
    impatient = TEST_TIMINGS.model_copy(
        update={"confirm_window_s": 1, "revert_margin_s": 1, "verify_timeout_s": 3}
    )
    handle = await start_playbook(stack, "ngoc-hoi", timings=impatient)
    st = await decide_until_active(handle, None)
    assert st.changes
    for rec in st.changes:
        assert rec.state is ChangeState.REVERTED_BY_DEVICE, rec
        assert rec.decided_by is None
    assert stack.network.devices[device].static_routes() == before
    assert not stack.network.devices[device].pending_revert()
    await stand_down(handle)


async def test_device_with_changed_host_key_refused_nothing_changed(stack):
    device = "dh-agg-01"
    before = stack.network.devices[device].static_routes()
    stack.network.set_fault(device, Fault.HOST_KEY_CHANGE)
    try:
        handle = await start_playbook(stack, "dak-ha")
        st = await decide_until_active(handle, None)
    finally:
        stack.network.set_fault(device, None)
    assert st.changes
    for rec in st.changes:
        assert rec.state is ChangeState.FAILED
        assert rec.error_type == "HostKeyRejected"
        assert rec.retryable is False
        assert rec.commands == []
    assert stack.network.devices[device].static_routes() == before
    await stand_down(handle)


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
    handle = await start_playbook(stack, "dak-ha", spec=spec)

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
    # The shift lead rejects everything; the change refused above is among them.
    st = await decide_until_active(handle, Decision.REJECT, operator="op-hoang-thu-ha")
    assert next(c for c in st.changes if c.change_id == change).decided_by == "op-hoang-thu-ha"
    # The history shows the refused decision: an accepted update, not a dropped request.
    history = await handle.fetch_history()
    accepted = [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(accepted) == 1 + len(st.changes)
    await stand_down(handle)
