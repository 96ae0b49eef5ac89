"""The decision courier on the real Temporal dev server: a burst is a few signals, none lost."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from api.errors import NotFound
from api.signals import DecisionCourier
from continuity.messages import DecisionBatch, DecisionRefusedSignal, DecisionSignal
from continuity.models import Decision

BURST = 60


def _decision(i: int) -> DecisionSignal:
    return DecisionSignal(change_id=f"chg-{i}", decision=Decision.CONFIRM, operator_id="op-1")


@pytest_asyncio.fixture
async def parked(temporal_env: WorkflowEnvironment) -> AsyncIterator[str]:
    """A running "Incident" no worker polls: its history shows exactly what was signalled.

    Terminated afterwards, so no later test finds an incident that nobody can stand down."""
    wid = f"INC-courier-{uuid.uuid4().hex[:8]}"
    handle = await temporal_env.client.start_workflow(
        "Incident", id=wid, task_queue=f"nobody-{wid}"
    )
    yield wid
    await handle.terminate("courier test done")


async def _signals(env: WorkflowEnvironment, wid: str) -> list[tuple[str, dict]]:
    history = await env.client.get_workflow_handle(wid).fetch_history()
    return [
        (a.signal_name, json.loads(a.input.payloads[0].data))
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
        for a in [e.workflow_execution_signaled_event_attributes]
    ]


async def test_burst_of_decisions_is_a_few_signals_carrying_every_one(
    temporal_env: WorkflowEnvironment, parked: str
):
    wid = parked
    courier = DecisionCourier(temporal_env.client)
    refusal = DecisionRefusedSignal(
        change_id="chg-x",
        decision=Decision.REJECT,
        operator_id="duty-1",
        refusal="SelfDecision",
        detail="the declarer",
    )
    sends = [courier.send(wid, _decision(i)) for i in range(BURST)]
    await asyncio.gather(*sends, courier.send(wid, refusal))

    signals = await _signals(temporal_env, wid)
    assert {name for name, _ in signals} == {"decisions"}
    assert len(signals) < BURST / 4, len(signals)  # the first alone, then the queue at once
    carried = [d["change_id"] for _, batch in signals for d in batch["decisions"]]
    assert sorted(carried) == sorted(f"chg-{i}" for i in range(BURST))
    refused = [r["change_id"] for _, batch in signals for r in batch["refusals"]]
    assert refused == ["chg-x"]
    assert courier._senders == {} and courier._queues == {}  # nothing left behind


async def test_waiter_that_hangs_up_does_not_take_its_decision_out(
    temporal_env: WorkflowEnvironment, parked: str
):
    wid = parked
    courier = DecisionCourier(temporal_env.client)
    first = asyncio.create_task(courier.send(wid, _decision(0)))
    gone = asyncio.create_task(courier.send(wid, _decision(1)))
    await asyncio.sleep(0)
    (sender,) = courier._senders.values()
    gone.cancel()  # the operator's connection dropped while the signal was on its way
    await first
    with pytest.raises(asyncio.CancelledError):
        await gone
    await sender
    carried = [d["change_id"] for _, b in await _signals(temporal_env, wid) for d in b["decisions"]]
    assert sorted(carried) == ["chg-0", "chg-1"]


async def test_incident_that_does_not_run_fails_every_waiter_with_not_found(
    temporal_env: WorkflowEnvironment,
):
    courier = DecisionCourier(temporal_env.client)
    outcomes = await asyncio.gather(
        *(courier.send("INC-never-declared", _decision(i)) for i in range(5)),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [NotFound] * 5
    assert courier._senders == {}


async def test_a_bounded_wait_answers_early_and_the_signal_still_goes(
    temporal_env: WorkflowEnvironment, parked: str
):
    wid = parked
    courier = DecisionCourier(temporal_env.client)
    # No time at all to wait: the answer is "not delivered yet", the decision still travels.
    assert await courier.send(wid, _decision(0), wait_s=0) is False

    async def sent() -> bool:
        return any(
            d["change_id"] == "chg-0"
            for _, batch in await _signals(temporal_env, wid)
            for d in batch["decisions"]
        )

    for _ in range(100):
        if await sent():
            break
        await asyncio.sleep(0.05)
    assert await sent()
    assert await courier.send(wid, _decision(1), wait_s=30) is True


class _SlowIncident:
    """A workflow handle whose signals take `took_s` to be accepted; records what it got."""

    def __init__(self, took_s: float) -> None:
        self.id = "INC-slow"
        self.took_s = took_s
        self.carried: list[str] = []

    async def signal(self, _signal: object, batch: DecisionBatch) -> None:
        await asyncio.sleep(self.took_s)
        self.carried += [d.change_id for d in batch.decisions]


class _OneIncidentClient:
    def __init__(self, handle: _SlowIncident) -> None:
        self._handle = handle

    def get_workflow_handle(self, _workflow_id: str) -> _SlowIncident:
        return self._handle


async def _timed_send(courier: DecisionCourier, i: int, wait_s: float) -> tuple[bool, float]:
    t0 = time.monotonic()
    delivered = await courier.send("INC-slow", _decision(i), wait_s=wait_s)
    return delivered, time.monotonic() - t0


async def test_while_signals_are_slower_than_the_wait_a_decision_is_answered_at_once():
    incident = _SlowIncident(took_s=0.3)
    courier = DecisionCourier(_OneIncidentClient(incident))  # type: ignore[arg-type]
    assert (await _timed_send(courier, 0, wait_s=0.1))[0] is False  # waited, not accepted yet
    # The signal on its way has taken longer than the wait already: no waiting.
    delivered, took = await _timed_send(courier, 1, wait_s=0.1)
    assert delivered is False and took < 0.05
    await asyncio.gather(*courier._senders.values())  # both accepted, each slower than the wait
    delivered, took = await _timed_send(courier, 2, wait_s=0.1)
    assert delivered is False and took < 0.05
    await asyncio.gather(*courier._senders.values())
    assert incident.carried == ["chg-0", "chg-1", "chg-2"]  # every one still signalled

    incident.took_s = 0.0  # Temporal is quick again: after one quick signal, callers wait
    await _timed_send(courier, 3, wait_s=0.1)
    await asyncio.gather(*courier._senders.values())
    assert (await _timed_send(courier, 4, wait_s=0.1))[0] is True
