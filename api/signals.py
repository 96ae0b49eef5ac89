"""The one way the API signals an incident: retried on overload, decisions carried in batches.

A decision takes effect because the store claimed it (api/routes/incidents.py); the signal
only tells the incident now rather than when the change's window closes. Temporal applies one
workflow's signals one at a time, each a history event, so 200 operators answering at once as
200 signals queue behind each other and fill the parent's history. The courier sends, per
incident, one signal with every decision that arrived while the previous one was in flight
(docs/incident-core.md §5). A caller may wait a bounded time for its signal; while Temporal
is slower than that wait, it is answered at once instead: waiting could not change the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError, NotFound, Unavailable
from continuity.messages import DecisionBatch, DecisionRefusedSignal, DecisionSignal
from workflows import IncidentWorkflow

log = logging.getLogger(__name__)

# Temporal answers these when it is busy or briefly away: worth a few quick tries.
_TRANSIENT = {RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE}
_SIGNAL_TRIES = 5
# Bounds one signal's payload (about 300 bytes a decision), well under Temporal's 2 MB.
MAX_BATCH = 200
# How long a slow signal says "Temporal is slower than the wait": a burst's decisions come
# seconds apart at most, and a decision after a quiet spell waits again.
_SLOW_REMEMBERED_S = 10.0


async def signal_incident(handle: WorkflowHandle, signal: Any, arg: BaseModel) -> None:
    """Signal with a few retries on overload; Unavailable (503, Retry-After) after them."""
    delay = 0.05
    for attempt in range(_SIGNAL_TRIES):
        try:
            await handle.signal(signal, arg)
            return
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"no incident {handle.id!r}") from None
            if e.status not in _TRANSIENT or attempt == _SIGNAL_TRIES - 1:
                raise Unavailable(f"workflow service: {e.message}") from None
        await asyncio.sleep(delay)
        delay *= 2


_Item = DecisionSignal | DecisionRefusedSignal
# What a sender resolves each waiter with: None once signalled, else the error to raise.
_Waiting = list[tuple[_Item, "asyncio.Future[ApiError | None]"]]


class DecisionCourier:
    """Per incident, a queue of claimed decisions and one sender that empties it in batches."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._queues: dict[str, _Waiting] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        # Per incident: how long its last signal took to be accepted and when that was, and
        # when the one on its way left (monotonic seconds), so a caller is not kept waiting for
        # what cannot come.
        self._last_took: dict[str, tuple[float, float]] = {}
        self._in_flight_since: dict[str, float] = {}

    async def send(self, incident_id: str, item: _Item, *, wait_s: float | None = None) -> bool:
        """True once the signal carrying `item` was accepted; raises NotFound/Unavailable.

        With `wait_s`, False when it was not accepted within that time, or at once while the
        incident's signals take longer than that (its last one did, or the one on its way
        already has): `item` stays in the queue and is sent all the same (a late error is then
        only logged).
        """
        done: asyncio.Future[ApiError | None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(incident_id, []).append((item, done))
        if incident_id not in self._senders:
            self._senders[incident_id] = asyncio.create_task(self._drain(incident_id))
        if wait_s is not None and self._slower_than(incident_id, wait_s):
            # `item` goes in the signal after the one on its way, and the last one took longer
            # than `wait_s`: waiting would end in the same False, only later.
            done.add_done_callback(_log_late_error)
            return False
        # Shielded: a client that hangs up (or stops waiting) does not take it out of the batch.
        try:
            error = await asyncio.wait_for(asyncio.shield(done), wait_s)
        except TimeoutError:
            done.add_done_callback(_log_late_error)
            return False
        if error is not None:
            raise error
        return True

    def _slower_than(self, incident_id: str, wait_s: float) -> bool:
        now = time.monotonic()
        took, at = self._last_took.get(incident_id, (0.0, 0.0))
        if took > wait_s and now - at < _SLOW_REMEMBERED_S:
            return True
        since = self._in_flight_since.get(incident_id)
        return since is not None and now - since > wait_s

    async def _drain(self, incident_id: str) -> None:
        handle = self._client.get_workflow_handle(incident_id)
        batch: _Waiting = []
        try:
            # No await between the emptiness check and leaving: send() cannot slip in between.
            while queue := self._queues.get(incident_id):
                batch, self._queues[incident_id] = queue[:MAX_BATCH], queue[MAX_BATCH:]
                signal = DecisionBatch(
                    decisions=[i for i, _ in batch if isinstance(i, DecisionSignal)],
                    refusals=[i for i, _ in batch if isinstance(i, DecisionRefusedSignal)],
                )
                error: ApiError | None = None
                started = self._in_flight_since[incident_id] = time.monotonic()
                try:
                    await signal_incident(handle, IncidentWorkflow.decisions, signal)
                except ApiError as e:
                    error = e
                ended = time.monotonic()
                self._last_took[incident_id] = (ended - started, ended)
                del self._in_flight_since[incident_id]
                _settle(batch, error)
        finally:
            # Only when the sender itself fails (or the app stops): nobody waits forever.
            left = batch + self._queues.pop(incident_id, [])
            _settle(left, Unavailable("the decision's signal was not sent; the claim stands"))
            self._in_flight_since.pop(incident_id, None)
            del self._senders[incident_id]


def _log_late_error(done: asyncio.Future[ApiError | None]) -> None:
    error = done.result()
    if error is not None:
        log.warning("decision signal not sent (the claim stands): %s", error.message)


def _settle(
    batch: list[tuple[_Item, asyncio.Future[ApiError | None]]], error: ApiError | None
) -> None:
    # The outcome is the result, not an exception: a waiter that hung up leaves no warning.
    for _, done in batch:
        if not done.done():
            done.set_result(error)


__all__ = ["MAX_BATCH", "DecisionCourier", "signal_incident"]
