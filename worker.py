"""The Temporal worker entry point: workflows and store/telephony activities on the central task
queue, device activities on each site's queue (a worker per site can run next to its gear)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from temporalio.client import Client
from temporalio.worker import PollerBehaviorAutoscaling, UnsandboxedWorkflowRunner, Worker

from activities.network import NetworkActivities
from activities.store import StoreActivities
from activities.telephony import TelephonyActivities
from activities.webhook import WebhookActivities
from continuity.errors import ContinuityError
from continuity.logs import configure_logging
from continuity.models import site_task_queue
from continuity.runtime import freeze_startup_heap, run_service
from continuity.settings import Settings, check_startup
from continuity.signing import load_attester
from continuity.store import Store
from continuity.temporal import connect_temporal
from workflows import ALL_WORKFLOWS

log = logging.getLogger("continuity.worker")


class Workers:
    """The workers of one process, started and stopped together."""

    def __init__(self, workers: list[Worker], network: NetworkActivities | None) -> None:
        self.workers = workers
        self.network = network
        self._stack = contextlib.AsyncExitStack()

    @property
    def task_queues(self) -> list[str]:
        return [w.task_queue for w in self.workers]

    async def __aenter__(self) -> Workers:
        for w in self.workers:
            await self._stack.enter_async_context(w)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    async def run(self) -> None:
        async with self:
            await asyncio.Event().wait()

    async def shutdown(self) -> None:
        await self._stack.aclose()
        if self.network is not None:
            await self.network.close()


def build_worker(
    client: Client,
    settings: Settings,
    store: Store,
    *,
    task_queue: str | None = None,
    sites: Sequence[str] | None = None,
    central: bool = True,
) -> Workers:
    """Workers for the central queue (workflows, store, telephony) and the given sites' device
    queues; `sites` None means every site of the store's inventory."""
    base = task_queue or settings.task_queue
    if sites is None:
        sites = sorted({d.site for d in store.inventory().devices} | {"default"})
    workers: list[Worker] = []
    network = NetworkActivities(store, settings) if sites else None
    if central:
        telephony = TelephonyActivities(store, settings)
        webhooks = WebhookActivities(settings)
        # The deployment's own key decides which declarations may hold circuits.
        attester = load_attester(settings)
        records = StoreActivities(store, client, trusted=attester.public_keys if attester else None)
        workers.append(
            Worker(
                client,
                task_queue=base,
                workflows=ALL_WORKFLOWS,
                # Not sandboxed: the sandbox runs code of its own for every payload in and out
                # (a fifth of this worker's CPU at 200 devices, bench/). Determinism is checked
                # where it matters: recorded histories replay in the sandbox (tests/histories,
                # `continuity audit`), and the workflows read time and ids only from Temporal.
                workflow_runner=UnsandboxedWorkflowRunner(),
                activities=[
                    records.hold_circuits,
                    records.release_circuits,
                    records.await_device_lock,
                    records.write_reports,
                    records.write_off_device,
                    telephony.place_call,
                    telephony.send_sms,
                    webhooks.post_webhook,
                ],
                # Blocking telephony runs in threads: one per activity slot.
                activity_executor=ThreadPoolExecutor(max_workers=64, thread_name_prefix="phone"),
                max_concurrent_activities=64,
            )
        )
    for site in sites:
        assert network is not None
        workers.append(
            Worker(
                client,
                task_queue=site_task_queue(base, site),
                activities=[
                    network.apply_device_change,
                    network.confirm_device_change,
                    network.undo_device_change,
                    network.read_back_device,
                ],
                # Async SSH work; the session limits, not this, bound what reaches devices.
                max_concurrent_activities=512,
                # 200 applies scheduled at once waited 3 s p50 behind five fixed pollers.
                activity_task_poller_behavior=PollerBehaviorAutoscaling(),
            )
        )
    return Workers(workers, network)


async def run(
    settings: Settings, *, sites: Sequence[str] | None = None, central: bool = True
) -> None:
    # Settings first, then Temporal: a refused worker leaves the database untouched.
    check_startup(settings)
    client = await connect_temporal(settings)
    # Device activities run their store work in threads (asyncio.to_thread), each write a few
    # round trips: the default executor's cpu + 4 threads would queue 200 devices' journal
    # writes behind each other wherever the database is a network hop away.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=settings.worker_store_threads, thread_name_prefix="store")
    )
    store = Store.for_settings(settings, pool_size=settings.worker_store_threads)
    store.create_schema()
    archive = None
    if central:  # the record-keeping check and the archive belong to the central worker
        from app.archive import start_archive

        archive = await start_archive(client, store, settings)
    workers = build_worker(client, settings, store, sites=sites, central=central)
    freeze_startup_heap()
    log.info(
        "worker polling %s on %s; data directory %s (store %s)",
        ", ".join(workers.task_queues),
        settings.temporal_address,
        settings.data_dir.resolve(),
        settings.masked_database_url,
    )
    if archive is None:
        await workers.run()
        return
    async with asyncio.TaskGroup() as tg:
        tg.create_task(workers.run())
        tg.create_task(archive.run(settings.archive_interval_s))


def main(sites: Sequence[str] | None = None, *, central: bool = True) -> None:
    configure_logging("INFO")
    run_service(run(Settings(), sites=sites, central=central))


if __name__ == "__main__":
    try:
        main()
    except ContinuityError as e:
        # One line an operator can act on (as `continuity worker` prints), not a traceback.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
