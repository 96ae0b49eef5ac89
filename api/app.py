"""The FastAPI application: routes, auth, error mapping, Twilio webhooks, the console."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from temporalio.client import Client

from api.deps import SettingsDep, StoreDep, TemporalDep
from api.errors import install_handlers
from api.routes import circuits, incidents, me, twilio
from api.schemas import Health
from api.security import SecurityHeaders
from continuity.oidc import OidcVerifier, oidc_config
from continuity.settings import Settings
from continuity.store import Store
from continuity.temporal import connect_temporal

_STATIC = Path(__file__).parent / "static"


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
            app.state.store = Store(settings.sqlalchemy_url, pool_size=settings.store_threads)
            app.state.store.create_schema()
        if temporal is None:
            app.state.temporal = await connect_temporal(settings)
        yield
        if own_store:
            app.state.store.close()

    app = FastAPI(
        title="continuity",
        version="0.1.0",
        lifespan=lifespan,
        description="Emergency communications continuity orchestrator",
    )
    app.state.settings = settings
    if settings.oidc_issuer:
        # A misconfigured identity provider refuses the start, not the first sign-in.
        app.state.oidc = (oidc_config(settings), OidcVerifier(settings))
    if store is not None:
        app.state.store = store
    if temporal is not None:
        app.state.temporal = temporal
    # Mapped errors (401/404/422, domain errors) are answered inside it and carry the headers;
    # only an unhandled exception's bare 500, from Starlette's outermost layer, goes without.
    app.add_middleware(SecurityHeaders)
    install_handlers(app)
    app.include_router(incidents.router)
    app.include_router(me.router)
    app.include_router(circuits.router)
    app.include_router(twilio.router)

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def health(_settings: SettingsDep, st: StoreDep, client: TemporalDep) -> Health:
        db_ok = temporal_ok = True
        try:
            await asyncio.to_thread(st.inventory)
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

    if _STATIC.is_dir():
        app.mount("/console", StaticFiles(directory=_STATIC, html=True), name="console")
    return app


__all__ = ["create_app"]
