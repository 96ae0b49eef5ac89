"""How a long-running process (a worker, the embedded stack) runs its event loop.

uvloop where it is installed (the Linux servers continuity runs on): at 200 devices a worker's
loop carries hundreds of SSH sessions, and uvloop's C loop does that work for less CPU than
asyncio's own, which runs elsewhere. Short commands and tests keep asyncio's loop.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_service(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # not built for this platform
        return asyncio.run(main)
    return uvloop.run(main)


def freeze_startup_heap() -> None:
    """Once a long-running process has started: what its imports and set-up made lives as long
    as the process, so the collector stops scanning it. Every full collection walked it all:
    pauses of 135-145 ms in the API at 200 devices (bench/), each decision behind one waiting.
    Called by the entry points of processes that are a worker or the API alone (an embedded
    one would freeze its host's heap)."""
    gc.collect()
    gc.freeze()


__all__ = ["freeze_startup_heap", "run_service"]
