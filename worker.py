"""The Temporal worker entry point: every workflow and activity, on settings.temporal_address."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.network import NetworkActivities
from activities.store import StoreActivities
from activities.telephony import TelephonyActivities
from continuity.settings import Settings
from continuity.store import Store
from workflows import ALL_WORKFLOWS


def build_worker(
    client: Client, settings: Settings, store: Store, *, task_queue: str | None = None
) -> Worker:
    """One worker hosts the workflows and all activities; blocking telephony gets threads."""
    network = NetworkActivities(store, settings)
    telephony = TelephonyActivities(store, settings)
    records = StoreActivities(store)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=ALL_WORKFLOWS,
        activities=[
            network.lock_device,
            network.unlock_device,
            network.precheck_device,
            network.apply_change,
            network.verify_change,
            network.confirm_change,
            network.rollback_change,
            network.await_device_revert,
            telephony.place_call,
            telephony.send_sms,
            records.write_report,
        ],
        activity_executor=ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity"),
        max_concurrent_activities=32,
    )


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


async def run(settings: Settings) -> None:
    store = Store(settings.sqlalchemy_url)
    store.create_schema()
    client = await connect(settings)
    async with build_worker(client, settings, store):
        logging.getLogger("continuity.worker").info(
            "worker polling %s on %s", settings.task_queue, settings.temporal_address
        )
        await asyncio.Event().wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run(Settings()))


if __name__ == "__main__":
    main()
