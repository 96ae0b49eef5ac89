"""The web console in a real browser (Chromium through Playwright) against the real stack."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from app.stack import Stack
from continuity.models import ChangeState, IncidentStatus, Role
from continuity.settings import ApiToken
from tests.api.browser import NEEDS_CHROMIUM
from tests.conftest import wait_until

try:
    from playwright.async_api import Browser, Locator, Page, Route, expect
except ImportError:  # pragma: no cover - depends on the machine
    pass

AREA = "dak-ha"  # shared with other tests: every incident here must end stood down or aborted
AREA_CIRCUITS = ("pmc-dak-ha", "ppc-dak-ha")
CITY = "thanh-pho-kon-tum"
NOC_TIME = timezone(timedelta(hours=7))  # Asia/Ho_Chi_Minh has no daylight saving time
AWAITING = '#changes tr[data-state="awaiting_confirmation"]'
CONFIRM = '#changes button[data-action="confirm"]:not(:disabled)'
# Active with nothing left to decide or carry out ("active" comes once every wave is applied,
# while the last changes may still be asking).
_SETTLED = """() => document.querySelector('#inc-phase').textContent === 'active'
    && !document.querySelector(['awaiting_confirmation', 'confirming', 'applying', 'pending']
        .map((s) => `#changes tr[data-state="${s}"]`).join(', '))"""
_SETTLED_OR_ASKING = f"""() => ({_SETTLED})()
    || document.querySelector('{CONFIRM}')"""
AREA_HINT = "area id / mã địa bàn"  # the area input's placeholder while it has no suggestions
# Another province's areas, for an API whose inventory is not the sample one.
OTHER_AREAS = [
    {"id": "hoan-kiem", "name": "Quận Hoàn Kiếm"},
    {"id": "ba-dinh", "name": "Quận Ba Đình"},
    {"id": "soc-son", "name": "Huyện Sóc Sơn"},
]

pytestmark = NEEDS_CHROMIUM


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
        await expect(self.page.locator("#identity")).not_to_have_attribute("data-state", "pending")

    async def phase(self) -> str:
        return (await self.page.locator("#inc-phase").text_content()) or ""

    async def declare(self, *, kind: str = "riot", description: str = "") -> str:
        """Declare in AREA from the form (the duty officer's token must be in use)."""
        await self.page.select_option("#declare-kind", kind)
        await self.page.fill("#declare-area", AREA)
        await self.page.fill("#declare-description", description)
        await self.page.click("#declare-submit")
        await expect(self.page.locator("#inc-id")).to_have_text(re.compile(r"^INC-"))
        return (await self.page.locator("#inc-id").text_content()) or ""

    async def confirm_until_active(self) -> int:
        """Confirm each change as it asks (waves come one after another) until all are settled."""
        clicks = 0
        confirm = self.page.locator(CONFIRM)
        while not await self.page.evaluate(_SETTLED):
            await self.page.wait_for_function(_SETTLED_OR_ASKING, timeout=30_000)
            if await confirm.count():
                await confirm.first.click()
                clicks += 1
        return clicks

    def circuit_cell(self, table: str, circuit_id: str, cell: str) -> Locator:
        return self.page.locator(f'{table} tr[data-circuit="{circuit_id}"] td[data-cell="{cell}"]')


MakeConsole = Callable[..., Awaitable[Console]]


@pytest_asyncio.fixture
async def make_console(browser: Browser, stack: Stack) -> AsyncIterator[MakeConsole]:
    contexts = []

    async def _make(
        *, width: int = 1440, height: int = 1000, timezone_id: str = "Asia/Ho_Chi_Minh"
    ) -> Console:
        context = await browser.new_context(
            viewport={"width": width, "height": height},
            timezone_id=timezone_id,
            accept_downloads=True,
        )
        contexts.append(context)
        context.set_default_timeout(15_000)
        page = await context.new_page()
        c = Console(page=page, tokens=stack.tokens)
        page.on("pageerror", lambda e: c.script_errors.append(str(e)))
        # Refused API calls log "Failed to load resource", which is expected; anything else (a
        # CSP violation, a script error) is a defect.
        page.on(
            "console",
            lambda m: (
                c.script_errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        await page.goto(f"{stack.api_url}/console/")
        return c

    yield _make
    for context in contexts:
        await context.close()


@pytest_asyncio.fixture
async def console(make_console: MakeConsole) -> Console:
    return await make_console()


@pytest.fixture
def one_person_two_roles(stack: Stack) -> Iterator[dict[Role, str]]:
    """Tokens of one inventory operator who is also on duty-officer duty (one subject, two roles).

    The stack's own duty officer is no operator, so only such a person can be refused as the
    declarer of the change they try to decide.
    """
    assert stack.settings is not None
    subject = stack.store.inventory().operators[-1].id
    tokens = {
        role: f"two-roles-{role.value}-{uuid.uuid4().hex}"
        for role in (Role.DUTY_OFFICER, Role.OPERATOR)
    }
    for role, token in tokens.items():
        stack.settings.api_tokens[token] = ApiToken(subject=subject, role=role)
    yield tokens
    for token in tokens.values():
        stack.settings.api_tokens.pop(token, None)


def _routes_on(stack: Stack, area: str, hop: str) -> bool:
    """Every path of the area's circuits points at its primary (hop="primary") or backup."""
    inv = stack.store.inventory()
    for circuit in inv.circuits:
        if circuit.area in inv.expand_area(area):
            for p in circuit.paths:
                hops = stack.network.devices[p.device].static_routes().get(p.prefix)
                if hops != [getattr(p, hop).address]:
                    return False
    return True


Auth = Callable[[Role], dict[str, str]]


async def _status(api: httpx.AsyncClient, auth: Auth, incident_id: str) -> IncidentStatus:
    r = await api.get(f"/incidents/{incident_id}", headers=auth(Role.AUDITOR))
    assert r.status_code == 200, r.text
    return IncidentStatus.model_validate(r.json()["status"])


async def _awaiting_change(api: httpx.AsyncClient, auth: Auth, incident_id: str) -> str:
    async def first() -> str | None:
        r = await api.get(
            f"/incidents/{incident_id}/changes",
            params={"state": "awaiting_confirmation"},
            headers=auth(Role.AUDITOR),
        )
        assert r.status_code == 200, r.text
        return r.json()[0]["change_id"] if r.json() else None

    return str(await wait_until(first, timeout_s=30, what=f"a change of {incident_id} to ask"))


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
                assert r.status_code in (200, 409), r.text  # 409: decided in the console already
                decided.add(rec.change_id)
        return st.phase == "active" or bool(st.stood_down_by or st.aborted_by)

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
    if not incident_id:
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
    # The dots are `continuity doctor`'s checks (GET /checks): the test stack keeps histories
    # one day with no archive, and calls through the sandbox, so those two warn.
    await expect(page.locator("#health-temporal")).to_have_attribute("data-state", "warn")
    await expect(page.locator("#health-temporal")).to_have_attribute(
        "title", re.compile("CONTINUITY_ARCHIVE_DIR")
    )
    await expect(page.locator("#health-database")).to_have_attribute("data-state", "ok")
    await expect(page.locator("#health-devices")).to_have_attribute("data-state", "ok")
    await expect(page.locator("#health-devices")).to_have_attribute(
        "title", re.compile("each credential defined, each host key known")
    )
    await expect(page.locator("#health-workers")).to_have_attribute("data-state", "ok")
    await expect(page.locator("#health-telephony")).to_have_attribute("data-state", "warn")

    incident_id = await console.declare(
        kind="riot", description="Đám đông tụ tập trước UBND huyện Đắk Hà"
    )
    try:
        await expect(page.locator("#inc-meta")).to_contain_text(
            "Đám đông tụ tập trước UBND huyện Đắk Hà"
        )
        await expect(page.locator(AWAITING).first).to_be_visible()

        await console.use_token(Role.OPERATOR)
        await expect(page.locator("#identity")).to_have_attribute("data-state", "ok")
        clicks = await console.confirm_until_active()
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
        await expect(page.locator("#inc-outcome")).to_contain_text("Tình hình đã ổn định")
        await expect(page.locator("#inc-running")).to_have_text("workflow finished")
        await expect(page.locator("#end-controls")).to_be_hidden()
        await expect(page.locator("#incident-view")).not_to_contain_text(
            re.compile(r"\b(null|undefined|NaN|Invalid Date)\b")
        )
        await expect(page.locator("#alert")).to_be_hidden()
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert _routes_on(stack, AREA, "primary")
    assert console.script_errors == []


async def test_console_circuits_on_backup_after_reroute_on_primary_after_stand_down(
    stack, api, auth, console, tmp_path
):
    page = console.page
    await console.use_token(Role.DUTY_OFFICER)
    incident_id = await console.declare(kind="sabotage", description="cáp quang bị cắt")
    try:
        await console.use_token(Role.OPERATOR)
        await console.confirm_until_active()
        for cid in AREA_CIRCUITS:
            await expect(console.circuit_cell("#inc-circuits", cid, "state")).to_have_text(
                "on_backup"
            )
            await expect(console.circuit_cell("#inc-circuits", cid, "parts")).to_have_text(
                "dh-agg-01 backup"
            )
            for when in ("rerouted", "confirmed"):
                # NOC time with its offset, and UTC under it
                await expect(console.circuit_cell("#inc-circuits", cid, when)).to_have_text(
                    re.compile(r"^\d\d:\d\d:\d\d \+07\d\d:\d\d:\d\d UTC$")
                )
            await expect(console.circuit_cell("#inc-circuits", cid, "restored")).to_have_text("—")
        assert _routes_on(stack, AREA, "backup")

        await page.click("#tab-circuits")
        await expect(page.locator("#all-circuits")).to_be_visible()
        await page.select_option("#circuits-area", AREA)
        await expect(page.locator("#all-circuits tbody tr")).to_have_count(len(AREA_CIRCUITS))
        for cid in AREA_CIRCUITS:
            await expect(console.circuit_cell("#all-circuits", cid, "state")).to_have_text(
                "on_backup"
            )
            await expect(console.circuit_cell("#all-circuits", cid, "holders")).to_have_text(
                incident_id
            )
        await page.screenshot(path=tmp_path / "console-circuits.png", full_page=True)

        await console.use_token(Role.DUTY_OFFICER)
        await page.click("#tab-incident")
        await page.fill("#standdown-reason", "cáp đã được nối lại")
        await page.click("#standdown-submit")
        await expect(page.locator("#inc-phase")).to_have_text("closed", timeout=30_000)
        for cid in AREA_CIRCUITS:
            await expect(console.circuit_cell("#inc-circuits", cid, "state")).to_have_text(
                "on_primary"
            )
            await expect(console.circuit_cell("#inc-circuits", cid, "parts")).to_have_text(
                "dh-agg-01 primary"
            )
            await expect(console.circuit_cell("#inc-circuits", cid, "restored")).to_have_text(
                re.compile(r"\+07.*UTC")
            )

        # The panel keeps refreshing while it is shown: it sees the release without a click.
        await page.click("#tab-circuits")
        for cid in AREA_CIRCUITS:
            await expect(console.circuit_cell("#all-circuits", cid, "state")).to_have_text(
                "on_primary"
            )
            await expect(console.circuit_cell("#all-circuits", cid, "holders")).to_have_text("—")
        await expect(page.locator("#alert")).to_be_hidden()
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert _routes_on(stack, AREA, "primary")
    assert console.script_errors == []


async def test_console_abort_with_reason_and_confirmation_ends_aborted(
    stack, api, auth, console, tmp_path
):
    page = console.page
    await console.use_token(Role.DUTY_OFFICER)
    incident_id = await console.declare(kind="riot", description="bạo loạn, hủy bỏ để thử")
    try:
        await expect(page.locator(AWAITING).first).to_be_visible()
        # Wave 1 confirmed, wave 2 awaiting: the abort has both kinds of change to undo.
        await console.use_token(Role.OPERATOR)
        await page.locator(CONFIRM).first.click()
        await expect(page.locator('#changes .badge.state:text-is("confirmed")')).to_have_count(
            1, timeout=30_000
        )

        await console.use_token(Role.DUTY_OFFICER)
        await page.click("#abort-open")
        await expect(page.locator("#abort-panel")).to_be_visible()
        await expect(page.locator("#abort-panel")).to_contain_text("newest wave first")
        await page.click("#abort-confirm")  # no reason yet: nothing is sent
        await expect(page.locator("#abort-reason")).to_be_focused()
        assert (await _status(api, auth, incident_id)).aborted_by is None

        await page.fill("#abort-reason", "khai báo nhầm địa bàn")
        await page.screenshot(path=tmp_path / "console-abort.png", full_page=True)
        await page.click("#abort-confirm")
        await expect(page.locator("#inc-phase")).to_have_text("aborted", timeout=30_000)
        await expect(page.locator("#inc-outcome")).to_contain_text("aborted by")
        await expect(page.locator("#inc-outcome")).to_contain_text("khai báo nhầm địa bàn")
        await expect(page.locator("#end-controls")).to_be_hidden()
        for cid in AREA_CIRCUITS:
            await expect(console.circuit_cell("#inc-circuits", cid, "state")).to_have_text(
                "on_primary"
            )
        await expect(page.locator('#changes tr[data-direction="restore"]').first).to_be_visible()
        await expect(page.locator("#timeline")).to_contain_text("abort")
        await expect(page.locator("#alert")).to_be_hidden()
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    st = await _status(api, auth, incident_id)
    assert st.phase == "aborted"
    assert st.end_reason == "khai báo nhầm địa bàn"
    assert _routes_on(stack, AREA, "primary")
    assert console.script_errors == []


async def test_console_decision_by_declarer_refused_reason_shown(
    stack, api, auth, console, one_person_two_roles
):
    page = console.page
    await console.paste_token(one_person_two_roles[Role.DUTY_OFFICER])
    incident_id = await console.declare(kind="unrest")
    try:
        await expect(page.locator(AWAITING).first).to_be_visible()
        change_id = await page.locator(AWAITING).first.get_attribute("data-change")
        await console.paste_token(one_person_two_roles[Role.OPERATOR])
        await expect(page.locator("#identity")).to_have_attribute("data-state", "ok")
        await page.locator(CONFIRM).first.click()

        row = page.locator(f'#changes tr[data-change="{change_id}"]')
        refusal = row.locator('[data-refusal="SelfDecision"]')
        await expect(refusal).to_contain_text("the declarer may not decide")
        await expect(refusal).to_contain_text(f"declared incident {incident_id}")
        await expect(page.locator("#alert-title")).to_have_text("403 Forbidden — SelfDecision")
        await expect(page.locator("#alert-detail")).to_contain_text("may not decide its changes")
        # Nothing was decided: the change still asks, and the store has no decision.
        await expect(row).to_have_attribute("data-state", "awaiting_confirmation")
        await expect(row.locator("[data-sent]")).to_have_count(0)
        await expect(row.locator('button[data-action="confirm"]')).to_be_enabled()
        stored = stack.store.change(change_id)
        assert stored is not None and stored.decision is None
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert _routes_on(stack, AREA, "primary")
    assert console.script_errors == []


async def test_console_decision_already_decided_elsewhere_conflict_reason_shown(
    stack, api, auth, console
):
    page = console.page
    await console.use_token(Role.DUTY_OFFICER)
    incident_id = await console.declare(kind="riot")
    try:
        await expect(page.locator(AWAITING).first).to_be_visible()
        change_id = await page.locator(AWAITING).first.get_attribute("data-change")
        await console.use_token(Role.OPERATOR)
        row = page.locator(f'#changes tr[data-change="{change_id}"]')
        await expect(row.locator('button[data-action="confirm"]')).to_be_enabled()

        # The tab's refreshes are held, so it still offers the buttons when another operator's
        # decision has already won the change.
        release = asyncio.Event()

        async def held(route: Route) -> None:
            await release.wait()
            await route.continue_()

        def refresh(url: str) -> bool:
            return f"/incidents/{incident_id}" in url and "/decision" not in url

        await page.route(refresh, held)
        try:
            r = await api.post(
                f"/incidents/{incident_id}/changes/{change_id}/decision",
                headers=auth(Role.OPERATOR),
                json={"decision": "reject", "reason": "decided in another tab"},
            )
            assert r.status_code == 200, r.text
            await row.locator('button[data-action="confirm"]').click()
            refusal = row.locator('[data-refusal="AlreadyDecided"]')
            await expect(refusal).to_contain_text("already decided")
            await expect(refusal).to_contain_text("was already decided: reject by")
            await expect(page.locator("#alert-title")).to_have_text("409 Conflict — AlreadyDecided")
        finally:
            # The tab refreshes again; a request still held would keep its context from closing.
            release.set()
        await expect(row.locator(".decision.reject")).to_be_visible()
        stored = stack.store.change(change_id)
        assert stored is not None and stored.decision == "reject"
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert _routes_on(stack, AREA, "primary")
    assert console.script_errors == []


async def test_console_decision_busy_shows_try_again_not_decided(stack, api, auth, console):
    page = console.page
    await console.use_token(Role.DUTY_OFFICER)
    incident_id = await console.declare(kind="riot")
    try:
        await expect(page.locator(AWAITING).first).to_be_visible()
        change_id = await page.locator(AWAITING).first.get_attribute("data-change")
        await console.use_token(Role.OPERATOR)

        # The workflow engine's overload, as the API answers it (503 with Retry-After).
        async def overloaded(route: Route) -> None:
            await route.fulfill(
                status=503,
                headers={"Retry-After": "2"},
                content_type="application/json",
                body=json.dumps({"error": "Unavailable", "detail": "workflow service: busy"}),
            )

        await page.route("**/decision", overloaded)
        row = page.locator(f'#changes tr[data-change="{change_id}"]')
        await row.locator(CONFIRM.removeprefix("#changes ")).click()
        await expect(row.locator("[data-busy]")).to_contain_text("busy, try again")
        await expect(page.locator("#alert-detail")).to_contain_text("busy, try again")
        await expect(row.locator("[data-sent]")).to_have_count(0)
        await expect(row.locator('button[data-action="confirm"]')).to_be_enabled()
        stored = stack.store.change(change_id)
        assert stored is not None and stored.decision is None

        await page.unroute("**/decision", overloaded)
        await row.locator('button[data-action="confirm"]').click()
        await expect(row.locator(".decision.confirm")).to_be_visible(timeout=30_000)
        await expect(row.locator("[data-busy]")).to_have_count(0)
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert console.script_errors == []


async def _city_awaiting(console: Console, api: httpx.AsyncClient, auth: Auth, note: str) -> str:
    """A riot declared in the city (several devices ask at once, their details name many
    circuits), opened in the operator's console once its three changes await a decision."""
    page = console.page
    await console.use_token(Role.OPERATOR)
    r = await api.post(
        "/incidents",
        headers=auth(Role.DUTY_OFFICER),
        json={"kind": "riot", "area": CITY, "description": note},
    )
    assert r.status_code == 201, r.text
    incident_id: str = r.json()["id"]
    await _awaiting_change(api, auth, incident_id)
    await page.click("#list-refresh")
    await page.locator(f'#incident-list button:text-is("{incident_id}")').click()
    await expect(page.locator(AWAITING)).to_have_count(3, timeout=30_000)
    return incident_id


async def test_console_awaiting_changes_readable_at_1280px(
    stack, api, auth, make_console, tmp_path
):
    console = await make_console(width=1280, height=900)
    page = console.page
    incident_id = await _city_awaiting(console, api, auth, "đọc được ở 1280 px")
    try:
        countdown = page.locator(f"{AWAITING} .countdown").first
        await expect(countdown).to_have_text(re.compile(r"^\d+:\d\d left"))
        await page.locator(f"{AWAITING} button[data-action=reject]").first.click()
        await page.screenshot(path=tmp_path / "console-1280.png", full_page=True)
        layout = await page.evaluate(
            """() => {
              const width = (n) => n.getBoundingClientRect().width;
              const rows = [...document.querySelectorAll(
                '#changes tr[data-state="awaiting_confirmation"]')];
              const row = rows.reduce((a, b) => (a.offsetHeight >= b.offsetHeight ? a : b));
              return {
                page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
                heads: [...document.querySelectorAll('#changes thead th, #inc-circuits thead th')]
                  .map((th) => [th.textContent.trim().split(/\\s+/)[0], width(th)]),
                cells: [...row.cells].map((td) => [td.dataset.cell || '', width(td),
                  td.scrollWidth - td.clientWidth]),
                tables: [...document.querySelectorAll('#changes, #inc-circuits')]
                  .map((t) => [t.id, t.scrollWidth - t.parentElement.clientWidth]),
                row: row.getBoundingClientRect().height,
                badge: row.querySelector('.badge.state').getBoundingClientRect().height,
              };
            }"""
        )
        scroll_width, client_width = layout["page"]
        assert scroll_width <= client_width, layout
        # No column squeezed to a word per line; nothing sticks out of its cell.
        assert all(overflow <= 0 for _, overflow in layout["tables"]), layout
        assert all(w >= 60 for name, w in layout["heads"] if name != "Level"), layout
        assert all(w >= 100 and overflow <= 1 for _, w, overflow in layout["cells"]), layout
        detail = dict((c, w) for c, w, _ in layout["cells"])["detail"]
        assert detail >= 180, layout
        assert layout["badge"] < 22, layout  # the state badge stays on one line
        assert layout["row"] < 260, layout
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert console.script_errors == []


async def test_console_times_in_noc_time_and_utc_whatever_the_browser_zone(
    stack, api, auth, make_console
):
    console = await make_console(timezone_id="America/New_York")
    page = console.page
    await console.use_token(Role.AUDITOR)
    r = await api.post(
        "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "unrest", "area": AREA}
    )
    assert r.status_code == 201, r.text
    incident_id = r.json()["id"]
    try:
        await _awaiting_change(api, auth, incident_id)
        st = await _status(api, auth, incident_id)
        declared = st.incident.declared_at
        deadline = next(c.deadline for c in st.changes if c.deadline is not None)
        await page.click("#list-refresh")
        await page.locator(f'#incident-list button:text-is("{incident_id}")').click()
        await expect(page.locator("#inc-meta")).to_contain_text(
            f"{declared.astimezone(NOC_TIME):%Y-%m-%d %H:%M:%S} +07"
            f" ({declared.astimezone(UTC):%H:%M:%S} UTC)"
        )
        await expect(page.locator(f"{AWAITING} .deadline").first).to_contain_text(
            f"until {deadline.astimezone(NOC_TIME):%H:%M:%S} +07"
        )
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert console.script_errors == []


async def test_console_previews_what_a_declaration_sends_before_declaring(
    stack, api, auth, console
):
    page = console.page
    await console.use_token(Role.DUTY_OFFICER)
    await expect(page.locator("#identity")).to_have_attribute("data-state", "ok")
    before = {i["id"] for i in (await api.get("/incidents", headers=auth(Role.AUDITOR))).json()}
    sent = {n: len(d.received) for n, d in stack.network.devices.items()}
    await page.fill("#declare-area", AREA)
    await page.select_option("#declare-kind", "sabotage")
    await page.click("#declare-plan")
    out = page.locator("#declare-plan-out")
    await expect(out).to_be_visible()
    plan = (
        await api.get(
            "/playbooks/default/plan",
            params={"area": AREA, "kind": "sabotage"},
            headers=auth(Role.DUTY_OFFICER),
        )
    ).json()
    text = await out.text_content()
    assert text is not None and plan["sha256"][:16] in text
    for change in plan["changes"]:
        assert f"{change['device']} [{change['platform']}]" in text
        assert all(line in text for line in change["reroute"])
    # A preview declares nothing and sends nothing; editing the area hides the stale preview.
    after = {i["id"] for i in (await api.get("/incidents", headers=auth(Role.AUDITOR))).json()}
    assert after == before
    assert {n: len(d.received) for n, d in stack.network.devices.items()} == sent
    await page.fill("#declare-area", "ngoc-hoi")
    await expect(out).to_be_hidden()
    await page.fill("#declare-area", "atlantis")
    await page.click("#declare-plan")
    await expect(page.locator("#alert-detail")).to_contain_text("unknown area")
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


async def _area_suggestions(page: Page) -> list[list[str]]:
    """[value, label] of each suggestion of the declare form's area input."""
    return list(
        await page.eval_on_selector_all("#areas option", "os => os.map((o) => [o.value, o.label])")
    )


async def test_console_area_suggestions_are_the_store_inventory_areas(stack, console):
    page = console.page
    await expect(page.locator("#areas option")).to_have_count(0)  # no token, no suggestions
    await expect(page.locator("#declare-area")).to_have_attribute("placeholder", AREA_HINT)
    areas = stack.store.inventory().areas
    await console.use_token(Role.DUTY_OFFICER)
    await expect(page.locator("#areas option")).to_have_count(len(areas))
    assert await _area_suggestions(page) == [[a.id, f"{a.id} — {a.name}"] for a in areas]
    await expect(page.locator("#declare-area")).to_have_attribute("placeholder", areas[0].id)
    await expect(page.locator("#areas-note")).to_be_hidden()
    assert console.script_errors == []


async def test_console_area_suggestions_from_another_inventory_none_of_the_sample(stack, console):
    page = console.page

    async def other_inventory(route: Route) -> None:
        await route.fulfill(content_type="application/json", body=json.dumps(OTHER_AREAS))

    await page.route("**/areas", other_inventory)
    # The circuits, still the sample's, once fed the suggestions too: wait until they are in.
    async with page.expect_response("**/circuits"):
        await console.use_token(Role.OPERATOR)
    await expect(page.locator("#areas option")).to_have_count(len(OTHER_AREAS))
    assert await _area_suggestions(page) == [
        [a["id"], f"{a['id']} — {a['name']}"] for a in OTHER_AREAS
    ]
    sample = {a.id for a in stack.store.inventory().areas}
    assert not sample & {value for value, _ in await _area_suggestions(page)}
    await expect(page.locator("#declare-area")).to_have_attribute("placeholder", "hoan-kiem")
    await expect(page.locator("#declare-panel")).not_to_contain_text("Kon Tum")
    assert console.script_errors == []


async def test_console_areas_unavailable_no_suggestions_quiet_note(console):
    page = console.page

    async def unavailable(route: Route) -> None:
        await route.fulfill(
            status=503,
            content_type="application/json",
            body=json.dumps({"error": "Unavailable", "detail": "database: busy"}),
        )

    await page.route("**/areas", unavailable)
    await console.use_token(Role.DUTY_OFFICER)
    await expect(page.locator("#identity")).to_have_attribute("data-state", "ok")
    await expect(page.locator("#areas-note")).to_have_text(re.compile(r"^No area list \(503\)"))
    await expect(page.locator("#areas option")).to_have_count(0)
    await expect(page.locator("#declare-area")).to_have_attribute("placeholder", AREA_HINT)
    await expect(page.locator("#declare-area")).to_be_editable()
    await expect(page.locator("#alert")).to_be_hidden()  # quiet: no banner for a convenience
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
    await page.click("#report-timeline")
    await expect(page.locator("#report-title")).to_contain_text("Timeline report")
    # Shown as HTML (the download keeps the Markdown): headings and tables, not "##" and "|".
    await expect(page.locator("#report-text h2").first).to_contain_text("Time to restore")
    await expect(page.locator("#report-text table").first).to_be_visible()
    # The same report in Vietnamese, as stored at close.
    await page.select_option("#report-lang", "vi")
    await page.click("#report-dossier")
    await expect(page.locator("#report-text h1")).to_contain_text("Hồ sơ gửi Công an")
    await expect(page.locator("#report-text")).to_contain_text("Các kênh bị ảnh hưởng")
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


async def test_console_declares_a_cable_cut_drill_on_named_devices(stack, api, auth, console):
    page = console.page
    await console.use_token(Role.DUTY_OFFICER)
    await expect(page.locator("#identity")).to_have_attribute("data-state", "ok")
    # The inventory's segments are offered, with what crosses them.
    await expect(page.locator("#segments option[value='ql14-dt-nh']")).to_have_count(1)
    sent = {n: len(d.received) for n, d in stack.network.devices.items()}
    await page.fill("#declare-area", "ngoc-hoi")
    await page.fill("#declare-segment", "ql14-dt-nh")
    await page.check("#declare-drill")
    await page.fill("#declare-drill-devices", "nh-agg-01")
    await page.click("#declare-plan")
    out = page.locator("#declare-plan-out")
    await expect(out).to_contain_text("nh-agg-01")
    text = await out.text_content()
    assert text is not None and "sabotage-cable-cut" in text and "dt-agg-01" not in text
    assert {n: len(d.received) for n, d in stack.network.devices.items()} == sent

    await page.click("#declare-submit")
    await expect(page.locator("#notice")).to_contain_text("playbook sabotage-cable-cut")
    incidents = (await api.get("/incidents", headers=auth(Role.AUDITOR))).json()
    incident_id = max((i for i in incidents), key=lambda i: i["start_time"] or "")["id"]
    try:
        r = await api.get(f"/incidents/{incident_id}", headers=auth(Role.AUDITOR))
        inc = r.json()["status"]["incident"]
        assert inc["segment"] == "ql14-dt-nh" and inc["drill"] is True
        assert inc["drill_devices"] == ["nh-agg-01"]
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert console.script_errors == []


async def test_console_awaiting_changes_are_cards_on_a_390px_phone(
    stack, api, auth, make_console, tmp_path
):
    console = await make_console(width=390, height=844)
    page = console.page
    incident_id = await _city_awaiting(console, api, auth, "trên điện thoại 390 px")
    try:
        card = page.locator(AWAITING).first
        await expect(card.locator(".countdown")).to_have_text(re.compile(r"^\d+:\d\d left"))
        # Whose circuits they are, on the card itself.
        await expect(card.locator(".owner").first).to_contain_text(re.compile(r"\w"))
        await page.screenshot(path=tmp_path / "console-390.png", full_page=True)
        layout = await page.evaluate(
            """() => {
              const cards = [...document.querySelectorAll(
                '#changes tr[data-state="awaiting_confirmation"]')];
              const confirm = cards[0].querySelector('button[data-action="confirm"]');
              const box = confirm.getBoundingClientRect();
              return {
                page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
                cards: cards.map((c) => c.getBoundingClientRect().right),
                display: getComputedStyle(cards[0]).display,
                label: getComputedStyle(cards[0].cells[0], '::before').content,
                button: [box.width, box.height],
              };
            }"""
        )
        scroll_width, client_width = layout["page"]
        assert scroll_width <= client_width, layout  # nothing wider than the phone
        assert layout["display"] == "block" and all(r <= client_width for r in layout["cards"])
        assert "Device" in layout["label"], layout  # each field says what it is
        assert layout["button"][0] >= 44 and layout["button"][1] >= 44, layout  # a thumb's size
        change = await card.get_attribute("data-change")
        await card.locator('button[data-action="confirm"]').click()
        decided = page.locator(f'#changes tr[data-change="{change}"] .decision.confirm')
        await expect(decided).to_be_visible(timeout=30_000)
    finally:
        await _close_if_running(stack, api, auth, incident_id)
    assert console.script_errors == []


async def test_console_shows_times_in_the_configured_zone(stack, api, auth, make_console):
    stack.settings.display_zone = "Asia/Tokyo"  # UTC+9: not the browser's, not the default
    try:
        r = await api.get("/display")
        assert r.status_code == 200 and r.json() == {"zone": "Asia/Tokyo"}
        console = await make_console(width=1280, height=900)
        page = console.page
        await console.use_token(Role.AUDITOR)
        await page.click("#list-refresh")
        first = page.locator("#incident-list button").first
        await first.click()
        stamp = page.locator("#incident-view time.ts .ts-local").first
        await expect(stamp).to_have_text(re.compile(r"\d\d:\d\d:\d\d \+09$"))
        title = await page.locator("#incident-view time.ts").first.get_attribute("title")
        assert "(Asia/Tokyo)" in (title or "")
        assert console.script_errors == []
    finally:
        stack.settings.display_zone = "Asia/Ho_Chi_Minh"
