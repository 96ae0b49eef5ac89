"""`continuity doctor` names each misconfiguration, and passes a deployment that is right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncssh
from temporalio.testing import WorkflowEnvironment

from app.doctor import run_doctor
from app.stack import SAMPLE_INVENTORY, free_port
from continuity.models import Device, Inventory, Platform
from continuity.settings import DeviceCredential, Settings
from continuity.store import Store


def _key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def test_doctor_names_each_misconfiguration_and_exits_1(tmp_path: Path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    env |= {
        "CONTINUITY_DATA_DIR": str(data),
        "CONTINUITY_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "CONTINUITY_PRODUCTION": "0",
    }

    def doctor() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "doctor"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
        )  # fmt: skip

    loaded = subprocess.run(
        [sys.executable, "-m", "app.cli", "inventory", "load", str(SAMPLE_INVENTORY)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    r = doctor()
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("FAIL  temporal: cannot reach Temporal") for line in lines)
    assert any(line.startswith("ok    database: sqlite") for line in lines)
    assert "FAIL  devices: kt-core-01: credential 'lab' is not in" in r.stdout
    assert "kt-core-01: no known_hosts file at" in r.stdout
    assert "warn  telephony: production telephony (twilio) still has placeholder" in r.stdout
    assert "FAIL  public url: http://127.0.0.1:8000: Twilio cannot call back" in r.stdout
    assert "Traceback" not in r.stderr


async def test_doctor_passes_a_deployment_that_is_right(
    tmp_path: Path, temporal_env: WorkflowEnvironment
):
    known_hosts = tmp_path / "known_hosts"
    files_key, pinned_key = _key(), _key()
    known_hosts.write_text(f"[10.0.0.1]:2222 {files_key}\n", encoding="utf-8")
    settings = Settings(
        data_dir=tmp_path / "data",
        temporal_address=temporal_env.client.service_client.config.target_host,
        device_credentials={"noc-ro": DeviceCredential(username="continuity", password="x")},
        known_hosts=known_hosts,
        telephony="none",
        # A queue of its own: the session's stack polls the default one on this server.
        task_queue=f"doctor-{uuid.uuid4().hex[:6]}",
    )
    store = Store.for_settings(settings)
    store.create_schema()
    devices = [
        Device(name="r1", platform=Platform.CISCO_IOSXE, host="10.0.0.1", port=2222,
               credential="noc-ro"),
        Device(name="r2", platform=Platform.FRR, host="10.0.0.2", credential="noc-ro",
               host_key=pinned_key),
    ]  # fmt: skip
    store.replace_inventory(Inventory(devices=devices))
    store.close()

    checks = {c.subject: c for c in await run_doctor(settings)}
    assert checks["database"].verdict == "ok"
    assert checks["devices"].verdict == "ok", checks["devices"].detail
    assert checks["temporal"].verdict in ("ok", "warn"), checks["temporal"].detail
    assert "keeps closed histories" in checks["temporal"].detail
    assert checks["telephony"].verdict == "warn"  # disabled: said, not failed
    assert checks["public url"].verdict == "ok"
    # Run before any worker is: said, with the command that starts one.
    assert checks["workers"].verdict == "FAIL"
    assert f"no worker polls {settings.task_queue}: a declared incident would not start" in (
        checks["workers"].detail
    )
    assert "--sites default" in checks["workers"].detail

    # The same device on another port is not the key known_hosts has: named, failed.
    store = Store.for_settings(settings)
    moved = devices[0].model_copy(update={"port": 2223})
    store.replace_inventory(Inventory(devices=[moved, devices[1]]))
    store.close()
    (failed,) = [c for c in await run_doctor(settings) if c.subject == "devices"]
    assert failed.verdict == "FAIL" and "no host key for [10.0.0.1]:2223" in failed.detail
    assert json.dumps(failed.line())  # one printable line
