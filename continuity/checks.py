"""The deployment's checks, one verdict each: `continuity doctor` prints them, and the console's
health dots show them (GET /checks). Each takes what it checks, already built."""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client

from continuity.errors import ContinuityError
from continuity.models import Inventory, site_task_queue
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


# A poller Temporal saw this recently still serves its queue: an idle worker renews its long
# poll about once a minute, and Temporal lists a poller for minutes after it went away.
POLLER_FRESH_S = 150.0


async def _pollers(
    client: Client, namespace: str, queue: str, kind: TaskQueueType.ValueType
) -> int:
    """How many workers (by identity) polled `queue` for `kind` tasks within POLLER_FRESH_S."""
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
        )
    )
    now = datetime.now(UTC)
    return len(
        {
            p.identity
            for p in answer.pollers
            if not p.HasField("last_access_time")
            or (now - p.last_access_time.ToDatetime(UTC)).total_seconds() <= POLLER_FRESH_S
        }
    )


@dataclass(frozen=True)
class QueuePollers:
    """Workers polling the central queue, and per device site: (devices, workers polling)."""

    queue: str
    central: int
    sites: dict[str, tuple[int, int]]


async def queue_pollers(
    client: Client, settings: Settings, sites: Mapping[str, int]
) -> QueuePollers:
    """Ask Temporal, all queues at once, who polls the central queue and those of `sites`
    (site -> its devices); raises Temporal's RPC error."""
    base, ns, names = settings.task_queue, settings.temporal_namespace, sorted(sites)
    central, *counts = await asyncio.gather(
        _pollers(client, ns, base, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        *(
            _pollers(client, ns, site_task_queue(base, s), TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
            for s in names
        ),
    )
    return QueuePollers(
        base, central, {s: (sites[s], n) for s, n in zip(names, counts, strict=True)}
    )


async def workers_check(client: Client, settings: Settings, inventory: Inventory | None) -> Check:
    """A worker polls the central queue (incidents run there) and each site's device queue:
    without one, a declaration waits unstarted, or a site's changes wait in `applying`."""
    sites = Counter(d.site for d in inventory.devices) if inventory is not None else Counter()
    try:
        polled = await queue_pollers(client, settings, sites)
    except Exception as e:  # noqa: BLE001 - an RPC error: the temporal check says more
        return Check("warn", "workers", f"not checked: Temporal did not answer ({e})")
    base = polled.queue
    problems = []
    if not polled.central:
        problems.append(
            f"no worker polls {base}: a declared incident would not start (`continuity worker`)"
        )
    problems += [
        f"no worker polls {site_task_queue(base, site)}: changes on the {devices} devices "
        f"of site {site} would wait in `applying` (`continuity worker --sites {site}`)"
        for site, (devices, n) in polled.sites.items()
        if not n
    ]
    if problems:
        return Check("FAIL", "workers", "; ".join(problems))
    counts = ", ".join(f"{s} {n}" for s, (_, n) in polled.sites.items()) or "no devices yet"
    return Check("ok", "workers", f"{base}: {polled.central} polling; device sites: {counts}")


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
