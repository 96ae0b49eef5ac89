"""docker-compose.yml cannot run here (no Docker engine); check what can be checked offline."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from continuity.settings import Settings

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"
CERTS_SOURCE = "./deploy/certs/"  # where compose mounts the script's files from


def test_compose_has_the_production_stack():
    assert {"postgresql", "temporal", "temporal-ui", "api", "worker"} <= set(COMPOSE["services"])
    assert COMPOSE["services"]["temporal"]["environment"]["DB"] == "postgres12"
    assert COMPOSE["services"]["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_compose_app_variables_are_settings_fields():
    env = COMPOSE["services"]["api"]["environment"]
    fields = set(Settings.model_fields)
    for key in env:
        if key.startswith("CONTINUITY_"):
            assert key.removeprefix("CONTINUITY_").lower() in fields, key
    assert env["CONTINUITY_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert COMPOSE["services"]["worker"]["environment"] == env


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
    for volume in COMPOSE["services"][service].get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith(CERTS_SOURCE):
            assert mode == ["ro"], volume
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
    assert "CONTINUITY_API_TOKENS" not in (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
