"""An incident's status as consoles read it: one Temporal query per incident per `fresh_s`,
however many screens poll, serialised once and answered by its ETag.

Every console polls `GET /incidents/{id}` every 1.5 s. At 200 devices that status is ~460 KB:
three screens open on one incident each asked the incident's workflow for it, and each answer
was decoded, re-validated and re-encoded on the API's event loop (bench/, BENCH_CONTINUITY_
CONSOLES=3: reads p50 1.8 s, and the decisions waiting behind them missed their p99). A read
that finds a fresh rendering, or one under way, shares it. An order the API forwards (a
decision, a stand-down) forgets the incident's rendering, so the next read is new.

A rendering that took longer than EXPENSIVE_S (a status read in pages, past a thousand
devices: 2.6 s p50 with one console open, bench/) is kept for at least as long again, orders
or not: a console on a large incident then costs the incident's worker and the API at most
half their time, not all of it, while its operators' decisions keep arriving.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from continuity.temporal import StatusReader

_KEPT = 256  # incidents whose last rendering is kept; the oldest go first
EXPENSIVE_S = 0.25


@dataclass
class _Rendering:
    started: float  # loop time the read began: what it shows is at least this new
    task: asyncio.Task[tuple[bytes, str]] = field(repr=False)
    took: float = 0.0  # seconds this rendering took, once done; until then the one before's
    forgotten: bool = False  # an order came after it began

    def fresh(self, now: float, fresh_s: float) -> bool:
        cheap = self.took < EXPENSIVE_S
        if not self.task.done():
            return not (self.forgotten and cheap)
        if cheap:
            return not self.forgotten and now - self.started < fresh_s
        kept = self.started + 2 * self.took  # as long again as it took, whatever came in
        return now < (kept if self.forgotten else max(kept, self.started + fresh_s))


class StatusViews:
    def __init__(self, fresh_s: float) -> None:
        self.fresh_s = fresh_s
        self.reader = StatusReader()  # the status at any size, in pages past Temporal's limit
        self._views: dict[str, _Rendering] = {}
        self.rendered = 0  # reads that asked Temporal
        self.shared = 0  # reads answered by another read's rendering

    def forget(self, incident_id: str) -> None:
        """Something was sent to the incident: the next read asks it again (once an
        expensive rendering has been kept as long as it took)."""
        if (view := self._views.get(incident_id)) is not None:
            view.forgotten = True

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
        if view is not None and view.fresh(now, self.fresh_s):
            self.shared += 1
            return await asyncio.shield(view.task)
        self.rendered += 1
        task = loop.create_task(self._render(render))
        took = view.took if view is not None else 0.0
        self._views[incident_id] = view = _Rendering(now, task, took)
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
        view.took = asyncio.get_running_loop().time() - view.started
        if (task.cancelled() or task.exception() is not None) and self._views.get(
            incident_id
        ) is view:
            del self._views[incident_id]


__all__ = ["StatusViews"]
