"""Two incidents touching one device never have their changes on it interleave."""

from __future__ import annotations

import asyncio
from datetime import datetime

from continuity.models import ChangeRecord, ChangeState, IncidentKind, TimelineEntry
from tests.workflows.helpers import decide_until_active, stand_down, start_playbook


def _span(rec: ChangeRecord, timeline: list[TimelineEntry]) -> tuple[datetime, datetime]:
    """From the moment the change started applying to its final state."""
    events = [e for e in timeline if e.event == rec.change_id]
    applying = next(e.at for e in events if e.detail.startswith("applying"))
    return applying, events[-1].at


async def test_two_incidents_same_device_changes_do_not_interleave(stack):
    handles = await asyncio.gather(
        start_playbook(stack, "dak-to", kind=IncidentKind.RIOT),
        start_playbook(stack, "dak-to", kind=IncidentKind.RIOT),
    )
    statuses = await asyncio.gather(*(decide_until_active(h, timeout_s=120) for h in handles))

    records = [r for st in statuses for r in st.changes if r.device == "dt-agg-01"]
    timeline = [e for st in statuses for e in st.timeline]
    assert len({r.change_id.split("-dt-agg-01")[0] for r in records}) == 2  # both incidents
    assert all(r.state is ChangeState.CONFIRMED for r in records)
    spans = sorted(_span(r, timeline) for r in records)
    for (_, earlier_end), (later_start, _) in zip(spans, spans[1:], strict=False):
        assert earlier_end <= later_start, "a change began before another one finished"
    for h in handles:
        await stand_down(h)
