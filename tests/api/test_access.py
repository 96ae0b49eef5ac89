"""The role x route matrix, cell by cell, over HTTP: every route, every role, and no token, an
unknown, an expired and a revoked one. docs/access.md must show the matrix the code enforces."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from api.access import MATRIX, PUBLIC, allowed, api_routes, matrix_markdown
from api.app import create_app
from app.stack import Stack
from continuity.models import Role
from continuity.settings import Settings
from continuity.store import TokenRow

DOC = Path(__file__).parent.parent.parent / "docs" / "access.md"
ROUTES = api_routes(create_app(Settings()))
TOKEN_ROUTES = [r for r in ROUTES if r[2] not in PUBLIC]
# Path parameters that name nothing: an allowed role gets 404 or 422, never a side effect.
_PARAMS = {
    "incident_id": "INC-access-none",
    "change_id": "chg-none",
    "circuit_id": "c-none",
    "device": "no-such-router",
    "name": "no-such-playbook",
}


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: _PARAMS[m.group(1)], path)


async def _call(api: httpx.AsyncClient, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body: dict[str, object] = {"json": {}} if method == "POST" else {}
    r = await api.request(method, _url(path), headers=headers, **body)  # type: ignore[arg-type]
    return r.status_code


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    """A store token per role, plus an expired and a revoked one (an operator's)."""
    run = uuid.uuid4().hex[:6]
    made = {
        role.value: stack.store.create_token(subject=f"access-{role.value}-{run}", role=role)[1]
        for role in Role
    }
    expired_row, made["expired"] = stack.store.create_token(
        subject=f"access-expired-{run}", role=Role.OPERATOR
    )
    with stack.store._session() as s:  # it was valid once; now its time is up
        s.execute(
            update(TokenRow)
            .where(TokenRow.id == expired_row.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    revoked_row, made["revoked"] = stack.store.create_token(
        subject=f"access-revoked-{run}", role=Role.OPERATOR
    )
    stack.store.revoke_token(revoked_row.id)
    made["unknown"] = "ct_" + "x" * 43
    return made


def test_every_route_is_in_the_matrix_or_public():
    names = {name for _, _, name in ROUTES}
    assert names == set(MATRIX) | set(PUBLIC), names ^ (set(MATRIX) | set(PUBLIC))


def test_docs_show_the_matrix_the_code_enforces():
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- matrix:", 1)[1].split("-->", 1)[1].split("<!-- /matrix -->")[0]
    assert block.strip() == matrix_markdown(ROUTES).strip()


@pytest.mark.parametrize(("method", "path", "name"), TOKEN_ROUTES, ids=[r[2] for r in TOKEN_ROUTES])
async def test_route_refuses_every_role_the_matrix_does_not_list(
    api: httpx.AsyncClient, tokens: dict[str, str], method: str, path: str, name: str
):
    for role in Role:
        status = await _call(api, method, path, tokens[role.value])
        if role in allowed(name):
            assert status not in (401, 403), (role, status)
        else:
            assert status == 403, (role, status)


@pytest.mark.parametrize(("method", "path", "name"), TOKEN_ROUTES, ids=[r[2] for r in TOKEN_ROUTES])
async def test_route_refuses_no_unknown_expired_or_revoked_token(
    api: httpx.AsyncClient, tokens: dict[str, str], method: str, path: str, name: str
):
    for case in (None, "not-a-token", tokens["unknown"], tokens["expired"], tokens["revoked"]):
        assert await _call(api, method, path, case) == 401, (case, name)


async def test_expired_and_revoked_tokens_say_why(api: httpx.AsyncClient, tokens: dict[str, str]):
    for case, why in (("expired", "expired at"), ("revoked", "was revoked")):
        r = await api.get("/me", headers={"Authorization": f"Bearer {tokens[case]}"})
        assert r.status_code == 401 and why in r.json()["detail"], r.text
        assert r.headers["www-authenticate"] == "Bearer"


async def test_store_token_names_its_principal(api: httpx.AsyncClient, tokens: dict[str, str]):
    r = await api.get("/me", headers={"Authorization": f"Bearer {tokens['engineer']}"})
    assert r.status_code == 200 and r.json()["role"] == "engineer", r.text
    assert r.json()["subject"].startswith("access-engineer-")
