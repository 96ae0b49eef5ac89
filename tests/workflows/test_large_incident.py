"""An incident too large for one query (its status past Temporal's payload limit, about a
thousand devices): a stand-down still goes through, the API says why it cannot show the whole
status, and the reports are still written, read from the history by replaying it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowQueryFailedError
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from app.stack import Stack
from continuity.messages import ReportsInput
from continuity.models import IncidentPhase, Role
from continuity.report import stored_form
from tests.workflows.helpers import auth, decide_until_active, start_incident, two_waves

TOO_BIG = "Blob data size exceeds limit."


class _Oversized:
    """A handle whose status query fails as Temporal fails it for a status past the limit."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.id = handle.id

    async def query(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(name, "__name__", name) == "status":
            raise WorkflowQueryFailedError(TOO_BIG)
        return await self._handle.query(name, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class _Client:
    def __init__(self, client: Any) -> None:
        self._client = client

    def get_workflow_handle(self, workflow_id: str, **kw: Any) -> _Oversized:
        return _Oversized(self._client.get_workflow_handle(workflow_id, **kw))


async def test_reports_come_from_the_history_when_the_status_is_too_large(stack: Stack) -> None:
    handle = await start_incident(stack, "ngoc-hoi", spec=two_waves(first=[1, 2, 3]))
    await decide_until_active(stack, handle)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        r = await api.post(
            f"/incidents/{handle.id}/stand-down",
            headers=auth(stack, Role.DUTY_OFFICER),
            json={"reason": "cable repaired"},
        )
        assert r.status_code == 202, r.text  # the ending order reads only the phase
    assert (await handle.result()).phase is IncidentPhase.CLOSED
    stored = {r.form: r.text for r in stack.store.reports(handle.id)}

    acts = StoreActivities(stack.store, _Client(stack.client))  # type: ignore[arg-type]
    # In an activity's context, as the worker runs it (its heartbeat, once a third of the
    # heartbeat timeout has passed, says what it does; tests/workflows/test_worker_crash.py).
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    res = await env.run(acts.write_reports, ReportsInput(incident_id=handle.id, forms=["timeline"]))
    assert all(b == ("write_reports",) for b in beats)
    assert {r.form for r in res.reports} == {stored_form("timeline", "en"), "timeline.vi"}
    # The same text as the query gave at close: stored once (idempotent by its hash).
    assert {r.form: r.text for r in stack.store.reports(handle.id)} == stored


async def test_the_api_says_why_it_cannot_show_an_oversized_status(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from temporalio.client import WorkflowHandle

    handle = await start_incident(stack, "dak-to", spec=two_waves(first=[1, 2, 3, 4, 5]))
    await decide_until_active(stack, handle)
    real = WorkflowHandle.query

    async def oversized(self: Any, name: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(name, "__name__", name) == "status":
            raise WorkflowQueryFailedError(TOO_BIG)
        return await real(self, name, *args, **kwargs)

    monkeypatch.setattr(WorkflowHandle, "query", oversized)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        r = await api.get(f"/incidents/{handle.id}", headers=auth(stack, Role.AUDITOR))
        assert r.status_code == 503 and "larger than Temporal's payload limit" in r.text
        r = await api.post(
            f"/incidents/{handle.id}/stand-down",
            headers=auth(stack, Role.DUTY_OFFICER),
            json={"reason": "done"},
        )
        assert r.status_code == 202, r.text
    monkeypatch.undo()
    assert (await handle.result()).phase is IncidentPhase.CLOSED
