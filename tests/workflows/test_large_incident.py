"""An incident whose status is past Temporal's payload limit (about a thousand devices at the
default 2 MB): the console still reads it whole, in pages; ending orders go through; the reports
at close are the ones the history renders offline.

A Temporal dev server of its own, with `limit.blobSize.error` just above the declaration's
size, makes the whole status of a six-device incident too large for one query, as the server
refuses it at a thousand devices: the same error, from the same place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import WorkflowQueryFailedError

from app.stack import Stack
from continuity.incidents import prepare_incident
from continuity.messages import STATUS_LISTS, IncidentResult, StatusPage, StatusPageRequest
from continuity.models import IncidentKind, IncidentPhase, Inventory, Role
from continuity.report import form_and_language
from continuity.temporal import data_converter
from playbooks import DEFAULT_PLAYBOOK, get_playbook
from tests.conftest import LAB_TIME_SCALE, TEST_TIMINGS, start_temporal_env, wait_until
from workflows.history_facts import history_facts

AREA = "kon-tum"  # the lab's whole province: six devices, sixteen circuits


def _declaration_bytes(inventory_file: Path) -> int:
    """The declaration's payload as Temporal stores it: the limit must let it through."""
    inp = prepare_incident(
        spec=get_playbook(DEFAULT_PLAYBOOK),
        inventory=Inventory.model_validate_json(inventory_file.read_text()),
        incident_id="INC-20261204-000000-0000",
        kind=IncidentKind.SABOTAGE,
        area=AREA,
        description="fibre cut on the Kon Tum ring",
        declared_by="duty-officer",
        timings=TEST_TIMINGS,
    )
    [payload] = data_converter.payload_converter.to_payloads([inp])
    return len(payload.data)


@pytest_asyncio.fixture(scope="module")
async def tight(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """A stack on a Temporal server whose payload limit is a little above the declaration."""
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("tight"),
        timings=TEST_TIMINGS,
        lab_time_scale=LAB_TIME_SCALE,
    )
    limit = _declaration_bytes(stack.inventory_file) + 4096
    env = await start_temporal_env(**{"limit.blobSize.error": limit, "limit.blobSize.warn": limit})
    stack.temporal_client = env.client
    try:
        await stack.start()
        stack.blob_limit = limit  # type: ignore[attr-defined]
        yield stack
        await stack.stop()
    finally:
        await env.shutdown()


def _auth(stack: Stack, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.tokens[role]}"}


async def test_an_incident_past_the_payload_limit_is_shown_whole_and_closes(tight: Stack) -> None:
    async with httpx.AsyncClient(base_url=tight.api_url, timeout=30) as api:
        r = await api.post(
            "/incidents",
            headers=_auth(tight, Role.DUTY_OFFICER),
            json={"kind": "sabotage", "area": AREA, "description": "fibre cut on the ring"},
        )
        assert r.status_code == 201, r.text
        incident_id = r.json()["id"]
        handle = tight.client.get_workflow_handle(incident_id, result_type=IncidentResult)
        confirmed: set[str] = set()

        async def active() -> dict[str, Any] | None:
            # Every reading the console makes, through the whole run, answers 200.
            r = await api.get(f"/incidents/{incident_id}", headers=_auth(tight, Role.OPERATOR))
            assert r.status_code == 200, r.text
            status = r.json()["status"]
            for c in status["changes"]:
                if c["state"] == "awaiting_confirmation" and c["change_id"] not in confirmed:
                    d = await api.post(
                        f"/incidents/{incident_id}/changes/{c['change_id']}/decision",
                        headers=_auth(tight, Role.OPERATOR),
                        json={"decision": "confirm"},
                    )
                    assert d.status_code == 200, d.text
                    confirmed.add(c["change_id"])
            settled = status["changes"] and all(
                c["state"] == "confirmed" for c in status["changes"]
            )
            return status if status["phase"] == "active" and settled else None

        shown: dict[str, Any] = await wait_until(active, timeout_s=90, what="active")  # type: ignore[assignment]

        # The whole status is past the limit: one query cannot carry it.
        with pytest.raises(WorkflowQueryFailedError, match="size exceeds"):
            await handle.query("status")
        # What the console showed is every item of every list the incident holds.
        page = await handle.query(
            "status_page", StatusPageRequest(index=0, size=1), result_type=StatusPage
        )
        for name in STATUS_LISTS:
            assert len(shown.get(name, [])) == page.totals[name], name
        assert page.totals["changes"] == len(confirmed) > 1 and page.totals["circuits"] > 1
        ids = [c["change_id"] for c in shown["changes"]]
        assert sorted(ids) == sorted(r.change_id for r in tight.store.change_list(incident_id))
        assert len(set(ids)) == len(ids)
        # Told apart from the page boundaries: each timeline entry once, in order.
        times = [t["at"] for t in shown["timeline"]]
        assert times == sorted(times)

        # The on-demand report reads it the same way.
        r = await api.get(
            f"/incidents/{incident_id}/report",
            params={"form": "dossier_2c"},
            headers=_auth(tight, Role.AUDITOR),
        )
        assert r.status_code == 200 and "Interim" in r.text, r.text

        r = await api.post(
            f"/incidents/{incident_id}/stand-down",
            headers=_auth(tight, Role.DUTY_OFFICER),
            json={"reason": "cable repaired"},
        )
        assert r.status_code == 202, r.text
        assert (await handle.result()).phase is IncidentPhase.CLOSED

        r = await api.get(f"/incidents/{incident_id}", headers=_auth(tight, Role.AUDITOR))
        assert r.status_code == 200, r.text
        closed = r.json()["status"]
        assert closed["phase"] == "closed" and closed["outcome"]
        back = [c for c in closed["changes"] if c["direction"] == "restore"]
        assert back and all(c["state"] == "confirmed" for c in back)
        assert all(c["state"] == "on_primary" for c in closed["circuits"])

    # The reports written at close are the ones the history renders offline (`audit`).
    facts = await history_facts(await handle.fetch_history())
    stored = tight.store.reports(incident_id)
    assert {r.form for r in stored} >= {"timeline", "dossier_2c"}
    for report in stored:
        assert facts.matches(report.text, *form_and_language(report.form)), report.form
