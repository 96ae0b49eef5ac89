"""Every response of the running API carries the security headers, errors included."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from continuity.models import Role

Auth = Callable[[Role], dict[str, str]]
# (what, method, path, needs a token, body, expected status)
RESPONSES = [
    ("root", "GET", "/", False, None, 404),
    ("console page", "GET", "/console/", False, None, 200),
    ("console script", "GET", "/console/console.js", False, None, 200),
    ("console style", "GET", "/console/console.css", False, None, 200),
    ("api route", "GET", "/me", True, None, 200),
    ("no token", "GET", "/me", False, None, 401),
    ("no such incident", "GET", "/incidents/INC-no-such-incident", True, None, 404),
    ("bad declaration", "POST", "/incidents", True, {"kind": "earthquake", "area": "x"}, 422),
]


def _directives(csp: str) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.partition(" ")[2] for d in (p.strip() for p in csp.split(";"))}


def _assert_security_headers(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    csp = _directives(r.headers["content-security-policy"])
    assert csp["frame-ancestors"] == "'none'"
    assert csp["base-uri"] == "'none'"


@pytest.mark.parametrize(
    ("method", "path", "token", "body", "status"),
    [r[1:] for r in RESPONSES],
    ids=[r[0] for r in RESPONSES],
)
async def test_response_carries_security_headers(
    api: httpx.AsyncClient,
    auth: Auth,
    method: str,
    path: str,
    token: bool,
    body: dict[str, str] | None,
    status: int,
):
    headers = auth(Role.DUTY_OFFICER) if token else {}
    r = await api.request(method, path, headers=headers, json=body)
    assert r.status_code == status, r.text
    _assert_security_headers(r)


async def test_twilio_webhook_refusal_carries_security_headers(api: httpx.AsyncClient):
    r = await api.post(
        "/twilio/voice/status?incident=INC-x&attempt=1&nonce=abc",
        data={"CallSid": "CA123", "CallStatus": "completed"},
    )
    assert r.status_code == 403
    _assert_security_headers(r)


async def test_console_policy_allows_only_own_script_and_style(api: httpx.AsyncClient):
    r = await api.get("/console/")
    csp = _directives(r.headers["content-security-policy"])
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert "unsafe" not in r.headers["content-security-policy"]


async def test_docs_policy_allows_no_other_host_and_nothing_unsafe(api: httpx.AsyncClient):
    docs = await api.get("/docs")
    assert docs.status_code == 200
    _assert_security_headers(docs)
    policy = docs.headers["content-security-policy"]
    assert _directives(policy)["default-src"] == "'none'"
    # Swagger UI comes from this API (tests/api/test_offline_docs.py loads it offline).
    assert "http" not in policy and "unsafe" not in policy
    assert "cdn.jsdelivr.net" not in docs.text
