"""Store activities against a real SQLite store: the device-lock wait outside SSH."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from continuity.messages import LockInput
from continuity.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'continuity.db'}")
    s.create_schema()
    yield s
    s.close()


async def test_await_device_lock_returns_once_other_incident_unlocks(store: Store) -> None:
    store.lock_device(device="r1", holder="inc-B", lease_s=60, now=time.time())
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *d: beats.append(d)
    waiting = asyncio.ensure_future(
        env.run(
            StoreActivities(store).await_device_lock,
            LockInput(device="r1", holder="inc-1", lease_s=60),
        )
    )
    await asyncio.sleep(0.7)
    assert not waiting.done() and beats  # waits, and says so

    store.unlock_device(device="r1", holder="inc-B")
    await asyncio.wait_for(waiting, 3)

    other, _ = store.lock_device(device="r1", holder="inc-B", lease_s=60, now=time.time())
    assert other == "inc-1"  # the waiter holds it now
