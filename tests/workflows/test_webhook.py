"""notify_webhook: the incident's notice posted to the DIC's receiver beside the run; retried
while it does not answer (same notice, same idempotency key), its answer recorded; a refusal
or a missing target is noted and the incident goes on; the token never reaches a history."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from app.stack import Stack
from continuity.models import Direction, IncidentPhase, IncidentStatus
from continuity.playbook import NotifyWebhook, Wait
from continuity.settings import WebhookTarget
from tests.conftest import wait_until
from tests.workflows.helpers import (
    decide_until_active,
    stand_down,
    start_incident,
    status,
    two_waves,
)

TOKEN = "dic-secret-token-0042"


class Receiver:
    """The DIC's system, as far as we can know it: answers in the order scripted."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.requests: list[tuple[dict[str, str], dict[str, object]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append((dict(self.headers), json.loads(body)))
                status = outer.answers.pop(0) if outer.answers else 200
                reply = json.dumps({"received": status == 200, "ticket": "DIC-7"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/incidents"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dic(stack: Stack) -> Iterator[Receiver]:
    with Receiver([503]) as r:  # down for the first attempt, then up
        stack.settings.webhooks["dic"] = WebhookTarget(url=r.url, token=SecretStr(TOKEN))
        try:
            yield r
        finally:
            stack.settings.webhooks.pop("dic", None)


def _notice(target: str) -> NotifyWebhook:
    return NotifyWebhook(
        target=target, message_vi="Sự cố cáp", message_en="Cable incident", attempts=4
    )


async def test_the_notice_is_retried_once_recorded_and_its_token_kept_out(
    stack: Stack, dic: Receiver
) -> None:
    spec = two_waves(first=[1, 2, 3])
    spec.steps[1:1] = [_notice("dic"), Wait(seconds=0.5), _notice("nowhere")]
    handle = await start_incident(stack, "ngoc-hoi", spec=spec)
    await decide_until_active(stack, handle)

    async def answered() -> IncidentStatus | None:
        st = await status(handle)
        done = [e for e in st.timeline if e.event == "webhook"]
        return st if len(done) == 2 else None  # the retried notice, and the missing target

    active: IncidentStatus = await wait_until(answered, timeout_s=30, what="both notices")  # type: ignore[assignment]
    assert active.phase is IncidentPhase.ACTIVE  # neither the outage nor the bad target failed it
    assert len(dic.requests) == 2  # 503, then 200
    (h1, b1), (h2, b2) = dic.requests
    assert b1 == b2 and h1["Idempotency-Key"] == h2["Idempotency-Key"] == f"{handle.id}-webhook-1"
    assert h1["Authorization"] == f"Bearer {TOKEN}"
    assert b1["incident"] == handle.id and b1["area"] == "ngoc-hoi" and b1["drill"] is False
    assert set(b1["circuits"]) == {c.circuit_id for c in active.circuits}  # type: ignore[arg-type]
    notes = [e.detail for e in active.timeline if e.event == "webhook"]
    assert any(n.startswith("dic answered 200") and "DIC-7" in n for n in notes), notes
    assert any(n.startswith("nowhere failed") and "no webhook target" in n for n in notes)
    assert any(r.kind == "webhook_failed" and r.subject == "nowhere" for r in active.review)
    assert any(e.event == "waiting" for e in active.timeline)

    assert (await stand_down(handle)).phase is IncidentPhase.CLOSED
    history = (await handle.fetch_history()).to_json()
    assert TOKEN not in history and dic.url not in history  # named, never carried


async def test_a_refusal_is_not_retried(stack: Stack) -> None:
    with Receiver([400, 200]) as r:
        stack.settings.webhooks["dic"] = WebhookTarget(url=r.url)
        try:
            spec = two_waves(first=[1, 2, 3])
            spec.steps[1:1] = [_notice("dic"), Wait(seconds=0.5)]
            handle = await start_incident(stack, "ngoc-hoi", spec=spec)
            await decide_until_active(stack, handle)

            async def noted() -> list[str] | None:
                st = await status(handle)
                return [e.detail for e in st.timeline if e.event == "webhook"] or None

            notes: list[str] = await wait_until(noted, timeout_s=30, what="the notice")  # type: ignore[assignment]
            assert len(r.requests) == 1 and "Authorization" not in r.requests[0][0]
            assert any(n.startswith("dic failed") and "answered 400" in n for n in notes), notes
            await stand_down(handle)
        finally:
            stack.settings.webhooks.pop("dic", None)


async def test_a_stand_down_during_a_long_wait_ends_it_and_no_device_is_touched(
    stack: Stack,
) -> None:
    """A wait before the first wave is cut short by the order: no change starts after it."""
    spec = two_waves(first=[1, 2, 3])
    spec.steps[1:1] = [Wait(seconds=600)]
    handle = await start_incident(stack, "ngoc-hoi", spec=spec)

    async def waiting() -> bool | None:
        st = await status(handle)
        return any(e.event == "waiting" for e in st.timeline) or None

    await wait_until(waiting, timeout_s=30, what="the wait")
    result = await stand_down(handle)  # returns once closed, well inside the test's timeout
    assert result.phase is IncidentPhase.CLOSED
    assert set(result.circuits.values()) == {"on_primary"}
    st = await status(handle)
    assert st.changes == []  # the wave never started
    assert stack.store.change_list(handle.id) == []


async def test_a_stand_down_while_a_notice_is_retried_restores_first_and_records_the_notice(
    stack: Stack,
) -> None:
    """The receiver down through the stand-down: the devices go back to primary without waiting
    for it; the incident closes once the notice's tries end, its outcome in the record."""
    with Receiver([503, 503]) as r:
        stack.settings.webhooks["dic"] = WebhookTarget(url=r.url)
        try:
            spec = two_waves(first=[1, 2, 3])
            spec.steps.append(_notice("dic"))
            handle = await start_incident(stack, "ngoc-hoi", spec=spec)
            await decide_until_active(stack, handle)
            await wait_until(lambda: len(r.requests) >= 1 or None, timeout_s=30, what="a try")
            result = await stand_down(handle)
            assert result.phase is IncidentPhase.CLOSED
            assert set(result.circuits.values()) == {"on_primary"}
            st = await status(handle)
            events = [e.event for e in st.timeline]
            notes = [e.detail for e in st.timeline if e.event == "webhook"]
            assert notes and notes[-1].startswith("dic answered 200"), notes
            assert len(r.requests) == 3  # 503, 503, then 200: the same notice each time
            assert len({h["Idempotency-Key"] for h, _ in r.requests}) == 1
            # Nothing waited for the receiver: the order came, and every device was back on
            # primary, before the notice settled.
            settled = next(e.at for e in st.timeline if e.event == "webhook")
            assert events.index("stand-down") < events.index("webhook"), events
            restores = [c for c in st.changes if c.direction is Direction.RESTORE]
            assert restores and all(c.settled_at and c.settled_at < settled for c in restores)
        finally:
            stack.settings.webhooks.pop("dic", None)
