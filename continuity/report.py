"""Render an incident's status as a readable timeline (terminal, Markdown, and the 2c dossier)."""

from __future__ import annotations

from continuity.models import ChangeRecord, IncidentStatus


def _change_lines(rec: ChangeRecord) -> list[str]:
    lines = [f"  {rec.change_id}  [{rec.state.value}]  circuits: {', '.join(rec.circuits)}"]
    if rec.already_applied:
        lines.append("    (a retry found the change already on the device; nothing re-applied)")
    for cmd in rec.commands:
        lines.append(f"    > {cmd}")
    if rec.verification:
        lines.append(f"    verified: {rec.verification}")
    if rec.decided_by:
        lines.append(
            f"    {rec.decision.value if rec.decision else 'decided'} by {rec.decided_by}"
            + (f": {rec.decision_reason}" if rec.decision_reason else "")
        )
    if rec.error:
        kind = "retryable" if rec.retryable else "not retryable"
        lines.append(f"    error ({rec.error_type}, {kind}): {rec.error}")
    for t in rec.transcripts:
        lines.append(f"    transcript {t.step}: {t.id} sha256 {t.sha256[:16]}…")
    return lines


def render_text(status: IncidentStatus) -> str:
    inc = status.incident
    out = [
        f"Incident {inc.id}: {inc.kind.value} in {inc.area}",
        f"  declared by {inc.declared_by} at {inc.declared_at.isoformat()}: {inc.description}",
        f"  playbook {status.playbook} (sha256 {status.playbook_sha256[:16]}…)",
        f"  phase: {status.phase}",
        "",
        "Timeline:",
    ]
    for e in sorted(status.timeline, key=lambda e: e.at):
        out.append(f"  {e.at.strftime('%H:%M:%S.%f')[:-3]}  {e.event:<28} {e.detail}")
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
    out += ["", f"Outcome: {status.outcome or status.phase}"]
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
        f"- Declared by {inc.declared_by} at {inc.declared_at.isoformat()}",
        f"- Description: {inc.description or '-'}",
        f"- Playbook: {status.playbook}, sha256 `{status.playbook_sha256}`",
        f"- Phase: {status.phase}",
        "",
        "## Timeline",
        "",
        "| time (UTC) | event | detail |",
        "|---|---|---|",
    ]
    for e in sorted(status.timeline, key=lambda e: e.at):
        md.append(f"| {e.at.isoformat()} | {e.event} | {e.detail.replace('|', '/')} |")
    md += ["", "## Device changes", ""]
    for rec in status.changes:
        md.append(f"### {rec.change_id}: {rec.state.value}")
        md.append("")
        md.append(f"Device `{rec.device}`, wave {rec.wave}, circuits {', '.join(rec.circuits)}.")
        if rec.commands:
            md += ["", "```", *rec.commands, "```"]
        if rec.verification:
            md.append(f"\nVerification: {rec.verification}")
        if rec.decided_by:
            md.append(
                f"\nDecision: {rec.decision.value if rec.decision else '-'} by {rec.decided_by}"
            )
        if rec.error:
            md.append(f"\nError ({rec.error_type}): {rec.error}")
        for t in rec.transcripts:
            md.append(f"- transcript `{t.id}` ({t.step}) sha256 `{t.sha256}`")
        md.append("")
    md += ["## Calls", "", "| officer | call | status | SMS |", "|---|---|---|---|"]
    for c in status.calls:
        md.append(f"| {c.officer_name} | {c.call_sid or '-'} | {c.status} | {c.sms_sid or '-'} |")
    md += [
        "",
        f"Acknowledged by: {status.acknowledged_by or 'nobody'}",
        "",
        f"**Outcome:** {status.outcome or status.phase}",
        "",
    ]
    return "\n".join(md)


__all__ = ["render_markdown", "render_text"]
