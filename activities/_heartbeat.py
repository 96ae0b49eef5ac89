"""An activity's heartbeat while it works: a worker that dies is noticed in one heartbeat
timeout, not in the activity's whole start-to-close timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(what: str) -> AsyncIterator[None]:
    """Beat every third of the heartbeat timeout (5 s without one) until the block ends."""
    info = activity.info()
    interval = (
        max(0.2, info.heartbeat_timeout.total_seconds() / 3) if info.heartbeat_timeout else 5.0
    )

    async def beat() -> None:
        # Not at once: most steps end within one interval, and a beat at the start is one more
        # call to the server for each of them (600 at 200 devices) that says nothing new.
        while True:
            await asyncio.sleep(interval)
            activity.heartbeat(what)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
