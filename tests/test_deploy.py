"""docker-compose.yml cannot run here (no Docker engine); check what can be checked offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import make_url

from app import cli
from continuity.inventory import read_inventory
from continuity.settings import DeviceCredential, Settings
from continuity.temporal import temporal_tls_config

ROOT = Path(__file__).parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"
CERTS_SOURCE = "./deploy/certs/"  # where compose mounts the script's files from
ENV_EXAMPLE = ROOT / "deploy" / "continuity.env.example"
DEPLOY_GITIGNORE = ROOT / "deploy" / ".gitignore"
APP_SERVICES = ("api", "worker", "inventory-load", "cli")  # the ones built from the Dockerfile
# Read by `continuity` itself before any settings (app/cli.py), so no Settings field.
NOT_SETTINGS = {"CONTINUITY_LOG_LEVEL", "CONTINUITY_LOG_FORMAT"}


# --- a small Compose renderer: `${...}` interpolation, env_file, environment -----------------

_REFERENCE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def _interpolate(text: str, host: dict[str, str]) -> str:
    """What Compose makes of one string of the file, given the host's variables."""

    def value(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("bare"):
            return host.get(m.group("bare"), "")
        ref = _BRACED.fullmatch(m.group("braced"))
        assert ref, f"Compose rejects ${{{m.group('braced')}}}"
        got, op, arg = host.get(ref["name"]), ref["op"], ref["arg"]
        if op in ("?", ":?") and not (got if op == ":?" else got is not None):
            raise AssertionError(f"{ref['name']} is required: {arg}")
        if op == ":-":
            return got or arg
        if op == "-":
            return arg if got is None else got
        if op == ":+":
            return arg if got else ""
        if op == "+":
            return "" if got is None else arg
        return got or ""

    return _REFERENCE.sub(value, text)


def _walk(node: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, fn) for v in node]
    return fn(node) if isinstance(node, str) else node


# The file as `docker compose config` would show it with no host variables (and no .env).
RENDERED = _walk(COMPOSE, lambda s: _interpolate(s, {}))
_ASSIGNMENT = re.compile(r"(?P<off>#?)(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)")


def _env_file_lines(path: Path) -> Iterator[tuple[bool, str, str]]:
    """(commented out, name, value) of each `NAME=value` or `#NAME=value` line."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := _ASSIGNMENT.fullmatch(line):
            yield bool(m["off"]), m["name"], m["value"]


def _template(source: str) -> Path:
    """The shipped template of a file the operator makes (deploy/x -> deploy/x.example)."""
    return ROOT / (source + ".example")


def _service_env(service: str) -> dict[str, str]:
    """The variables the service's container gets: env_file lines, then `environment:`."""
    svc = RENDERED["services"][service]
    env: dict[str, str] = {}
    files = svc.get("env_file", [])
    for entry in [files] if isinstance(files, str) else files:
        source = entry if isinstance(entry, str) else entry["path"]
        # The operator's own copy (if this checkout has one) is theirs: render the template.
        env |= {n: v for off, n, v in _env_file_lines(_template(source)) if not off}
    environment = svc.get("environment", {})
    if isinstance(environment, list):
        environment = dict(e.split("=", 1) if "=" in e else (e, None) for e in environment)
    for name, value in environment.items():
        if value is not None:  # a bare name passes the host's value: none here
            env[name] = str(value)
    return env


def _binds(service: str) -> dict[str, tuple[str, bool]]:
    """Container path -> (host source, read-only) of the service's bind mounts."""
    out = {}
    for volume in RENDERED["services"][service].get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                out[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
            continue
        source, target, *mode = volume.split(":")
        if source.startswith(("./", "/")):
            out[target] = (source, mode == ["ro"])
    return out


def _is_setting(name: str) -> bool:
    """A CONTINUITY_* variable some Settings field (or a nested model's field) reads."""
    if name in NOT_SETTINGS:
        return True
    field, _, sub = name.removeprefix("CONTINUITY_").lower().partition("__")
    if not name.startswith("CONTINUITY_") or field not in Settings.model_fields:
        return False
    model = Settings.model_fields[field].annotation
    if not sub:
        return not (isinstance(model, type) and issubclass(model, BaseModel))
    return isinstance(model, type) and issubclass(model, BaseModel) and sub in model.model_fields


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("CONTINUITY_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_compose_has_the_production_stack():
    assert {"postgresql", "temporal", "temporal-ui", "api", "worker"} <= set(COMPOSE["services"])
    assert COMPOSE["services"]["temporal"]["environment"]["DB"] == "postgres12"
    assert COMPOSE["services"]["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_compose_every_continuity_variable_any_service_gets_is_read_by_settings():
    """Settings ignores unknown variables: a misspelt name would be dropped without a word."""
    for service in RENDERED["services"]:
        for name in _service_env(service):
            if name.startswith("CONTINUITY_"):
                assert _is_setting(name), (service, name)
    # Commented-out lines of the template are what operators uncomment: the same holds.
    for _, name, _ in _env_file_lines(ENV_EXAMPLE):
        assert _is_setting(name), name


def test_compose_app_services_share_one_environment():
    envs = {service: _service_env(service) for service in APP_SERVICES}
    assert all(env == envs["api"] for env in envs.values())
    assert envs["api"]["CONTINUITY_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_compose_publishes_ports_on_loopback_only():
    for name, svc in COMPOSE["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_compose_depends_on_existing_services():
    services = set(COMPOSE["services"])
    for svc in COMPOSE["services"].values():
        deps = svc.get("depends_on", [])
        assert set(deps) <= services


def _mounts(service: str) -> dict[str, str]:
    """Container path -> host source of the service's read-only certificate mounts."""
    out = {}
    for target, (source, read_only) in _binds(service).items():
        if source.startswith(CERTS_SOURCE):
            assert read_only, (service, source)
            out[target] = source
    return out


def test_compose_temporal_requires_client_certificates():
    env = COMPOSE["services"]["temporal"]["environment"]
    mounts = _mounts("temporal")
    assert env["TEMPORAL_TLS_REQUIRE_CLIENT_AUTH"] == "true"
    for key in (
        "TEMPORAL_TLS_SERVER_CA_CERT",
        "TEMPORAL_TLS_SERVER_CERT",
        "TEMPORAL_TLS_SERVER_KEY",
        "TEMPORAL_TLS_FRONTEND_CERT",
        "TEMPORAL_TLS_FRONTEND_KEY",
        "TEMPORAL_TLS_CLIENT1_CA_CERT",
    ):
        assert env[key] in mounts, key
    assert mounts[env["TEMPORAL_TLS_CLIENT1_CA_CERT"]] == CERTS_SOURCE + "ca.pem"
    assert env["TEMPORAL_TLS_FRONTEND_DISABLE_HOST_VERIFICATION"] == "false"
    assert env["TEMPORAL_TLS_INTERNODE_DISABLE_HOST_VERIFICATION"] == "false"


def test_compose_frontend_port_not_published():
    for name, svc in COMPOSE["services"].items():
        for port in svc.get("ports", []):
            assert not str(port).endswith(":7233") and str(port) != "7233", (name, port)


def test_compose_healthcheck_speaks_mutual_tls():
    check = COMPOSE["services"]["temporal"]["healthcheck"]["test"]
    flags = dict(zip(check[5::2], check[6::2], strict=True))
    assert check[:5] == ["CMD", "temporal", "operator", "cluster", "health"]
    mounts = _mounts("temporal")
    for flag in ("--tls-ca-path", "--tls-cert-path", "--tls-key-path"):
        assert flags[flag] in mounts, flag
    assert flags["--tls-server-name"] == "temporal"


@pytest.mark.parametrize(("service", "own"), [("api", "api"), ("worker", "worker")])
def test_compose_app_in_production_with_its_own_client_certificate(service: str, own: str):
    env = COMPOSE["services"][service]["environment"]
    mounts = _mounts(service)
    assert env["CONTINUITY_PRODUCTION"] == "1"
    assert mounts[env["CONTINUITY_TEMPORAL_TLS_CA"]] == CERTS_SOURCE + "ca.pem"
    assert mounts[env["CONTINUITY_TEMPORAL_TLS_CERT"]] == f"{CERTS_SOURCE}{own}.pem"
    assert mounts[env["CONTINUITY_TEMPORAL_TLS_KEY"]] == f"{CERTS_SOURCE}{own}.key"
    assert env["CONTINUITY_TEMPORAL_TLS_SERVER_NAME"] == "temporal"


def test_compose_ui_reaches_temporal_over_mutual_tls():
    env = COMPOSE["services"]["temporal-ui"]["environment"]
    mounts = _mounts("temporal-ui")
    assert mounts[env["TEMPORAL_TLS_CERT"]] == CERTS_SOURCE + "ui.pem"
    assert mounts[env["TEMPORAL_TLS_KEY"]] == CERTS_SOURCE + "ui.key"
    assert env["TEMPORAL_TLS_ENABLE_HOST_VERIFICATION"] == "true"


def test_make_certs_script_is_executable():
    assert MAKE_CERTS.is_file()
    assert os.access(MAKE_CERTS, os.X_OK)


def test_make_certs_every_mounted_file_made_and_chained_to_the_ca(tmp_path: Path):
    out = tmp_path / "certs"
    subprocess.run([str(MAKE_CERTS), str(out)], check=True, capture_output=True, timeout=60)
    mounted = {
        s.removeprefix(CERTS_SOURCE) for svc in COMPOSE["services"] for s in _mounts(svc).values()
    }
    assert mounted == {
        f"{n}.{ext}" for n in ("temporal", "api", "worker", "ui") for ext in ("pem", "key")
    } | {"ca.pem"}
    for name in mounted:
        assert (out / name).is_file(), name

    def verify(purpose: str, *certs: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "verify", "-CAfile", str(out / "ca.pem"), "-purpose", purpose]
            + [str(out / c) for c in certs],
            capture_output=True,
            text=True,
            check=False,
        )

    # Temporal's certificate serves the frontend and is its client between its own services.
    assert verify("sslserver", "temporal.pem").returncode == 0
    clients = verify("sslclient", "temporal.pem", "api.pem", "worker.pem", "ui.pem")
    assert clients.returncode == 0, clients.stdout + clients.stderr
    assert verify("sslserver", "api.pem").returncode != 0  # a client cannot pose as Temporal
    assert (out / "ca.key").stat().st_mode & 0o077 == 0


def test_make_certs_existing_ca_not_overwritten(tmp_path: Path):
    out = tmp_path / "certs"
    subprocess.run([str(MAKE_CERTS), str(out)], check=True, capture_output=True, timeout=60)
    ca = (out / "ca.pem").read_bytes()
    again = subprocess.run([str(MAKE_CERTS), str(out)], capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "exists" in again.stderr
    assert (out / "ca.pem").read_bytes() == ca


def test_image_copies_every_package_the_project_installs():
    """`pip install .` in the image needs each package pyproject.toml lists (app/ holds the CLI)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package
    for module in project["tool"]["setuptools"]["py-modules"]:
        assert f"{module}.py" in dockerfile, module


def test_compose_passes_no_settings_tokens():
    """Production principals live in the store (`continuity token create`), not in variables."""
    assert "CONTINUITY_API_TOKENS" not in COMPOSE_TEXT
    assert all("CONTINUITY_API_TOKENS" not in _service_env(s) for s in RENDERED["services"])
    assert "CONTINUITY_API_TOKENS" not in {name for _, name, _ in _env_file_lines(ENV_EXAMPLE)}


# --- the settings file, its template and what the containers make of it -----------------------


def _setting_value(settings: Settings, name: str) -> Any:
    value: Any = settings
    for part in name.removeprefix("CONTINUITY_").lower().split("__"):
        value = getattr(value, part)
    return value


def _as_written(value: Any) -> Any:
    """A settings value in the form the template writes it (JSON for the dict settings)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {
            k: _revealed(v.model_dump(mode="python", exclude_defaults=True))
            if isinstance(v, BaseModel)
            else v
            for k, v in value.items()
        }
    return str(value)


def _revealed(dumped: dict[str, Any]) -> dict[str, Any]:
    """A dumped model as JSON would write it, its secrets as written (not masked)."""
    out: dict[str, Any] = {}
    for k, v in dumped.items():
        if isinstance(v, SecretStr):
            out[k] = v.get_secret_value()
        elif isinstance(v, Path):
            out[k] = str(v)
        else:
            out[k] = v
    return out


def test_env_template_lists_every_setting():
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for field, info in Settings.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names = [f"CONTINUITY_{field}__{sub}".upper() for sub in model.model_fields]
        else:
            names = [f"CONTINUITY_{field}".upper()]
        for name in names:
            assert re.search(rf"\b{name}\b", text), name


def test_env_template_offers_nothing_the_compose_file_overrides():
    """`environment:` wins over `env_file:`: a line for those names would be ignored."""
    fixed = set(RENDERED["x-app"]["environment"])
    offered = {name for _, name, _ in _env_file_lines(ENV_EXAMPLE)}
    assert fixed and not fixed & offered


def test_env_template_lines_read_alike_by_every_compose_release():
    """Compose v1, v2 and `docker run --env-file` differ on quotes, `$` and inline comments."""
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        m = _ASSIGNMENT.fullmatch(line)
        if m is None:
            assert line == "" or line.startswith("# ") or line == "#", (number, line)
            continue
        value = m["value"]
        assert value == value.strip() and value[:1] not in "'\"", (number, line)
        assert "$" not in value and " #" not in value, (number, line)


def test_env_template_commented_lines_when_uncommented_set_what_they_show(
    monkeypatch: pytest.MonkeyPatch,
):
    env = _service_env("worker")
    shown = {name: value for _, name, value in _env_file_lines(ENV_EXAMPLE)}
    settings = _settings_from(env | shown, monkeypatch)
    for name, value in shown.items():
        if name in NOT_SETTINGS:
            continue
        got = _as_written(_setting_value(settings, name))
        if isinstance(got, dict):  # JSON keys are strings: {"1": 900} is {1: 900.0}
            got = {str(k): v for k, v in got.items()}
        assert got == (json.loads(value) if isinstance(got, dict) else value), name


@pytest.mark.parametrize("service", APP_SERVICES)
def test_compose_app_settings_validate_in_production_against_the_compose_database(
    service: str, monkeypatch: pytest.MonkeyPatch
):
    settings = _settings_from(_service_env(service), monkeypatch)
    assert settings.production is True
    url = make_url(settings.database_url)
    db = RENDERED["services"]["postgresql"]["environment"]
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgresql", 5432)
    assert url.database == db["POSTGRES_DB"]
    assert (url.username, url.password) == (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"])
    assert settings.temporal_address.partition(":")[0] in RENDERED["services"]


def test_compose_worker_settings_name_its_mounted_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    settings = _settings_from(_service_env("worker"), monkeypatch)
    binds = _binds("worker")
    source = {target: host for target, (host, _) in binds.items()}
    assert all(read_only for _, read_only in binds.values())
    assert source[str(settings.temporal_tls_ca)] == CERTS_SOURCE + "ca.pem"
    assert source[str(settings.temporal_tls_cert)] == CERTS_SOURCE + "worker.pem"
    assert source[str(settings.temporal_tls_key)] == CERTS_SOURCE + "worker.key"
    assert settings.temporal_tls_server_name == "temporal"
    assert source[str(settings.known_hosts_path)] == "./deploy/known_hosts"
    # The credential the template ships parses into its model and names a key in deploy/ssh/.
    credential = settings.device_credentials["noc-ro"]
    assert isinstance(credential, DeviceCredential) and credential.private_key_path
    ssh_dir = next(t for t, host in source.items() if host.rstrip("/") == "./deploy/ssh")
    assert credential.private_key_path.parent == Path(ssh_dir)
    assert f"{ssh_dir}/{credential.private_key_path.name}" in (
        ROOT / "deploy" / "ssh" / "README"
    ).read_text(encoding="utf-8")
    # data_dir is the named volume, not a path lost with the container.
    assert f"appdata:{settings.data_dir}" in RENDERED["services"]["worker"]["volumes"]
    # With the files make-certs.sh makes in place, production's TLS gate opens.
    certs = tmp_path / "certs"
    subprocess.run([str(MAKE_CERTS), str(certs)], check=True, capture_output=True, timeout=60)
    on_host = settings.model_copy(
        update={
            name: certs / source[str(getattr(settings, name))].removeprefix(CERTS_SOURCE)
            for name in ("temporal_tls_ca", "temporal_tls_cert", "temporal_tls_key")
        }
    )
    tls = temporal_tls_config(on_host)
    assert tls is not None and tls.client_cert and tls.domain == "temporal"


def test_compose_api_does_not_mount_the_device_keys():
    assert all(not host.startswith("./deploy/ssh") for host, _ in _binds("api").values())


# --- the compose file itself ---------------------------------------------------------------


def test_compose_interpolation_defaults_have_no_braces():
    """Compose releases before 2024 end `${X:-{}}` at the first `}`."""
    for m in re.finditer(r"\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*|.?)", COMPOSE_TEXT):
        ref = m.group(1)
        assert ref == "$" or re.fullmatch(r"[A-Za-z_]\w*|\{[A-Za-z_]\w*(:?[-?+][^{}$]*)?\}", ref), (
            m.group(0)
        )


def test_compose_long_running_services_restart_and_one_shots_do_not():
    for name, svc in RENDERED["services"].items():
        if svc.get("profiles"):
            assert svc.get("restart", "no") == "no", name  # a restarted load would load again
        else:
            assert svc.get("restart") == "unless-stopped", name


def test_compose_app_waits_for_healthy_temporal_and_postgresql():
    services = RENDERED["services"]
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert isinstance(deps, dict), name  # the list form starts them without waiting
        for backend in ("temporal", "postgresql"):
            assert deps[backend]["condition"] == "service_healthy", (name, backend)
    for name in ("inventory-load", "cli"):
        assert services[name]["depends_on"]["postgresql"]["condition"] == "service_healthy"
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep in deps if isinstance(deps, dict) else []:
            if deps[dep].get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)


def test_compose_images_pinned_to_exact_versions():
    for name, svc in RENDERED["services"].items():
        if "build" in svc:
            continue
        image, _, tag = svc["image"].rpartition(":")
        assert image and re.match(r"\d+\.\d+", tag), (name, svc["image"])
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert base and re.search(r":\d+\.\d+\.\d+", base.group(1)), base


def test_image_runs_as_a_non_root_user():
    users = re.findall(r"^USER (\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("service", ["api", "worker", "inventory-load"])
def test_compose_app_command_parses_with_the_cli(service: str):
    command = RENDERED["services"][service]["command"]
    assert command[0] == "continuity"
    assert _parsed(command[1:]) == {"api": ["api"], "worker": ["worker"]}.get(
        service, ["inventory", "load"]
    )


def _parsed(argv: list[str]) -> list[str]:
    """The command `continuity ARGV` names, its arguments parsed and checked, nothing run."""
    command, path = typer.main.get_command(cli.app), []
    while argv and argv[0] in getattr(command, "commands", {}):
        command, path, argv = command.commands[argv[0]], [*path, argv[0]], argv[1:]
    command.make_context(" ".join(["continuity", *path]), argv)  # raises on any mistake
    return path


def test_compose_one_shots_only_on_request():
    for name in ("inventory-load", "cli"):
        assert RENDERED["services"][name]["profiles"] == ["setup"], name


def test_compose_inventory_load_reads_the_mounted_inventory_read_only():
    svc = RENDERED["services"]["inventory-load"]
    [volume] = svc["volumes"]
    # Long syntax without create_host_path: a missing file fails the run, not a new directory.
    assert volume["type"] == "bind" and volume["bind"]["create_host_path"] is False
    assert volume["source"] == "./deploy/inventory.json" and volume["read_only"] is True
    assert svc["command"][:3] == ["continuity", "inventory", "load"]
    assert svc["command"][-1] == volume["target"]


def test_inventory_template_is_valid_and_uses_the_env_template_credentials(
    monkeypatch: pytest.MonkeyPatch,
):
    inventory = read_inventory(_template("deploy/inventory.json")).inventory
    settings = _settings_from(_service_env("worker"), monkeypatch)
    assert inventory.devices
    assert {d.credential for d in inventory.devices} <= set(settings.device_credentials)


def test_compose_mounted_deploy_files_ship_or_are_made_by_script_or_operator():
    """Each host file compose reads under deploy/ is in the repository, made by make-certs.sh
    (test_make_certs_every_mounted_file_made_and_chained_to_the_ca runs it), or the operator's:
    then a template ships next to it, git ignores it, and the README names the template."""
    sources = {host for svc in RENDERED["services"] for host, _ in _binds(svc).values()} | {
        RENDERED["x-app"]["env_file"]
    }
    ignored = DEPLOY_GITIGNORE.read_text(encoding="utf-8").splitlines()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    operators = set()
    for source in sorted(sources):
        assert source.startswith("./deploy/"), source
        if source.startswith(CERTS_SOURCE):
            continue
        if (ROOT / source).exists():
            continue
        assert _template(source).is_file(), source
        assert "/" + source.removeprefix("./deploy/") in ignored, source
        assert _template(source).relative_to(ROOT).as_posix() in readme, source
        operators.add(source)
    assert operators == {"./deploy/continuity.env", "./deploy/inventory.json"}
    # deploy/ssh/ ships with its README only; the keys the operator adds stay out of git.
    assert (ROOT / "deploy" / "ssh" / "README").is_file()
    assert {"/ssh/*", "!/ssh/README"} <= set(ignored)


class _Healthz(BaseHTTPRequestHandler):
    status = "ok"

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.dumps({"status": self.status, "temporal": True, "database": True}).encode()
        self.send_response(200 if self.path == "/healthz" else 404)  # /healthz: 200 either way
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [("ok", True), ("degraded", False)])
def test_compose_api_healthcheck_healthy_only_when_healthz_says_ok(status: str, healthy: bool):
    check = RENDERED["services"]["api"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    api_port = _service_env("api")["CONTINUITY_API_PORT"]
    address = f"127.0.0.1:{api_port}"
    assert f"http://{address}/healthz" in check[3]
    handler = type("Handler", (_Healthz,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code = check[3].replace(address, f"127.0.0.1:{server.server_address[1]}")
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (run.returncode == 0) is healthy, run.stderr
