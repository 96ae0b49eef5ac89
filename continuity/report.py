"""Render an incident's status as a readable timeline (terminal, Markdown, and the 2c dossier)."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from continuity.models import CallAttempt, ChangeRecord, CircuitStatus, IncidentStatus


def _t(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else "-"


# Free text (descriptions, reasons, device output, names) goes into Markdown on one line, with
# every character that could start structure escaped: no forged rows, links, code or HTML (a
# "<!--" would hide the rest of the dossier when rendered).
_MARKDOWN_ESCAPES = str.maketrans(
    {c: "\\" + c for c in "\\`<>[]|"} | {"\n": " ", "\r": " ", "\t": " "}
)


def _cell(text: str) -> str:
    return text.translate(_MARKDOWN_ESCAPES)


# The terminal timeline: lines a NOC screen shows whole, times on the NOC's clock.
_WIDTH = 120
_NOC_ZONE = "Asia/Ho_Chi_Minh"
# Vietnam has kept UTC+7 all year since 1975: the fixed offset is right where no tz database is.
_NOC_FALLBACK = timezone(timedelta(hours=7), _NOC_ZONE)
_CLOCK = 16  # "07:17:58.123 +07"
_MAX_EVENT = 42  # a change id; longer events push their detail right rather than squeeze it


def _noc_zone() -> tzinfo:
    try:
        return ZoneInfo(_NOC_ZONE)
    except ZoneInfoNotFoundError:
        return _NOC_FALLBACK


def _offset(at: datetime) -> str:
    """The offset from UTC as "+07" (or "+05:30" for a zone off the whole hour)."""
    off = at.utcoffset() or timedelta()
    sign = "-" if off < timedelta() else "+"
    hours, minutes = divmod(abs(off) // timedelta(minutes=1), 60)
    return f"{sign}{hours:02d}" + (f":{minutes:02d}" if minutes else "")


def _clock(at: datetime, tz: tzinfo) -> str:
    local = at.astimezone(tz)
    return f"{local.strftime('%H:%M:%S.%f')[:-3]} {_offset(local)}"


def _when(at: datetime, tz: tzinfo) -> str:
    """Date and time on the NOC's clock, with UTC beside it for anyone outside the province."""
    local, utc = at.astimezone(tz), at.astimezone(UTC)
    return (
        f"{local.strftime('%Y-%m-%d %H:%M:%S')} {_offset(local)} "
        f"({utc.strftime('%Y-%m-%d %H:%M:%S')} UTC)"
    )


def _zone_name(tz: tzinfo, at: datetime) -> str:
    """ "Asia/Ho_Chi_Minh (UTC+7)": the zone's name and its offset on the incident's day."""
    local = at.astimezone(tz)
    name = getattr(tz, "key", None) or local.tzname() or "local time"
    return f"{name} (UTC{_offset(local).replace('+0', '+').replace('-0', '-')})"


def _wrap(text: str, *, indent: int, hang: int | None = None) -> list[str]:
    """One item as lines of at most _WIDTH columns; continuations start at column `hang`.

    Ids and addresses hold hyphens and dots: they break only where they would not fit at all.
    Newlines in free text (device output, reasons) become spaces: an item stays one item.
    """
    return textwrap.wrap(
        text,
        width=_WIDTH,
        initial_indent=" " * indent,
        subsequent_indent=" " * (indent + 2 if hang is None else hang),
        break_on_hyphens=False,
    ) or [""]


def _row(head: str, detail: str, *, column: int) -> list[str]:
    """`head` padded to `column`, then `detail` wrapped under that column."""
    first = head.ljust(column - 1) + " "
    lines = textwrap.wrap(
        detail,
        width=_WIDTH,
        initial_indent=first,
        subsequent_indent=" " * column,
        break_on_hyphens=False,
    )
    return lines or [head.rstrip()]


def _change_lines(rec: ChangeRecord) -> list[str]:
    lines = _wrap(
        f"{rec.change_id}  [{rec.state.value}]  {rec.direction.value}  "
        f"circuits: {', '.join(rec.circuits)}",
        indent=2,
        hang=6,
    )
    if rec.already_applied:
        lines.append("    (found in place on the device; nothing re-applied)")
    for cmd in rec.commands:
        lines += _wrap(f"> {cmd}", indent=4, hang=8)
    if rec.detail:
        lines += _wrap(rec.detail, indent=4, hang=6)
    if rec.decided_by:
        lines += _wrap(
            f"{rec.decision.value if rec.decision else 'decided'} by {rec.decided_by}"
            + (f": {rec.decision_reason}" if rec.decision_reason else ""),
            indent=4,
            hang=6,
        )
    if rec.error:
        kind = "retryable" if rec.retryable else "not retryable"
        lines += _wrap(f"error ({rec.error_type}, {kind}): {rec.error}", indent=4, hang=6)
    for t in rec.transcripts:
        lines += _wrap(
            f"transcript {t.step} #{t.attempt}: {t.id} sha256 {t.sha256[:16]}…", indent=4, hang=6
        )
    return lines


def _circuit_line(c: CircuitStatus) -> list[str]:
    parts = ", ".join(f"{d} {p.value}" for d, p in c.parts.items())
    held = f"; also held by {', '.join(c.held_with)}" if c.held_with else ""
    return _wrap(
        f"{c.circuit_id} (L{c.restoration_level}) {c.state.value}: {parts}{held}",
        indent=2,
        hang=6,
    )


def _call_summary(c: CallAttempt) -> str:
    """What became of one call attempt, in words; the Calls section gives the sids."""
    said = f"placed to {c.officer_name} ({c.officer_id}); result: {c.status}"
    if c.error:
        said += f", error {c.error}"
    if c.sms_sid:
        said += "; SMS fallback sent"
    return said


def render_text(status: IncidentStatus, *, tz: tzinfo | None = None) -> str:
    """The incident for a terminal: lines of at most 120 columns, times on the NOC's clock.

    `tz` defaults to the NOC's zone, Asia/Ho_Chi_Minh; the header gives the UTC equivalent.
    """
    tz = tz or _noc_zone()
    inc = status.incident
    out = [
        *_wrap(f"Incident {inc.id}: {inc.kind.value} in {inc.area}", indent=0),
        *_wrap(f"declared by {inc.declared_by} at {_when(inc.declared_at, tz)}", indent=2),
        *_wrap(f"description: {inc.description or '-'}", indent=2, hang=15),
        *_wrap(f"playbook {status.playbook} (sha256 {status.playbook_sha256[:16]}…)", indent=2),
        f"  phase: {status.phase.value}",
        f"  times in {_zone_name(tz, inc.declared_at)}",
        "",
        "Timeline:",
    ]
    # The duty calls' own record, placed in time among the incident's events: the timeline
    # only notes that phoning began and who acknowledged, not the calls that went unanswered.
    events = [(e.at, e.event, e.detail) for e in status.timeline]
    events += [
        (c.at, f"call #{n}", _call_summary(c))
        for n, c in enumerate(status.calls, start=1)
        if c.at is not None
    ]
    events.sort(key=lambda e: e[0])
    width = min(max((len(e[1]) for e in events), default=0), _MAX_EVENT)
    day: date | None = None
    for at, event, detail in events:
        local = at.astimezone(tz)
        if local.date() != day:
            day = local.date()
            out.append(f"  {day.isoformat()}")
        head = f"  {_clock(at, tz)}  {event.ljust(width)}"
        out += _row(head, detail, column=2 + _CLOCK + 2 + width + 2)
    out += ["", "Circuits:"]
    for circuit in status.circuits:
        out += _circuit_line(circuit)
    out += ["", "Device changes:"]
    for rec in status.changes:
        out += _change_lines(rec)
    out += ["", "Calls (every attempt, in the order placed):"]
    names = {c.officer_id: c.officer_name for c in status.calls}
    for n, c in enumerate(status.calls, start=1):
        placed = _clock(c.at, tz) if c.at else "-"
        lines = _wrap(
            f"#{n} {placed}  {c.officer_name} ({c.officer_id}): {c.status}"
            + ("" if c.acknowledged else ", not acknowledged"),
            indent=2,
            hang=6,
        )
        lines += _wrap(f"call sid {c.call_sid or '-'}", indent=6, hang=8)
        if c.sms_sid:
            lines += _wrap(f"SMS fallback sent, sid {c.sms_sid}", indent=6, hang=8)
        if c.error:
            lines += _wrap(f"error: {c.error}", indent=6, hang=8)
        out += lines
    if not status.calls:
        out.append("  no calls placed")
    ack = status.acknowledged_by
    out += _wrap(
        f"acknowledged by: {f'{names[ack]} ({ack})' if ack in names else ack or 'nobody'}",
        indent=2,
    )
    if status.review:
        out += ["", "For review:"]
        for r in status.review:
            out += _wrap(f"{_clock(r.at, tz)}  {r.kind} {r.subject}: {r.detail}", indent=2, hang=6)
    out += ["", *_wrap(f"Outcome: {status.outcome or status.phase.value}", indent=0, hang=9)]
    return "\n".join(out)


def render_markdown(status: IncidentStatus, *, form: str = "timeline") -> str:
    inc = status.incident
    title = (
        "Dossier for police and the Department of Information and Communications "
        "(06/2009/CT-UBND item 2c)"
        if form == "dossier_2c"
        else "Incident timeline"
    )
    md = [
        f"# {title}",
        "",
        f"- Incident: **{inc.id}** ({inc.kind.value}) in **{inc.area}**",
        f"- Declared by {inc.declared_by} at {_t(inc.declared_at)}",
        f"- Description: {_cell(inc.description) or '-'}",
        f"- Playbook: {status.playbook}, sha256 `{status.playbook_sha256}`",
        f"- Phase: {status.phase.value}",
    ]
    if status.stood_down_by or status.aborted_by:
        verb = "Aborted" if status.aborted_by else "Stood down"
        md.append(
            f"- {verb} by {status.aborted_by or status.stood_down_by}: "
            f"{_cell(status.end_reason) or '-'}"
        )
    md += [
        f"- Acknowledged by: {status.acknowledged_by or 'nobody'}",
        "",
        "## Circuits",
        "",
        "| circuit | level | state | rerouted | confirmed | restored | parts | also held by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in status.circuits:
        parts = ", ".join(f"{d}: {p.value}" for d, p in c.parts.items())
        md.append(
            f"| {c.circuit_id} | {c.restoration_level} | {c.state.value} | {_t(c.rerouted_at)} "
            f"| {_t(c.confirmed_at)} | {_t(c.restored_at)} | {parts} "
            f"| {', '.join(c.held_with) or '-'} |"
        )
    md += ["", "## Timeline", "", "| time (UTC) | event | detail |", "|---|---|---|"]
    for e in sorted(status.timeline, key=lambda e: e.at):
        md.append(f"| {e.at.isoformat()} | {_cell(e.event)} | {_cell(e.detail)} |")
    md += ["", "## Device changes", ""]
    for rec in status.changes:
        md.append(f"### {rec.change_id}: {rec.state.value}")
        md.append("")
        md.append(
            f"Device `{rec.device}`, {rec.direction.value}, wave {rec.wave}, "
            f"circuits {', '.join(rec.circuits)}."
        )
        if rec.commands:
            md += ["", "```", *rec.commands, "```"]
        if rec.detail:
            md.append(f"\n{_cell(rec.detail)}")
        if rec.decided_by:
            md.append(
                f"\nDecision: {rec.decision.value if rec.decision else '-'} by {rec.decided_by}"
                + (f": {_cell(rec.decision_reason)}" if rec.decision_reason else "")
            )
        if rec.error:
            md.append(f"\nError ({rec.error_type}): {_cell(rec.error)}")
        for t in rec.transcripts:
            md.append(f"- transcript `{t.id}` ({t.step} #{t.attempt}) sha256 `{t.sha256}`")
        md.append("")
    md += [
        "## Calls",
        "",
        "| officer | call | status | acknowledged | SMS |",
        "|---|---|---|---|---|",
    ]
    for call in status.calls:
        md.append(
            f"| {_cell(call.officer_name)} | {call.call_sid or '-'} | {_cell(call.status)} "
            f"| {'yes' if call.acknowledged else 'no'} | {call.sms_sid or '-'} |"
        )
    if status.review:
        md += ["", "## For review", ""]
        md += [f"- {r.kind} `{r.subject}`: {_cell(r.detail)}" for r in status.review]
    if status.closing_evidence:
        md += ["", "## Closing evidence (read-back of every touched device)", ""]
        md += [f"- `{t.id}` sha256 `{t.sha256}`" for t in status.closing_evidence]
    md += ["", f"**Outcome:** {_cell(status.outcome or status.phase.value)}", ""]
    return "\n".join(md)


def render_html(markdown: str, *, title: str) -> str:
    """A report's Markdown as a standalone HTML page. Raw HTML in the Markdown is escaped (free
    text was escaped already when the Markdown was written; this is the second fence)."""
    from html import escape

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!doctype html>\n<html lang="vi"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/console/console.css"></head>'
        f'<body class="report-page">\n{body}</body></html>\n'
    )


__all__ = ["render_html", "render_markdown", "render_text"]
