"""The deployment's checks, one verdict each: `continuity doctor` prints them, and the console's
health dots show them (GET /checks). Each takes what it checks, already built."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from continuity.errors import ContinuityError
from continuity.models import Inventory
from continuity.settings import Settings
from continuity.ssh import host_key_problem
from continuity.store import Store
from continuity.telephony import check_telephony

Verdict = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    subject: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.subject}: {self.detail}"


async def retention_days(client: Client, namespace: str) -> float:
    ns = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    return ns.config.workflow_execution_retention_ttl.ToTimedelta().total_seconds() / 86400


def retention_problem(settings: Settings, days: float) -> str | None:
    """Why the record would not last its period, or None."""
    if settings.archive_dir is not None or days >= settings.record_period_days:
        return None
    return (
        f"namespace {settings.temporal_namespace} keeps closed histories {days:g} days, less "
        f"than the record period ({settings.record_period_days} days), and no archive is "
        "configured (CONTINUITY_ARCHIVE_DIR)"
    )


async def temporal_check(client: Client, settings: Settings) -> Check:
    """The namespace answers, and keeps closed histories long enough (or an archive does)."""
    try:
        days = await retention_days(client, settings.temporal_namespace)
    except Exception as e:  # noqa: BLE001 - an RPC error describing the namespace
        return Check("FAIL", "temporal", f"namespace {settings.temporal_namespace}: {e}")
    detail = (
        f"reachable at {settings.temporal_address}; namespace {settings.temporal_namespace} "
        f"keeps closed histories {days:g} days"
    )
    # Auditors read incidents years later: Temporal's retention is not the record.
    if retention_problem(settings, days):
        return Check("warn", "temporal", detail + "; set CONTINUITY_ARCHIVE_DIR for the record")
    if settings.archive_dir is not None:
        detail += f"; closed incidents are bundled into {settings.archive_dir}"
    return Check("ok", "temporal", detail)


def database_check(store: Store, url: str, *, write: bool) -> tuple[Check, Inventory | None]:
    """The database answers (and, with `write`, takes a write); the inventory it holds."""
    try:
        if write:
            store.create_schema()
            store.probe_write()
        inventory = store.inventory()
    except (ContinuityError, OSError) as e:
        return Check("FAIL", "database", f"{url}: {e}"), None
    done = "writable" if write else "readable"
    found = f"{url} {done}; inventory of {len(inventory.devices)} devices"
    return Check("ok", "database", found), inventory


def devices_check(settings: Settings, inventory: Inventory) -> list[Check]:
    """Every device's credential is defined and its host key pinned."""
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


def telephony_check(settings: Settings) -> Check:
    """Calls can be placed as production would place them, or telephony is off on purpose."""
    try:
        check_telephony(settings.model_copy(update={"production": True}))
    except ContinuityError as e:
        verdict: Verdict = "FAIL" if settings.production else "warn"
        return Check(verdict, "telephony", str(e))
    if settings.telephony == "none":
        return Check("warn", "telephony", "disabled: incidents place no calls and send no SMS")
    return Check("ok", "telephony", f"{settings.telephony} configured")


async def public_url_check(settings: Settings) -> Check:
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


__all__ = [
    "Check",
    "Verdict",
    "database_check",
    "devices_check",
    "public_url_check",
    "retention_days",
    "retention_problem",
    "telephony_check",
    "temporal_check",
]
