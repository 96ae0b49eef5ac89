"""Twilio webhooks: the sandbox's signed callbacks reach the router over HTTP; forgeries don't."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from twilio.request_validator import RequestValidator

from activities.telephony import TelephonyActivities
from api.errors import install_handlers
from api.routes.twilio import router
from continuity.messages import CallEvent, PlaceCallInput, PlaceCallResult, SendSmsInput
from continuity.models import DutyOfficer, Language
from continuity.settings import Settings
from continuity.store import Store
from continuity.telephony import NO_ACK_EN, THANKS_VI, build_client, callback_nonce
from lab.telephony import CalleeBehaviour, SandboxCallback, TelephonySandbox

SID = "AC" + "3" * 32
TOKEN = "webhook-token-5e4d3c2b1a09"
OFFICER = DutyOfficer(
    id="do-1", name="Lê Văn C", phone="+84902220001", language=Language.VI, escalation_order=1
)


@workflow.defn(name="WebhookSink")
class WebhookSink:
    """Stands in for DutyCall: keeps every call_event signal it gets."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name="call_event")
    def call_event(self, ev: CallEvent) -> None:
        self.events.append(ev)

    @workflow.query(name="seen")
    def seen(self) -> list[CallEvent]:
        return self.events


@dataclass
class Bench:
    settings: Settings
    store: Store
    sandbox: TelephonySandbox
    api_url: str
    temporal: Client
    task_queue: str
    acts: TelephonyActivities
    app: FastAPI

    async def place_call(self, incident: str, attempt: int = 1) -> PlaceCallResult:
        inp = PlaceCallInput(
            incident_id=incident,
            attempt=attempt,
            officer=OFFICER,
            message_vi="Sự cố khẩn cấp.",
            message_en="Emergency.",
            ring_timeout_s=20,
        )
        return await asyncio.to_thread(ActivityEnvironment().run, self.acts.place_call, inp)

    async def finished_call(
        self, incident: str, behaviour: CalleeBehaviour = "press_1"
    ) -> PlaceCallResult:
        self.sandbox.set_callee(OFFICER.phone, behaviour)
        result = await self.place_call(incident)
        await self.sandbox.wait_for(lambda: self.sandbox.call_finished(result.call_sid))
        return result

    async def start_sink(self, incident: str) -> WorkflowHandle[WebhookSink, None]:
        return await self.temporal.start_workflow(
            WebhookSink.run, id=f"calls-{incident}", task_queue=self.task_queue
        )

    def nonce(self, incident: str, attempt: int = 1) -> str:
        row = self.store.call_for_attempt(incident, attempt)
        assert row is not None
        return callback_nonce(
            self.settings, kind="call", incident_id=incident, ref=str(attempt), row_id=row.id
        )


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@asynccontextmanager
async def bench(
    tmp_path: Path, temporal: Client, *, public_base_url: str | None = None
) -> AsyncIterator[Bench]:
    sock = _listening_socket()
    api_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # With a public base that is not the API's own address the sandbox plays the reverse proxy.
    sandbox = TelephonySandbox(
        account_sid=SID,
        auth_token=TOKEN,
        step_s=0.02,
        deliver_to=api_url if public_base_url else None,
    )
    await sandbox.start()
    settings = Settings(
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_api_base=sandbox.base_url,
        public_base_url=public_base_url or api_url,
    )
    store = Store(f"sqlite:///{tmp_path / 'continuity.db'}")
    store.create_schema()
    app = FastAPI()
    install_handlers(app)
    app.include_router(router)
    app.state.settings, app.state.store, app.state.temporal = settings, store, temporal
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    task_queue = f"webhooks-{uuid.uuid4()}"
    try:
        async with Worker(
            temporal,
            task_queue=task_queue,
            workflows=[WebhookSink],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            yield Bench(
                settings,
                store,
                sandbox,
                api_url,
                temporal,
                task_queue,
                TelephonyActivities(store, settings),
                app,
            )
    finally:
        await sandbox.stop()
        server.should_exit = True
        await serving
        sock.close()
        store.close()


@pytest.fixture
def incident() -> str:
    return f"INC-{uuid.uuid4().hex[:8]}"


async def _post(url: str, fields: list[tuple[str, str]], signature: str | None) -> httpx.Response:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=dict(fields), headers=headers)


def _status_fields(call_sid: str, status: str) -> list[tuple[str, str]]:
    return [
        ("CallSid", call_sid),
        ("AccountSid", SID),
        ("From", "+15005550006"),
        ("To", OFFICER.phone),
        ("CallStatus", status),
        ("Direction", "outbound-api"),
        ("ApiVersion", "2010-04-01"),
    ]


async def _reserved_call(
    b: Bench, incident: str, attempt: int = 1, *, placed: bool = True
) -> tuple[str, str]:
    """A call row with a sid, as place_call leaves it (or, not `placed`, as it leaves it just
    before Twilio answers); returns (sid, callback URL)."""
    b.store.reserve_call(
        incident_id=incident, attempt=attempt, officer_id=OFFICER.id, to=OFFICER.phone
    )
    sid = "CA" + uuid.uuid4().hex
    if placed:
        b.store.record_call_created(
            incident_id=incident, attempt=attempt, call_sid=sid, status="queued"
        )
    url = (
        f"{b.settings.public_base_url}/twilio/voice/status?incident={incident}"
        f"&attempt={attempt}&nonce={b.nonce(incident, attempt)}"
    )
    return sid, url


async def _signed_post(url: str, fields: list[tuple[str, str]]) -> httpx.Response:
    return await _post(url, fields, RequestValidator(TOKEN).compute_signature(url, dict(fields)))


def _press(call_sid: str, digit: str = "1") -> list[tuple[str, str]]:
    return [*_status_fields(call_sid, "in-progress"), ("Digits", digit)]


@pytest.fixture
def temporal(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("signature", [None, "", "Zm9yZ2VkLXNpZ25hdHVyZQ=="])
async def test_voice_status_missing_or_forged_signature_refused_nothing_recorded(
    tmp_path: Path, temporal: Client, incident: str, signature: str | None
) -> None:
    async with bench(tmp_path, temporal) as b:
        sid, url = await _reserved_call(b, incident)
        r = await _post(url, _status_fields(sid, "completed"), signature)
        assert r.status_code == 403
        row = b.store.call_for_attempt(incident, 1)
        assert row is not None and row.events == [] and row.status == "queued"


async def test_voice_status_signed_with_other_token_refused(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sid, url = await _reserved_call(b, incident)
        fields = _status_fields(sid, "completed")
        sig = RequestValidator("someone-elses-token").compute_signature(url, dict(fields))
        assert (await _post(url, fields, sig)).status_code == 403
        assert b.store.call_for_attempt(incident, 1).events == []  # type: ignore[union-attr]


async def test_voice_status_tampered_field_refused(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sid, url = await _reserved_call(b, incident)
        sig = RequestValidator(TOKEN).compute_signature(url, dict(_status_fields(sid, "busy")))
        r = await _post(url, _status_fields(sid, "completed"), sig)
        assert r.status_code == 403
        assert b.store.call_for_attempt(incident, 1).status == "queued"  # type: ignore[union-attr]


async def test_voice_gather_signed_for_other_attempt_refused(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sid, url = await _reserved_call(b, incident)
        gather = url.replace("/voice/status", "/voice/gather")
        fields = [*_status_fields(sid, "in-progress"), ("Digits", "1")]
        sig = RequestValidator(TOKEN).compute_signature(
            gather.replace("attempt=1", "attempt=2"), dict(fields)
        )
        assert (await _post(gather, fields, sig)).status_code == 403
        assert b.store.call_for_attempt(incident, 1).digits == ""  # type: ignore[union-attr]


async def test_voice_status_signed_but_stale_nonce_refused(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sid, url = await _reserved_call(b, incident)
        stale = url.rsplit("nonce=", 1)[0] + "nonce=" + "0" * 24
        fields = _status_fields(sid, "completed")
        sig = RequestValidator(TOKEN).compute_signature(stale, dict(fields))
        assert (await _post(stale, fields, sig)).status_code == 403
        assert b.store.call_for_attempt(incident, 1).events == []  # type: ignore[union-attr]


async def test_sms_status_forged_signature_refused(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        b.store.reserve_message(
            incident_id=incident, key="k", officer_id=OFFICER.id, to=OFFICER.phone, body="x"
        )
        url = f"{b.api_url}/twilio/sms/status?incident={incident}&key=k&nonce=abc"
        fields = [("MessageSid", "SM1"), ("AccountSid", SID), ("MessageStatus", "delivered")]
        assert (await _post(url, fields, "forged")).status_code == 403
        assert b.store.message_for_key(incident, "k").status == "creating"  # type: ignore[union-attr]


# --- signed callbacks from the sandbox -----------------------------------------------------


async def test_voice_callbacks_from_sandbox_update_call_and_signal_workflow(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sink = await b.start_sink(incident)
        result = await b.finished_call(incident, "press_1")

        callbacks = b.sandbox.callbacks_for(result.call_sid)
        assert [c.status_code for c in callbacks] == [200] * 5
        gather = next(c for c in callbacks if c.kind == "gather")
        assert THANKS_VI in gather.response_text and "<Hangup />" in gather.response_text
        row = b.store.call_for_attempt(incident, 1)
        assert row is not None and (row.status, row.digits) == ("completed", "1")
        events = await sink.query(WebhookSink.seen)
        assert [(e.kind, e.status, e.digits) for e in events] == [
            ("status", "initiated", ""),
            ("status", "ringing", ""),
            ("status", "in-progress", ""),
            ("gather", "in-progress", "1"),
            ("status", "completed", ""),
        ]
        assert all(e.attempt == 1 and e.call_sid == result.call_sid for e in events)
        assert events[3].answered_by == "human"
        await sink.terminate()


async def test_voice_callback_replayed_recorded_and_signalled_once(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sink = await b.start_sink(incident)
        result = await b.finished_call(incident, "press_1")
        before = len(b.store.call_for_attempt(incident, 1).events)  # type: ignore[union-attr]
        gather: SandboxCallback = next(
            c for c in b.sandbox.callbacks_for(result.call_sid) if c.kind == "gather"
        )

        again = await asyncio.gather(
            *(_post(gather.url, gather.fields, gather.signature) for _ in range(3))
        )

        assert [r.status_code for r in again] == [200, 200, 200]
        assert all(THANKS_VI in r.text for r in again)
        assert len(b.store.call_for_attempt(incident, 1).events) == before  # type: ignore[union-attr]
        events = await sink.query(WebhookSink.seen)
        assert sum(1 for e in events if e.kind == "gather") == 1
        await sink.terminate()


async def test_voice_callbacks_without_workflow_answer_200_and_record(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        result = await b.finished_call(incident, "no_answer")
        callbacks = b.sandbox.callbacks_for(result.call_sid)
        assert [c.status_code for c in callbacks] == [200, 200, 200]
        row = b.store.call_for_attempt(incident, 1)
        assert row is not None and row.status == "no-answer"
        assert [e["call_status"] for e in row.events] == ["initiated", "ringing", "no-answer"]


async def test_voice_gather_without_key_answers_no_acknowledgement(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sink = await b.start_sink(incident)
        result = await b.finished_call(incident, "answer_silent")
        gather = next(c for c in b.sandbox.callbacks_for(result.call_sid) if c.kind == "gather")
        assert gather.status_code == 200 and NO_ACK_EN in gather.response_text
        events = await sink.query(WebhookSink.seen)
        assert [(e.kind, e.digits) for e in events if e.kind == "gather"] == [("gather", "")]
        assert b.store.call_for_attempt(incident, 1).digits == ""  # type: ignore[union-attr]
        await sink.terminate()


async def test_voice_callbacks_behind_proxy_validate_against_public_base(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal, public_base_url="https://orch.example.com") as b:
        result = await b.finished_call(incident, "busy")
        callbacks = b.sandbox.callbacks_for(result.call_sid)
        assert callbacks and all(
            c.url.startswith("https://orch.example.com/twilio/")
            and c.delivered_to.startswith(b.api_url)
            for c in callbacks
        )
        assert [c.status_code for c in callbacks] == [200, 200]
        assert b.store.call_for_attempt(incident, 1).status == "busy"  # type: ignore[union-attr]


async def test_sms_status_from_sandbox_updates_message(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        inp = SendSmsInput(incident_id=incident, key="fallback-1", officer=OFFICER, body="Khẩn")
        sent = await asyncio.to_thread(ActivityEnvironment().run, b.acts.send_sms, inp)
        await b.sandbox.wait_for(lambda: len(b.sandbox.callbacks_for(sent.sid)) == 2)

        callbacks = b.sandbox.callbacks_for(sent.sid)
        assert [c.status_code for c in callbacks] == [200, 200]
        row = b.store.message_for_key(incident, "fallback-1")
        assert row is not None and (row.sid, row.status) == (sent.sid, "delivered")
        # A late "sent" replayed after "delivered" must not move the status back.
        first = callbacks[0]
        assert (await _post(first.url, first.fields, first.signature)).status_code == 200
        assert b.store.message_for_key(incident, "fallback-1").status == "delivered"  # type: ignore[union-attr]


async def test_voice_callback_parallel_duplicates_recorded_once(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sink = await b.start_sink(incident)
        sid, url = await _reserved_call(b, incident)
        fields = _status_fields(sid, "ringing")
        sig = RequestValidator(TOKEN).compute_signature(url, dict(fields))

        answers = await asyncio.gather(*(_post(url, fields, sig) for _ in range(4)))

        assert [r.status_code for r in answers] == [200] * 4
        row = b.store.call_for_attempt(incident, 1)
        assert row is not None and [e["call_status"] for e in row.events] == ["ringing"]
        assert [e.status for e in await sink.query(WebhookSink.seen)] == ["ringing"]
        await sink.terminate()


async def test_voice_callback_retried_after_engine_outage_signals_once(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sink = await b.start_sink(incident)
        sid, url = await _reserved_call(b, incident)
        fields = _status_fields(sid, "completed")
        sig = RequestValidator(TOKEN).compute_signature(url, dict(fields))

        b.app.state.temporal = None  # the workflow engine is unreachable
        assert (await _post(url, fields, sig)).status_code == 503
        b.app.state.temporal = temporal
        assert (await _post(url, fields, sig)).status_code == 200  # Twilio's retry
        assert (await _post(url, fields, sig)).status_code == 200  # and a stray duplicate

        row = b.store.call_for_attempt(incident, 1)
        assert row is not None and [e["call_status"] for e in row.events] == ["completed"]
        assert [e.status for e in await sink.query(WebhookSink.seen)] == ["completed"]
        await sink.terminate()


# --- a callback must be its attempt's call; a press must come while the call lives ----------


async def test_callback_with_call_of_another_attempt_refused_recorded_nowhere(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sink = await b.start_sink(incident)
        _, url = await _reserved_call(b, incident, 1)
        other, _ = await _reserved_call(b, incident, 2)
        gather = url.replace("/voice/status", "/voice/gather")
        for target, fields in ((url, _status_fields(other, "completed")), (gather, _press(other))):
            r = await _signed_post(target, fields)
            assert r.status_code == 403 and "does not belong to call attempt 1" in r.text, r.text
        for attempt in (1, 2):
            row = b.store.call_for_attempt(incident, attempt)
            assert row is not None and (row.events, row.status, row.digits) == ([], "queued", "")
        assert await sink.query(WebhookSink.seen) == []
        await sink.terminate()


async def test_callback_with_unknown_call_sid_refused_recorded_nowhere(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sink = await b.start_sink(incident)
        # Placed: any other sid is not its call. Not yet placed: Twilio knows no such call.
        _, placed_url = await _reserved_call(b, incident, 1)
        _, unplaced_url = await _reserved_call(b, incident, 2, placed=False)
        for url in (placed_url, unplaced_url):
            r = await _signed_post(url, _status_fields("CA" + "0" * 32, "ringing"))
            assert r.status_code == 403, r.text
        row = b.store.call_for_attempt(incident, 2)
        assert row is not None and row.call_sid is None and row.events == []
        assert b.store.call_for_attempt(incident, 1).events == []  # type: ignore[union-attr]
        assert await sink.query(WebhookSink.seen) == []
        await sink.terminate()


async def test_callback_before_place_call_recorded_its_sid_adopted_once_twilio_confirms(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    """place_call's worker died after Twilio accepted the call: the callback is still heard."""
    async with bench(tmp_path, temporal) as b:
        sink = await b.start_sink(incident)
        b.sandbox.set_callee(OFFICER.phone, "ring_out")
        twilio = build_client(b.settings)
        ours = await asyncio.to_thread(
            twilio.calls.create,
            to=OFFICER.phone,
            from_=b.settings.twilio_from_number,
            twiml="<Response/>",
        )
        strangers = await asyncio.to_thread(
            twilio.calls.create,
            to="+84909990009",  # someone else's call from our number: not this attempt's
            from_=b.settings.twilio_from_number,
            twiml="<Response/>",
        )
        _, url = await _reserved_call(b, incident, 1, placed=False)
        refused = await _signed_post(url, _status_fields(str(strangers.sid), "ringing"))
        assert refused.status_code == 403, refused.text
        r = await _signed_post(url, _status_fields(str(ours.sid), "ringing"))
        assert r.status_code == 200, r.text
        row = b.store.call_for_attempt(incident, 1)
        assert row is not None and row.call_sid == ours.sid and row.status == "ringing"
        assert [e.call_sid for e in await sink.query(WebhookSink.seen)] == [ours.sid]
        await sink.terminate()


async def test_press_1_for_attempt_that_ended_unanswered_does_not_acknowledge(
    tmp_path: Path, temporal: Client, incident: str
) -> None:
    async with bench(tmp_path, temporal) as b:
        sink = await b.start_sink(incident)
        result = await b.finished_call(incident, "no_answer")
        nonce = b.nonce(incident)
        gather = (
            f"{b.settings.public_base_url}/twilio/voice/gather?incident={incident}"
            f"&attempt=1&nonce={nonce}"
        )
        for _ in range(2):  # Twilio's retry of the refused press is refused the same way
            r = await _signed_post(gather, _press(result.call_sid))
            assert r.status_code == 409 and "already ended (no-answer)" in r.text, r.text
        row = b.store.call_for_attempt(incident, 1)
        assert row is not None and (row.status, row.digits) == ("no-answer", "")
        refused = [e for e in row.events if e.get("refused")]
        assert len(refused) == 1 and refused[0]["kind"] == "gather"  # kept for the audit
        assert [e.kind for e in await sink.query(WebhookSink.seen)] == ["status"] * 3
        await sink.terminate()
