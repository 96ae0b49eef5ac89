"""`continuity doctor`: check the settings against the world they point at, one line a check."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from app.archive import retention_problem
from continuity.errors import ContinuityError
from continuity.models import Inventory
from continuity.settings import Settings
from continuity.ssh import host_key_problem
from continuity.store import Store
from continuity.telephony import check_telephony
from continuity.temporal import connect_temporal

Verdict = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    subject: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.subject}: {self.detail}"


async def run_doctor(settings: Settings) -> list[Check]:
    checks = [await _temporal(settings)]
    store_check, inventory = await asyncio.to_thread(_database, settings)
    checks.append(store_check)
    if inventory is not None:
        checks += _devices(settings, inventory)
    checks.append(_telephony(settings))
    checks.append(await _public_url(settings))
    return checks


async def _temporal(settings: Settings) -> Check:
    try:
        client = await connect_temporal(settings)
        ns = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=settings.temporal_namespace)
        )
    except ContinuityError as e:
        return Check("FAIL", "temporal", str(e))
    except Exception as e:  # noqa: BLE001 - an RPC error describing the namespace
        return Check("FAIL", "temporal", f"namespace {settings.temporal_namespace}: {e}")
    days = ns.config.workflow_execution_retention_ttl.ToTimedelta().total_seconds() / 86400
    detail = (
        f"reachable at {settings.temporal_address}; namespace {settings.temporal_namespace} "
        f"keeps closed histories {days:g} days"
    )
    # Auditors read incidents years later: Temporal's retention is not the record.
    problem = retention_problem(settings, days)
    if problem:
        return Check("warn", "temporal", detail + "; set CONTINUITY_ARCHIVE_DIR for the record")
    if settings.archive_dir is not None:
        detail += f"; closed incidents are bundled into {settings.archive_dir}"
    return Check("ok", "temporal", detail)


def _database(settings: Settings) -> tuple[Check, Inventory | None]:
    url = settings.masked_database_url
    try:
        store = Store.for_settings(settings)
        try:
            store.create_schema()
            store.probe_write()
            inventory = store.inventory()
        finally:
            store.close()
    except (ContinuityError, OSError) as e:
        return Check("FAIL", "database", f"{url}: {e}"), None
    return (
        Check(
            "ok",
            "database",
            f"{url} writable; inventory of {len(inventory.devices)} devices",
        ),
        inventory,
    )


def _devices(settings: Settings, inventory: Inventory) -> list[Check]:
    if not inventory.devices:
        return [Check("warn", "inventory", "no devices: `continuity inventory load FILE`")]
    problems = []
    for device in inventory.devices:
        if device.credential not in settings.device_credentials:
            problems.append(
                f"{device.name}: credential {device.credential!r} is not in "
                "CONTINUITY_DEVICE_CREDENTIALS"
            )
        key = host_key_problem(device, settings.known_hosts_path)
        if key is not None:
            problems.append(key)
    if problems:
        return [Check("FAIL", "devices", p) for p in problems]
    return [
        Check(
            "ok",
            "devices",
            f"{len(inventory.devices)} devices: each credential defined, each host key known",
        )
    ]


def _telephony(settings: Settings) -> Check:
    try:
        check_telephony(settings.model_copy(update={"production": True}))
    except ContinuityError as e:
        verdict: Verdict = "FAIL" if settings.production else "warn"
        return Check(verdict, "telephony", str(e))
    if settings.telephony == "none":
        return Check("warn", "telephony", "disabled: incidents place no calls and send no SMS")
    return Check("ok", "telephony", f"{settings.telephony} configured")


async def _public_url(settings: Settings) -> Check:
    """Twilio calls back at the public base URL: it must be an address Twilio can reach."""
    if settings.telephony == "none":
        return Check("ok", "public url", "not needed: telephony disabled")
    url = settings.public_base_url
    host = urlsplit(url).hostname or ""
    if settings.telephony == "twilio" and _private(host):
        return Check(
            "FAIL",
            "public url",
            f"{url}: Twilio cannot call back a loopback or private address "
            "(CONTINUITY_PUBLIC_BASE_URL)",
        )
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"{url.rstrip('/')}/healthz")
    except httpx.HTTPError as e:
        return Check("FAIL", "public url", f"{url}/healthz does not answer from here: {e!r}")
    return Check(
        "ok" if r.status_code == 200 else "FAIL",
        "public url",
        f"{url}/healthz answers {r.status_code} from here (check it from outside too)",
    )


def _private(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith((".local", ".internal", ".lan"))
    return addr.is_loopback or addr.is_private or addr.is_link_local


__all__ = ["Check", "run_doctor"]
