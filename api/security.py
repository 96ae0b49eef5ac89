"""Security headers on every response, as one pure-ASGI middleware (no BaseHTTPMiddleware cost)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The console and every API answer: our own script, style and calls only; nothing inline
# (api/static holds no inline script or style), no framing, no <base>, no form posts.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# An inline <script> or <style> without attributes, as FastAPI writes them into its docs pages.
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_NAMES = frozenset({b"content-security-policy", *(name for name, _ in _COMMON)})


def _source_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def page_policy(page: str) -> str:
    """POLICY, plus the inline scripts and styles of `page` (HTML exactly as served) by hash.

    FastAPI starts Swagger UI with an inline script whose text is fixed once the app is built.
    Allowing it by its SHA-256, taken from the page itself, spares 'unsafe-inline': an injected
    or altered inline script does not run. The bundles come from this API, so no CDN either.
    """
    found: dict[str, list[str]] = {"script": [], "style": []}
    for tag, text in _INLINE.findall(page):
        found[tag].append(_source_hash(text))
    script = " ".join(["'self'", *dict.fromkeys(found["script"])])
    style = " ".join(["'self'", *dict.fromkeys(found["style"])])
    return (
        f"default-src 'none'; script-src {script}; style-src {style}; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class SecurityHeaders:
    """Adds the headers above to every HTTP response the wrapped app sends, errors included.

    `page_policies` maps a path (the docs pages) to its own policy instead of POLICY.
    """

    def __init__(self, app: ASGIApp, *, page_policies: Mapping[str, str] | None = None) -> None:
        self.app = app
        self._headers = [(b"content-security-policy", POLICY.encode()), *_COMMON]
        self._page_headers = {
            path: [(b"content-security-policy", policy.encode()), *_COMMON]
            for path, policy in (page_policies or {}).items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ours = self._page_headers.get(scope["path"], self._headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Ours replace any a route set, so no route weakens them by accident.
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _NAMES]
                message = {**message, "headers": kept + ours}
            await send(message)

        await self.app(scope, receive, send_with_headers)


__all__ = ["POLICY", "SecurityHeaders", "page_policy"]
