"""The terminal timeline: lines a NOC screen shows whole, on the NOC's clock, every call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from continuity.models import (
    CallAttempt,
    ChangeRecord,
    ChangeState,
    CircuitState,
    CircuitStatus,
    Incident,
    IncidentKind,
    IncidentPhase,
    IncidentStatus,
    TimelineEntry,
    TranscriptRef,
)
from continuity.report import render_text

# 16:59:30 UTC is 23:59:30 in Kon Tum: two minutes later it is tomorrow there.
AT = datetime(2026, 12, 1, 16, 59, 30, tzinfo=UTC)
CHANGE = "chg-INC-20261201-235930-ab12-kt-core-01-w1"
LONG = " ".join(
    f"pmc-{n}: primary 10.255.1.1 absent, backup 10.254.1.1 up;" for n in ("hq", "field", "ppc")
)


def _status() -> IncidentStatus:
    return IncidentStatus(
        incident=Incident(
            id="INC-20261201-235930-ab12",
            kind=IncidentKind.SABOTAGE,
            area="thanh-pho-kon-tum",
            description="Fibre route Kon Tum - Pleiku cut at two points near Ya Chim. " * 4,
            declared_by="do-an",
            declared_at=AT,
        ),
        playbook="kon-tum-2a v1",
        playbook_sha256="d8004d2466df67e2" + "0" * 48,
        phase=IncidentPhase.CLOSED,
        circuits=[CircuitStatus(circuit_id="pmc-hq", state=CircuitState.ON_PRIMARY)],
        changes=[
            ChangeRecord(
                change_id=CHANGE,
                device="kt-core-01",
                wave=1,
                circuits=["pmc-hq", "pmc-field", "ppc-office"],
                state=ChangeState.CONFIRMED,
                commands=["ip route 10.62.1.0 255.255.255.0 10.254.1.1", "write memory"],
                transcripts=[
                    TranscriptRef(id="tr-1", sha256="6af649bc59a2a6f2" + "f" * 48, step="apply")
                ],
            )
        ],
        calls=[
            CallAttempt(
                officer_id="do-an",
                officer_name="Nguyễn Văn An",
                call_sid="CA" + "a" * 32,
                status="no-answer",
                sms_sid="SM" + "5" * 32,
                at=AT + timedelta(seconds=1),
            ),
            CallAttempt(
                officer_id="do-binh",
                officer_name="Trần Thị Bình",
                call_sid="CA" + "b" * 32,
                status="acknowledged",
                acknowledged=True,
                at=AT + timedelta(seconds=20),
            ),
        ],
        acknowledged_by="do-binh",
        timeline=[
            TimelineEntry(at=AT, event="calls", detail="phoning 2 duty officers"),
            TimelineEntry(at=AT + timedelta(seconds=5), event=CHANGE, detail=LONG),
            TimelineEntry(at=AT + timedelta(minutes=2), event="closed", detail="9/9 on primary"),
        ],
        outcome="9/9 priority circuits on primary",
    )


def test_render_text_long_events_wrap_under_the_detail_column_within_120_columns():
    text = render_text(_status())
    lines = text.splitlines()

    assert max(len(line) for line in lines) <= 120
    (first,) = [i for i, line in enumerate(lines) if CHANGE in line and "pmc-hq:" in line]
    column = lines[first].index("pmc-hq:")
    rest = []
    for line in lines[first + 1 :]:
        if line[:column].strip() or not line.strip():
            break
        assert line[column] != " "  # under the detail column, not under the event
        rest.append(line[column:])
    assert rest  # it did wrap
    assert " ".join([lines[first][column:], *rest]) == LONG  # whole: no word or address split


def test_render_text_times_carry_the_noc_zone_and_the_header_gives_utc():
    text = render_text(_status())

    assert "times in Asia/Ho_Chi_Minh (UTC+7)" in text
    assert "2026-12-01 23:59:30 +07 (2026-12-01 16:59:30 UTC)" in text
    assert "  23:59:30.000 +07  calls" in text
    # Past local midnight the timeline says which day it is now.
    lines = text.splitlines()
    (closed,) = [i for i, line in enumerate(lines) if line.startswith("  00:01:30.000 +07  closed")]
    assert lines[closed - 1] == "  2026-12-02"


def test_render_text_shows_the_missed_call_its_sms_and_who_acknowledged():
    text = render_text(_status())

    assert "Nguyễn Văn An (do-an): no-answer, not acknowledged" in text
    assert "SMS fallback sent, sid SM" + "5" * 32 in text
    assert "call sid CA" + "a" * 32 in text
    assert "Trần Thị Bình (do-binh): acknowledged" in text
    assert "acknowledged by: Trần Thị Bình (do-binh)" in text
    # The timeline shows the calls in their place too, not only that phoning began.
    said = " ".join(text.split())
    assert "call #1 placed to Nguyễn Văn An (do-an); result: no-answer; SMS fallback sent" in said


def test_render_text_keeps_commands_transcripts_and_outcome():
    text = render_text(_status())

    assert "    > ip route 10.62.1.0 255.255.255.0 10.254.1.1" in text
    assert "    > write memory" in text
    assert "transcript apply #1: tr-1 sha256 6af649bc59a2a6f2…" in text
    assert text.endswith("Outcome: 9/9 priority circuits on primary")


def test_render_text_in_another_zone_says_so():
    text = render_text(_status(), tz=UTC)

    assert "times in UTC (UTC+0)" in text
    assert "  16:59:30.000 +00  calls" in text
