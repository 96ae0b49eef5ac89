"""Twilio webhooks: check the signature, drop duplicates, record in the store, signal DutyCall."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from temporalio.service import RPCError, RPCStatusCode
from twilio.rest.api.v2010.account.call import CallInstance

from api.errors import ApiError, Conflict, Forbidden, Unavailable, documented, ok_as
from continuity.errors import TelephonyError
from continuity.messages import CallEvent
from continuity.models import ENDED_UNANSWERED, TERMINAL_CALL_STATUSES
from continuity.settings import Settings
from continuity.store import CallRow, Store
from continuity.telephony import (
    ACK_DIGIT,
    build_client,
    empty_twiml,
    gather_reply_twiml,
    nonce_matches,
    twilio_code,
    twilio_errors,
    validate_twilio_signature,
)
from workflows import calls_workflow_id
from workflows.duty_call import CALL_EVENT_SIGNAL

log = logging.getLogger(__name__)

router = APIRouter(prefix="/twilio", tags=["twilio"])

_XML = "application/xml"
_XML_OK = ok_as(_XML, "TwiML")
_NOT_FOUND = 20404  # Twilio's "The requested resource was not found"
# Twilio gives up on a webhook after 15 s; a stuck signal must fail well before that.
_SIGNAL_TIMEOUT = timedelta(seconds=5)
# Message statuses only move forward; a late or repeated callback must not move one back.
_SMS_RANK = {
    "creating": 0,
    "accepted": 1,
    "scheduled": 1,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "delivered": 6,
    "undelivered": 6,
    "failed": 6,
    "canceled": 6,
    "read": 7,
}


class _Gate:
    """Serialises the webhooks of one call attempt, so check-then-record cannot race itself."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # Recorded events whose signal failed: Twilio's retry of those must signal again.
        self.unsignalled: set[str] = set()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _gate(request: Request) -> _Gate:
    state = request.app.state
    gate = getattr(state, "twilio_webhook_gate", None)
    if gate is None:
        gate = state.twilio_webhook_gate = _Gate()
    return gate


async def _signed_form(request: Request, settings: Settings) -> FormData:
    form = await request.form()
    valid = validate_twilio_signature(
        settings,
        path=request.url.path,
        raw_query=request.url.query,
        form_multidict=form,
        signature=request.headers.get("X-Twilio-Signature"),
    )
    if not valid or form.get("AccountSid") != settings.twilio_account_sid:
        log.warning("Twilio webhook %s refused: missing or invalid signature", request.url.path)
        raise Forbidden("invalid Twilio signature")
    return form


def _query(request: Request, *names: str) -> list[str]:
    values = [request.query_params.get(n, "") for n in names]
    if not all(values):
        missing = [n for n, v in zip(names, values, strict=True) if not v]
        raise ApiError(f"callback URL lacks {', '.join(missing)}")
    return values


def _str(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


async def _handle_call_event(request: Request, kind: Literal["status", "gather"]) -> str:
    """Everything both voice webhooks do; returns the digits pressed (gather) or ""."""
    settings: Settings = request.app.state.settings
    store: Store = request.app.state.store
    form = await _signed_form(request, settings)  # before anything is read, stored or signalled
    incident, attempt_s, nonce = _query(request, "incident", "attempt", "nonce")
    try:
        attempt = int(attempt_s)
    except ValueError:
        raise ApiError(f"attempt must be a number, got {attempt_s!r}") from None
    call_sid, status = _str(form, "CallSid"), _str(form, "CallStatus")
    digits = _str(form, "Digits") if kind == "gather" else ""
    answered_by = _str(form, "AnsweredBy")
    event = CallEvent(
        call_sid=call_sid,
        attempt=attempt,
        kind=kind,
        status=status,
        digits=digits,
        answered_by=answered_by,
    )
    key = f"{kind}|{call_sid}|{status}|{digits}"
    gate = _gate(request)
    async with gate.hold(f"call/{incident}/{attempt}"):
        row = await run_in_threadpool(store.call_for_attempt, incident, attempt)
        if row is None or not nonce_matches(
            settings, nonce, kind="call", incident_id=incident, ref=str(attempt), row_id=row.id
        ):
            log.warning(
                "Twilio %s callback for unknown attempt %s/%d refused", kind, incident, attempt
            )
            raise Forbidden("unknown call attempt")
        seen = next((e for e in row.events if e.get("key") == key), None)
        if seen is not None and seen.get("refused"):
            raise Conflict(seen["refused"])  # Twilio's retry of a refused press gets the same
        if seen is not None and key not in gate.unsignalled:
            log.info("duplicate Twilio %s callback for %s ignored", kind, call_sid)
            return digits
        if seen is None:
            await _check_call_sid(request, row, call_sid)
            ended = row.status if row.status in ENDED_UNANSWERED else None
            raw: dict[str, Any] = {
                "kind": kind,
                "key": key,
                "call_sid": call_sid,
                "call_status": status,
                "answered_by": answered_by,
                "idempotency_token": request.headers.get("I-Twilio-Idempotency-Token", ""),
            }
            if kind == "gather" and ended is not None:
                # The attempt ended unanswered (no-answer, busy, failed): a key press for it
                # arrives reordered or replayed and acknowledges nothing. Kept for the audit.
                refusal = f"call attempt {attempt} already ended ({ended}): not an acknowledgement"
                log.warning("Twilio gather for %s refused: %s", call_sid, refusal)
                await run_in_threadpool(
                    store.record_call_event, call_sid=call_sid, raw={**raw, "refused": refusal}
                )
                raise Conflict(refusal)
            # A late "ringing" must not overwrite "completed" (callbacks can arrive reordered).
            moves = kind == "status" and not (
                row.status in TERMINAL_CALL_STATUSES and status not in TERMINAL_CALL_STATUSES
            )
            await run_in_threadpool(
                store.record_call_event,
                call_sid=call_sid,
                status=status if moves else "",
                digits=digits,
                raw=raw,
            )
        # The escalation that placed the call: the incident's own, or a later alert's.
        wid = row.workflow_id or calls_workflow_id(incident)
        await _signal(request, wid, event, gate, key)
    return digits


async def _check_call_sid(request: Request, row: CallRow, call_sid: str) -> None:
    """The callback's call is this attempt's call, or it is refused and recorded nowhere."""
    if call_sid and row.call_sid == call_sid:
        return
    where = f"{row.incident_id}/{row.attempt}"
    if not call_sid or row.call_sid is not None:
        log.warning(
            "callback for call %r on attempt %s, which placed %s", call_sid, where, row.call_sid
        )
        raise Forbidden(f"call {call_sid!r} does not belong to call attempt {row.attempt}")
    # No sid recorded yet: the callback beat place_call's own write, or place_call's worker died
    # after Twilio accepted the call. Adopt the sid only when Twilio itself says it is a call
    # from our number to this attempt's officer that no other attempt owns.
    store: Store = request.app.state.store
    settings: Settings = request.app.state.settings
    owner = await run_in_threadpool(store.call_for_sid, call_sid)
    call = None if owner is not None else await run_in_threadpool(_fetch_call, request, call_sid)
    if call is None or call.to != row.to or call._from != settings.twilio_from_number:
        log.warning("callback for unknown call %r on attempt %s refused", call_sid, where)
        raise Forbidden(f"unknown call {call_sid!r}")
    await run_in_threadpool(
        store.record_call_created,
        incident_id=row.incident_id,
        attempt=row.attempt,
        call_sid=call_sid,
        status=row.status,
    )


def _fetch_call(request: Request, call_sid: str) -> CallInstance | None:
    """The call as Twilio knows it; None when Twilio knows no such call."""
    state = request.app.state
    client = getattr(state, "twilio_client", None)
    if client is None:
        client = state.twilio_client = build_client(state.settings)
    try:
        with twilio_errors("fetch call"):
            return client.calls(call_sid).fetch()
    except TelephonyError as e:
        if twilio_code(e) == _NOT_FOUND:
            return None
        raise Unavailable(f"cannot check call {call_sid!r} with Twilio: {e}") from e


async def _signal(request: Request, wid: str, event: CallEvent, gate: _Gate, key: str) -> None:
    temporal = getattr(request.app.state, "temporal", None)
    if temporal is None:
        gate.unsignalled.add(key)
        raise Unavailable("the workflow engine is not connected")
    try:
        await temporal.get_workflow_handle(wid).signal(
            CALL_EVENT_SIGNAL, event, rpc_timeout=_SIGNAL_TIMEOUT
        )
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            # The escalation is over (e.g. the call's last status after "1" was pressed):
            # recorded for audit, nobody left to tell.
            gate.unsignalled.discard(key)
            log.info(
                "workflow %s not found; %s event of %s recorded only",
                wid,
                event.kind,
                event.call_sid,
            )
            return
        gate.unsignalled.add(key)
        log.error("signalling %s failed (%s); Twilio's retry will signal again", wid, e.status)
        raise Unavailable(f"could not signal {wid}") from e
    gate.unsignalled.discard(key)


@router.post(
    "/voice/status",
    response_class=Response,
    responses={**_XML_OK, **documented(400, 403, 409, 422, 503)},
)
async def voice_status(request: Request) -> Response:
    await _handle_call_event(request, "status")
    return Response(empty_twiml(), media_type=_XML)


@router.post(
    "/voice/gather",
    response_class=Response,
    responses={**_XML_OK, **documented(400, 403, 409, 422, 503)},
)
async def voice_gather(request: Request) -> Response:
    digits = await _handle_call_event(request, "gather")
    twiml = gather_reply_twiml(request.app.state.settings, acknowledged=digits == ACK_DIGIT)
    return Response(twiml, media_type=_XML)


@router.post(
    "/sms/status", response_class=Response, responses={**_XML_OK, **documented(400, 403, 422, 503)}
)
async def sms_status(request: Request) -> Response:
    """Delivery reports only update the store; the escalation does not wait on SMS."""
    settings: Settings = request.app.state.settings
    store: Store = request.app.state.store
    form = await _signed_form(request, settings)
    incident, key, nonce = _query(request, "incident", "key", "nonce")
    sid, status = _str(form, "MessageSid"), _str(form, "MessageStatus")
    async with _gate(request).hold(f"sms/{incident}/{key}"):
        row = await run_in_threadpool(store.message_for_key, incident, key)
        if row is None or not nonce_matches(
            settings, nonce, kind="sms", incident_id=incident, ref=key, row_id=row.id
        ):
            log.warning("Twilio SMS callback for unknown message %s/%s refused", incident, key)
            raise Forbidden("unknown message")
        if row.sid not in (None, sid):
            log.warning("SMS callback for %s on %s/%s, which sent %s", sid, incident, key, row.sid)
        elif _SMS_RANK.get(status, 5) <= _SMS_RANK.get(row.status, 0):
            log.info("SMS callback %s for %s ignored: already %s", status, sid, row.status)
        else:
            await run_in_threadpool(
                store.record_message_sent, incident_id=incident, key=key, sid=sid, status=status
            )
    return Response(empty_twiml(), media_type=_XML)


__all__ = ["router"]
