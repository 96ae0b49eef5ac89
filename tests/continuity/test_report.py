"""Free text in a report is text: a description, a reason, a device's answer or a name can never
forge a row, a heading, a link or HTML, nor hide the rest of the dossier."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from markdown_it import MarkdownIt

from continuity.models import (
    CallAttempt,
    ChangeRecord,
    ChangeState,
    CircuitState,
    CircuitStatus,
    Decision,
    Incident,
    IncidentKind,
    IncidentPhase,
    IncidentStatus,
    TimelineEntry,
)
from continuity.report import render_markdown

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
# What a hostile or careless hand could type: an HTML comment that would hide everything after
# it, a script, a forged table row and heading, a javascript link, a code span.
FORGERY = (
    "cut <!-- the rest is hidden\n### chg-forged: confirmed\n| pmc-hq | 1 | on_backup | x |"
    " <script>alert(1)</script> [map](javascript:alert(1)) `rm -rf`"
)


def _status(text: str) -> IncidentStatus:
    return IncidentStatus(
        incident=Incident(
            id="INC-r-1",
            kind=IncidentKind.SABOTAGE,
            area="dak-ha",
            description=text,
            declared_by="do-1",
            declared_at=NOW,
        ),
        playbook="kon-tum-2a v1",
        playbook_sha256="0" * 64,
        phase=IncidentPhase.CLOSED,
        circuits=[CircuitStatus(circuit_id="pmc-dak-ha", state=CircuitState.ON_PRIMARY)],
        changes=[
            ChangeRecord(
                change_id="chg-1",
                device="dh-agg-01",
                wave=1,
                circuits=["pmc-dak-ha"],
                state=ChangeState.ROLLED_BACK,
                detail=text,  # a device's answer, quoted
                decided_by="op-1",
                decision=Decision.REJECT,
                decision_reason=text,
            )
        ],
        calls=[CallAttempt(officer_id="do-1", officer_name="Y <b>Bloc</b>", at=NOW)],
        stood_down_by="do-1",
        end_reason=text,
        timeline=[TimelineEntry(at=NOW, event="decision", detail=text)],
        outcome=text,
    )


@pytest.mark.parametrize("form", ["timeline", "dossier_2c"])
def test_injected_markdown_and_html_render_as_text_only(form: str):
    html = (
        MarkdownIt("commonmark")
        .enable("table")
        .render(render_markdown(_status(FORGERY), form=form))
    )
    assert "<script" not in html and "<!--" not in html and "<b>" not in html
    assert 'href="javascript' not in html and "<code>rm -rf</code>" not in html
    assert html.count("<h3>") == 1  # chg-1 only; the forged heading stayed on its line
    assert "chg-forged: confirmed" in html  # still there, as text
    assert "&lt;script&gt;" in html and "&lt;!-- the rest is hidden" in html
    # The forged "| pmc-hq | 1 | on_backup |" stays inside its own cell: no row of its own.
    assert not [r for r in html.split("<tr>") if r.lstrip().startswith("<td>pmc-hq</td>")]
    assert "Outcome" in html  # nothing after the description was hidden


def test_plain_vietnamese_text_unchanged():
    md = render_markdown(_status("Cáp quang bị cắt tại Ngọc Hồi, km 12"), form="dossier_2c")
    assert "Description: Cáp quang bị cắt tại Ngọc Hồi, km 12" in md


def test_html_form_of_a_forged_report_holds_no_markup_of_its_author():
    from continuity.report import render_html

    page = render_html(render_markdown(_status(FORGERY), form="dossier_2c"), title="INC <x>")
    assert page.startswith("<!doctype html>") and "<title>INC &lt;x&gt;</title>" in page
    assert "<script" not in page and "<!--" not in page and 'href="javascript' not in page
    assert "<table>" in page and page.count("<h3>") == 1
    # Even Markdown written by someone else with raw HTML in it is escaped, not passed through.
    assert "<b>" not in render_html("# t\n\n<b>bold</b> <!-- x -->", title="t")
