"""Duty officers phoned in escalation order through the real twilio client and signed webhooks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from app.stack import Stack
from continuity.messages import CallEvent, DutyCallInput, DutyCallResult
from tests.conftest import TEST_TIMINGS, wait_until
from workflows import DutyCallWorkflow, calls_workflow_id
from workflows._common import STOP_SIGNAL
from workflows.duty_call import CALL_EVENT_SIGNAL


@pytest.fixture
def officers(stack: Stack) -> Iterator[list]:
    people = sorted(stack.store.inventory().duty_officers, key=lambda o: o.escalation_order)
    yield people
    for o in people:  # the rest of the session expects them to pick up and press 1
        stack.sandbox.set_callee(o.phone, "press_1")


async def _call(stack: Stack, officers: list, *, rounds: int = 1) -> DutyCallResult:
    incident_id = f"INC-calls-{uuid.uuid4().hex[:8]}"
    return await stack.client.execute_workflow(
        DutyCallWorkflow.run,
        DutyCallInput(
            incident_id=incident_id,
            officers=officers,
            rounds=rounds,
            message_vi="Sự cố khẩn cấp.",
            message_en="Emergency.",
            timings=TEST_TIMINGS,
        ),
        id=calls_workflow_id(incident_id),
        task_queue=stack.settings.task_queue,
    )


async def test_first_officers_miss_call_escalates_to_third_who_acknowledges(stack, officers):
    first, second, third = officers
    stack.sandbox.set_callee(first.phone, "no_answer")
    stack.sandbox.set_callee(second.phone, "busy")
    stack.sandbox.set_callee(third.phone, "press_1")
    sms_before = len(stack.sandbox.messages)

    result = await _call(stack, officers)

    assert result.acknowledged_by == third.id
    assert [a.officer_id for a in result.attempts] == [first.id, second.id, third.id]
    assert [a.acknowledged for a in result.attempts] == [False, False, True]
    # The two who did not acknowledge got the SMS fallback, in their own language.
    sms = stack.sandbox.messages[sms_before:]
    assert sorted(m.to for m in sms) == sorted([first.phone, second.phone])
    assert all(a.sms_sid for a in result.attempts[:2])


async def test_officer_presses_wrong_key_not_an_acknowledgement(stack, officers):
    first, second, _ = officers
    stack.sandbox.set_callee(first.phone, "press_9")
    stack.sandbox.set_callee(second.phone, "press_1")
    result = await _call(stack, officers)
    assert result.acknowledged_by == second.id
    assert not result.attempts[0].acknowledged


async def test_nobody_answers_every_round_tried_then_gives_up(stack, officers):
    for o in officers:
        stack.sandbox.set_callee(o.phone, "no_answer")
    result = await _call(stack, officers, rounds=2)
    assert result.acknowledged_by is None
    assert len(result.attempts) == 2 * len(officers)
    assert all(a.sms_sid for a in result.attempts)


async def test_key_press_on_attempt_that_ended_unanswered_not_an_acknowledgement(stack, officers):
    """A reordered or replayed press reaching the workflow itself (not only the API) is ignored."""
    first, second, _ = officers
    stack.sandbox.set_callee(first.phone, "no_answer")
    stack.sandbox.set_callee(second.phone, "ring_out")
    incident_id = f"INC-calls-{uuid.uuid4().hex[:8]}"
    handle = await stack.client.start_workflow(
        DutyCallWorkflow.run,
        DutyCallInput(
            incident_id=incident_id,
            officers=officers,
            message_vi="Sự cố khẩn cấp.",
            message_en="Emergency.",
            timings=TEST_TIMINGS,
        ),
        id=calls_workflow_id(incident_id),
        task_queue=stack.settings.task_queue,
    )

    async def second_ringing() -> DutyCallResult | None:
        calls = await handle.query(DutyCallWorkflow.calls)
        ended = calls.attempts and calls.attempts[0].status == "no-answer"
        return calls if ended and len(calls.attempts) == 2 else None

    calls: DutyCallResult = await wait_until(second_ringing, timeout_s=30, what="attempt 2")  # type: ignore[assignment]
    press = CallEvent(
        call_sid=calls.attempts[0].call_sid or "",
        attempt=1,
        kind="gather",
        status="in-progress",
        digits="1",
        answered_by="human",
    )
    await handle.signal(CALL_EVENT_SIGNAL, press)
    await handle.signal(STOP_SIGNAL)
    result = await handle.result()
    assert result.acknowledged_by is None
    assert not result.attempts[0].acknowledged and result.attempts[0].status == "no-answer"
