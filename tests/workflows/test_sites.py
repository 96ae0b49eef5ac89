"""Device activities run on their site's task queue: a worker per site touches only its site."""

from __future__ import annotations

import uuid

from app.stack import Stack
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
