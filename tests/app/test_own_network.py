"""A new user's first hour: their own inventory file (not the sample), in an empty directory,
through `inventory validate | diff | load`, `up --inventory`, a declaration through the API,
and their own circuits rerouted on the lab and confirmed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.stack import free_port

# A commune-level network of its own: two routers of two platforms, three circuits, one of
# them crossing both routers.
OWN_INVENTORY = {
    "province": "Quảng Ngãi",
    "areas": [{"id": "xa-dak-ang", "name": "Xã Đắk Ang"}],
    "devices": [
        {
            "name": "da-pe-01",
            "platform": "cisco_iosxe",
            "host": "10.90.0.1",
            "site": "dak-ang",
            "credential": "lab",
        },
        {
            "name": "da-pe-02",
            "platform": "huawei_vrp",
            "host": "10.90.0.2",
            "site": "dak-ang",
            "credential": "lab",
        },
    ],
    "circuits": [
        {
            "id": "bp-dak-ang",
            "name": "Border post command line",
            "owner": "Đồn Biên phòng Đắk Ang",
            "priority_class": "armed_forces",
            "restoration_level": 1,
            "area": "xa-dak-ang",
            "paths": [
                {
                    "device": "da-pe-01",
                    "prefix": "10.91.1.0/24",
                    "primary": {"address": "10.92.1.1", "interface": "GigabitEthernet0/0/1"},
                    "backup": {"address": "10.93.1.1", "interface": "GigabitEthernet0/0/2"},
                },
                {
                    "device": "da-pe-02",
                    "prefix": "10.91.1.0/24",
                    "primary": {"address": "10.92.2.1", "interface": "GE0/0/1"},
                    "backup": {"address": "10.93.2.1", "interface": "GE0/0/2"},
                },
            ],
        },
        {
            "id": "ubnd-dak-ang",
            "name": "Commune People's Committee",
            "owner": "UBND xã Đắk Ang",
            "priority_class": "state",
            "restoration_level": 3,
            "area": "xa-dak-ang",
            "paths": [
                {
                    "device": "da-pe-01",
                    "prefix": "10.91.2.0/24",
                    "primary": {"address": "10.92.1.1", "interface": "GigabitEthernet0/0/1"},
                    "backup": {"address": "10.93.1.1", "interface": "GigabitEthernet0/0/2"},
                }
            ],
        },
        {
            "id": "party-dak-ang",
            "name": "Commune Party Committee",
            "owner": "Đảng ủy xã Đắk Ang",
            "priority_class": "party",
            "restoration_level": 2,
            "area": "xa-dak-ang",
            "paths": [
                {
                    "device": "da-pe-02",
                    "prefix": "10.91.3.0/24",
                    "primary": {"address": "10.92.2.1", "interface": "GE0/0/1"},
                    "backup": {"address": "10.93.2.1", "interface": "GE0/0/2"},
                }
            ],
        },
    ],
    "duty_officers": [
        {
            "id": "do-y-bloc",
            "name": "Y Bloc",
            "phone": "+84905300101",
            "language": "vi",
            "escalation_order": 1,
        }
    ],
    "operators": [{"id": "op-a-lam", "name": "A Lâm"}],
}


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def newcomer(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """An empty directory with nothing in it but the user's own inventory file."""
    home = tmp_path / "noc"
    home.mkdir()
    (home / "dak-ang.json").write_text(json.dumps(OWN_INVENTORY, ensure_ascii=False), "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    yield home, {**env, "CONTINUITY_DATA_DIR": str(home / "data")}


def test_own_inventory_validated_loaded_served_and_its_circuits_rerouted(newcomer):
    home, env = newcomer
    r = _cli("inventory", "validate", "dak-ang.json", cwd=home, env=env)
    assert r.returncode == 0 and "1 areas, 2 devices, 3 circuits" in r.stdout, r.stderr
    r = _cli("inventory", "diff", "dak-ang.json", cwd=home, env=env)
    assert "+ circuit bp-dak-ang" in r.stdout and "+ device da-pe-02" in r.stdout, r.stderr
    r = _cli("inventory", "load", "dak-ang.json", cwd=home, env=env)
    assert r.returncode == 0 and "loaded 1 areas, 2 devices, 3 circuits" in r.stdout, r.stderr

    api_port = free_port()
    up = subprocess.Popen(
        [
            sys.executable, "-m", "app.cli", "up",
            "--inventory", "dak-ang.json",
            "--data-dir", str(home / "up"),
            "--api-port", str(api_port),
            "--temporal-port", str(free_port()),
            "--ui-port", str(free_port()),
        ],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        tokens = _tokens_from(up)
        _reroute_through_the_api(f"http://127.0.0.1:{api_port}", tokens)
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def _tokens_from(up: subprocess.Popen[str]) -> dict[str, str]:
    """`up` prints a token per role, then "Ctrl-C stops everything."."""
    assert up.stdout is not None
    tokens, seen = {}, []
    deadline = time.monotonic() + 120
    for line in up.stdout:
        seen.append(line)
        if line.startswith("token "):
            _, role, token = line.split()
            tokens[role] = token
        if line.startswith("Ctrl-C stops everything."):
            return tokens
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError("up exited:\n" + "".join(seen))


def _reroute_through_the_api(api: str, tokens: dict[str, str]) -> None:
    def auth(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[role]}"}

    with httpx.Client(base_url=api, timeout=30) as client:
        for role in tokens:  # every token `up` prints names a principal of its role
            me = client.get("/me", headers=auth(role))
            assert me.status_code == 200 and me.json()["role"] == role, (role, me.text)
        areas = client.get("/areas", headers=auth("duty_officer")).json()
        assert [a["id"] for a in areas] == ["xa-dak-ang"]  # theirs, not Kon Tum's
        r = client.post(
            "/incidents",
            headers=auth("duty_officer"),
            json={"kind": "sabotage", "area": "xa-dak-ang", "description": "Cáp bị cắt"},
        )
        assert r.status_code == 201, r.text
        incident = r.json()["id"]
        decided: set[str] = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            pending = client.get(
                f"/incidents/{incident}/changes",
                params={"state": "awaiting_confirmation"},
                headers=auth("operator"),
            ).json()
            for change in pending:
                if change["change_id"] not in decided:
                    d = client.post(
                        f"/incidents/{incident}/changes/{change['change_id']}/decision",
                        headers=auth("operator"),
                        json={"decision": "confirm", "reason": "checked"},
                    )
                    assert d.status_code == 200, d.text
                    decided.add(change["change_id"])
            circuits = client.get(
                "/circuits", params={"area": "xa-dak-ang"}, headers=auth("operator")
            ).json()
            if circuits and all(c["state"] == "on_backup" for c in circuits):
                break
            time.sleep(0.5)
        assert {c["id"]: c["state"] for c in circuits} == {
            "bp-dak-ang": "on_backup",
            "ubnd-dak-ang": "on_backup",
            "party-dak-ang": "on_backup",
        }
        # Every part of the two-router circuit moved, on both platforms.
        (bp,) = [c for c in circuits if c["id"] == "bp-dak-ang"]
        assert {p["device"] for p in bp["parts"]} == {"da-pe-01", "da-pe-02"}, bp
        r = client.post(
            f"/incidents/{incident}/stand-down",
            headers=auth("duty_officer"),
            json={"reason": "route repaired"},
        )
        assert r.status_code == 202, r.text
