"""A local Twilio-compatible sandbox: the REST calls our client makes, and callees who answer."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import re
import socket
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

# ring_out: the phone rings for the call's whole Timeout, as an unattended phone does.
CalleeBehaviour = Literal[
    "press_1", "press_9", "no_answer", "ring_out", "busy", "answer_silent", "fail"
]
Resource = Literal["Calls", "Messages"]

API_VERSION = "2010-04-01"
INVALID_TO_MAGIC = "+15005550001"  # Twilio's test-credential number for "invalid To"
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_DIGITS: dict[str, str] = {"press_1": "1", "press_9": "9", "answer_silent": ""}


def _rfc2822(at: datetime) -> str:
    return format_datetime(at, usegmt=True)


class _Fields:
    """Form fields exactly as received: order and repeated keys kept."""

    fields: list[tuple[str, str]]

    def field(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)

    def fields_named(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]


@dataclass
class SandboxCall(_Fields):
    sid: str
    account_sid: str
    to: str
    from_: str
    fields: list[tuple[str, str]]
    date_created: datetime
    status: str = "queued"
    answered_by: str | None = None
    said: list[tuple[str, str, str]] = field(default_factory=list)  # (language, voice, text)
    digits: str | None = None  # what the callee pressed, once the Gather ran
    ended_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        duration = (
            str(int((self.ended_at - self.date_created).total_seconds())) if self.ended_at else None
        )
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "parent_call_sid": None,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": _rfc2822(self.date_created),
            "end_time": _rfc2822(self.ended_at) if self.ended_at else None,
            "duration": duration,
            "price": None,
            "price_unit": "USD",
            "direction": "outbound-api",
            "answered_by": self.answered_by,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(self.ended_at or self.date_created),
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json",
            "subresource_uris": {},
        }


@dataclass
class SandboxMessage(_Fields):
    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    fields: list[tuple[str, str]]
    date_created: datetime
    status: str = "queued"
    date_sent: datetime | None = None
    error_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "num_segments": "1",
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": API_VERSION,
            "price": None,
            "price_unit": "USD",
            "error_code": self.error_code,
            "error_message": None,
            "messaging_service_sid": None,
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(self.date_sent or self.date_created),
            "date_sent": _rfc2822(self.date_sent) if self.date_sent else None,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json",
            "subresource_uris": {},
        }


@dataclass
class SandboxCallback(_Fields):
    """One webhook the sandbox posted, signed as Twilio would, and what our side answered."""

    kind: Literal["call-status", "gather", "sms-status"]
    sid: str
    url: str  # the URL given to Twilio; the one that was signed
    delivered_to: str  # where it was actually sent (differs behind a proxy)
    fields: list[tuple[str, str]]
    signature: str
    status_code: int | None = None
    response_text: str = ""
    error: str | None = None


@dataclass
class RestRequest:
    method: str
    path: str
    status: int


@dataclass
class _Injected:
    resource: Resource
    status: int
    code: int
    message: str
    created: bool  # create the record anyway, then answer the error (a crash after the commit)


class TelephonySandbox:
    """Serves the Calls and Messages REST endpoints on 127.0.0.1 from its own thread.

    The thread keeps it answering while a test's event loop is blocked in the sync twilio client.
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        step_s: float = 0.05,
        deliver_to: str | None = None,
    ) -> None:
        self.account_sid = account_sid
        self._token = auth_token
        self._host = host
        self._port = port
        self._step_s = step_s
        # Deliver callbacks here instead of the signed URL's host: a reverse proxy in front of
        # the API. The signature still covers the public URL.
        self._deliver_to = urlsplit(deliver_to) if deliver_to else None
        self._validator = RequestValidator(auth_token)
        self._lock = threading.Lock()
        self._calls: dict[str, SandboxCall] = {}
        self._messages: dict[str, SandboxMessage] = {}
        self._callbacks: list[SandboxCallback] = []
        self._rest: list[RestRequest] = []
        self._callees: dict[str, CalleeBehaviour] = {}
        self._injected: list[_Injected] = []
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self.base_url = ""

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        # Listening before uvicorn runs: early clients wait in the backlog instead of failing.
        sock.listen(128)
        self.base_url = f"http://{self._host}:{sock.getsockname()[1]}"
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name="telephony-sandbox", daemon=True
        )
        self._thread.start()

    def _run(self, sock: socket.socket) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._http = httpx.AsyncClient(timeout=5.0)
            try:
                assert self._server is not None
                await self._server.serve(sockets=[sock])
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await self._http.aclose()

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self._failure = e
        finally:
            sock.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
            self._thread = None

    async def __aenter__(self) -> TelephonySandbox:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # --- what tests steer and read -------------------------------------------------------

    def set_callee(self, phone: str, behaviour: CalleeBehaviour) -> None:
        """How the person at this number behaves on the next calls (default: presses 1)."""
        self._callees[phone] = behaviour

    def fail_next(
        self,
        resource: Resource = "Calls",
        *,
        status: int = 429,
        code: int = 20429,
        message: str = "Too Many Requests",
        created: bool = False,
    ) -> None:
        """Answer the next create on resource with this Twilio error.

        created=True commits the record first, like a server that crashed after the insert.
        """
        with self._lock:
            self._injected.append(_Injected(resource, status, code, message, created))

    @property
    def calls(self) -> list[SandboxCall]:
        with self._lock:
            return list(self._calls.values())

    @property
    def messages(self) -> list[SandboxMessage]:
        with self._lock:
            return list(self._messages.values())

    @property
    def callbacks(self) -> list[SandboxCallback]:
        with self._lock:
            return list(self._callbacks)

    @property
    def rest_requests(self) -> list[RestRequest]:
        with self._lock:
            return list(self._rest)

    def callbacks_for(self, sid: str) -> list[SandboxCallback]:
        return [c for c in self.callbacks if c.sid == sid]

    def call_finished(self, sid: str) -> bool:
        """The sandbox has played this call to its end and every callback was answered."""
        with self._lock:
            call = self._calls.get(sid)
            return (
                call is not None
                and call.ended_at is not None
                and not any(t.get_name() == sid for t in self._tasks)
            )

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a bounded test helper
        """Return once predicate() holds; it is re-checked whenever the sandbox's state changes."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await waiter[1].wait()
                    waiter[1].clear()
        except TimeoutError:
            seen = [
                (c.kind, c.field("CallStatus") or c.field("MessageStatus"), c.status_code, c.error)
                for c in self.callbacks
            ]
            raise TimeoutError(
                f"sandbox condition not met within {timeout}s; callbacks: {seen}"
            ) from None
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def _changed(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there
                loop.call_soon_threadsafe(event.set)

    # --- REST ----------------------------------------------------------------------------

    def _app(self) -> Starlette:
        base = f"/{API_VERSION}/Accounts/{{account_sid}}"
        return Starlette(
            routes=[
                Route(f"{base}/Calls.json", self._calls_endpoint, methods=["GET", "POST"]),
                Route(f"{base}/Calls/{{sid}}.json", self._fetch_call, methods=["GET"]),
                Route(f"{base}/Messages.json", self._messages_endpoint, methods=["GET", "POST"]),
                Route(f"{base}/Messages/{{sid}}.json", self._fetch_message, methods=["GET"]),
            ]
        )

    def _log(self, request: Request, status: int) -> None:
        with self._lock:
            self._rest.append(RestRequest(request.method, request.url.path, status))
        self._changed()

    def _authorized(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (
            hmac.compare_digest(user.encode(), self.account_sid.encode())
            and hmac.compare_digest(password.encode(), self._token.encode())
            and request.path_params["account_sid"] == self.account_sid
        )

    def _error(self, request: Request, status: int, code: int, message: str) -> JSONResponse:
        self._log(request, status)
        return JSONResponse(
            status_code=status,
            content={
                "code": code,
                "message": message,
                "status": status,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
            },
        )

    def _unauthorized(self, request: Request) -> JSONResponse:
        return self._error(request, 401, 20003, "Authenticate")

    def _take_injected(self, resource: Resource) -> _Injected | None:
        with self._lock:
            for i, inj in enumerate(self._injected):
                if inj.resource == resource:
                    return self._injected.pop(i)
        return None

    async def _calls_endpoint(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        if request.method == "GET":
            return self._list_calls(request)
        fields = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        form = dict(fields)
        to, from_ = form.get("To", ""), form.get("From", "")
        if not to:
            return self._error(request, 400, 21201, "No 'To' number is specified")
        if not _E164.match(to) or to == INVALID_TO_MAGIC:
            return self._error(request, 400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not from_:
            return self._error(request, 400, 21213, "No 'From' number is specified")
        if not form.get("Twiml") and not form.get("Url"):
            return self._error(request, 400, 21205, "Url parameter is required.")
        injected = self._take_injected("Calls")
        if injected is not None and not injected.created:
            return self._error(request, injected.status, injected.code, injected.message)
        call = SandboxCall(
            sid="CA" + uuid.uuid4().hex,
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            fields=fields,
            date_created=datetime.now(UTC),
        )
        with self._lock:
            self._calls[call.sid] = call
        self._spawn(call.sid, self._play_call(call))
        if injected is not None:
            return self._error(request, injected.status, injected.code, injected.message)
        self._log(request, 201)
        return JSONResponse(status_code=201, content=call.to_json())

    def _list_calls(self, request: Request) -> Response:
        q = request.query_params
        calls = [
            c
            for c in self.calls
            if (not q.get("To") or c.to == q["To"])
            and (not q.get("From") or c.from_ == q["From"])
            and (not q.get("Status") or c.status == q["Status"])
            and _after(c.date_created, q.get("StartTime>"))
        ]
        calls.sort(key=lambda c: c.date_created, reverse=True)  # Twilio lists newest first
        return self._page(request, "calls", [c.to_json() for c in calls])

    def _page(self, request: Request, key: str, records: list[dict[str, Any]]) -> Response:
        size = int(request.query_params.get("PageSize", "50"))
        self._log(request, 200)
        return JSONResponse(
            {
                key: records[:size],
                "start": 0,
                "end": max(0, min(size, len(records)) - 1),
                "page": 0,
                "page_size": size,
                "first_page_uri": request.url.path,
                "previous_page_uri": None,
                "next_page_uri": None,
                "uri": request.url.path,
            }
        )

    async def _fetch_call(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        with self._lock:
            call = self._calls.get(request.path_params["sid"])
        if call is None:
            return self._error(request, 404, 20404, "The requested resource was not found")
        self._log(request, 200)
        return JSONResponse(call.to_json())

    async def _messages_endpoint(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        if request.method == "GET":
            q = request.query_params
            messages = [
                m
                for m in self.messages
                if (not q.get("To") or m.to == q["To"])
                and (not q.get("From") or m.from_ == q["From"])
            ]
            messages.sort(key=lambda m: m.date_created, reverse=True)
            return self._page(request, "messages", [m.to_json() for m in messages])
        fields = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        form = dict(fields)
        to = form.get("To", "")
        if not _E164.match(to) or to == INVALID_TO_MAGIC:
            return self._error(request, 400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not form.get("From"):
            return self._error(request, 400, 21603, "A 'From' phone number is required.")
        if not form.get("Body"):
            return self._error(request, 400, 21602, "Message body is required.")
        injected = self._take_injected("Messages")
        if injected is not None and not injected.created:
            return self._error(request, injected.status, injected.code, injected.message)
        msg = SandboxMessage(
            sid="SM" + uuid.uuid4().hex,
            account_sid=self.account_sid,
            to=to,
            from_=form["From"],
            body=form["Body"],
            fields=fields,
            date_created=datetime.now(UTC),
        )
        with self._lock:
            self._messages[msg.sid] = msg
        self._spawn(msg.sid, self._deliver_message(msg))
        if injected is not None:
            return self._error(request, injected.status, injected.code, injected.message)
        self._log(request, 201)
        return JSONResponse(status_code=201, content=msg.to_json())

    async def _fetch_message(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        with self._lock:
            msg = self._messages.get(request.path_params["sid"])
        if msg is None:
            return self._error(request, 404, 20404, "The requested resource was not found")
        self._log(request, 200)
        return JSONResponse(msg.to_json())

    # --- the callee ----------------------------------------------------------------------

    def _spawn(self, name: str, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        with self._lock:
            self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            with self._lock:
                self._tasks.discard(t)
            self._changed()

        task.add_done_callback(done)

    async def _play_call(self, call: SandboxCall) -> None:
        behaviour = self._callees.get(call.to, "press_1")
        wanted = set(call.fields_named("StatusCallbackEvent"))
        amd = call.field("MachineDetection") is not None
        seq = 0

        async def status(new: str, *, event: str, final: bool = False) -> None:
            nonlocal seq
            call.status = new
            if final:
                call.ended_at = datetime.now(UTC)
            self._changed()
            url = call.field("StatusCallback")
            # Without StatusCallbackEvent Twilio reports only the end of the call.
            if not url or not (final or event in wanted):
                return
            params = self._call_params(call, new)
            params.update(
                {
                    "CallbackSource": "call-progress-events",
                    "SequenceNumber": str(seq),
                    "Timestamp": _rfc2822(datetime.now(UTC)),
                }
            )
            if call.answered_by:
                params["AnsweredBy"] = call.answered_by
            if final and call.answered_by:
                duration = str(
                    int((call.ended_at - call.date_created).total_seconds()) if call.ended_at else 0
                )
                params.update({"CallDuration": duration, "Duration": duration})
            seq += 1
            await self._post("call-status", call.sid, url, params)

        await self._step()
        if behaviour == "fail":
            await status("failed", event="completed", final=True)
            return
        await status("initiated", event="initiated")
        await self._step()
        if behaviour == "busy":
            await status("busy", event="completed", final=True)
            return
        await status("ringing", event="ringing")
        await self._step()
        if behaviour == "ring_out":
            await asyncio.sleep(float(call.field("Timeout") or 60))
        if behaviour in ("no_answer", "ring_out"):
            await status("no-answer", event="completed", final=True)
            return
        call.answered_by = "human" if amd else None
        await status("in-progress", event="answered")
        await self._step()
        await self._run_twiml(call, _DIGITS.get(behaviour, ""))
        await self._step()
        await status("completed", event="completed", final=True)

    def _call_params(self, call: SandboxCall, status: str) -> dict[str, str]:
        return {
            "CallSid": call.sid,
            "AccountSid": call.account_sid,
            "From": call.from_,
            "To": call.to,
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }

    async def _run_twiml(self, call: SandboxCall, digits: str) -> None:
        twiml = call.field("Twiml")
        if not twiml:
            return  # Url-driven calls are not played by the sandbox
        root = ET.fromstring(twiml)
        gather = root.find("Gather")
        for say in root.iter("Say"):
            call.said.append(
                (say.get("language", ""), say.get("voice", ""), (say.text or "").strip())
            )
        self._changed()
        if gather is None:
            return
        action = gather.get("action")
        empty_ok = gather.get("actionOnEmptyResult", "false").lower() == "true"
        num = gather.get("numDigits")
        pressed = digits[: int(num)] if num else digits
        call.digits = pressed
        if not action or (not pressed and not empty_ok):
            return
        params = self._call_params(call, "in-progress")
        params.update({"Digits": pressed, "FinishedOnKey": ""})
        if call.answered_by:
            params["AnsweredBy"] = call.answered_by
        await self._post("gather", call.sid, action, params)

    async def _deliver_message(self, msg: SandboxMessage) -> None:
        url = msg.field("StatusCallback")

        async def status(new: str) -> None:
            msg.status = new
            if new == "sent":
                msg.date_sent = datetime.now(UTC)
            self._changed()
            if not url:
                return
            params = {
                "MessageSid": msg.sid,
                "SmsSid": msg.sid,
                "AccountSid": msg.account_sid,
                "From": msg.from_,
                "To": msg.to,
                "MessageStatus": new,
                "SmsStatus": new,
                "ApiVersion": API_VERSION,
            }
            if msg.error_code is not None:
                params["ErrorCode"] = str(msg.error_code)
            await self._post("sms-status", msg.sid, url, params)

        await self._step()
        await status("sent")
        await self._step()
        if self._callees.get(msg.to) == "fail":
            msg.error_code = 30003  # unreachable destination handset
            await status("undelivered")
        else:
            await status("delivered")

    async def _step(self) -> None:
        await asyncio.sleep(self._step_s)  # the callee's pace, not a wait for an event

    async def _post(
        self,
        kind: Literal["call-status", "gather", "sms-status"],
        sid: str,
        url: str,
        params: dict[str, str],
    ) -> None:
        signature = self._validator.compute_signature(url, params)
        target = url
        if self._deliver_to is not None:
            u = urlsplit(url)
            target = urlunsplit(
                (self._deliver_to.scheme, self._deliver_to.netloc, u.path, u.query, "")
            )
        cb = SandboxCallback(
            kind=kind,
            sid=sid,
            url=url,
            delivered_to=target,
            fields=list(params.items()),
            signature=signature,
        )
        try:
            r = await self._http.post(
                target, data=params, headers={"X-Twilio-Signature": signature}
            )
            cb.status_code, cb.response_text = r.status_code, r.text
        except httpx.HTTPError as e:
            cb.error = f"{type(e).__name__}: {e}"
        with self._lock:
            self._callbacks.append(cb)
        self._changed()


def _after(at: datetime, bound: str | None) -> bool:
    """Twilio's StartTime> filter: "on or after", given as a date or a full UTC timestamp."""
    if not bound:
        return True
    try:
        return at >= datetime.strptime(bound, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return at.date() >= date.fromisoformat(bound)


__all__ = [
    "CalleeBehaviour",
    "RestRequest",
    "SandboxCall",
    "SandboxCallback",
    "SandboxMessage",
    "TelephonySandbox",
]
