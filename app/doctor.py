"""`continuity doctor`: check the settings against the world they point at, one line a check
(the checks are continuity.checks', which the console's health dots show too)."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from continuity.checks import (
    Check,
    database_check,
    devices_check,
    public_url_check,
    telephony_check,
    temporal_check,
    workers_check,
)
from continuity.errors import ContinuityError
from continuity.models import Inventory
from continuity.settings import Settings
from continuity.store import Store
from continuity.temporal import connect_temporal


async def run_doctor(settings: Settings) -> list[Check]:
    client: Client | None = None
    try:
        client = await connect_temporal(settings)
    except ContinuityError as e:
        checks = [Check("FAIL", "temporal", str(e))]
    else:
        checks = [await temporal_check(client, settings)]
    store_check, inventory = await asyncio.to_thread(_database, settings)
    checks.append(store_check)
    if inventory is not None:
        checks += devices_check(settings, inventory)
    if client is not None:  # else the temporal check's FAIL says why nothing was asked
        checks.append(await workers_check(client, settings, inventory))
    checks.append(telephony_check(settings))
    checks.append(await public_url_check(settings))
    return checks


def _database(settings: Settings) -> tuple[Check, Inventory | None]:
    url = settings.masked_database_url
    try:
        store = Store.for_settings(settings)
    except (ContinuityError, OSError) as e:
        return Check("FAIL", "database", f"{url}: {e}"), None
    try:
        return database_check(store, url, write=True)
    finally:
        store.close()


__all__ = ["Check", "run_doctor"]
