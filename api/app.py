"""The FastAPI application: routes, auth, error mapping, Twilio webhooks, the console."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from temporalio.client import Client

from api.deps import SettingsDep, StoreDep, TemporalDep
from api.errors import install_handlers
from api.metrics import install_metrics, watch_loop_lag
from api.routes import checks, circuits, incidents, me, playbooks, reports, twilio
from api.schemas import Display, Health
from api.security import SecurityHeaders, page_policy
from continuity.oidc import OidcVerifier, oidc_config
from continuity.settings import Settings
from continuity.signing import load_attester
from continuity.store import Store
from continuity.temporal import connect_temporal

_STATIC = Path(__file__).parent / "static"
# Swagger UI's bundle as the fastapi-offline package ships it (its FastAPI wrapper goes
# unused): /docs loads nothing from another host, so it works on a NOC host without internet.
_DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
_DOCS_ASSETS_URL = "/docs-assets"
_OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def _install_docs(app: FastAPI) -> dict[str, str]:
    """Serve /docs and its OAuth2 redirect from _DOCS_ASSETS; return their policies by path.

    Each page is written once, here, so its policy's hashes are those of the page served. No
    /redoc: ReDoc's bundle writes its styles inline as it renders and fetches its logo from
    its vendor's CDN, and /docs shows the same schema.
    """
    swagger = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{_DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{_DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{_DOCS_ASSETS_URL}/favicon.png",
        oauth2_redirect_url=_OAUTH2_REDIRECT_URL,
    ).body
    redirect = get_swagger_ui_oauth2_redirect_html().body
    app.mount(_DOCS_ASSETS_URL, StaticFiles(directory=_DOCS_ASSETS), name="docs-assets")

    # Out of the schema, like FastAPI's own; api.access.PUBLIC says why they take no token.
    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger)

    @app.get(_OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return HTMLResponse(redirect)

    return {
        "/docs": page_policy(bytes(swagger).decode()),
        _OAUTH2_REDIRECT_URL: page_policy(bytes(redirect).decode()),
    }


def create_app(
    settings: Settings, *, store: Store | None = None, temporal: Client | None = None
) -> FastAPI:
    """Collaborators may be passed in (tests, the embedded stack) or are built from settings."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        if own_store:
            # Routes run store calls in threads: enough for a burst of decisions.
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(max_workers=settings.store_threads, thread_name_prefix="store")
            )
            app.state.store = Store.for_settings(settings, pool_size=settings.store_threads)
            app.state.store.create_schema()
        if temporal is None:
            app.state.temporal = await connect_temporal(settings)
        lag = asyncio.create_task(watch_loop_lag(app.state.loop_lag))
        try:
            yield
        finally:
            lag.cancel()
        if own_store:
            app.state.store.close()

    app = FastAPI(
        title="continuity",
        version="0.1.0",
        lifespan=lifespan,
        description="Emergency communications continuity orchestrator",
        docs_url=None,  # served from the package's files by _install_docs, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    # Loaded once: a key that cannot be read refuses the start, not the first declaration.
    app.state.attester = load_attester(settings)
    if settings.oidc_issuer:
        # A misconfigured identity provider refuses the start, not the first sign-in.
        app.state.oidc = (oidc_config(settings), OidcVerifier(settings))
    if store is not None:
        app.state.store = store
    if temporal is not None:
        app.state.temporal = temporal
    install_handlers(app)
    app.include_router(incidents.router)
    app.include_router(me.router)
    app.include_router(checks.router)
    app.include_router(circuits.router)
    app.include_router(playbooks.router)
    app.include_router(reports.router)
    app.include_router(twilio.router)
    install_metrics(app)  # GET /metrics: the store's counts, decision latency, loop lag

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def health(_settings: SettingsDep, st: StoreDep, client: TemporalDep) -> Health:
        db_ok = temporal_ok = True
        try:
            await asyncio.to_thread(st.ping)
        except Exception:  # noqa: BLE001 - health reports, it does not raise
            db_ok = False
        try:
            await client.service_client.check_health()
        except Exception:  # noqa: BLE001
            temporal_ok = False
        return Health(
            status="ok" if db_ok and temporal_ok else "degraded",
            temporal=temporal_ok,
            database=db_ok,
        )

    @app.get("/display", response_model=Display, tags=["health"])
    async def display(settings: SettingsDep) -> Display:
        """How the console shows times: the NOC's zone (CONTINUITY_DISPLAY_ZONE)."""
        return Display(zone=settings.display_zone)

    # Mapped errors (401/404/422, domain errors) are answered inside it and carry the headers;
    # only an unhandled exception's bare 500, from Starlette's outermost layer, goes without.
    app.add_middleware(SecurityHeaders, page_policies=_install_docs(app))
    if _STATIC.is_dir():
        app.mount("/console", StaticFiles(directory=_STATIC, html=True), name="console")
    return app


__all__ = ["create_app"]
