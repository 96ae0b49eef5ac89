"""docker-compose.yml cannot run here (no Docker engine); check what can be checked offline."""

from __future__ import annotations

from pathlib import Path

import yaml

from continuity.settings import Settings

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


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
