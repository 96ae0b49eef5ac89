"""DutyCallWorkflow: phone duty officers in escalation order until one presses 1; SMS fallback."""

from __future__ import annotations

import functools
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from continuity.messages import (
        CallEvent,
        DutyCallInput,
        DutyCallResult,
        PlaceCallInput,
        PlaceCallResult,
        SendSmsInput,
        SendSmsResult,
    )
    from continuity.models import (
        ENDED_UNANSWERED,
        TERMINAL_CALL_STATUSES,
        CallAttempt,
        DutyOfficer,
        Language,
    )

from workflows._common import PLACE_CALL, SEND_SMS, STOP_SIGNAL, TELEPHONY_RETRY

CALL_EVENT_SIGNAL = "call_event"
# Histories recorded before 2026-12 acknowledged a key press on an ended attempt too.
_PATCH_ENDED_NO_ACK = "ended-attempt-no-ack"


@workflow.defn(name="DutyCall")
class DutyCallWorkflow:
    @workflow.init
    def __init__(self, inp: DutyCallInput) -> None:
        self._attempts: dict[int, CallAttempt] = {}
        self._acked_by: str | None = None
        self._stopped = False

    @workflow.run
    async def run(self, inp: DutyCallInput) -> DutyCallResult:
        t = inp.timings
        officers = sorted(inp.officers, key=lambda o: o.escalation_order)
        attempt = inp.first_attempt - 1
        for _round in range(inp.rounds):
            for officer in officers:
                if self._stopped:
                    return self._result()
                attempt += 1
                record = CallAttempt(
                    officer_id=officer.id, officer_name=officer.name, at=workflow.now()
                )
                self._attempts[attempt] = record
                try:
                    placed: PlaceCallResult = await workflow.execute_activity(
                        PLACE_CALL,
                        PlaceCallInput(
                            incident_id=inp.incident_id,
                            attempt=attempt,
                            officer=officer,
                            message_vi=inp.message_vi,
                            message_en=inp.message_en,
                            ring_timeout_s=t.ring_timeout_s,
                            workflow_id=workflow.info().workflow_id,
                        ),
                        result_type=PlaceCallResult,
                        start_to_close_timeout=timedelta(seconds=30),
                        retry_policy=TELEPHONY_RETRY,
                    )
                    record.call_sid = placed.call_sid
                    if record.status == "placed":  # a webhook may already have moved it on
                        record.status = placed.status
                except ActivityError as e:
                    record.status, record.error = "failed", str(e.cause or e)
                if record.error is None:
                    try:
                        await workflow.wait_condition(
                            functools.partial(self._settled, record),
                            timeout=timedelta(seconds=t.escalation_delay_s),
                            timeout_summary="await-acknowledgement",
                        )
                    except TimeoutError:
                        record.status = f"{record.status} (no answer in {t.escalation_delay_s:g}s)"
                if self._acked_by is not None or self._stopped:
                    return self._result()
                if inp.sms_fallback:
                    await self._sms(inp, officer, attempt=attempt)
        return self._result()

    @workflow.signal(name=CALL_EVENT_SIGNAL)
    def call_event(self, ev: CallEvent) -> None:
        rec = self._attempts.get(ev.attempt)
        if rec is None or (rec.call_sid and ev.call_sid != rec.call_sid):
            workflow.logger.warning("call event for unknown attempt %s ignored", ev.attempt)
            return
        if ev.kind == "status" and ev.status and not rec.acknowledged:
            rec.status = ev.status
        if ev.kind == "gather" and ev.digits == "1" and not rec.acknowledged:
            if rec.status in ENDED_UNANSWERED and workflow.patched(_PATCH_ENDED_NO_ACK):
                # Reordered or replayed: a call that ended unanswered acknowledges nothing.
                workflow.logger.warning("key press on ended attempt %s ignored", ev.attempt)
                return
            # First "1" wins; repeated webhooks are recorded once.
            if ev.answered_by not in ("", "human", "unknown"):
                rec.status = f"answered by {ev.answered_by}: not an acknowledgement"
                return
            rec.acknowledged, rec.status = True, "acknowledged"
            if self._acked_by is None:
                self._acked_by = rec.officer_id

    @workflow.signal(name=STOP_SIGNAL)
    def stop(self) -> None:
        """The incident ended: no further calls; a call already ringing is left to end."""
        self._stopped = True

    def _settled(self, rec: CallAttempt) -> bool:
        """Someone acknowledged, this call ended without a "1", or the incident ended."""
        return self._acked_by is not None or rec.status in TERMINAL_CALL_STATUSES or self._stopped

    @workflow.query(name="calls")
    def calls(self) -> DutyCallResult:
        return self._result()

    def _result(self) -> DutyCallResult:
        return DutyCallResult(
            acknowledged_by=self._acked_by,
            attempts=[self._attempts[k] for k in sorted(self._attempts)],
        )

    async def _sms(self, inp: DutyCallInput, officer: DutyOfficer, *, attempt: int) -> None:
        body = inp.message_vi if officer.language is Language.VI else inp.message_en
        try:
            sent: SendSmsResult = await workflow.execute_activity(
                SEND_SMS,
                SendSmsInput(
                    incident_id=inp.incident_id,
                    key=f"fallback-{attempt}",
                    officer=officer,
                    body=body,
                ),
                result_type=SendSmsResult,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=TELEPHONY_RETRY,
            )
            self._attempts[attempt].sms_sid = sent.sid
        except ActivityError as e:
            workflow.logger.warning("SMS to %s failed: %s", officer.id, e.cause or e)
