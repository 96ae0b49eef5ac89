"""The `continuity` command as an operator runs it: inventory load and offline audit replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.stack import SAMPLE_INVENTORY
from continuity.store import Store

ROOT = Path(__file__).parent.parent.parent
HISTORY = sorted((ROOT / "tests" / "histories").glob("*.json"))[0]


def _run(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTINUITY_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_inventory_load_sample_counts_printed_and_stored(tmp_path: Path):
    r = _run("inventory", "load", str(SAMPLE_INVENTORY), data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "6 devices, 16 circuits, 3 duty officers, 2 operators" in r.stdout
    inv = Store(f"sqlite:///{tmp_path / 'continuity.db'}").inventory()
    assert len(inv.circuits) == 16


def test_inventory_load_malformed_prefix_refused_store_unchanged(tmp_path: Path):
    assert _run("inventory", "load", str(SAMPLE_INVENTORY), data_dir=tmp_path).returncode == 0
    bad = json.loads(SAMPLE_INVENTORY.read_text(encoding="utf-8"))
    bad["circuits"][0]["paths"][0]["prefix"] = "10.62.1.0/24; reload"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    r = _run("inventory", "load", str(path), data_dir=tmp_path)
    assert r.returncode == 2
    assert "malformed IPv4 prefix" in r.stderr and "nothing was loaded" in r.stderr
    inv = Store(f"sqlite:///{tmp_path / 'continuity.db'}").inventory()
    assert inv.circuits[0].paths[0].prefix.endswith("/24")


@pytest.mark.parametrize(
    ("where", "text"),
    [
        (("duty_officers", 0, "name"), "Nguyễn\x00Văn"),
        (("operators", 0, "name"), "Phạm \u202eQuốc"),
        (("areas", 0, "name"), "Đắk Hà\n"),
        (("circuits", 0, "owner"), "Bộ CHQS\x1b[0m"),
    ],
)
def test_inventory_load_name_with_control_character_refused_store_unchanged(
    tmp_path: Path, where: tuple[str, int, str], text: str
):
    assert _run("inventory", "load", str(SAMPLE_INVENTORY), data_dir=tmp_path).returncode == 0
    bad = json.loads(SAMPLE_INVENTORY.read_text(encoding="utf-8"))
    section, index, field = where
    bad[section][index][field] = text
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    r = _run("inventory", "load", str(path), data_dir=tmp_path)
    assert r.returncode == 2
    assert "control character" in r.stderr and "nothing was loaded" in r.stderr
    assert f"{section}.{index}.{field}" in r.stderr  # says which entry to fix
    inv = Store(f"sqlite:///{tmp_path / 'continuity.db'}").inventory()
    assert getattr(getattr(inv, section)[index], field) != text


def test_audit_replay_recorded_history_ok(tmp_path: Path):
    r = _run("audit", "replay", str(HISTORY), data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("replay OK")


def test_audit_replay_tampered_history_fails_loudly(tmp_path: Path):
    data = json.loads(HISTORY.read_text(encoding="utf-8"))
    data["events"] = [
        e
        for e in data["events"]
        if "activityTaskScheduledEventAttributes" not in e
        or e["activityTaskScheduledEventAttributes"]["activityType"]["name"] != "write_report"
    ]
    forged = tmp_path / HISTORY.name
    forged.write_text(json.dumps(data), encoding="utf-8")
    r = _run("audit", "replay", str(forged), data_dir=tmp_path)
    assert r.returncode == 1
    assert "replay FAILED" in r.stdout


def test_token_create_list_revoke_as_an_admin_runs_them(tmp_path: Path):
    made = _run(
        "token", "create", "--subject", "op-1", "--role", "operator", "--expires", "30d",
        data_dir=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("ct_") and "shown once" in made.stderr
    store = Store(f"sqlite:///{tmp_path / 'continuity.db'}")
    row = store.principal_for_token(token)
    assert (row.subject, row.role) == ("op-1", "operator")
    listed = _run("token", "list", data_dir=tmp_path)
    assert row.id in listed.stdout and "active, expires" in listed.stdout
    assert token not in listed.stdout  # never shown again
    second = _run(
        "token", "create", "--subject", "op-1", "--role", "duty_officer", data_dir=tmp_path
    )
    assert second.returncode == 2 and "one subject has one role" in second.stderr
    assert "Traceback" not in second.stderr
    assert _run("token", "revoke", row.id, data_dir=tmp_path).returncode == 0
    assert "revoked" in _run("token", "list", data_dir=tmp_path).stdout
    bad = _run("token", "create", "--subject", "op;1", "--role", "operator", data_dir=tmp_path)
    assert bad.returncode == 2 and "malformed identifier" in bad.stderr
