"""Device activities run on their site's task queue: a worker per site touches only its site."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from app.stack import Stack
from continuity.checks import Check, workers_check
from continuity.models import ChangeState
from tests.workflows.helpers import (
    decide_until_active,
    on_path,
    stand_down,
    start_incident,
    two_waves,
)
from worker import build_worker


async def test_two_site_workers_each_touch_only_their_sites_devices(stack: Stack):
    base = f"sites-{uuid.uuid4().hex[:6]}"
    settings = stack.settings.model_copy(update={"task_queue": base})
    central = build_worker(stack.client, settings, stack.store, sites=[])  # workflows only
    north = build_worker(stack.client, settings, stack.store, sites=["ngoc-hoi"], central=False)
    south = build_worker(stack.client, settings, stack.store, sites=["dak-ha"], central=False)
    assert central.task_queues == [base]
    assert north.task_queues == [f"{base}-site-ngoc-hoi"]
    spec = two_waves(first=[1, 2, 3, 4, 5])
    async with central, north, south:
        a = await start_incident(stack, "ngoc-hoi", spec=spec, task_queue=base)
        b = await start_incident(stack, "dak-ha", spec=spec, task_queue=base)
        for handle in (a, b):
            st = await decide_until_active(stack, handle)
            assert all(c.state is ChangeState.CONFIRMED for c in st.changes)
        assert on_path(stack, "ngoc-hoi", "backup") and on_path(stack, "dak-ha", "backup")
        await stand_down(a)
        await stand_down(b)
    assert north.network is not None and south.network is not None
    assert north.network.touched == {"nh-agg-01"}
    assert south.network.touched == {"dh-agg-01"}
    assert on_path(stack, "ngoc-hoi", "primary") and on_path(stack, "dak-ha", "primary")


async def test_the_workers_check_names_each_queue_no_worker_polls(stack: Stack):
    base = f"polled-{uuid.uuid4().hex[:6]}"
    settings = stack.settings.model_copy(update={"task_queue": base})
    inv = stack.store.inventory()
    two_sites = inv.model_copy(
        update={"devices": [d for d in inv.devices if d.site in ("ngoc-hoi", "dak-ha")]}
    )
    n_south = sum(d.site == "dak-ha" for d in two_sites.devices)

    async def check_until(done: Callable[[Check], bool]) -> Check:
        # Temporal lists a poller once its first poll arrives: a moment after the start.
        for _ in range(100):  # 20 s at most
            got = await workers_check(stack.client, settings, two_sites)
            if done(got):
                return got
            await asyncio.sleep(0.2)
        return got

    nobody = await workers_check(stack.client, settings, two_sites)
    assert nobody.verdict == "FAIL", nobody
    assert f"no worker polls {base}: a declared incident would not start" in nobody.detail
    assert f"no worker polls {base}-site-ngoc-hoi" in nobody.detail
    central = build_worker(stack.client, settings, stack.store, sites=[])
    north = build_worker(stack.client, settings, stack.store, sites=["ngoc-hoi"], central=False)
    south = build_worker(stack.client, settings, stack.store, sites=["dak-ha"], central=False)
    async with central, north:
        half = await check_until(
            lambda c: "ngoc-hoi" not in c.detail and base + ":" not in c.detail
        )
        assert half.verdict == "FAIL", half
        assert half.detail == (
            f"no worker polls {base}-site-dak-ha: changes on the {n_south} devices of site "
            "dak-ha would wait in `applying` (`continuity worker --sites dak-ha`)"
        )
        async with south:
            served = await check_until(lambda c: c.verdict == "ok")
    assert served.verdict == "ok", served
    assert served.detail == f"{base}: 1 polling; device sites: dak-ha 1, ngoc-hoi 1"
