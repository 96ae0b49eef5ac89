"""Store activities: the circuit ledger's holds, device lock waits, and the reports at close."""

from __future__ import annotations

import asyncio
import time

from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities._errors import application_error, as_application_error
from activities._heartbeat import heartbeating
from continuity.attestation import attestation_problem
from continuity.errors import StorageError
from continuity.messages import (
    HoldInput,
    HoldResult,
    LockInput,
    ReleaseInput,
    ReportResult,
    ReportsInput,
    ReportsResult,
    WriteOffRecordInput,
)
from continuity.report import LANGUAGES, ReportContext, render_markdown, stored_form
from continuity.store import Store
from continuity.temporal import StatusReader, incident_input_of

# How often a change waiting for another incident's device lock asks again.
_LOCK_POLL_S = 0.5


class StoreActivities:
    def __init__(
        self, store: Store, client: Client | None = None, *, trusted: list[str] | None = None
    ) -> None:
        self._store = store
        self._client = client  # for the reports: the closing incident's status
        self._statuses = StatusReader()
        # The deployment's public keys (raw, base64): with any, an incident holds circuits
        # only on a declaration the API signed with one of them.
        self._trusted = trusted or []

    @activity.defn(name="hold_circuits")
    async def hold_circuits(self, inp: HoldInput) -> HoldResult:
        if self._trusted:
            why = attestation_problem(
                inp.declaration,
                self._trusted,
                action="declare",
                incident_id=inp.incident_id,
                subject=inp.declared_by,
                content=inp.declared,
            )
            if why:  # started around the API, or with a key of its own: no circuit, no device
                raise ApplicationError(
                    f"declaration refused by the worker: {why}",
                    type="Unattested",
                    non_retryable=True,
                )
        with as_application_error():
            others = await asyncio.to_thread(
                self._store.hold_circuits, inp.incident_id, inp.circuits
            )
        # Only the circuits someone else holds: the rest would be hundreds of empty lists.
        return HoldResult(others={c: i for c, i in others.items() if i})

    @activity.defn(name="release_circuits")
    async def release_circuits(self, inp: ReleaseInput) -> HoldResult:
        with as_application_error():
            others = await asyncio.to_thread(self._store.release_circuits, inp.incident_id)
        return HoldResult(others={c: i for c, i in others.items() if i})

    @activity.defn(name="await_device_lock")
    async def await_device_lock(self, inp: LockInput) -> None:
        """Wait, heartbeating and holding no SSH session, until the device is this incident's."""
        with as_application_error():
            while True:
                other, _ = await asyncio.to_thread(
                    self._store.lock_device,
                    device=inp.device,
                    holder=inp.holder,
                    lease_s=inp.lease_s,
                    now=time.time(),
                )
                if other is None:
                    return
                activity.heartbeat(f"{inp.device} held by {other}")
                await asyncio.sleep(_LOCK_POLL_S)

    @activity.defn(name="write_off_device")
    async def write_off_device(self, inp: WriteOffRecordInput) -> list[str]:
        """The ledger says what the incident now knows of a written-off device: nothing."""
        with as_application_error():
            return await asyncio.to_thread(
                self._store.write_off_device,
                incident_id=inp.incident_id,
                device=inp.device,
                detail=inp.detail,
            )

    @activity.defn(name="write_reports")
    async def write_reports(self, inp: ReportsInput) -> ReportsResult:
        """Render and store each report, in each language, from the incident's final status
        (it waits on this activity, so what the query returns is what it closes with) and its
        history's first event: what `audit report` renders from the history alone."""
        async with heartbeating("write_reports"):
            return await self._write_reports(inp)

    async def _write_reports(self, inp: ReportsInput) -> ReportsResult:
        if self._client is None:
            raise application_error(StorageError("write_reports needs a Temporal client"))
        handle = self._client.get_workflow_handle(inp.incident_id)
        try:
            context = ReportContext.of(await incident_input_of(handle))
            # Past Temporal's payload limit (about a thousand devices) it comes in pages.
            status = await self._statuses.read(handle)
        except (RPCError, WorkflowQueryFailedError) as e:
            raise application_error(StorageError(f"status of {inp.incident_id}: {e}")) from e
        out: list[ReportResult] = []
        with as_application_error():
            for form in inp.forms:
                for lang in LANGUAGES:
                    text = render_markdown(status, form=form, lang=lang, context=context)
                    name = stored_form(form, lang)
                    rid, digest = await asyncio.to_thread(
                        self._store.save_report, incident_id=inp.incident_id, form=name, text=text
                    )
                    out.append(ReportResult(report_id=rid, sha256=digest, form=name))
        return ReportsResult(reports=out)


__all__ = ["StoreActivities"]
