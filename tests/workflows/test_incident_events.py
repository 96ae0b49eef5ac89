"""The incident core under events arriving in the middle: stand-down, a second incident, a late or
refused answer, a dead device, a half-moved circuit, a timeout, someone else's pending commit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest_asyncio

from app.stack import Stack
from continuity.messages import AbortInput, DutyCallResult, StandDownInput
from continuity.models import (
    ChangeState,
    CircuitState,
    Decision,
    Direction,
    IncidentKind,
    IncidentPhase,
    PartialOutcome,
    PartState,
    PriorityClass,
    Role,
    TimeoutOutcome,
)
from continuity.playbook import (
    CallDutyOfficers,
    PlaybookSpec,
    Report,
    RerouteWave,
    SelectCircuits,
)
from lab.gear import Fault
from lab.gear.terminal import LabTerminal
from tests.conftest import TEST_TIMINGS, wait_until
from tests.workflows.helpers import (
    OPERATOR,
    SECOND_OPERATOR,
    abort,
    auth,
    awaiting,
    decide,
    decide_until_active,
    ledger_state,
    on_path,
    part_on,
    signed,
    stand_down,
    start_incident,
    status,
    two_waves,
)
from worker import build_worker
from workflows import IncidentWorkflow, calls_workflow_id

KON_TUM = "thanh-pho-kon-tum"


def _area_circuits(stack: Stack, area: str) -> list[str]:
    inv = stack.store.inventory()
    return [c.id for c in inv.circuits if c.area in inv.expand_area(area)]


async def test_stand_down_in_wave_1_no_device_changed_after_closes_on_primary_calls_ringing(
    stack: Stack,
):
    for o in stack.store.inventory().duty_officers:
        stack.sandbox.set_callee(o.phone, "ring_out")  # the escalation would take ~30 s
    spec = PlaybookSpec(
        name="stand-down-test",
        version=1,
        title="Calls beside two waves",
        incident_kinds=list(IncidentKind),
        steps=[
            SelectCircuits(priority_classes=list(PriorityClass)),
            CallDutyOfficers(message_vi="Khẩn cấp", message_en="Emergency", rounds=2),
            RerouteWave(name="level 1", restoration_levels=[1]),
            RerouteWave(name="levels 2-5", restoration_levels=[2, 3, 4, 5]),
            Report(form="dossier_2c"),  # never reached: the order lands in wave 1
        ],
    )
    edge = stack.network.devices["kt-edge-01"]  # only wave 2 touches it
    edge_lines = len(edge.received)
    sms_before = len(stack.sandbox.messages)
    for name in ("kt-core-01", "kt-agg-01"):  # wave 1 takes seconds: the order lands mid-way
        stack.network.set_fault(name, Fault.SLOW, delay_s=0.25)
    handle = await start_incident(stack, KON_TUM, spec=spec)

    async def applying() -> bool:
        rows = stack.store.changes(handle.id, state=ChangeState.APPLYING.value)
        return len(rows) == 2

    await wait_until(applying, timeout_s=30, interval_s=0.05, what="wave 1 on the devices")

    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        r = await api.post(
            f"/incidents/{handle.id}/stand-down",
            headers=auth(stack, Role.DUTY_OFFICER),
            json={"reason": "false alarm"},
        )
    assert r.status_code == 202, r.text
    ordered_at = loop.time()
    marks = {n: len(d.received) for n, d in stack.network.devices.items()}
    result = await asyncio.wait_for(handle.result(), 30)
    closed_after = loop.time() - ordered_at

    assert result.phase is IncidentPhase.CLOSED
    assert closed_after < 25, closed_after  # the escalation alone would have run ~30 s more
    assert len(edge.received) == edge_lines  # wave 2 never started
    assert on_path(stack, KON_TUM, "primary")
    assert set(marks)  # lines after the order: the in-flight sessions stopped, then undo
    st = await status(handle)
    assert all(c.state is CircuitState.ON_PRIMARY for c in st.circuits)
    assert {
        c.change_id.rsplit("-", 1)[-1] for c in st.changes if c.direction is Direction.REROUTE
    } == {"w1"}
    calls = await stack.client.get_workflow_handle(
        calls_workflow_id(handle.id), result_type=DutyCallResult
    ).result()
    assert len(calls.attempts) < 6 and calls.acknowledged_by is None  # stopped, not exhausted
    told = [
        m
        for m in stack.sandbox.messages[sms_before:]
        if "stood down" in m.body or "kết thúc" in m.body
    ]
    assert len(told) == len(stack.store.inventory().duty_officers)
    # The police's dossier is written at close even though the run never reached its step.
    assert {r.form for r in stack.store.reports(handle.id)} == {
        "timeline",
        "dossier_2c",
        "timeline.vi",
        "dossier_2c.vi",
    }
    for o in stack.store.inventory().duty_officers:
        stack.sandbox.set_callee(o.phone, "press_1")


async def test_two_overlapping_incidents_b_keeps_circuits_on_backup_after_a_stands_down(
    stack: Stack,
):
    area = "ngoc-hoi"
    spec = two_waves(first=[1, 2, 3, 4, 5])
    a = await start_incident(stack, area, spec=spec)
    await decide_until_active(stack, a)
    assert on_path(stack, area, "backup")
    lines = len(stack.network.devices["nh-agg-01"].received)

    b = await start_incident(
        stack, area, spec=spec, kind=IncidentKind.RIOT, declared_by="do-tran-thi-binh"
    )
    st_b = await decide_until_active(stack, b, None)  # nothing to confirm: it joined
    assert st_b.changes and all(c.state is ChangeState.CONFIRMED for c in st_b.changes)
    assert all(c.already_applied and not c.commands for c in st_b.changes)
    sent = stack.network.devices["nh-agg-01"].received[lines:]
    assert not [ln for ln in sent if "route-static" in ln], sent  # B sent no configuration
    assert any(e.event == "joined" and a.id in e.detail for e in st_b.timeline)

    result_a = await stand_down(a)
    assert on_path(stack, area, "backup")  # B still holds them: command circuits stay up
    assert "kept on backup for other incidents" in result_a.outcome
    for view in stack.store.circuit_views(_area_circuits(stack, area)):
        assert view["state"] is CircuitState.ON_BACKUP
        assert view["holders"] == [b.id]

    await stand_down(b)
    assert on_path(stack, area, "primary")
    for cid in _area_circuits(stack, area):
        assert ledger_state(stack, cid) is CircuitState.ON_PRIMARY


async def test_confirm_after_window_closed_conflict_and_device_matches_record(stack: Stack):
    impatient = TEST_TIMINGS.model_copy(
        update={"confirm_window_s": 2, "revert_margin_s": 3, "verify_timeout_s": 3}
    )
    handle = await start_incident(stack, "dak-to", spec=two_waves(first=[1]), timings=impatient)
    (cid,) = await awaiting(stack, handle, 1)
    row = stack.store.change(cid)
    assert row is not None and row.deadline is not None
    deadline = row.deadline if row.deadline.tzinfo else row.deadline.replace(tzinfo=UTC)
    await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.1)

    r = await decide(stack, handle.id, cid)  # after the window, before the device's own timer
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "WindowClosed"

    async def settled() -> bool:
        st = await status(handle)
        return all(c.state.settled for c in st.changes)

    await wait_until(settled, timeout_s=60, what="the unconfirmed change undone")
    st = await status(handle)
    rec = next(c for c in st.changes if c.change_id == cid)
    assert rec.state in (ChangeState.REVERTED_BY_DEVICE, ChangeState.ROLLED_BACK), rec
    assert rec.decided_by is None
    for circuit in rec.circuits:  # the record says not rerouted, and so does the device
        assert part_on(stack, circuit, "dt-agg-01") == "primary"
        assert ledger_state(stack, circuit) is CircuitState.ON_PRIMARY
    await stand_down(handle)


# ppc-office (kt-core-01) and dic-noc (kt-edge-01, FRR: no device-side revert) at level 2.
STATE_LEVEL_2 = PlaybookSpec(
    name="state-level-2",
    version=1,
    title="State circuits, level 2",
    incident_kinds=list(IncidentKind),
    steps=[
        SelectCircuits(priority_classes=[PriorityClass.STATE], max_restoration_level=2),
        RerouteWave(name="level 2", restoration_levels=[2]),
    ],
)


async def test_device_unreachable_while_awaiting_confirmation_incident_closes_only_once_driven_back(
    stack: Stack,
):
    handle = await start_incident(stack, KON_TUM, spec=STATE_LEVEL_2)
    ids = await awaiting(stack, handle, 2)
    core = next(i for i in ids if "kt-core-01" in i)
    edge = next(i for i in ids if "kt-edge-01" in i)
    assert (await decide(stack, handle.id, core)).status_code == 200
    assert part_on(stack, "dic-noc", "kt-edge-01") == "backup"

    stack.network.set_fault("kt-edge-01", Fault.UNREACHABLE)
    await handle.signal(
        IncidentWorkflow.stand_down,
        signed(StandDownInput(by="do-nguyen-van-an", reason="repaired"), handle.id, "stand_down"),
    )

    async def attention() -> bool:
        st = await status(handle)
        return any(
            c.change_id == edge and c.state is ChangeState.NEEDS_ATTENTION for c in st.changes
        )

    await wait_until(attention, timeout_s=60, what="the unreachable device's change flagged")
    await asyncio.sleep(2)
    st = await status(handle)
    assert st.phase is IncidentPhase.STANDING_DOWN  # it does not close with the device off record
    assert part_on(stack, "dic-noc", "kt-edge-01") == "backup"
    assert any(r.kind == "needs_attention" and r.subject == edge for r in st.review)

    stack.network.set_fault("kt-edge-01", None)
    result = await asyncio.wait_for(handle.result(), 90)
    assert result.phase is IncidentPhase.CLOSED
    assert part_on(stack, "dic-noc", "kt-edge-01") == "primary"
    assert part_on(stack, "ppc-office", "kt-core-01") == "primary"
    st = await status(handle)
    assert {t.id for t in st.closing_evidence}  # read back at close
    assert all(c.state is CircuitState.ON_PRIMARY for c in st.circuits)


async def test_device_written_off_by_duty_officer_incident_closes_circuit_recorded_unknown(
    stack: Stack,
):
    """A router destroyed in the riot: the duty officer writes it off, the incident closes, and
    the record says what is known of it (nothing), never that it is back on primary."""
    handle = await start_incident(stack, KON_TUM, spec=STATE_LEVEL_2)
    ids = await awaiting(stack, handle, 2)
    core = next(i for i in ids if "kt-core-01" in i)
    edge = next(i for i in ids if "kt-edge-01" in i)
    assert (await decide(stack, handle.id, core)).status_code == 200
    stack.network.set_fault("kt-edge-01", Fault.UNREACHABLE)
    try:
        await handle.signal(
            IncidentWorkflow.stand_down,
            signed(
                StandDownInput(by="do-nguyen-van-an", reason="riot over"), handle.id, "stand_down"
            ),
        )

        async def attention() -> bool:
            st = await status(handle)
            return any(c.change_id == edge and c.state is ChangeState.NEEDS_ATTENTION
                       for c in st.changes)  # fmt: skip

        await wait_until(attention, timeout_s=60, what="the unreachable device flagged")
        url = f"/incidents/{handle.id}/devices/kt-edge-01/write-off"
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
            r = await api.post(url, headers=auth(stack, Role.OPERATOR), json={"reason": "x"})
            assert r.status_code == 403  # a duty officer's order, not an operator's
            r = await api.post(url, headers=auth(stack, Role.DUTY_OFFICER), json={"reason": ""})
            assert r.status_code == 422  # the record needs a reason
            r = await api.post(
                f"/incidents/{handle.id}/devices/no-such-router/write-off",
                headers=auth(stack, Role.DUTY_OFFICER),
                json={"reason": "typo"},
            )
            assert r.status_code == 202
            r = await api.post(
                url,
                headers=auth(stack, Role.DUTY_OFFICER),
                json={"reason": "cabinet burnt out; field team to check"},
            )
            assert r.status_code == 202, r.text
        result = await asyncio.wait_for(handle.result(), 60)
    finally:
        stack.network.set_fault("kt-edge-01", None)

    assert result.phase is IncidentPhase.CLOSED
    st = await status(handle)
    (rec,) = [c for c in st.changes if c.change_id == edge]
    assert rec.state is ChangeState.WRITTEN_OFF and "cabinet burnt out" in rec.detail
    assert result.circuits["dic-noc"] is CircuitState.NEEDS_ATTENTION  # unknown, not "primary"
    assert result.circuits["ppc-office"] is CircuitState.ON_PRIMARY
    assert part_on(stack, "ppc-office", "kt-core-01") == "primary"
    assert any(r.kind == "written_off" and r.subject == "kt-edge-01" for r in st.review)
    events = [(e.event, e.detail) for e in st.timeline]
    assert any(e == "write-off refused" and "no-such-router" in d for e, d in events)
    assert any(e == "read back" and "kt-edge-01: written off" in d for e, d in events)
    (view,) = stack.store.circuit_views(["dic-noc"])  # what GET /circuits shows
    assert view["parts"]["kt-edge-01"] is PartState.UNKNOWN
    assert view["state"] is CircuitState.NEEDS_ATTENTION


async def test_a_write_off_while_another_incident_holds_the_device_leaves_it_to_that_one(
    stack: Stack,
):
    """A and B hold the same circuits; the router under one of them dies while A closes. A's
    duty officer writes it off so A can close; B still holds the circuit, which the ledger
    shows as unknown (needs attention), never as back on primary. When the router answers
    again, B's stand-down drives it back and B closes with everything on primary."""
    a = await start_incident(stack, KON_TUM, spec=STATE_LEVEL_2)
    await decide_until_active(stack, a)
    b = await start_incident(stack, KON_TUM, spec=STATE_LEVEL_2)
    joined = await decide_until_active(stack, b)
    dic = next(c for c in joined.circuits if c.circuit_id == "dic-noc")
    assert a.id in dic.held_with  # B joined A's hold
    stack.network.set_fault("kt-edge-01", Fault.UNREACHABLE)
    try:
        await a.signal(
            IncidentWorkflow.stand_down,
            signed(StandDownInput(by="do-nguyen-van-an", reason="A over"), a.id, "stand_down"),
        )

        async def a_stuck() -> bool:  # its closing read-back of the dead router cannot finish
            st = await status(a)
            return st.phase is IncidentPhase.STANDING_DOWN and any(
                e.event == "read back" or "kt-edge-01" in e.detail for e in st.timeline
            )

        await wait_until(a_stuck, timeout_s=60, what="A waiting on the dead router")
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
            r = await api.post(
                f"/incidents/{a.id}/devices/kt-edge-01/write-off",
                headers=auth(stack, Role.DUTY_OFFICER),
                json={"reason": "no answer; B still holds its circuit"},
            )
            assert r.status_code == 202, r.text
        result_a = await asyncio.wait_for(a.result(), 60)
        assert result_a.phase is IncidentPhase.CLOSED
        # B holds dic-noc still; nobody knows the router's state: needs attention.
        assert ledger_state(stack, "dic-noc") is CircuitState.NEEDS_ATTENTION
        assert (await status(b)).phase is IncidentPhase.ACTIVE
    finally:
        stack.network.set_fault("kt-edge-01", None)
    result_b = await stand_down(b)
    assert result_b.phase is IncidentPhase.CLOSED
    assert part_on(stack, "dic-noc", "kt-edge-01") == "primary"
    assert ledger_state(stack, "dic-noc") is CircuitState.ON_PRIMARY


async def test_two_device_circuit_one_part_rejected_other_part_rolled_back(stack: Stack):
    # pmc-hq-command crosses kt-core-01 and kt-agg-01; police-hq-command is on kt-core-01 only.
    handle = await start_incident(stack, KON_TUM, spec=two_waves(first=[1]))
    await awaiting(stack, handle, 2)

    def answer(cid: str) -> Decision:
        return Decision.REJECT if "kt-agg-01" in cid else Decision.CONFIRM

    await decide_until_active(stack, handle, answer)

    async def pulled_back() -> bool:
        return part_on(stack, "pmc-hq-command", "kt-core-01") == "primary"

    await wait_until(pulled_back, timeout_s=60, what="the confirmed part taken back")
    assert part_on(stack, "police-hq-command", "kt-core-01") == "backup"  # whole, kept
    assert part_on(stack, "pmc-hq-command", "kt-agg-01") == "primary"
    assert ledger_state(stack, "pmc-hq-command") is CircuitState.ON_PRIMARY
    assert ledger_state(stack, "police-hq-command") is CircuitState.ON_BACKUP
    st = await status(handle)
    by_id = {c.circuit_id: c for c in st.circuits}
    assert by_id["pmc-hq-command"].state is CircuitState.ON_PRIMARY
    assert any(
        c.direction is Direction.RESTORE and c.circuits == ["pmc-hq-command"] for c in st.changes
    )
    assert any(e.event == "circuit" and "pmc-hq-command" in e.detail for e in st.timeline)
    await stand_down(handle)
    assert on_path(stack, KON_TUM, "primary")


async def test_two_device_circuit_one_part_rejected_kept_and_flagged_when_playbook_says_keep(
    stack: Stack,
):
    sms_before = len(stack.sandbox.messages)
    spec = two_waves(first=[1], on_partial=PartialOutcome.KEEP)
    handle = await start_incident(stack, KON_TUM, spec=spec)
    await awaiting(stack, handle, 2)
    st = await decide_until_active(
        stack, handle, lambda cid: Decision.REJECT if "kt-agg-01" in cid else Decision.CONFIRM
    )
    assert part_on(stack, "pmc-hq-command", "kt-core-01") == "backup"
    assert part_on(stack, "pmc-hq-command", "kt-agg-01") == "primary"
    assert ledger_state(stack, "pmc-hq-command") is CircuitState.NEEDS_ATTENTION
    by_id = {c.circuit_id: c for c in st.circuits}
    assert by_id["pmc-hq-command"].state is CircuitState.NEEDS_ATTENTION
    assert any(r.kind == "kept_partial" and r.subject == "pmc-hq-command" for r in st.review)
    assert any("pmc-hq-command" in m.body for m in stack.sandbox.messages[sms_before:])
    await stand_down(handle)
    assert on_path(stack, KON_TUM, "primary")


async def test_declarer_confirming_own_incident_refused_and_recorded(stack: Stack):
    # The operator's own declaration: separation of duties says someone else confirms.
    handle = await start_incident(stack, "dak-ha", spec=two_waves(first=[2]), declared_by=OPERATOR)
    (cid,) = await awaiting(stack, handle, 1)
    r = await decide(stack, handle.id, cid)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "SelfDecision"
    attempts = stack.store.decision_attempts(handle.id)
    assert [(a.operator, a.outcome) for a in attempts] == [(OPERATOR, "SelfDecision")]

    async def recorded() -> bool:
        st = await status(handle)
        return st.decisions_refused == 1

    await wait_until(recorded, timeout_s=30, what="the refusal in the incident's record")
    st = await status(handle)
    assert any(e.event == "decision refused" and "SelfDecision" in e.detail for e in st.timeline)
    assert next(c for c in st.changes if c.change_id == cid).state is (
        ChangeState.AWAITING_CONFIRMATION
    )
    history = await handle.fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    # The API sends refusals as decisions: batched, one signal per burst (api/signals.py).
    assert [s.signal_name for s in signals] == ["decisions"]
    assert b"SelfDecision" in signals[0].input.payloads[0].data

    r = await decide(stack, handle.id, cid, operator=SECOND_OPERATOR)
    assert r.status_code == 200, r.text
    st = await decide_until_active(stack, handle, None)
    rec = next(c for c in st.changes if c.change_id == cid)
    assert rec.state is ChangeState.CONFIRMED and rec.decided_by == SECOND_OPERATOR
    await stand_down(handle)


async def test_no_decision_in_window_kept_confirmed_and_duty_officer_phoned(stack: Stack):
    impatient = TEST_TIMINGS.model_copy(
        update={"confirm_window_s": 1.5, "revert_margin_s": 3, "verify_timeout_s": 3}
    )
    spec = two_waves(first=[2, 3], on_timeout=TimeoutOutcome.KEEP)
    sms_before = len(stack.sandbox.messages)
    handle = await start_incident(stack, "dak-ha", spec=spec, timings=impatient)
    st = await decide_until_active(stack, handle, None)
    (rec,) = st.changes
    assert rec.state is ChangeState.KEPT_ON_TIMEOUT, rec
    dev = stack.network.devices["dh-agg-01"]
    assert not dev.pending_revert()  # confirmed on the device, not left to its timer
    for circuit in rec.circuits:
        assert part_on(stack, circuit, "dh-agg-01") == "backup"
        assert ledger_state(stack, circuit) is CircuitState.ON_BACKUP
    assert "10.254.5.1" in dev.saved_config()  # persisted
    assert any(r.kind == "kept_on_timeout" and r.subject == rec.change_id for r in st.review)
    assert any(rec.change_id in m.body for m in stack.sandbox.messages[sms_before:])

    async def phoned() -> bool:
        ids = [
            wf.id
            async for wf in stack.client.list_workflows(
                f"WorkflowId = '{calls_workflow_id(handle.id)}-alert-1'"
            )
        ]
        return bool(ids)

    await wait_until(phoned, timeout_s=30, what="the duty officer phoned")
    await stand_down(handle)
    assert on_path(stack, "dak-ha", "primary")


async def test_someone_elses_pending_commit_refused_never_confirmed(stack: Stack):
    dev = stack.network.devices["dt-agg-01"]
    port = stack.store.inventory().device("dt-agg-01").port
    password = stack.settings.device_credentials["lab"].password
    assert password is not None
    term = await LabTerminal.open(
        port, known_hosts=stack.settings.known_hosts_path, password=password.get_secret_value()
    )
    try:
        await term.send("terminal length 0")
        await term.send("configure terminal revert timer 10")
        await term.send("ip route 10.99.0.0 255.255.0.0 10.255.6.1")
        await term.send("end")
        assert dev.pending_revert()
        lines = len(dev.received)

        handle = await start_incident(stack, "dak-to", spec=two_waves(first=[1, 4]))
        st = await decide_until_active(stack, handle, None)
        (rec,) = st.changes
        assert rec.state is ChangeState.REFUSED, rec
        assert rec.error_type == "ForeignPendingCommit"
        assert rec.commands == [] and rec.transcripts  # nothing sent; the session is on record
        sent = dev.received[lines:]
        assert not [ln for ln in sent if ln.startswith(("ip route", "no ip route", "configure"))]
        assert dev.pending_revert()  # never confirmed by us
        assert any(r.kind == "refused" for r in st.review)
        await stand_down(handle)
    finally:
        await term.send("configure revert now")
        await term.close()


async def test_abort_undoes_newest_wave_first(stack: Stack):
    handle = await start_incident(stack, KON_TUM)
    await decide_until_active(stack, handle)
    assert on_path(stack, KON_TUM, "backup")
    result = await abort(handle)
    assert result.phase is IncidentPhase.ABORTED
    assert on_path(stack, KON_TUM, "primary")
    st = await status(handle)
    level = {c.id: c.restoration_level for c in stack.store.inventory().circuits}
    restores = [c for c in st.changes if c.direction is Direction.RESTORE]
    second = [c for c in restores if all(level[x] >= 3 for x in c.circuits)]
    first = [c for c in restores if all(level[x] <= 2 for x in c.circuits)]
    assert second and first
    assert max(c.settled_at for c in second if c.settled_at) <= min(
        c.started_at for c in first if c.started_at
    )
    assert st.aborted_by and "aborted" in (st.outcome or "")


async def test_stand_down_twice_second_ignored_and_recorded(stack: Stack):
    handle = await start_incident(stack, "dak-ha", spec=two_waves(first=[2]))
    await decide_until_active(stack, handle)
    await handle.signal(
        IncidentWorkflow.stand_down,
        signed(StandDownInput(by="do-nguyen-van-an", reason="first"), handle.id, "stand_down"),
    )
    await handle.signal(
        IncidentWorkflow.abort,
        signed(AbortInput(by="do-tran-thi-binh", reason="second"), handle.id, "abort"),
    )
    result = await handle.result()
    assert result.phase is IncidentPhase.CLOSED
    st = await status(handle)
    assert any(e.event == "abort ignored" for e in st.timeline)


@pytest_asyncio.fixture(scope="module")
async def quick_worker(stack: Stack) -> AsyncIterator[str]:
    """Workers whose SSH command timeout is short, so a hung device is noticed in a second."""
    base = f"quick-{uuid.uuid4().hex[:6]}"
    settings = stack.settings.model_copy(
        update={"ssh_command_timeout_s": 1.5, "ssh_connect_timeout_s": 2.0, "task_queue": base}
    )
    async with build_worker(stack.client, settings, stack.store):
        yield base


async def test_device_hung_on_confirm_record_matches_device_once_it_answers(
    stack: Stack, quick_worker: str
):
    quick = TEST_TIMINGS.model_copy(
        update={"confirm_window_s": 4, "revert_margin_s": 2, "verify_timeout_s": 3}
    )
    handle = await start_incident(
        stack, "dak-to", spec=two_waves(first=[1, 4]), timings=quick, task_queue=quick_worker
    )
    (cid,) = await awaiting(stack, handle, 1)
    stack.network.set_fault("dt-agg-01", Fault.HANG, on="configure confirm")
    assert (await decide(stack, handle.id, cid)).status_code == 200

    async def hung_twice() -> bool:
        rows = [r for r in stack.store.step_transcripts(cid, "confirm") if r.status == "failed"]
        return len(rows) >= 2

    await wait_until(hung_twice, timeout_s=60, what="confirm attempts stuck on the device")
    stack.network.set_fault("dt-agg-01", None)

    async def settled() -> ChangeState | None:
        st = await status(handle)
        rec = next(c for c in st.changes if c.change_id == cid)
        return rec.state if rec.state.settled else None

    state = await wait_until(settled, timeout_s=90, what="the change settled")
    # Confirmed once it answered, or reverted by its own timer meanwhile: the record says which.
    expected = "backup" if state is ChangeState.CONFIRMED else "primary"
    assert state in (ChangeState.CONFIRMED, ChangeState.REVERTED_BY_DEVICE), state
    for circuit in ("bgc-dak-to", "state-dak-to"):
        assert part_on(stack, circuit, "dt-agg-01") == expected
    result = await stand_down(handle)
    assert result.phase is IncidentPhase.CLOSED
    assert on_path(stack, "dak-to", "primary")


async def test_one_clock_for_every_window_decided_changes_confirmed_the_undecided_times_out(
    stack: Stack,
):
    """Three changes await at once: one timer serves all their windows (not one a change), the
    two answered are confirmed, the one nobody answered is rolled back when its window ends."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.converter import default

    quick = TEST_TIMINGS.model_copy(
        update={"confirm_window_s": 4, "revert_margin_s": 3, "verify_timeout_s": 3}
    )
    handle = await start_incident(
        stack, KON_TUM, spec=two_waves(first=[1, 2, 3, 4, 5]), timings=quick
    )
    await awaiting(stack, handle, 3)
    st = await decide_until_active(
        stack, handle, lambda cid: None if "kt-edge-01" in cid else Decision.CONFIRM
    )
    states = {c.device: c.state for c in st.changes}
    assert states["kt-core-01"] is states["kt-agg-01"] is ChangeState.CONFIRMED, states
    assert states["kt-edge-01"] in (ChangeState.ROLLED_BACK, ChangeState.REVERTED_BY_DEVICE)
    await stand_down(handle)
    assert on_path(stack, KON_TUM, "primary")

    summaries = [
        default().payload_converter.from_payload(e.user_metadata.summary)
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED and e.HasField("user_metadata")
    ]
    assert "operator-confirmation" not in summaries, summaries  # the timer a change of old
    assert 1 <= summaries.count("confirmation-windows") <= 2, summaries
