"""Telephony activities: ring a duty officer or text one, at most once per idempotency key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError
from twilio.rest import Client

from activities._errors import application_error
from continuity.errors import ContinuityError, TelephonyError
from continuity.messages import PlaceCallInput, PlaceCallResult, SendSmsInput, SendSmsResult
from continuity.settings import Settings
from continuity.store import CallRow, MessageRow, Store
from continuity.telephony import (
    STATUS_CALLBACK_EVENTS,
    ack_twiml,
    build_client,
    callback_nonce,
    sms_status_url,
    twilio_code,
    twilio_errors,
    voice_gather_url,
    voice_status_url,
)

# Twilio's clock and ours may disagree; a call created just before our reservation's timestamp
# (as Twilio sees it) must still be found after a crash.
CLOCK_SKEW = timedelta(seconds=60)
# Answering machine detection lets the audit tell a voicemail from the officer (AnsweredBy).
MACHINE_DETECTION = "Enable"
_LIST_LIMIT = 50


def _translated(e: ContinuityError) -> ApplicationError:
    # Twilio's error code travels with the failure: the history says why a call failed.
    if isinstance(e, TelephonyError):
        return application_error(e, code=twilio_code(e))
    return application_error(e)


def _aware(at: datetime) -> datetime:
    # SQLite hands timestamps back naive; the store writes them in UTC. Twilio's filter wants UTC.
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)


def _ring_timeout(seconds: float) -> int:
    return max(5, min(600, round(seconds)))  # Twilio's accepted range for Timeout


class TelephonyActivities:
    """Sync activities (the twilio client blocks): the worker runs them in a thread pool."""

    def __init__(self, store: Store, settings: Settings, *, client: Client | None = None) -> None:
        self._store = store
        self._settings = settings
        self._client = client or build_client(settings)

    @activity.defn(name="place_call")
    def place_call(self, inp: PlaceCallInput) -> PlaceCallResult:
        try:
            return self._place_call(inp)
        except ContinuityError as e:
            raise _translated(e) from e

    @activity.defn(name="send_sms")
    def send_sms(self, inp: SendSmsInput) -> SendSmsResult:
        try:
            return self._send_sms(inp)
        except ContinuityError as e:
            raise _translated(e) from e

    # --- calls ---------------------------------------------------------------------------

    def _place_call(self, inp: PlaceCallInput) -> PlaceCallResult:
        officer = inp.officer
        existing = self._store.call_for_attempt(inp.incident_id, inp.attempt)
        if existing is not None and existing.call_sid:
            activity.logger.info(
                "call attempt %d of %s already placed as %s",
                inp.attempt,
                inp.incident_id,
                existing.call_sid,
            )
            return PlaceCallResult(call_sid=existing.call_sid, status=existing.status)
        row = existing or self._store.reserve_call(
            incident_id=inp.incident_id,
            attempt=inp.attempt,
            officer_id=officer.id,
            to=officer.phone,
            workflow_id=inp.workflow_id,
        )
        if row.officer_id != officer.id or row.to != officer.phone:
            raise TelephonyError(
                f"call attempt {inp.attempt} of {inp.incident_id} is reserved for officer "
                f"{row.officer_id}, not {officer.id}",
                retryable=False,
            )
        if existing is not None:
            # An earlier try reserved the slot but never recorded a sid: it may have crashed
            # after Twilio accepted the call. Ringing the officer twice is worse than a GET.
            found = self._find_created_call(row)
            if found is not None:
                activity.logger.info(
                    "call attempt %d of %s found at Twilio as %s",
                    inp.attempt,
                    inp.incident_id,
                    found[0],
                )
                self._store.record_call_created(
                    incident_id=inp.incident_id,
                    attempt=inp.attempt,
                    call_sid=found[0],
                    status=found[1],
                )
                return PlaceCallResult(call_sid=found[0], status=found[1])

        s = self._settings
        nonce = callback_nonce(
            s, kind="call", incident_id=inp.incident_id, ref=str(inp.attempt), row_id=row.id
        )
        twiml = ack_twiml(
            s,
            officer=officer,
            message_vi=inp.message_vi,
            message_en=inp.message_en,
            gather_url=voice_gather_url(
                s, incident_id=inp.incident_id, attempt=inp.attempt, nonce=nonce
            ),
        )
        with twilio_errors("create call"):
            call = self._client.calls.create(
                to=officer.phone,
                from_=s.twilio_from_number,
                twiml=twiml,
                status_callback=voice_status_url(
                    s, incident_id=inp.incident_id, attempt=inp.attempt, nonce=nonce
                ),
                status_callback_event=list(STATUS_CALLBACK_EVENTS),
                status_callback_method="POST",
                timeout=_ring_timeout(inp.ring_timeout_s),
                machine_detection=MACHINE_DETECTION,
            )
        sid, status = str(call.sid), str(call.status or "queued")
        current = self._store.call_for_attempt(inp.incident_id, inp.attempt)
        if current is None or current.call_sid != sid:
            # A fast status callback may already have adopted the sid with a later status.
            self._store.record_call_created(
                incident_id=inp.incident_id, attempt=inp.attempt, call_sid=sid, status=status
            )
        activity.logger.info(
            "placed call %s to officer %s (%s attempt %d)",
            sid,
            officer.id,
            inp.incident_id,
            inp.attempt,
        )
        return PlaceCallResult(call_sid=sid, status=status)

    def _find_created_call(self, row: CallRow) -> tuple[str, str] | None:
        since = _aware(row.created_at) - CLOCK_SKEW
        known = {r.call_sid for r in self._store.calls(row.incident_id) if r.call_sid}
        with twilio_errors("list calls"):
            calls = self._client.calls.list(to=row.to, start_time_after=since, limit=_LIST_LIMIT)
        candidates = [
            c
            for c in calls
            if c.sid not in known
            and (c._from in (None, self._settings.twilio_from_number))
            and (c.date_created is None or _aware(c.date_created) >= since)
        ]
        if not candidates:
            return None
        first = min(candidates, key=lambda c: c.date_created or datetime.max.replace(tzinfo=UTC))
        return str(first.sid), str(first.status or "queued")

    # --- SMS -----------------------------------------------------------------------------

    def _send_sms(self, inp: SendSmsInput) -> SendSmsResult:
        officer = inp.officer
        existing = self._store.message_for_key(inp.incident_id, inp.key)
        if existing is not None and existing.sid:
            activity.logger.info(
                "SMS %s of %s already sent as %s", inp.key, inp.incident_id, existing.sid
            )
            return SendSmsResult(sid=existing.sid, status=existing.status)
        row = existing or self._store.reserve_message(
            incident_id=inp.incident_id,
            key=inp.key,
            officer_id=officer.id,
            to=officer.phone,
            body=inp.body,
        )
        if row.officer_id != officer.id or row.to != officer.phone:
            raise TelephonyError(
                f"SMS {inp.key} of {inp.incident_id} is reserved for officer "
                f"{row.officer_id}, not {officer.id}",
                retryable=False,
            )
        if existing is not None:
            found = self._find_sent_message(row)
            if found is not None:
                self._store.record_message_sent(
                    incident_id=inp.incident_id, key=inp.key, sid=found[0], status=found[1]
                )
                return SendSmsResult(sid=found[0], status=found[1])

        s = self._settings
        nonce = callback_nonce(
            s, kind="sms", incident_id=inp.incident_id, ref=inp.key, row_id=row.id
        )
        with twilio_errors("send SMS"):
            # The reserved body, not the retry's: one key is one text.
            msg = self._client.messages.create(
                to=officer.phone,
                from_=s.twilio_from_number,
                body=row.body,
                status_callback=sms_status_url(
                    s, incident_id=inp.incident_id, key=inp.key, nonce=nonce
                ),
            )
        sid, status = str(msg.sid), str(msg.status or "queued")
        current = self._store.message_for_key(inp.incident_id, inp.key)
        if current is None or current.sid != sid:
            self._store.record_message_sent(
                incident_id=inp.incident_id, key=inp.key, sid=sid, status=status
            )
        activity.logger.info(
            "sent SMS %s to officer %s (%s key %s)", sid, officer.id, inp.incident_id, inp.key
        )
        return SendSmsResult(sid=sid, status=status)

    def _find_sent_message(self, row: MessageRow) -> tuple[str, str] | None:
        since = _aware(row.created_at) - CLOCK_SKEW
        with twilio_errors("list messages"):
            # Queued messages have no DateSent yet, so filter on creation time here instead.
            messages = self._client.messages.list(
                to=row.to, from_=self._settings.twilio_from_number, limit=_LIST_LIMIT
            )
        candidates = [
            m
            for m in messages
            if m.body == row.body and (m.date_created is None or _aware(m.date_created) >= since)
        ]
        if not candidates:
            return None
        first = min(candidates, key=lambda m: m.date_created or datetime.max.replace(tzinfo=UTC))
        return str(first.sid), str(first.status or "queued")


__all__ = ["TelephonyActivities"]
