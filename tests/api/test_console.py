"""The web console in a real browser (Chromium through Playwright) against the real stack."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from continuity.models import ChangeState, IncidentStatus, Role
from continuity.stack import Stack
from tests.conftest import wait_until

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
AREA = "dak-ha"  # shared with other tests: every incident here must end stood down
_ACTIVE_OR_ASKING = """() => document.querySelector('#inc-phase').textContent === 'active'
    || document.querySelector('#changes button[data-action="confirm"]:not(:disabled)')"""

pytestmark = [
    pytest.mark.skipif(
        async_playwright is None, reason="playwright is not installed (pip install playwright)"
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    ),
]


@dataclass
class Console:
    """One browser tab on the console, and the script errors it raised."""

    page: Page
    tokens: dict[Role, str]
    script_errors: list[str] = field(default_factory=list)

    async def use_token(self, role: Role) -> None:
        await self.paste_token(self.tokens[role])

    async def paste_token(self, token: str) -> None:
        await self.page.fill("#token-input", token)
        await self.page.click("#token-use")

    async def phase(self) -> str:
        return (await self.page.locator("#inc-phase").text_content()) or ""


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield b
        await b.close()


@pytest_asyncio.fixture
async def console(browser: Browser, stack: Stack) -> AsyncIterator[Console]:
    context = await browser.new_context(
        viewport={"width": 1440, "height": 1000},
        timezone_id="Asia/Ho_Chi_Minh",
        accept_downloads=True,
    )
    context.set_default_timeout(15_000)
    page = await context.new_page()
    c = Console(page=page, tokens=stack.tokens)
    page.on("pageerror", lambda e: c.script_errors.append(str(e)))
    # Refused API calls log "Failed to load resource", which is expected; anything else (a CSP
    # violation, a script error) is a defect.
    page.on(
        "console",
        lambda m: (
            c.script_errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    await page.goto(f"{stack.api_url}/console/")
    yield c
    await context.close()


def _routes_on_primary(stack: Stack, area: str) -> bool:
    for circuit in stack.store.inventory().circuits:
        if circuit.area == area:
            for p in circuit.paths:
                hops = stack.network.devices[p.device].static_routes().get(p.prefix)
                if hops != [p.primary.address]:
                    return False
    return True


Auth = Callable[[Role], dict[str, str]]


async def _status(api: httpx.AsyncClient, auth: Auth, incident_id: str) -> IncidentStatus:
    r = await api.get(f"/incidents/{incident_id}", headers=auth(Role.AUDITOR))
    assert r.status_code == 200, r.text
    return IncidentStatus.model_validate(r.json()["status"])


async def _drive_to_closed(
    stack: Stack, api: httpx.AsyncClient, auth: Auth, incident_id: str, *, decision: str
) -> None:
    """Through the API: decide every change, stand down once active, wait for the run to end."""
    decided: set[str] = set()

    async def active() -> bool:
        st = await _status(api, auth, incident_id)
        for rec in st.changes:
            if rec.state is ChangeState.AWAITING_CONFIRMATION and rec.change_id not in decided:
                r = await api.post(
                    f"/incidents/{incident_id}/changes/{rec.change_id}/decision",
                    headers=auth(Role.OPERATOR),
                    json={"decision": decision, "reason": "test clean-up"},
                )
                assert r.status_code == 200, r.text
                decided.add(rec.change_id)
        return st.phase == "active" or st.stood_down

    await wait_until(active, timeout_s=60, what=f"{incident_id} active")
    await api.post(
        f"/incidents/{incident_id}/stand-down",
        headers=auth(Role.DUTY_OFFICER),
        json={"reason": "test clean-up"},
    )
    await stack.client.get_workflow_handle(incident_id).result()


async def _close_if_running(
    stack: Stack, api: httpx.AsyncClient, auth: Auth, incident_id: str | None
) -> None:
    if incident_id is None:
        return
    desc = await stack.client.get_workflow_handle(incident_id).describe()
    if desc.close_time is None:
        await _drive_to_closed(stack, api, auth, incident_id, decision="reject")


async def test_console_riot_declared_confirmed_stood_down_closed(
    stack, api, auth, console, tmp_path
):
    page = console.page
    await console.use_token(Role.DUTY_OFFICER)
    await expect(page.locator("#identity")).to_have_attribute("data-state", "ok")
    await expect(page.locator("#health-temporal")).to_have_attribute("data-state", "ok")
    await expect(page.locator("#health-database")).to_have_attribute("data-state", "ok")

    await page.select_option("#declare-kind", "riot")
    await page.fill("#declare-area", AREA)
    await page.fill("#declare-description", "Đám đông tụ tập trước UBND huyện Đắk Hà")
    await page.click("#declare-submit")
    await expect(page.locator("#inc-id")).to_have_text(re.compile(r"^INC-"))
    incident_id = await page.locator("#inc-id").text_content()
    try:
        await expect(page.locator("#inc-meta")).to_contain_text(
            "Đám đông tụ tập trước UBND huyện Đắk Hà"
        )
        awaiting = page.locator('#changes tr[data-state="awaiting_confirmation"]')
        await expect(awaiting.first).to_be_visible()

        await console.use_token(Role.OPERATOR)
        await expect(page.locator("#identity")).to_have_attribute("data-state", "ok")
        confirm = page.locator('#changes button[data-action="confirm"]:not(:disabled)')
        clicks = 0
        while await console.phase() != "active":
            # Waves come one after another: wait for the next change to ask, or for the end.
            await page.wait_for_function(_ACTIVE_OR_ASKING, timeout=30_000)
            if await confirm.count():
                await confirm.first.click()
                clicks += 1
        states = page.locator("#changes .badge.state")
        assert clicks == await states.count() >= 1
        await expect(states).to_have_text(["confirmed"] * clicks)
        await expect(page.locator("#changes")).to_contain_text("verified")
        await expect(page.locator("#changes .decision.confirm")).to_have_count(clicks)
        await expect(page.locator("#inc-ack")).to_contain_text("Acknowledged by")
        await expect(page.locator("#calls tbody tr").first).to_be_visible()
        await expect(page.locator("#timeline")).to_contain_text("decision")
        await page.screenshot(path=tmp_path / "console-active.png", full_page=True)

        await console.use_token(Role.DUTY_OFFICER)
        await expect(page.locator("#identity")).to_have_attribute("data-state", "ok")
        await page.fill("#standdown-reason", "Tình hình đã ổn định")
        await page.click("#standdown-submit")
        await expect(page.locator("#inc-phase")).to_have_text("closed", timeout=30_000)
        await expect(page.locator("#inc-outcome")).to_contain_text("stood down")
        await expect(page.locator("#inc-running")).to_have_text("workflow finished")
        await expect(page.locator("#incident-view")).not_to_contain_text(
            re.compile(r"\b(null|undefined|NaN)\b")
        )
        await expect(page.locator("#alert")).to_be_hidden()
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert _routes_on_primary(stack, AREA)
    assert console.script_errors == []


async def test_console_operator_declares_forbidden_message_shown(stack, api, auth, console):
    page = console.page
    await console.use_token(Role.OPERATOR)
    await expect(page.locator("#identity")).to_have_attribute("data-state", "ok")
    before = {i["id"] for i in (await api.get("/incidents", headers=auth(Role.AUDITOR))).json()}
    await page.fill("#declare-area", AREA)
    await page.click("#declare-submit")
    await expect(page.locator("#alert")).to_be_visible()
    await expect(page.locator("#alert-title")).to_have_text("403 Forbidden")
    await expect(page.locator("#alert-detail")).to_have_text(
        "role operator may not do this; needs duty_officer"
    )
    await expect(page.locator("#alert-context")).to_have_text("(while declaring an incident)")
    await expect(page.locator("#incident-view")).to_be_hidden()
    after = {i["id"] for i in (await api.get("/incidents", headers=auth(Role.AUDITOR))).json()}
    assert after == before
    assert console.script_errors == []


async def test_console_unknown_token_refused_message_shown(console):
    page = console.page
    await console.paste_token("not-a-token")
    await expect(page.locator("#identity")).to_have_attribute("data-state", "bad")
    await expect(page.locator("#alert-title")).to_contain_text("401 Unauthorized")
    await expect(page.locator("#alert-detail")).to_have_text("unknown token")
    assert console.script_errors == []


async def test_console_auditor_downloads_history_and_reads_dossier(stack, api, auth, console):
    incident_id = f"INC-console-{uuid.uuid4().hex[:6]}"
    r = await api.post(
        "/incidents",
        headers=auth(Role.DUTY_OFFICER),
        json={
            "id": incident_id,
            "kind": "sabotage",
            "area": AREA,
            "description": "cáp quang bị cắt",
        },
    )
    assert r.status_code == 201, r.text
    try:
        await _drive_to_closed(stack, api, auth, incident_id, decision="confirm")
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    page = console.page
    await console.use_token(Role.AUDITOR)
    await page.locator(f'#incident-list button:text-is("{incident_id}")').click()
    await expect(page.locator("#inc-phase")).to_have_text("closed")

    async with page.expect_download() as download_info:
        await page.click("#history-download")
    download = await download_info.value
    assert download.suggested_filename == f"{incident_id}.json"
    history = json.loads(
        await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
    )
    assert history["events"][0]["eventType"] in (
        "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED",
        "WorkflowExecutionStarted",
    )

    await page.click("#report-dossier")
    await expect(page.locator("#report-title")).to_contain_text("2c dossier")
    await expect(page.locator("#report-text")).to_contain_text(incident_id)
    await expect(page.locator("#alert")).to_be_hidden()
    assert console.script_errors == []


async def test_me_reports_subject_and_role(stack, api, auth):
    r = await api.get("/me", headers=auth(Role.OPERATOR))
    if r.status_code == 404:
        pytest.skip("api/app.py does not include api.routes.me yet (app.include_router(me.router))")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "subject": stack.settings.api_tokens[stack.tokens[Role.OPERATOR]].subject,
        "role": "operator",
    }
    assert (await api.get("/me")).status_code == 401
