"""Telephony activities: the real twilio client against the sandbox, a real SQLite store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.telephony import TelephonyActivities
from continuity.messages import PlaceCallInput, SendSmsInput
from continuity.models import DutyOfficer, Language
from continuity.settings import Settings
from continuity.store import Store
from lab.telephony import TelephonySandbox

SID = "AC" + "2" * 32
TOKEN = "activity-token-9f8e7d6c5b4a"
VI_OFFICER = DutyOfficer(
    id="do-vi", name="Trần Thị B", phone="+84901110001", language=Language.VI, escalation_order=1
)
EN_OFFICER = DutyOfficer(
    id="do-en", name="John Doe", phone="+84901110002", language=Language.EN, escalation_order=2
)

_T = TypeVar("_T")


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[TelephonySandbox]:
    sb = TelephonySandbox(account_sid=SID, auth_token=TOKEN, step_s=0.02)
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'continuity.db'}")
    s.create_schema()
    yield s
    s.close()


@pytest.fixture
def settings(sandbox: TelephonySandbox) -> Settings:
    # Nothing listens on port 9: the sandbox's callbacks fail fast; these tests don't need them.
    return Settings(
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_api_base=sandbox.base_url,
        public_base_url="http://127.0.0.1:9",
        voice_vi="Google.vi-VN-Wavenet-A",
        voice_en="Polly.Joanna",
    )


@pytest.fixture
def acts(store: Store, settings: Settings) -> TelephonyActivities:
    return TelephonyActivities(store, settings)


async def run(fn: Callable[[Any], _T], arg: Any) -> _T:
    # Sync activities block: run them off the loop, as the worker's thread pool does.
    return await asyncio.to_thread(ActivityEnvironment().run, fn, arg)


def call_input(
    officer: DutyOfficer = VI_OFFICER, *, incident: str = "INC-1", attempt: int = 1
) -> PlaceCallInput:
    return PlaceCallInput(
        incident_id=incident,
        attempt=attempt,
        officer=officer,
        message_vi="Sự cố khẩn cấp tại Kon Tum.",
        message_en="Emergency in Kon Tum.",
        ring_timeout_s=20,
    )


def posts(sandbox: TelephonySandbox, resource: str) -> int:
    return sum(
        1
        for r in sandbox.rest_requests
        if r.method == "POST" and r.path.endswith(f"/{resource}.json")
    )


async def test_place_call_same_attempt_twice_dials_once(
    acts: TelephonyActivities, sandbox: TelephonySandbox, store: Store
) -> None:
    first = await run(acts.place_call, call_input())
    again = await run(acts.place_call, call_input())

    assert again == first
    assert [c.sid for c in sandbox.calls] == [first.call_sid]
    assert posts(sandbox, "Calls") == 1
    row = store.call_for_attempt("INC-1", 1)
    assert row is not None and row.call_sid == first.call_sid and row.officer_id == "do-vi"


async def test_place_call_new_attempt_dials_again(
    acts: TelephonyActivities, sandbox: TelephonySandbox
) -> None:
    one = await run(acts.place_call, call_input(attempt=1))
    two = await run(acts.place_call, call_input(attempt=2))
    assert one.call_sid != two.call_sid and len(sandbox.calls) == 2


async def test_place_call_sends_callbacks_and_script_with_nonce(
    acts: TelephonyActivities, sandbox: TelephonySandbox
) -> None:
    result = await run(acts.place_call, call_input(incident="INC-7", attempt=3))
    assert result.status == "queued"
    [call] = sandbox.calls
    status_cb = call.field("StatusCallback") or ""
    assert status_cb.startswith(
        "http://127.0.0.1:9/twilio/voice/status?incident=INC-7&attempt=3&nonce="
    )
    assert call.fields_named("StatusCallbackEvent") == [
        "initiated",
        "ringing",
        "answered",
        "completed",
    ]
    assert call.field("From") == "+15005550006" and call.field("Timeout") == "20"
    twiml = call.field("Twiml") or ""
    nonce = status_cb.rsplit("nonce=", 1)[1]
    assert (
        "http://127.0.0.1:9/twilio/voice/gather?incident=INC-7&amp;attempt=3&amp;nonce=" + nonce
    ) in twiml
    assert 'numDigits="1"' in twiml and 'actionOnEmptyResult="true"' in twiml


async def test_place_call_english_officer_hears_english_first(
    acts: TelephonyActivities, sandbox: TelephonySandbox
) -> None:
    result = await run(acts.place_call, call_input(EN_OFFICER))
    await sandbox.wait_for(lambda: sandbox.call_finished(result.call_sid))
    [call] = sandbox.calls
    assert [(lang, voice) for lang, voice, _ in call.said] == [
        ("en-US", "Polly.Joanna"),
        ("vi-VN", "Google.vi-VN-Wavenet-A"),
    ]
    assert call.said[0][2] == "Emergency in Kon Tum. Press 1 to acknowledge."


async def test_place_call_vietnamese_officer_hears_vietnamese_first(
    acts: TelephonyActivities, sandbox: TelephonySandbox
) -> None:
    result = await run(acts.place_call, call_input(VI_OFFICER))
    await sandbox.wait_for(lambda: sandbox.call_finished(result.call_sid))
    [call] = sandbox.calls
    assert [lang for lang, _, _ in call.said] == ["vi-VN", "en-US"]
    assert call.said[0][2] == "Sự cố khẩn cấp tại Kon Tum. Nhấn phím 1 để xác nhận."


async def test_place_call_crash_after_twilio_created_adopts_the_call(
    acts: TelephonyActivities, sandbox: TelephonySandbox, store: Store
) -> None:
    # Twilio commits the call, then the response is lost: the classic duplicate-ring trap.
    sandbox.fail_next(
        "Calls", status=500, code=20500, message="Internal Server Error", created=True
    )
    with pytest.raises(ApplicationError) as exc:
        await run(acts.place_call, call_input())
    assert exc.value.type == "TelephonyError" and exc.value.non_retryable is False

    retried = await run(acts.place_call, call_input())

    assert [c.sid for c in sandbox.calls] == [retried.call_sid]
    assert posts(sandbox, "Calls") == 1
    assert any(r.method == "GET" and r.path.endswith("/Calls.json") for r in sandbox.rest_requests)
    row = store.call_for_attempt("INC-1", 1)
    assert row is not None and row.call_sid == retried.call_sid


async def test_place_call_reserved_but_never_created_dials(
    acts: TelephonyActivities, sandbox: TelephonySandbox, store: Store
) -> None:
    # A crash between the reservation and the create: Twilio has nothing, so we must dial.
    store.reserve_call(
        incident_id="INC-1", attempt=1, officer_id=VI_OFFICER.id, to=VI_OFFICER.phone
    )
    result = await run(acts.place_call, call_input())
    assert [c.sid for c in sandbox.calls] == [result.call_sid]


async def test_place_call_earlier_attempt_to_same_officer_is_not_adopted(
    acts: TelephonyActivities, sandbox: TelephonySandbox, store: Store
) -> None:
    first = await run(acts.place_call, call_input(attempt=1))
    store.reserve_call(
        incident_id="INC-1", attempt=2, officer_id=VI_OFFICER.id, to=VI_OFFICER.phone
    )
    second = await run(acts.place_call, call_input(attempt=2))
    assert second.call_sid != first.call_sid and len(sandbox.calls) == 2


async def test_place_call_invalid_number_fails_non_retryable(
    acts: TelephonyActivities, sandbox: TelephonySandbox
) -> None:
    bad = VI_OFFICER.model_copy(update={"phone": "+15005550001"})
    with pytest.raises(ApplicationError) as exc:
        await run(acts.place_call, call_input(bad))
    assert exc.value.type == "TelephonyError" and exc.value.non_retryable is True
    assert exc.value.details == ({"code": 21211},)
    assert sandbox.calls == []


async def test_place_call_rate_limited_fails_retryable(
    acts: TelephonyActivities, sandbox: TelephonySandbox
) -> None:
    sandbox.fail_next("Calls", status=429, code=20429)
    with pytest.raises(ApplicationError) as exc:
        await run(acts.place_call, call_input())
    assert exc.value.non_retryable is False and exc.value.details == ({"code": 20429},)
    result = await run(acts.place_call, call_input())
    assert [c.sid for c in sandbox.calls] == [result.call_sid]


async def test_place_call_wrong_auth_token_fails_non_retryable(
    store: Store, settings: Settings, sandbox: TelephonySandbox
) -> None:
    wrong = settings.model_copy(update={"twilio_auth_token": SecretStr("wrong-token")})
    with pytest.raises(ApplicationError) as exc:
        await run(TelephonyActivities(store, wrong).place_call, call_input())
    assert exc.value.non_retryable is True and exc.value.details == ({"code": 20003},)


async def test_place_call_attempt_reserved_for_other_officer_fails_non_retryable(
    acts: TelephonyActivities, sandbox: TelephonySandbox, store: Store
) -> None:
    store.reserve_call(
        incident_id="INC-1", attempt=1, officer_id=EN_OFFICER.id, to=EN_OFFICER.phone
    )
    with pytest.raises(ApplicationError) as exc:
        await run(acts.place_call, call_input(VI_OFFICER))
    assert exc.value.non_retryable is True and sandbox.calls == []


async def test_place_call_logs_never_contain_auth_token(
    acts: TelephonyActivities, sandbox: TelephonySandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox.fail_next("Calls", status=429, code=20429)
    with pytest.raises(ApplicationError):
        await run(acts.place_call, call_input())
    await run(acts.place_call, call_input())
    assert caplog.records, "expected the client and the activity to log something"
    assert TOKEN not in caplog.text


async def test_send_sms_same_key_twice_sends_once(
    acts: TelephonyActivities, sandbox: TelephonySandbox, store: Store
) -> None:
    inp = SendSmsInput(
        incident_id="INC-1",
        key="fallback-1",
        officer=VI_OFFICER,
        body="Sự cố khẩn cấp tại Kon Tum. Gọi lại trực ban.",
    )
    first = await run(acts.send_sms, inp)
    again = await run(acts.send_sms, inp)

    assert again == first and first.status == "queued"
    [msg] = sandbox.messages
    assert msg.sid == first.sid and msg.body == inp.body and msg.to == VI_OFFICER.phone
    status_cb = msg.field("StatusCallback") or ""
    assert status_cb.startswith(
        "http://127.0.0.1:9/twilio/sms/status?incident=INC-1&key=fallback-1&nonce="
    )
    row = store.message_for_key("INC-1", "fallback-1")
    assert row is not None and row.sid == first.sid


async def test_send_sms_crash_after_twilio_created_adopts_the_message(
    acts: TelephonyActivities, sandbox: TelephonySandbox
) -> None:
    sandbox.fail_next(
        "Messages", status=503, code=20503, message="Service Unavailable", created=True
    )
    inp = SendSmsInput(incident_id="INC-1", key="fallback-2", officer=VI_OFFICER, body="Khẩn")
    with pytest.raises(ApplicationError) as exc:
        await run(acts.send_sms, inp)
    assert exc.value.non_retryable is False
    retried = await run(acts.send_sms, inp)
    assert [m.sid for m in sandbox.messages] == [retried.sid]
    assert posts(sandbox, "Messages") == 1
