"""The telephony sandbox, driven by the real twilio client and answering a real HTTP receiver."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from continuity.errors import TelephonyError
from continuity.models import DutyOfficer, Language
from continuity.settings import Settings
from continuity.telephony import (
    STATUS_CALLBACK_EVENTS,
    ack_twiml,
    build_client,
    twilio_code,
    twilio_errors,
)
from lab.telephony import TelephonySandbox

SID = "AC" + "1" * 32
TOKEN = "sandbox-token-0123456789abcdef"
FROM = "+15005550006"
OFFICER = DutyOfficer(
    id="do-1", name="Nguyễn Văn A", phone="+84901234567", language=Language.VI, escalation_order=1
)


@dataclass
class Received:
    path: str
    url: str
    fields: list[tuple[str, str]]
    signature: str | None


class Receiver:
    """Our side of the webhooks, minimal: records what arrives and answers gathers with TwiML."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._any, methods=["POST"])])

    async def _any(self, request: Request) -> Response:
        form = await request.form()
        self.received.append(
            Received(
                request.url.path,
                str(request.url),
                [(k, str(v)) for k, v in form.multi_items()],
                request.headers.get("X-Twilio-Signature"),
            )
        )
        return Response("<Response><Hangup/></Response>", media_type="application/xml")


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[TelephonySandbox]:
    sb = TelephonySandbox(account_sid=SID, auth_token=TOKEN, step_s=0.02)
    await sb.start()
    yield sb
    await sb.stop()


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec, sock = Receiver(), _listening_socket()
    server = uvicorn.Server(uvicorn.Config(rec.app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield rec, f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task
    sock.close()


def _client(sandbox: TelephonySandbox, *, token: str = TOKEN) -> Client:
    return build_client(
        Settings(twilio_account_sid=SID, twilio_auth_token=token, twilio_api_base=sandbox.base_url)
    )


def _settings(base: str) -> Settings:
    return Settings(twilio_account_sid=SID, twilio_auth_token=TOKEN, public_base_url=base)


def _create_call(client: Client, base: str, *, to: str = OFFICER.phone) -> str:
    twiml = ack_twiml(
        _settings(base),
        officer=OFFICER,
        message_vi="Sự cố khẩn cấp tại Kon Tum.",
        message_en="Emergency in Kon Tum.",
        gather_url=f"{base}/twilio/voice/gather?incident=I1&attempt=1&nonce=n",
    )
    call = client.calls.create(
        to=to,
        from_=FROM,
        twiml=twiml,
        status_callback=f"{base}/twilio/voice/status?incident=I1&attempt=1",
        status_callback_event=list(STATUS_CALLBACK_EVENTS),
        status_callback_method="POST",
        timeout=20,
        machine_detection="Enable",
    )
    return str(call.sid)


async def test_sandbox_call_create_records_fields_as_sent(sandbox: TelephonySandbox) -> None:
    client = _client(sandbox)
    sid = await asyncio.to_thread(_create_call, client, "http://127.0.0.1:9")

    [call] = sandbox.calls
    assert call.sid == sid and sid.startswith("CA")
    assert [k for k, _ in call.fields] == [
        "To",
        "From",
        "StatusCallback",
        "StatusCallbackEvent",
        "StatusCallbackEvent",
        "StatusCallbackEvent",
        "StatusCallbackEvent",
        "StatusCallbackMethod",
        "Timeout",
        "MachineDetection",
        "Twiml",
    ]
    assert call.fields_named("StatusCallbackEvent") == list(STATUS_CALLBACK_EVENTS)
    assert call.field("To") == OFFICER.phone and call.field("Timeout") == "20"
    assert 'actionOnEmptyResult="true"' in (call.field("Twiml") or "")


async def test_sandbox_call_create_returns_twilio_shaped_record(sandbox: TelephonySandbox) -> None:
    client = _client(sandbox)
    sid = await asyncio.to_thread(_create_call, client, "http://127.0.0.1:9")
    fetched = await asyncio.to_thread(lambda: client.calls(sid).fetch())
    assert fetched.sid == sid and fetched._from == FROM and fetched.to == OFFICER.phone
    assert fetched.direction == "outbound-api"
    assert fetched.date_created is not None and fetched.date_created.tzinfo is not None


async def test_sandbox_wrong_token_refused_with_20003(sandbox: TelephonySandbox) -> None:
    client = _client(sandbox, token="not-the-token")
    with pytest.raises(TwilioRestException) as exc:
        await asyncio.to_thread(_create_call, client, "http://127.0.0.1:9")
    assert (exc.value.status, exc.value.code) == (401, 20003)
    assert sandbox.calls == []


async def test_sandbox_invalid_to_translates_to_non_retryable_error(
    sandbox: TelephonySandbox,
) -> None:
    client = _client(sandbox)

    def create() -> None:
        with twilio_errors("create call"):
            _create_call(client, "http://127.0.0.1:9", to="+15005550001")

    with pytest.raises(TelephonyError) as exc:
        await asyncio.to_thread(create)
    assert isinstance(exc.value.__cause__, TwilioRestException)
    assert exc.value.__cause__.code == 21211 and exc.value.__cause__.status == 400
    assert twilio_code(exc.value) == 21211 and exc.value.retryable is False
    assert sandbox.calls == []


async def test_sandbox_rate_limit_translates_to_retryable_error(sandbox: TelephonySandbox) -> None:
    client = _client(sandbox)
    sandbox.fail_next("Calls", status=429, code=20429)

    def create() -> None:
        with twilio_errors("create call"):
            _create_call(client, "http://127.0.0.1:9")

    with pytest.raises(TelephonyError) as exc:
        await asyncio.to_thread(create)
    assert twilio_code(exc.value) == 20429 and exc.value.retryable is True
    assert sandbox.calls == []


async def test_sandbox_unreachable_api_translates_to_retryable_error() -> None:
    sock = _listening_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more
    client = build_client(
        Settings(
            twilio_account_sid=SID,
            twilio_auth_token=TOKEN,
            twilio_api_base=f"http://127.0.0.1:{port}",
        )
    )

    def create() -> None:
        with twilio_errors("create call"):
            _create_call(client, "http://127.0.0.1:9")

    with pytest.raises(TelephonyError) as exc:
        await asyncio.to_thread(create)
    assert exc.value.retryable is True and twilio_code(exc.value) is None


@pytest.mark.parametrize(
    ("behaviour", "statuses", "digits"),
    [
        ("press_1", ["initiated", "ringing", "in-progress", "completed"], "1"),
        ("press_9", ["initiated", "ringing", "in-progress", "completed"], "9"),
        ("answer_silent", ["initiated", "ringing", "in-progress", "completed"], ""),
        ("no_answer", ["initiated", "ringing", "no-answer"], None),
        ("busy", ["initiated", "busy"], None),
        ("fail", ["failed"], None),
    ],
)
async def test_sandbox_callee_behaviour_posts_signed_callbacks_in_order(
    sandbox: TelephonySandbox,
    receiver: tuple[Receiver, str],
    behaviour: str,
    statuses: list[str],
    digits: str | None,
) -> None:
    rec, base = receiver
    sandbox.set_callee(OFFICER.phone, behaviour)  # type: ignore[arg-type]
    sid = await asyncio.to_thread(_create_call, _client(sandbox), base)
    await sandbox.wait_for(lambda: sandbox.call_finished(sid))

    validator = RequestValidator(TOKEN)
    for r in rec.received:
        assert validator.validate(r.url, dict(r.fields), r.signature or ""), r
        assert dict(r.fields)["CallSid"] == sid and dict(r.fields)["AccountSid"] == SID
    status_posts = [dict(r.fields) for r in rec.received if r.path == "/twilio/voice/status"]
    assert [p["CallStatus"] for p in status_posts] == statuses
    gathers = [dict(r.fields) for r in rec.received if r.path == "/twilio/voice/gather"]
    assert [g["Digits"] for g in gathers] == ([] if digits is None else [digits])
    assert all(c.status_code == 200 for c in sandbox.callbacks_for(sid))


async def test_sandbox_answered_call_speaks_the_twiml(
    sandbox: TelephonySandbox, receiver: tuple[Receiver, str]
) -> None:
    _, base = receiver
    sid = await asyncio.to_thread(_create_call, _client(sandbox), base)
    await sandbox.wait_for(lambda: sandbox.call_finished(sid))
    [call] = sandbox.calls
    assert [lang for lang, _, _ in call.said] == ["vi-VN", "en-US"]
    assert call.said[0][2].startswith("Sự cố khẩn cấp") and "Nhấn phím 1" in call.said[0][2]
    assert call.answered_by == "human" and call.status == "completed"


async def test_sandbox_sms_create_then_signed_delivery_reports(
    sandbox: TelephonySandbox, receiver: tuple[Receiver, str]
) -> None:
    rec, base = receiver
    client = _client(sandbox)
    url = f"{base}/twilio/sms/status?incident=I1&key=k1&nonce=n"
    msg = await asyncio.to_thread(
        lambda: client.messages.create(
            to=OFFICER.phone, from_=FROM, body="Sự cố khẩn cấp", status_callback=url
        )
    )
    assert msg.status == "queued" and msg.sid.startswith("SM")
    [recorded] = sandbox.messages
    assert [k for k, _ in recorded.fields] == ["To", "StatusCallback", "From", "Body"]
    assert recorded.body == "Sự cố khẩn cấp"

    await sandbox.wait_for(lambda: len(sandbox.callbacks_for(msg.sid)) == 2)
    assert [dict(r.fields)["MessageStatus"] for r in rec.received] == ["sent", "delivered"]
    assert all(
        RequestValidator(TOKEN).validate(r.url, dict(r.fields), r.signature or "")
        for r in rec.received
    )


async def test_sandbox_list_calls_filters_by_to_and_start_time(sandbox: TelephonySandbox) -> None:
    client = _client(sandbox)
    before = datetime.now(UTC) - timedelta(seconds=5)
    sid = await asyncio.to_thread(_create_call, client, "http://127.0.0.1:9")
    await asyncio.to_thread(_create_call, client, "http://127.0.0.1:9", to="+84907654321")

    mine = await asyncio.to_thread(
        lambda: client.calls.list(to=OFFICER.phone, start_time_after=before)
    )
    later = await asyncio.to_thread(
        lambda: client.calls.list(
            to=OFFICER.phone, start_time_after=datetime.now(UTC) + timedelta(minutes=5)
        )
    )
    assert [c.sid for c in mine] == [sid]
    assert later == []
