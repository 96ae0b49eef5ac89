"""Store activities: reports and records written by workflows."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from continuity.errors import ContinuityError
from continuity.messages import ReportInput, ReportResult
from continuity.models import IncidentStatus
from continuity.report import render_markdown
from continuity.store import Store


class StoreActivities:
    def __init__(self, store: Store) -> None:
        self._store = store

    @activity.defn(name="write_report")
    async def write_report(self, inp: ReportInput) -> ReportResult:
        status = IncidentStatus.model_validate_json(inp.status_json)
        text = render_markdown(status, form=inp.form)
        try:
            rid, digest = await asyncio.to_thread(
                self._store.save_report, incident_id=inp.incident_id, form=inp.form, text=text
            )
        except ContinuityError as e:
            raise ApplicationError(str(e), type=e.type, non_retryable=not e.retryable) from e
        return ReportResult(report_id=rid, sha256=digest)
