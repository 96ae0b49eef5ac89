"""/docs works on a NOC host cut off from the internet: Swagger UI from the API's own files."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from app.stack import Stack
from tests.api.browser import needs_chromium
from tests.conftest import wait_until

try:
    from playwright.async_api import Browser, Page, Route, expect
except ImportError:  # pragma: no cover - depends on the machine
    pass
# What the page records, in the page: CSP refusals arrive as events, not only as console text.
_RECORD_VIOLATIONS = """window.__violations = [];
document.addEventListener('securitypolicyviolation',
    (e) => window.__violations.push(`${e.effectiveDirective} ${e.blockedURI}`));"""
# (path, content type) of the files /docs loads.
ASSETS = [
    ("/docs-assets/swagger-ui-bundle.js", "text/javascript"),
    ("/docs-assets/swagger-ui.css", "text/css"),
    ("/docs-assets/favicon.png", "image/png"),
]


@dataclass
class OfflineTab:
    """A browser tab that reaches the API's own origin only, and what it tried beyond it."""

    page: Page
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def violations(self) -> list[str]:
        return list(await self.page.evaluate("window.__violations"))


OpenOffline = Callable[[str], Awaitable[OfflineTab]]


@pytest_asyncio.fixture
async def open_offline(browser: Browser, stack: Stack) -> AsyncIterator[OpenOffline]:
    own = urlsplit(stack.api_url)
    contexts = []

    async def _open(path: str) -> OfflineTab:
        context = await browser.new_context()
        contexts.append(context)
        context.set_default_timeout(15_000)
        await context.add_init_script(_RECORD_VIOLATIONS)
        page = await context.new_page()
        tab = OfflineTab(page=page)

        async def only_own_origin(route: Route) -> None:
            url = urlsplit(route.request.url)
            if (url.scheme, url.netloc) == (own.scheme, own.netloc):
                await route.continue_()
            else:  # as on a NOC host without internet
                tab.foreign.append(route.request.url)
                await route.abort("internetdisconnected")

        await page.route("**/*", only_own_origin)
        page.on("pageerror", lambda e: tab.errors.append(f"pageerror: {e}"))
        page.on(
            "console",
            lambda m: tab.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None,
        )
        await page.goto(f"{stack.api_url}{path}")
        return tab

    yield _open
    for context in contexts:
        await context.close()


def _inline_scripts(html: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}


@needs_chromium
async def test_docs_offline_swagger_ui_lists_operations_nothing_from_other_hosts(
    open_offline: OpenOffline,
):
    tab = await open_offline("/docs")
    page = tab.page
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("continuity")
    incidents = page.locator('.opblock-summary-path[data-path="/incidents"]')
    await expect(incidents.first).to_be_visible()
    me = page.locator(".opblock-get", has=page.locator('.opblock-summary-path[data-path="/me"]'))
    await expect(me.locator(".opblock-summary-method")).to_have_text("GET")
    await expect(page.locator(".swagger-ui .errors-wrapper")).to_have_count(0)
    assert tab.foreign == []
    assert await tab.violations() == []
    assert tab.errors == []


@needs_chromium
async def test_docs_oauth2_redirect_inline_script_runs_under_its_hash(open_offline: OpenOffline):
    tab = await open_offline("/docs/oauth2-redirect")
    # Opened alone, with no Swagger UI window behind it: the script ran, and stopped there.
    await wait_until(lambda: tab.errors, timeout_s=10, what="the redirect script to run")
    assert len(tab.errors) == 1 and "swaggerUIRedirectOauth2" in tab.errors[0], tab.errors
    assert await tab.violations() == []
    assert tab.foreign == []


@pytest.mark.parametrize(("path", "content_type"), ASSETS, ids=[p for p, _ in ASSETS])
async def test_docs_asset_served_with_its_type_and_security_headers(
    api: httpx.AsyncClient, path: str, content_type: str
):
    r = await api.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == content_type
    assert r.content  # the package's file, not an empty placeholder
    # nosniff: the browser runs the bundle only because its type says script.
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "'none'" in _directives(r.headers["content-security-policy"])["frame-ancestors"]


async def test_docs_page_names_only_own_assets_and_its_startup_script_by_hash(
    api: httpx.AsyncClient,
):
    r = await api.get("/docs")  # no token: the page holds no data
    assert r.status_code == 200
    assert re.findall(r'(?:src|href)="([^"]+)"', r.text) == [
        "/docs-assets/swagger-ui.css",
        "/docs-assets/favicon.png",
        "/docs-assets/swagger-ui-bundle.js",
    ]
    csp = _directives(r.headers["content-security-policy"])
    scripts = _inline_scripts(r.text)
    assert len(scripts) == 1 and "SwaggerUIBundle(" in scripts[0]
    assert csp["script-src"] == ["'self'", _sha256_source(scripts[0])]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert "unsafe" not in r.headers["content-security-policy"]
    assert not re.search(r"https?:|\*", r.headers["content-security-policy"])


async def test_docs_gone_from_redoc_and_from_the_schema(api: httpx.AsyncClient):
    assert (await api.get("/redoc")).status_code == 404
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/docs")]
