"""Telephony is a choice: twilio, a sandbox, or none. With none an incident places no call and
sends no SMS, and says so; placeholder or sandbox telephony refuses a production start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.stack import Stack, free_port
from continuity.errors import ConfigurationError
from continuity.models import IncidentPhase, Role
from continuity.settings import Settings
from continuity.telephony import check_telephony
from tests.conftest import wait_until
from tests.continuity.test_temporal_tls import make_certs


async def test_telephony_none_incident_places_no_call_sends_no_sms_and_says_so(
    stack: Stack, api, auth
):
    calls, sms = len(stack.sandbox.calls), len(stack.sandbox.messages)
    stack.settings.telephony = "none"
    try:
        r = await api.post(
            "/incidents",
            headers=auth(Role.DUTY_OFFICER),
            json={"kind": "riot", "area": "ngoc-hoi"},
        )
        assert r.status_code == 201, r.text
    finally:
        stack.settings.telephony = "sandbox"
    incident_id = r.json()["id"]

    async def awaiting() -> list[str]:
        return [
            c.change_id for c in stack.store.changes(incident_id, state="awaiting_confirmation")
        ]

    for change_id in await wait_until(awaiting, timeout_s=60, what="changes awaiting"):  # type: ignore[union-attr]
        d = await api.post(
            f"/incidents/{incident_id}/changes/{change_id}/decision",
            headers=auth(Role.OPERATOR),
            json={"decision": "confirm"},
        )
        assert d.status_code == 200, d.text
    r = await api.post(
        f"/incidents/{incident_id}/stand-down", headers=auth(Role.DUTY_OFFICER), json={}
    )
    assert r.status_code == 202, r.text
    result = await stack.client.get_workflow_handle(incident_id).result()
    assert result["phase"] == IncidentPhase.CLOSED
    assert (len(stack.sandbox.calls), len(stack.sandbox.messages)) == (calls, sms)
    (timeline,) = [x.text for x in stack.store.reports(incident_id) if x.form == "timeline"]
    assert "no calls: telephony disabled" in timeline
    assert "no SMS (ended): telephony disabled" in timeline
    assert stack.store.calls(incident_id) == []


@pytest.mark.parametrize(
    ("settings", "refusal"),
    [
        (
            {"production": True},
            "placeholder CONTINUITY_TWILIO_ACCOUNT_SID, CONTINUITY_TWILIO_AUTH_TOKEN, "
            "CONTINUITY_TWILIO_FROM_NUMBER",
        ),
        (
            {"production": True, "twilio_account_sid": "AC" + "1" * 32, "twilio_auth_token": "t"},
            "placeholder CONTINUITY_TWILIO_FROM_NUMBER",
        ),
        ({"telephony": "sandbox"}, "needs CONTINUITY_TWILIO_API_BASE"),
        (
            {"telephony": "sandbox", "twilio_api_base": "http://127.0.0.1:9", "production": True},
            "places no real calls",
        ),
    ],
    ids=["production-placeholders", "production-test-number", "sandbox-no-base", "sandbox-prod"],
)
def test_unusable_telephony_refused_saying_what_to_set(settings: dict, refusal: str):
    with pytest.raises(ConfigurationError, match=refusal):
        check_telephony(Settings(**settings))


@pytest.mark.parametrize(
    "settings",
    [
        {},  # outside production the defaults are the demo's business
        {"production": True, "telephony": "none"},
        {
            "production": True,
            "twilio_account_sid": "AC" + "1" * 32,
            "twilio_auth_token": "real-token",
            "twilio_from_number": "+84900000001",
        },
    ],
    ids=["development", "production-none", "production-real"],
)
def test_usable_telephony_accepted(settings: dict):
    check_telephony(Settings(**settings))


def test_worker_in_production_with_placeholder_twilio_refused_in_one_line(tmp_path: Path):
    certs = make_certs(tmp_path / "certs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    env |= {
        "CONTINUITY_PRODUCTION": "1",
        "CONTINUITY_DATA_DIR": str(tmp_path / "data"),
        "CONTINUITY_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "CONTINUITY_TEMPORAL_TLS_CA": str(certs / "ca.pem"),
        "CONTINUITY_TEMPORAL_TLS_CERT": str(certs / "worker.pem"),
        "CONTINUITY_TEMPORAL_TLS_KEY": str(certs / "worker.key"),
    }
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "placeholder CONTINUITY_TWILIO_ACCOUNT_SID" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert not (tmp_path / "data").exists()  # refused before the store was touched
