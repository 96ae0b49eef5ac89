"""Render an incident's status as a readable timeline (terminal, Markdown, and the 2c dossier)."""

from __future__ import annotations

from datetime import datetime

from continuity.models import ChangeRecord, CircuitStatus, IncidentStatus


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


def _change_lines(rec: ChangeRecord) -> list[str]:
    lines = [
        f"  {rec.change_id}  [{rec.state.value}]  {rec.direction.value}  "
        f"circuits: {', '.join(rec.circuits)}"
    ]
    if rec.already_applied:
        lines.append("    (found in place on the device; nothing re-applied)")
    for cmd in rec.commands:
        lines.append(f"    > {cmd}")
    if rec.detail:
        lines.append(f"    {rec.detail}")
    if rec.decided_by:
        lines.append(
            f"    {rec.decision.value if rec.decision else 'decided'} by {rec.decided_by}"
            + (f": {rec.decision_reason}" if rec.decision_reason else "")
        )
    if rec.error:
        kind = "retryable" if rec.retryable else "not retryable"
        lines.append(f"    error ({rec.error_type}, {kind}): {rec.error}")
    for t in rec.transcripts:
        lines.append(f"    transcript {t.step} #{t.attempt}: {t.id} sha256 {t.sha256[:16]}…")
    return lines


def _circuit_line(c: CircuitStatus) -> str:
    parts = ", ".join(f"{d} {p.value}" for d, p in c.parts.items())
    held = f"; also held by {', '.join(c.held_with)}" if c.held_with else ""
    return f"  {c.circuit_id} (L{c.restoration_level}) {c.state.value}: {parts}{held}"


def render_text(status: IncidentStatus) -> str:
    inc = status.incident
    out = [
        f"Incident {inc.id}: {inc.kind.value} in {inc.area}",
        f"  declared by {inc.declared_by} at {_t(inc.declared_at)}: {inc.description}",
        f"  playbook {status.playbook} (sha256 {status.playbook_sha256[:16]}…)",
        f"  phase: {status.phase.value}",
        "",
        "Timeline:",
    ]
    for e in sorted(status.timeline, key=lambda e: e.at):
        detail = e.detail if len(e.detail) <= 140 else e.detail[:139] + "…"
        out.append(f"  {e.at.strftime('%H:%M:%S.%f')[:-3]}  {e.event:<28} {detail}")
    out += ["", "Circuits:", *(_circuit_line(c) for c in status.circuits)]
    out += ["", "Device changes:"]
    for rec in status.changes:
        out += _change_lines(rec)
    out += ["", "Calls:"]
    for c in status.calls:
        out.append(
            f"  {c.officer_name} ({c.officer_id}): call {c.call_sid or '-'} {c.status}"
            + (f", SMS {c.sms_sid}" if c.sms_sid else "")
            + (f", error {c.error}" if c.error else "")
        )
    out.append(f"  acknowledged by: {status.acknowledged_by or 'nobody'}")
    if status.review:
        out += ["", "For review:"]
        out += [f"  {r.kind} {r.subject}: {r.detail}" for r in status.review]
    out += ["", f"Outcome: {status.outcome or status.phase.value}"]
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


__all__ = ["render_markdown", "render_text"]
