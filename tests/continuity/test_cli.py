"""The `continuity` command as an operator runs it: inventory load and offline audit replay."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from temporalio.testing import WorkflowEnvironment

from app import cli
from app.stack import SAMPLE_INVENTORY, free_port
from continuity.store import Store

ROOT = Path(__file__).parent.parent.parent
HISTORY = sorted((ROOT / "tests" / "histories").glob("*.json"))[0]


def _run(*args: str, data_dir: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTINUITY_DATA_DIR": str(data_dir)}
    env.pop("CONTINUITY_DATABASE_URL", None)  # the data directory's SQLite file, always
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
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


def test_inventory_load_of_an_empty_file_refused_without_replace(tmp_path: Path):
    assert _run("inventory", "load", str(SAMPLE_INVENTORY), data_dir=tmp_path).returncode == 0
    empty = tmp_path / "empty.json"
    empty.write_text("{}", encoding="utf-8")
    r = _run("inventory", "load", str(empty), data_dir=tmp_path)
    assert r.returncode == 2 and "would remove every entry of" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    store = Store(f"sqlite:///{tmp_path / 'continuity.db'}")
    assert len(store.inventory().devices) == 6  # nothing was loaded
    r = _run("inventory", "load", str(empty), "--replace", "--by", "admin-1", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert store.inventory().devices == []
    last = store.inventory_loads()[-1]
    assert (last.loaded_by, last.forced) == ("admin-1", "--replace")


def test_inventory_validate_diff_load_export_history(tmp_path: Path):
    data = json.loads(SAMPLE_INVENTORY.read_text(encoding="utf-8"))
    assert _run("inventory", "load", str(SAMPLE_INVENTORY), data_dir=tmp_path).returncode == 0
    data["devices"][0]["port"] = 2222
    data["operators"].append({"id": "op-new", "name": "Người Mới"})
    data["circuits"] = [c for c in data["circuits"] if c["id"] != "ppc-office"]
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data), encoding="utf-8")

    r = _run("inventory", "validate", str(changed), data_dir=tmp_path)
    assert r.returncode == 0 and "valid inventory: 21 areas, 6 devices, 15 circuits" in r.stdout
    diff = _run("inventory", "diff", str(changed), data_dir=tmp_path).stdout.splitlines()
    assert sorted(diff) == ["+ operator op-new", "- circuit ppc-office", "~ device kt-core-01"]
    store = Store(f"sqlite:///{tmp_path / 'continuity.db'}")
    assert len(store.inventory().circuits) == 16  # diff changes nothing
    r = _run("inventory", "load", str(changed), data_dir=tmp_path)
    assert r.returncode == 0 and "- circuit ppc-office" in r.stdout, r.stderr
    assert len(store.inventory().circuits) == 15
    exported = tmp_path / "out.json"
    assert _run("inventory", "export", "-o", str(exported), data_dir=tmp_path).returncode == 0
    assert _run("inventory", "diff", str(exported), data_dir=tmp_path).stdout.strip() == "no change"
    history = _run("inventory", "history", data_dir=tmp_path).stdout.splitlines()
    assert len(history) == 2 and str(changed) in history[1]
    assert hashlib.sha256(changed.read_bytes()).hexdigest()[:16] in history[1]
    assert "circuits +0 -1 ~0" in history[1]


def test_inventory_load_refused_while_an_incident_holds_circuits(tmp_path: Path):
    assert _run("inventory", "load", str(SAMPLE_INVENTORY), data_dir=tmp_path).returncode == 0
    store = Store(f"sqlite:///{tmp_path / 'continuity.db'}")
    store.hold_circuits("INC-active-1", ["pmc-hq-command"])
    r = _run("inventory", "load", str(SAMPLE_INVENTORY), data_dir=tmp_path)
    assert r.returncode == 2 and "incidents are active (INC-active-1)" in r.stderr
    assert len(store.inventory_loads()) == 1
    r = _run("inventory", "load", str(SAMPLE_INVENTORY), "--force", data_dir=tmp_path)
    assert r.returncode == 0 and store.inventory_loads()[-1].forced == "--force"


@pytest.mark.parametrize(
    "args",
    [
        ("inventory", "validate", "no-such-file.json"),
        ("inventory", "load", "no-such-file.json"),
        ("up", "--inventory", "no-such-file.json"),
        ("demo", "--inventory", "no-such-file.json"),
    ],
)
def test_missing_inventory_file_one_line_no_traceback(tmp_path: Path, args: tuple[str, ...]):
    r = _run(*args, data_dir=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "cannot read it" in r.stderr, r.stderr


def test_audit_replay_missing_or_not_a_history_one_line_no_traceback(tmp_path: Path):
    not_history = tmp_path / "notes.json"
    not_history.write_text('{"x": 1}', encoding="utf-8")
    for path, why in ((tmp_path / "nope.json", "cannot read it"), (not_history, "not a Temporal")):
        r = _run("audit", "replay", str(path), data_dir=tmp_path)
        assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    "args",
    [("audit", "export", "INC-x", "--out", "x.json"), ("worker",), ("api",)],
    ids=["audit-export", "worker", "api"],
)
def test_temporal_down_one_line_no_traceback_fresh_directory_untouched(
    tmp_path: Path, args: tuple[str, ...]
):
    closed = free_port()  # nothing listens there any more
    env = {**os.environ, "CONTINUITY_TEMPORAL_ADDRESS": f"127.0.0.1:{closed}"}
    fresh = tmp_path / "fresh" / "data"
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env={**env, "CONTINUITY_DATA_DIR": str(fresh), "CONTINUITY_API_PORT": str(free_port())},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert f"cannot reach Temporal at 127.0.0.1:{closed}" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


def test_config_show_masks_every_secret_and_resolves_the_data_dir(tmp_path: Path):
    secrets = {
        "CONTINUITY_DATABASE_URL": "postgresql+psycopg://continuity:db-pass-7a1@db/continuity",
        "CONTINUITY_TWILIO_AUTH_TOKEN": "twilio-secret-3c9",
        "CONTINUITY_API_TOKENS": '{"demo-token-5e2": {"subject": "op-1", "role": "operator"}}',
        "CONTINUITY_DEVICE_CREDENTIALS": '{"lab": {"username": "u", "password": "ssh-pass-11"}}',
    }
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "config", "show"],
        capture_output=True,
        text=True,
        env={**os.environ, **secrets, "CONTINUITY_DATA_DIR": "relative/data"},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    for secret in ("db-pass-7a1", "twilio-secret-3c9", "demo-token-5e2", "ssh-pass-11"):
        assert secret not in r.stdout, secret
    shown = json.loads(r.stdout)
    assert shown["data_dir"] == str((tmp_path / "relative" / "data").resolve())
    assert shown["database_url"] == "postgresql+psycopg://continuity:***@db/continuity"
    assert shown["api_tokens"] == [{"token": "**********", "subject": "op-1", "role": "operator"}]
    assert shown["device_credentials"]["lab"]["password"] == "**********"


def test_version_printed():
    from importlib.metadata import version

    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and r.stdout == f"continuity {version('continuity')}\n", r.stdout


def _commands() -> list[tuple[list[str], Any]]:
    """Every command and group of `continuity` (the click tree Typer builds), by its names."""
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(cli.app), [])
    return found


def test_every_command_and_option_is_described_in_help():
    undescribed: list[str] = []
    for path, command in _commands():
        if path and not command.help:
            undescribed.append(" ".join(path))
        undescribed += [f"{' '.join(path)} {p.name}" for p in command.params if not p.help]
    assert undescribed == []


@pytest.mark.parametrize(
    "path", [p for p, _ in _commands()], ids=lambda p: " ".join(p) or "continuity"
)
def test_help_of_every_command_exits_0_and_shows_each_option(
    path: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("COLUMNS", "200")  # help texts on one line each, to find them whole
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert cli.run([*path, "--help"]) == 0
    shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    command = dict((tuple(p), c) for p, c in _commands())[tuple(path)]
    for param in command.params:
        names = param.opts if param.param_type_name == "option" else []
        assert all(name in shown for name in names), (names, shown)
        assert " ".join(param.help.split()) in shown, (param.name, shown)


@pytest.mark.parametrize(
    "argv",
    [
        ["inventory", "load", "x.json", "--frobnicate"],
        ["frobnicate"],
        [],
        ["inventory"],
        ["inventory", "load"],
        ["token", "create", "--subject", "op-1"],
        ["token", "create", "--subject", "op-1", "--role", "boss"],
        ["up", "--api-port", "eighty"],
        ["audit", "report", "x.json", "--form", "nope"],
        ["--debug", "audit", "replay"],
    ],
    ids=[
        "unknown-option", "unknown-command", "no-command", "missing-subcommand",
        "missing-argument", "missing-option", "bad-choice", "bad-int", "bad-literal",
        "debug-missing-argument",
    ],
)  # fmt: skip
def test_a_usage_mistake_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
):
    assert cli.run(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err and "Usage" not in captured.err
    assert "--help`)" in captured.err  # and where to read how it goes


def test_a_usage_mistake_names_the_option_and_the_command():
    r = _run("inventory", "load", str(SAMPLE_INVENTORY), "--frobnicate", data_dir=Path("unused"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: No such option: --frobnicate")
    assert r.stderr.rstrip().endswith("(see `continuity inventory load --help`)"), r.stderr


def test_playbook_list_show_validate(tmp_path: Path):
    from playbooks import get_playbook

    spec = get_playbook("kon-tum-2a")
    listed = _run("playbook", "list", data_dir=tmp_path)
    assert (
        listed.returncode == 0
        and f"kon-tum-2a  v{spec.version}  sha256 {spec.sha256()[:16]}" in listed.stdout
    )
    shown = json.loads(_run("playbook", "show", "kon-tum-2a", data_dir=tmp_path).stdout)
    assert shown.pop("sha256") == spec.sha256() and shown == spec.model_dump(mode="json")
    for target in ("kon-tum-2a", str(ROOT / "playbooks" / "kon_tum_2a.py")):
        r = _run("playbook", "validate", target, data_dir=tmp_path)
        assert r.returncode == 0 and f"sha256 {spec.sha256()}" in r.stdout, r.stderr

    # A stale field and a step type the interpreter does not know: named, refused.
    shown["steps"][2]["restoration_levels"] = [0, 9]
    shown["steps"].append({"type": "teleport", "where": "x"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(shown), encoding="utf-8")
    r = _run("playbook", "validate", str(bad), data_dir=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    teleport = len(shown["steps"])  # the step appended last, numbered from 1
    assert "step 3 (reroute_wave)" in r.stderr and f"step {teleport} (teleport)" in r.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("def build():\n    return 42\n", encoding="utf-8")
    r = _run("playbook", "validate", str(broken), data_dir=tmp_path)
    assert r.returncode == 2 and "build() returned int" in r.stderr
    r = _run("playbook", "validate", "no-such-playbook", data_dir=tmp_path)
    assert r.returncode == 2 and "unknown playbook 'no-such-playbook'" in r.stderr


def test_audit_export_of_an_unknown_workflow_one_line_no_traceback(
    tmp_path: Path, temporal_env: WorkflowEnvironment
):
    address = temporal_env.client.service_client.config.target_host
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "audit", "export", "INC-never", "--out", "x.json"],
        capture_output=True,
        text=True,
        env={**os.environ, "CONTINUITY_TEMPORAL_ADDRESS": address},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2 and "no workflow 'INC-never'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("busy_flag", ["--api-port", "--temporal-port"])
def test_up_on_a_busy_port_one_line_nothing_left_running(tmp_path: Path, busy_flag: str):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {
            "--api-port": free_port(),
            "--temporal-port": free_port(),
            "--ui-port": free_port(),
        }
        ports[busy_flag] = busy
        args = [x for flag, port in ports.items() for x in (flag, str(port))]
        r = _run("up", "--data-dir", str(tmp_path / "up"), *args, data_dir=tmp_path)
    assert r.returncode == 2 and f"127.0.0.1:{busy} is in use" in r.stderr, r.stderr
    assert busy_flag in r.stderr and "Traceback" not in r.stderr
    assert "stopped." not in r.stdout  # nothing had started: the refusal is the last word
    for flag, port in ports.items():  # nothing was started on the other ports
        if flag != busy_flag:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_failure_is_one_line_unless_debug(debug: bool):
    argv = ["--debug", "playbook", "list"] if debug else ["playbook", "list"]
    code = (  # a surprise inside the command: the playbook catalogue breaks
        "import playbooks, app.cli as cli; playbooks.versions = lambda name: 1 / 0; "
        f"cli.main({argv!r})"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
        check=False,
    )  # fmt: skip
    assert r.returncode == 1
    if debug:
        assert "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr
    else:
        assert r.stderr.strip() == (
            "error: ZeroDivisionError: division by zero (run with --debug for the traceback)"
        )


def test_every_store_command_names_the_data_directory_it_resolved(tmp_path: Path):
    """A relative data directory is resolved once, against where the command runs, and named on
    stderr (stdout stays the command's output; a failure stays one line)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(*args, data_dir=Path("site-data"), cwd=tmp_path)

    where = tmp_path / "site-data"
    line = f"data directory: {where} (store sqlite:///{where / 'continuity.db'})"
    loaded = run("inventory", "load", str(SAMPLE_INVENTORY))
    assert loaded.returncode == 0 and loaded.stderr.strip() == line, loaded.stderr
    exported = run("inventory", "export")
    assert exported.returncode == 0 and exported.stderr.strip() == line
    assert json.loads(exported.stdout)["province"]  # stdout is the inventory alone
    history = run("inventory", "history")
    assert history.returncode == 0 and history.stderr.strip() == line
    missing = run("inventory", "load", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "data directory" not in missing.stderr
