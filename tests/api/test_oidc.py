"""OIDC bearer tokens against a locally generated key set (no network): the right role is
accepted; a wrong audience, issuer, key, expiry or role claim is refused with 401."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.stack import Stack

ISSUER = "https://sso.noc.example.vn/realms/noc"
AUDIENCE = "continuity-api"


def _jwk(public_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    return {**json.loads(algo.to_jwk(public_key)), "kid": kid, "alg": alg, "use": "sig"}


class Idp:
    """The identity provider's keys: an RSA and an EC signing key, and one nobody published."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks = {
            "keys": [
                _jwk(self.rsa.public_key(), "rsa-1", "RS256"),
                _jwk(self.ec.public_key(), "ec-1", "ES256"),
            ]
        }

    def token(
        self, *, key: Any = None, kid: str = "rsa-1", alg: str = "RS256", **claims: Any
    ) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "op-pham-quoc-dung",
            "iat": now,
            "exp": now + 300,
            "jti": "j-1",
            "continuity_role": "operator",
            **claims,
        }
        return jwt.encode(body, key or self.rsa, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def idp() -> Idp:
    return Idp()


@pytest.fixture
def jwks_file(stack: Stack, idp: Idp, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(idp.jwks), encoding="utf-8")
    s = stack.settings
    s.oidc_issuer, s.oidc_audience, s.oidc_jwks_file = ISSUER, AUDIENCE, path
    s.oidc_role_map = {"noc-duty": "duty_officer"}  # type: ignore[dict-item]
    yield path
    s.oidc_issuer = s.oidc_audience = s.oidc_jwks_file = None
    s.oidc_role_map = {}


async def _me(api: httpx.AsyncClient, token: str) -> httpx.Response:
    return await api.get("/me", headers={"Authorization": f"Bearer {token}"})


async def test_jwt_from_the_key_set_accepted_with_its_role(api, idp: Idp, jwks_file: Path):
    r = await _me(api, idp.token())
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": "op-pham-quoc-dung", "role": "operator"}
    ec_token = idp.token(key=idp.ec, kid="ec-1", alg="ES256", continuity_role=["noc-duty"])
    r = await _me(api, ec_token)
    assert r.status_code == 200 and r.json()["role"] == "duty_officer", r.text
    # The matrix applies as to any principal: an operator may not declare.
    r = await api.post(
        "/incidents",
        headers={"Authorization": f"Bearer {idp.token()}"},
        json={"kind": "riot", "area": "dak-ha"},
    )
    assert r.status_code == 403, r.text


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"aud": "someone-else"}, "Audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"continuity_role": "root"}, "exactly one continuity role"),
        ({"continuity_role": ["operator", "duty_officer"]}, "exactly one continuity role"),
        ({"sub": "op; reboot"}, "subject"),
    ],
    ids=["wrong-audience", "wrong-issuer", "expired", "no-role", "two-roles", "bad-subject"],
)
async def test_jwt_with_wrong_claims_refused(api, idp: Idp, jwks_file: Path, claims, why: str):
    r = await _me(api, idp.token(**claims))
    assert r.status_code == 401, r.text
    assert why.lower() in r.json()["detail"].lower(), r.text


async def test_jwt_signed_by_an_unpublished_key_or_unsigned_refused(api, idp, jwks_file: Path):
    assert (await _me(api, idp.token(key=idp.stranger))).status_code == 401
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x"}, None, algorithm="none")
    assert (await _me(api, unsigned)).status_code == 401
    shared = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x"}, "s" * 32, algorithm="HS256")
    assert (await _me(api, shared)).status_code == 401


async def test_jwt_verified_against_a_jwks_url(api, stack: Stack, idp: Idp):
    body = json.dumps(idp.jwks).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    s = stack.settings
    s.oidc_issuer, s.oidc_audience = ISSUER, AUDIENCE
    s.oidc_jwks_url = f"http://127.0.0.1:{server.server_address[1]}/certs"
    try:
        r = await _me(api, idp.token(key=idp.ec, kid="ec-1", alg="ES256"))
        assert r.status_code == 200 and r.json()["role"] == "operator", r.text
        assert (await _me(api, idp.token(aud="other"))).status_code == 401
    finally:
        s.oidc_issuer = s.oidc_audience = s.oidc_jwks_url = None
        server.shutdown()
        server.server_close()
        thread.join()


def test_half_configured_identity_provider_refuses_the_start(tmp_path: Path):
    from api.app import create_app
    from continuity.errors import ValidationFailed
    from continuity.settings import Settings

    with pytest.raises(ValidationFailed, match="exactly one of a JWKS URL and a JWKS file"):
        create_app(Settings(data_dir=tmp_path, oidc_issuer=ISSUER, oidc_audience=AUDIENCE))
    with pytest.raises(ValidationFailed, match="both an issuer and an audience"):
        create_app(Settings(data_dir=tmp_path, oidc_issuer=ISSUER))
