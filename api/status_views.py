"""An incident's status as consoles read it: one Temporal query per incident per `fresh_s`,
however many screens poll, serialised once and answered by its ETag.

Every console polls `GET /incidents/{id}` every 1.5 s. At 200 devices that status is ~460 KB:
three screens open on one incident each asked the incident's workflow for it, and each answer
was decoded, re-validated and re-encoded on the API's event loop (bench/, BENCH_CONTINUITY_
CONSOLES=3: reads p50 1.8 s, and the decisions waiting behind them missed their p99). A read
that finds a fresh rendering, or one under way, shares it. An order the API forwards (a
decision, a stand-down) forgets the incident's rendering, so the next read is new.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

_KEPT = 256  # incidents whose last rendering is kept; the oldest go first


@dataclass
class _Rendering:
    started: float  # loop time the read began: what it shows is at least this new
    task: asyncio.Task[tuple[bytes, str]] = field(repr=False)


class StatusViews:
    def __init__(self, fresh_s: float) -> None:
        self.fresh_s = fresh_s
        self._views: dict[str, _Rendering] = {}
        self.rendered = 0  # reads that asked Temporal
        self.shared = 0  # reads answered by another read's rendering

    def forget(self, incident_id: str) -> None:
        """Something was sent to the incident: the next read asks it again."""
        self._views.pop(incident_id, None)

    async def read(
        self, incident_id: str, render: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, str]:
        """The body and its ETag: shared while fresh or under way, else `render`ed now.

        The rendering is a task of its own: a caller that goes away does not cancel it for
        the others. A failed one is not kept: its waiters get its error, the next read tries
        again."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        view = self._views.get(incident_id)
        if view is not None and (not view.task.done() or now - view.started < self.fresh_s):
            self.shared += 1
            return await asyncio.shield(view.task)
        self.rendered += 1
        task = loop.create_task(self._render(render))
        self._views[incident_id] = view = _Rendering(now, task)
        task.add_done_callback(lambda t: self._done(incident_id, view))
        for stale in list(self._views)[: max(0, len(self._views) - _KEPT)]:
            del self._views[stale]
        return await asyncio.shield(task)

    @staticmethod
    async def _render(render: Callable[[], Awaitable[bytes]]) -> tuple[bytes, str]:
        body = await render()
        return body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'

    def _done(self, incident_id: str, view: _Rendering) -> None:
        """A rendering that ended without an answer is not kept (its error is retrieved here,
        whoever awaited it)."""
        task = view.task
        if (task.cancelled() or task.exception() is not None) and self._views.get(
            incident_id
        ) is view:
            del self._views[incident_id]


__all__ = ["StatusViews"]
