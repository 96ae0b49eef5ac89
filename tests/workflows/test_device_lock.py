"""Two incidents touching one device never have their changes on it interleave."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from continuity.messages import ChangeDecisionInput, PlaybookRunInput, StandDownInput
from continuity.models import (
    ChangeRecord,
    ChangeState,
    Decision,
    Incident,
    IncidentKind,
    TimelineEntry,
)
from continuity.stack import Stack
from playbooks import get_playbook
from tests.conftest import TEST_TIMINGS, wait_until
from workflows import PlaybookWorkflow


async def _declare(stack: Stack, area: str) -> str:
    spec = get_playbook("kon-tum-2a")
    incident = Incident(
        id=f"INC-lock-{uuid.uuid4().hex[:8]}",
        kind=IncidentKind.RIOT,
        area=area,
        declared_by="do-nguyen-van-an",
        declared_at=datetime.now(UTC),
    )
    await stack.client.start_workflow(
        PlaybookWorkflow.run,
        PlaybookRunInput(
            incident=incident,
            playbook=spec,
            playbook_sha256=spec.sha256(),
            inventory=stack.store.inventory(),
            timings=TEST_TIMINGS,
        ),
        id=incident.id,
        task_queue=stack.settings.task_queue,
    )
    return incident.id


def _span(rec: ChangeRecord, timeline: list[TimelineEntry]) -> tuple[datetime, datetime]:
    """From the moment the change started applying to its final state."""
    events = [e for e in timeline if e.event == rec.change_id]
    applying = next(e.at for e in events if e.detail.startswith("applying"))
    return applying, events[-1].at


async def test_two_incidents_same_device_changes_do_not_interleave(stack):
    first, second = await asyncio.gather(_declare(stack, "dak-to"), _declare(stack, "dak-to"))
    operator = stack.store.inventory().operators[0].id
    handles = [stack.client.get_workflow_handle(i) for i in (first, second)]
    decided: set[str] = set()

    async def confirm_pending_until_both_active() -> bool:
        active = 0
        for h in handles:
            st = await h.query(PlaybookWorkflow.status)
            for rec in st.changes:
                if rec.state is ChangeState.AWAITING_CONFIRMATION and rec.change_id not in decided:
                    decided.add(rec.change_id)
                    # Hold the first change a moment so an interleaving would show.
                    await asyncio.sleep(0.5)
                    await h.execute_update(
                        PlaybookWorkflow.decide_change,
                        ChangeDecisionInput(
                            change_id=rec.change_id, decision=Decision.CONFIRM, operator_id=operator
                        ),
                    )
            active += st.phase == "active"
        return active == 2

    await wait_until(
        confirm_pending_until_both_active,
        timeout_s=120,
        interval_s=0.3,
        what="both incidents active",
    )
    records = []
    timeline: list[TimelineEntry] = []
    for h in handles:
        st = await h.query(PlaybookWorkflow.status)
        records += [r for r in st.changes if r.device == "dt-agg-01"]
        timeline += st.timeline
    assert len({r.change_id.split("-dt-agg-01")[0] for r in records}) == 2  # both incidents
    assert all(r.state is ChangeState.CONFIRMED for r in records)
    spans = sorted(_span(r, timeline) for r in records)
    for (_, earlier_end), (later_start, _) in zip(spans, spans[1:], strict=False):
        assert earlier_end <= later_start, "a change began before another one finished"
    for h in handles:
        await h.signal(PlaybookWorkflow.stand_down, StandDownInput(by="test"))
        await h.result()
