"""How a long-running process (a worker, the embedded stack) runs its event loop.

uvloop where it is installed (the Linux servers continuity runs on): at 200 devices a worker's
loop carries hundreds of SSH sessions, and uvloop's C loop does that work for less CPU than
asyncio's own, which runs elsewhere. Short commands and tests keep asyncio's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_service(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # not built for this platform
        return asyncio.run(main)
    return uvloop.run(main)


__all__ = ["run_service"]
