"""Operators' decisions claimed in the store in batches: one thread hop and, on PostgreSQL,
one statement for every decision that arrived while the previous batch was in the store.

A claim is what makes a decision's 2xx take effect (docs/incident-core.md §5). With 200 changes
pending, operators' decisions arrive dozens at a time: each claimed alone waited for one of the
API's store threads and then for a CPU for its statement (bench/, 200 devices: claim p99
244 ms, of which 157 ms in the store). Each claim is still answered exactly as it would be
alone (Store.claim_decisions), in arrival order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from continuity.errors import DecisionRefused, StorageError
from continuity.store import DecisionClaim, Store

MAX_BATCH = 200  # as many as one decisions signal carries (api/signals.py)


@dataclass(frozen=True)
class Claimed:
    at: datetime  # when the decision was taken
    store_s: float  # seconds its batch spent in the store thread
    batch: int  # how many claims went with it


# A claim is prepared (signed) in the store thread, beside the statement: signing is CPU
# the event loop need not spend.
_Waiting = list[tuple[Callable[[], DecisionClaim], "asyncio.Future[Claimed]"]]


class DecisionClaims:
    """One queue of claims and one claimer that empties it in batches."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: _Waiting = []
        self._claimer: asyncio.Task[None] | None = None

    async def claim(self, prepare: Callable[[], DecisionClaim]) -> Claimed:
        """Claimed, or raises the DecisionRefused (or StorageError) of this claim.

        Shielded: a client that hangs up does not take its claim out of the batch (it may
        already be in the store)."""
        done: asyncio.Future[Claimed] = asyncio.get_running_loop().create_future()
        self._waiting.append((prepare, done))
        if self._claimer is None:
            self._claimer = asyncio.create_task(self._drain())
        return await asyncio.shield(done)

    async def _drain(self) -> None:
        batch: _Waiting = []
        try:
            # No await between the emptiness check and leaving: claim() cannot slip in between.
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    outcomes = await asyncio.to_thread(self._claim_all, [p for p, _ in batch])
                except Exception as e:  # the store itself failed: every claim of the batch
                    outcomes = [e] * len(batch)
                for (_, done), outcome in zip(batch, outcomes, strict=True):
                    if done.done():
                        continue
                    if isinstance(outcome, BaseException):
                        done.set_exception(outcome)
                        done.exception()  # retrieved here too: a waiter may have hung up
                    else:
                        done.set_result(outcome)
                batch = []
        finally:
            # Only when the claimer itself fails (or the app stops): nobody waits forever.
            for _, done in batch + self._waiting:
                if not done.done():
                    done.set_exception(StorageError("the decision was not claimed: try again"))
                    done.exception()
            self._waiting = []
            self._claimer = None

    def _claim_all(
        self, prepares: list[Callable[[], DecisionClaim]]
    ) -> list[Claimed | BaseException]:
        started = time.perf_counter()
        prepared: list[DecisionClaim | BaseException] = []
        for prepare in prepares:
            try:
                prepared.append(prepare())
            except Exception as e:  # noqa: BLE001 - that claim's own failure, answered to it
                prepared.append(e)
        claims = [c for c in prepared if isinstance(c, DecisionClaim)]
        answers = iter(self._store.claim_decisions(claims))
        took = time.perf_counter() - started
        out: list[Claimed | BaseException] = []
        for c in prepared:
            if not isinstance(c, DecisionClaim):
                out.append(c)
                continue
            answer = next(answers)
            out.append(
                answer
                if isinstance(answer, DecisionRefused)
                else Claimed(at=answer, store_s=took, batch=len(claims))
            )
        return out


__all__ = ["MAX_BATCH", "Claimed", "DecisionClaims"]
