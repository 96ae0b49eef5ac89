"""Starting and steering incidents on the test stack, as a duty officer and operators would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from sqlalchemy import delete
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from app.bundle import lines_not_rendered
from app.stack import Stack
from continuity.attestation import Action, Attester
from continuity.incidents import prepare_incident
from continuity.messages import (
    AbortInput,
    DecisionSignal,
    IncidentInput,
    IncidentResult,
    StandDownInput,
    Timings,
    WriteOffInput,
)
from continuity.models import (
    ChangeState,
    CircuitState,
    Decision,
    IncidentKind,
    IncidentPhase,
    IncidentStatus,
    PriorityClass,
    RerouteMechanism,
    Role,
)
from continuity.playbook import PlaybookSpec, RerouteWave, SelectCircuits
from continuity.settings import ApiToken
from continuity.store import CircuitHoldRow, CircuitPartRow, DeviceLockRow
from playbooks import get_playbook
from tests.conftest import TEST_TIMINGS, wait_until
from workflows import IncidentWorkflow

DECLARER = "do-nguyen-van-an"
OPERATOR = "op-pham-quoc-dung"  # the stack's operator token
SECOND_OPERATOR = "op-hoang-thu-ha"


def two_waves(*, first: list[int], second: list[int] | None = None, **wave: Any) -> PlaybookSpec:
    """Select every priority circuit of the area; reroute `first` levels, then `second`."""
    steps: list[Any] = [SelectCircuits(priority_classes=list(PriorityClass))]
    steps.append(RerouteWave(name="first", restoration_levels=first, **wave))
    if second:
        steps.append(RerouteWave(name="second", restoration_levels=second, **wave))
    return PlaybookSpec(
        name="test-waves",
        version=1,
        title="Test waves",
        incident_kinds=list(IncidentKind),
        steps=steps,
    )


async def start_incident(
    stack: Stack,
    area: str,
    *,
    spec: PlaybookSpec | None = None,
    kind: IncidentKind = IncidentKind.SABOTAGE,
    timings: Timings = TEST_TIMINGS,
    declared_by: str = DECLARER,
    task_queue: str | None = None,
    segment: str | None = None,
) -> WorkflowHandle[Any, Any]:
    """Declared as the API would, with a playbook and durations of the test's choosing."""
    inp = prepare_incident(
        spec=spec or get_playbook("kon-tum-2a"),
        inventory=stack.store.inventory(),
        incident_id=f"INC-t-{uuid.uuid4().hex[:8]}",
        kind=kind,
        area=area,
        description="test",
        declared_by=declared_by,
        timings=timings,
        segment=segment,
    )
    sign_declaration(inp)
    stack.store.save_snapshot(inp.inventory)
    return await stack.client.start_workflow(
        IncidentWorkflow.run,
        inp,
        id=inp.incident.id,
        task_queue=task_queue or stack.settings.task_queue,
    )


async def status(handle: WorkflowHandle[Any, Any]) -> IncidentStatus:
    return await handle.query(IncidentWorkflow.status)


def auth(stack: Stack, role: Role, subject: str | None = None) -> dict[str, str]:
    """A bearer header for `role`; another subject gets a token of its own."""
    if subject is None:
        return {"Authorization": f"Bearer {stack.tokens[role]}"}
    token = f"test-{role.value}-{subject}"
    stack.settings.api_tokens[token] = ApiToken(subject=subject, role=role)
    return {"Authorization": f"Bearer {token}"}


async def decide(
    stack: Stack,
    incident_id: str,
    change_id: str,
    decision: Decision = Decision.CONFIRM,
    *,
    operator: str | None = None,
    reason: str = "",
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        return await api.post(
            f"/incidents/{incident_id}/changes/{change_id}/decision",
            headers=auth(stack, Role.OPERATOR, operator),
            json={"decision": decision.value, "reason": reason},
        )


async def pending_changes(stack: Stack, incident_id: str) -> list[str]:
    rows = await asyncio.to_thread(
        stack.store.changes, incident_id, state=ChangeState.AWAITING_CONFIRMATION.value
    )
    return [r.change_id for r in rows]


async def decide_until_active(
    stack: Stack,
    handle: WorkflowHandle[Any, Any],
    decision: Decision | Callable[[str], Decision | None] | None = Decision.CONFIRM,
    *,
    operator: str | None = None,
    timeout_s: float = 90,
) -> IncidentStatus:
    """Answer each change through the API as it comes up; the status once active and settled.

    `decision` may be a function of the change id (None: leave that one unanswered).
    """
    decided: set[str] = set()

    async def active() -> IncidentStatus | None:
        for cid in await pending_changes(stack, handle.id):
            choice = decision(cid) if callable(decision) else decision
            if choice is None or cid in decided:
                continue
            decided.add(cid)
            r = await decide(stack, handle.id, cid, choice, operator=operator)
            assert r.status_code == 200, r.text
        st = await status(handle)
        settled = all(c.state.settled for c in st.changes)
        return st if st.phase is IncidentPhase.ACTIVE and settled else None

    return await wait_until(active, timeout_s=timeout_s, what=f"{handle.id} active")  # type: ignore[return-value]


async def awaiting(
    stack: Stack, handle: WorkflowHandle[Any, Any], count: int, *, timeout_s: float = 60
) -> list[str]:
    async def enough() -> list[str] | None:
        ids = await pending_changes(stack, handle.id)
        return ids if len(ids) >= count else None

    return await wait_until(enough, timeout_s=timeout_s, what=f"{count} changes awaiting")  # type: ignore[return-value]


# The stack's signer (tests/conftest.py sets it): orders the tests send straight to Temporal
# carry the attestation the API would add, as incidents declared through the API require.
_attester: list[Attester] = []
_Order = TypeVar("_Order", StandDownInput, AbortInput, WriteOffInput)


def use_attester(attester: Attester | None) -> None:
    _attester[:] = [attester] if attester else []


def signed(order: _Order, incident_id: str, action: Action, change_id: str = "") -> _Order:
    """`order` with the attestation the API would have given it (when the stack signs)."""
    if _attester:
        order.attestation = _attester[0](
            action=action,
            incident_id=incident_id,
            subject=order.by,
            role="duty_officer",
            token_id="",
            content=order.attested(),
            at=datetime.now(UTC),
            change_id=change_id,
        )
    return order


def signed_decision(d: DecisionSignal, incident_id: str) -> DecisionSignal:
    """`d` with the attestation the API would have given the operator's decision."""
    if _attester:
        d.attestation = _attester[0](
            action="decide",
            incident_id=incident_id,
            subject=d.operator_id,
            role="operator",
            token_id="",
            content=d.attested(),
            at=datetime.now(UTC),
            change_id=d.change_id,
        )
    return d


def sign_declaration(inp: IncidentInput) -> IncidentInput:
    """As the API declares: the deployment's keys and a signed declaration (when it signs)."""
    if _attester:
        inp.attestation_keys = _attester[0].public_keys
        inp.declaration = _attester[0](
            action="declare",
            incident_id=inp.incident.id,
            subject=inp.incident.declared_by,
            role="duty_officer",
            token_id="",
            content=inp.attested(),
            at=datetime.now(UTC),
        )
    return inp


async def stand_down(handle: WorkflowHandle[Any, Any], *, by: str = DECLARER) -> IncidentResult:
    order = signed(StandDownInput(by=by, reason="test over"), handle.id, "stand_down")
    await handle.signal(IncidentWorkflow.stand_down, order)
    return await _closed(handle)


async def abort(handle: WorkflowHandle[Any, Any], *, by: str = DECLARER) -> IncidentResult:
    order = signed(AbortInput(by=by, reason="declared in error"), handle.id, "abort")
    await handle.signal(IncidentWorkflow.abort, order)
    return await _closed(handle)


async def _closed(handle: WorkflowHandle[Any, Any]) -> IncidentResult:
    """The incident's result, once every line its history says it sent has been checked to be
    one its recorded playbook renders (what `audit verify` checks), whatever the test did."""
    result: IncidentResult = await handle.result()
    _, problems = lines_not_rendered(await handle.fetch_history())
    assert not problems, problems
    return result


def on_path(stack: Stack, area: str, which: str) -> bool:
    """Every path of the area's circuits forwards via `which` ("primary" or "backup")."""
    return all(part_on(stack, c, p.device) == which for c, p in _paths(stack, area))


def part_on(stack: Stack, circuit_id: str, device: str) -> str:
    """ "primary", "backup" or "mixed": what the lab device's configuration says for a part."""
    circuit = next(c for c in stack.store.inventory().circuits if c.id == circuit_id)
    path = next(p for p in circuit.paths if p.device == device)
    dev = stack.network.devices[device]
    if path.mechanism is RerouteMechanism.SOURCE_PBR:
        return "backup" if f"CT-{circuit_id}" in dev.running_config() else "primary"
    hops = dev.static_routes().get(path.prefix, [])
    if hops == [path.backup.address]:
        return "backup"
    if hops == [path.primary.address]:
        return "primary"
    return "mixed"


def _paths(stack: Stack, area: str) -> list[tuple[str, Any]]:
    inv = stack.store.inventory()
    covered = set(inv.expand_area(area))
    return [(c.id, p) for c in inv.circuits if c.area in covered for p in c.paths]


def ledger_state(stack: Stack, circuit_id: str) -> CircuitState | None:
    return stack.store.circuit_state(circuit_id)


async def finish_running_incidents(stack: Stack) -> None:
    """Stand down whatever a failed test left running, so the next test starts clean."""
    async for wf in stack.client.list_workflows("WorkflowType = 'Incident'"):
        if wf.status is not WorkflowExecutionStatus.RUNNING:
            continue
        handle = stack.client.get_workflow_handle(wf.id)
        try:
            order = signed(StandDownInput(by="test cleanup"), wf.id, "stand_down")
            await handle.signal(IncidentWorkflow.stand_down, order)
            await asyncio.wait_for(handle.result(), 60)
        except Exception:  # noqa: BLE001 - cleanup: whatever it is, end it
            try:
                await handle.terminate("test cleanup")
            except RPCError as e:
                # The list lags the server: it may have closed since it was listed as running.
                if e.status is not RPCStatusCode.NOT_FOUND:
                    raise


def reset_lab(stack: Stack, snapshot: dict[str, Any]) -> None:
    """Every device as the stack started it, no faults, and an empty circuit ledger."""
    for name, (running, saved) in snapshot.items():
        dev = stack.network.devices[name]
        if dev.fault is not None:
            stack.network.set_fault(name, None)  # reopens an unreachable device's listener
        dev.cancel_revert("test reset")
        dev.running, dev.saved = running.copy(), saved.copy()
        if hasattr(dev, "candidate"):  # Junos: nobody's edits left in the shared candidate
            dev.candidate = running.copy()
        for iface in dev.interfaces.values():
            iface.link_cut = False
        dev.config_changed()
    with stack.store.engine.begin() as conn:
        for table in (CircuitHoldRow, CircuitPartRow, DeviceLockRow):
            conn.execute(delete(table))
