"""Secrets in the settings never show in a repr (and so in a log line or a traceback)."""

from __future__ import annotations

from continuity.models import Role
from continuity.settings import ApiToken, DeviceCredential, Settings


def test_settings_repr_holds_no_secret():
    s = Settings(
        api_tokens={"demo-token-7f3e2a": ApiToken(subject="op-1", role=Role.OPERATOR)},
        database_url="postgresql+psycopg://continuity:db-pass-91c@db:5432/continuity",
        twilio_auth_token="twilio-secret-44ab",
        device_credentials={"lab": DeviceCredential(username="netops", password="ssh-pass-0d1")},
    )
    shown = repr(s) + str(s) + repr(s.model_dump())
    for secret in ("demo-token-7f3e2a", "db-pass-91c", "twilio-secret-44ab", "ssh-pass-0d1"):
        assert secret not in repr(s) and secret not in str(s), secret
    assert "twilio-secret-44ab" not in shown  # SecretStr even in a dump


def test_production_refuses_sqlite_and_settings_tokens_and_names_them(tmp_path):
    import pytest

    from continuity.errors import ConfigurationError
    from continuity.settings import check_production
    from continuity.signing import generate_key_pair

    check_production(Settings())  # the demo's conveniences are fine outside production
    demo = {"demo-token-7f3e2a": ApiToken(subject="op-1", role=Role.OPERATOR)}
    with pytest.raises(ConfigurationError) as e:
        check_production(Settings(production=True, api_tokens=demo))
    assert "CONTINUITY_DATABASE_URL is unset" in str(e.value)
    assert "CONTINUITY_API_TOKENS is set" in str(e.value)
    assert "demo-token-7f3e2a" not in str(e.value)
    assert "no signing key" in str(e.value)  # human actions and bundles are signed
    key = generate_key_pair(tmp_path / "signing.key").private_path
    check_production(
        Settings(
            production=True,
            database_url="postgresql+psycopg://continuity@db/continuity",
            signing_key=key,
        )
    )
