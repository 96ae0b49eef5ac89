"""Human actions sent straight to Temporal, bypassing the API: refused on the record, no effect."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowFailureError

from app.audit import replay
from app.bundle import verify_history
from app.stack import Stack
from continuity.attestation import Attester, attest
from continuity.incidents import prepare_incident
from continuity.messages import (
    AbortInput,
    DecisionBatch,
    DecisionRefusedSignal,
    DecisionSignal,
    StandDownInput,
    WriteOffInput,
)
from continuity.models import ChangeState, Decision, IncidentKind, IncidentPhase
from continuity.signing import load_public_key
from playbooks import get_playbook
from tests.conftest import TEST_TIMINGS, wait_until
from tests.workflows.helpers import (
    DECLARER,
    OPERATOR,
    awaiting,
    decide,
    on_path,
    signed,
    stand_down,
    start_incident,
    status,
    two_waves,
)
from workflows import IncidentWorkflow

AREA = "ngoc-hoi"


def _sent(stack: Stack) -> dict[str, int]:
    return {name: len(d.received) for name, d in stack.network.devices.items()}


async def _refusals(handle, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    async def enough() -> list[str] | None:
        st = await status(handle)
        got = [f"{e.event}: {e.detail}" for e in st.timeline if "refused" in e.event]
        return got if len(got) >= count else None

    return await wait_until(enough, timeout_s=30, what=f"{count} refusals")  # type: ignore[return-value]


async def test_unattested_orders_and_decisions_are_refused_and_touch_no_device(stack: Stack):
    handle = await start_incident(stack, AREA, spec=two_waves(first=[1, 2, 3, 4, 5]))
    (cid, *_) = await awaiting(stack, handle, 1)
    before = _sent(stack)

    # Straight to Temporal, in the declarer's and an operator's names, with no attestation.
    await handle.signal(IncidentWorkflow.stand_down, StandDownInput(by=DECLARER, reason="x"))
    await handle.signal(IncidentWorkflow.abort, AbortInput(by=DECLARER, reason="x"))
    forged = DecisionSignal(change_id=cid, decision=Decision.CONFIRM, operator_id=OPERATOR)
    # A refused attempt invented in the operator's name: it must not become their record.
    invented = DecisionRefusedSignal(
        change_id=cid, decision=Decision.REJECT, operator_id=OPERATOR, refusal="Invented"
    )
    await handle.signal(
        IncidentWorkflow.decisions, DecisionBatch(decisions=[forged], refusals=[invented])
    )
    await handle.signal(IncidentWorkflow.decision_refused, invented)
    device = next(iter(stack.network.devices))
    await handle.signal(
        IncidentWorkflow.write_off, WriteOffInput(device=device, by=DECLARER, reason="x")
    )
    # Signed, but by a key the incident does not trust.
    rogue = Ed25519PrivateKey.generate()
    order = StandDownInput(by=DECLARER, reason="y")
    order.attestation = attest(
        rogue,
        action="stand_down",
        incident_id=handle.id,
        subject=DECLARER,
        role="duty_officer",
        token_id="",
        content=order.attested(),
        at=datetime.now(UTC),
    )
    await handle.signal(IncidentWorkflow.stand_down, order)
    # A genuine attestation of one order, replayed on another (a reason rewritten).
    genuine = signed(StandDownInput(by=DECLARER, reason="original"), handle.id, "stand_down")
    replayed = StandDownInput(by=DECLARER, reason="rewritten", attestation=genuine.attestation)
    await handle.signal(IncidentWorkflow.stand_down, replayed)

    refusals = await _refusals(handle, 6)
    text = "\n".join(refusals)
    assert text.count("no attestation: not sent through the API") == 4, text
    assert "Unattested" in text  # the decision, among the refused decisions
    assert "not a key this incident trusts" in text
    assert "is not what the API signed" in text

    st = await status(handle)
    assert st.phase in {IncidentPhase.REROUTING, IncidentPhase.ACTIVE}
    assert st.stood_down_by is None and st.aborted_by is None
    change = next(c for c in st.changes if c.change_id == cid)
    assert change.state is ChangeState.AWAITING_CONFIRMATION and change.decided_by is None
    assert _sent(stack) == before  # not a line to any device

    dropped = [e.detail for e in st.timeline if e.event == "refusal report dropped"]
    assert len(dropped) == 2 and all(cid in d for d in dropped), dropped
    assert "Invented" not in text and st.decisions_refused == 1  # only the forged decision

    # The same actions through the API (which signs them) are taken.
    assert (await decide(stack, handle.id, cid)).status_code == 200
    # A late second answer, refused by the API: recorded in the operator's name, signed.
    assert (await decide(stack, handle.id, cid, Decision.REJECT)).status_code == 409
    late = await _refusals(handle, 7)
    assert any(f"reject {cid} by {OPERATOR}" in r for r in late), late
    result = await stand_down(handle)
    assert result.phase is IncidentPhase.CLOSED
    assert on_path(stack, AREA, "primary")
    # The refusals replay: the auditor's replay re-checks every attestation the same way.
    history = await handle.fetch_history()
    outcome = await replay(history)
    assert outcome.ok, outcome.failure
    # The auditor checks the API's signature on the refusal it recorded, like any action (the
    # forged orders above are each a problem; the signed refusal is not).
    key = stack.settings.signing_key_path
    checked = await verify_history(history, [load_public_key(key.with_name(key.name + ".pub"))])
    signed_refusals = [
        r
        for e in json.loads(history.to_json())["events"]
        if (sig := e.get("workflowExecutionSignaledEventAttributes"))
        and sig["signalName"] == "decisions"
        for r in json.loads(base64.b64decode(sig["input"]["payloads"][0]["data"])).get(
            "refusals", []
        )
        if r.get("attestation")
    ]
    assert len(signed_refusals) == 1 and signed_refusals[0]["operator_id"] == OPERATOR
    assert checked.problems and not [p for p in checked.problems if "decide_refused" in p]


async def test_a_declaration_started_straight_on_temporal_is_refused(stack: Stack):
    before = _sent(stack)
    inp = prepare_incident(
        spec=get_playbook("kon-tum-2a"),
        inventory=stack.store.inventory(),
        incident_id="INC-t-forged-declaration",
        kind=IncidentKind.SABOTAGE,
        area=AREA,
        description="forged",
        declared_by=DECLARER,
        timings=TEST_TIMINGS,
    )
    # The deployment's keys copied into the input, but no attestation of this declaration.
    assert stack.attester is not None
    inp.attestation_keys = stack.attester.public_keys
    stack.store.save_snapshot(inp.inventory)
    handle = await stack.client.start_workflow(
        IncidentWorkflow.run, inp, id=inp.incident.id, task_queue=stack.settings.task_queue
    )
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    assert "declaration refused: no attestation" in str(e.value.cause)
    assert _sent(stack) == before
    assert not stack.store.changes(inp.incident.id)


async def test_a_declaration_signed_with_a_key_of_its_own_is_refused_by_the_worker(stack: Stack):
    """An input may name any key: the worker holds circuits only for the deployment's own."""
    before = _sent(stack)
    rogue = Attester(Ed25519PrivateKey.generate())
    inp = prepare_incident(
        spec=get_playbook("kon-tum-2a"),
        inventory=stack.store.inventory(),
        incident_id="INC-t-rogue-key",
        kind=IncidentKind.SABOTAGE,
        area=AREA,
        description="forged with a key of its own",
        declared_by=DECLARER,
        timings=TEST_TIMINGS,
    )
    inp.attestation_keys = rogue.public_keys
    inp.declaration = rogue(
        action="declare",
        incident_id=inp.incident.id,
        subject=DECLARER,
        role="duty_officer",
        token_id="",
        content=inp.attested(),
        at=datetime.now(UTC),
    )
    stack.store.save_snapshot(inp.inventory)
    handle = await stack.client.start_workflow(
        IncidentWorkflow.run, inp, id=inp.incident.id, task_queue=stack.settings.task_queue
    )
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    assert "declaration refused by the worker" in str(e.value.cause.cause)  # type: ignore[union-attr]
    assert _sent(stack) == before
    assert not stack.store.changes(inp.incident.id)
