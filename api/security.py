"""Security headers on every response, as one pure-ASGI middleware (no BaseHTTPMiddleware cost)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The console and every API answer: our own script, style and calls only; nothing inline
# (api/static holds no inline script or style), no framing, no <base>, no form posts.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# FastAPI's /docs (Swagger UI) and /redoc pages load their bundles from jsDelivr and start them
# with an inline script FastAPI writes, so they get their own looser policy: exactly those
# origins, plus 'unsafe-inline'. They show the API's schema and hold no incident data.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_HEADERS = [(b"content-security-policy", POLICY.encode()), *_COMMON]
_DOCS_HEADERS = [(b"content-security-policy", DOCS_POLICY.encode()), *_COMMON]
_NAMES = frozenset(name for name, _ in _HEADERS)


class SecurityHeaders:
    """Adds the headers above to every HTTP response the wrapped app sends, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ours = _DOCS_HEADERS if scope["path"] in DOCS_PATHS else _HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Ours replace any a route set, so no route weakens them by accident.
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _NAMES]
                message = {**message, "headers": kept + ours}
            await send(message)

        await self.app(scope, receive, send_with_headers)


__all__ = ["DOCS_PATHS", "DOCS_POLICY", "POLICY", "SecurityHeaders"]
