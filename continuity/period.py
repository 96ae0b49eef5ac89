"""The report upward: every incident of a period, from the archived bundles alone.

For the provincial Department of Information and Communications' periodic report to the
chairman (directive 06/2009/CT-UBND item 3): per incident its kind, area, when, the circuits
affected per priority class, the time to restore per restoration level (declared → every part
of the level's circuits verified on backup; the slowest circuit of the level), the operators'
confirmations, rejections, windows that closed unanswered and changes kept on timeout, the
calls placed and the time until a duty officer pressed 1. Read from the bundles' histories and
records (app/bundle.py), never from the live database: what it says, an auditor can verify.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from continuity.bundles import MANIFEST
from continuity.errors import ValidationFailed
from continuity.messages import IncidentInput
from continuity.report import CLASS_NAMES, restore_targets

_VERIFIED = {"awaiting_confirmation", "confirmed", "kept_on_timeout"}
_VN = timezone(timedelta(hours=7))  # the report is read in Vietnam: times in UTC+7


@dataclass
class IncidentFigures:
    incident_id: str
    kind: str
    area: str
    declared_at: datetime
    declared_by: str
    phase: str
    circuits_by_class: dict[str, int]
    restore_s_by_level: dict[int, float]  # level -> seconds until its slowest circuit was up
    not_restored: list[str]  # selected circuits never verified on backup
    confirmed: int = 0
    rejected: int = 0
    unanswered: int = 0  # windows that closed with no decision
    kept_on_timeout: int = 0
    calls: int = 0
    acknowledged_by: str | None = None
    ack_s: float | None = None
    key: str = ""  # the fingerprint of the key that signed its bundle
    breaches: list[int] = field(default_factory=list)  # levels whose target time was missed
    drill: bool = False


@dataclass
class PeriodReport:
    start: datetime
    end: datetime
    incidents: list[IncidentFigures] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # bundles that could not be read


def _payload(attrs: dict[str, Any], key: str) -> Any:
    payloads = attrs.get(key, {}).get("payloads", [])
    return json.loads(base64.b64decode(payloads[0]["data"])) if payloads else None


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def incident_figures(bundle: Path) -> IncidentFigures:
    """One incident's figures from its bundle's history and records."""
    manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    incident_id = manifest["incident_id"]
    history = json.loads((bundle / "histories" / f"{incident_id}.json").read_text("utf-8"))
    events = history["events"]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    inp = IncidentInput.model_validate(_payload(started, "input"))
    declared = inp.incident.declared_at
    circuits = {c.id: c for c in inp.inventory.circuits}

    selected: set[str] = set()
    up: dict[str, dict[str, datetime]] = {}  # circuit -> device -> verified on backup at
    scheduled: dict[str, dict[str, Any]] = {}
    phase = "running"
    for e in events:
        attrs = e.get("activityTaskScheduledEventAttributes")
        if attrs:
            inp_step = _payload(attrs, "input") or {}
            if attrs["activityType"]["name"] == "hold_circuits":
                selected.update(inp_step.get("circuits", []))
            scheduled[e["eventId"]] = inp_step
        done = e.get("activityTaskCompletedEventAttributes")
        if done:
            step = scheduled.get(done["scheduledEventId"], {})
            res = _payload(done, "result") or {}
            if step.get("direction") == "reroute" and res.get("state") in _VERIFIED:
                at = _time(e["eventTime"])
                for cid in step.get("circuits", []):
                    up.setdefault(cid, {}).setdefault(step["device"], at)
        end = e.get("workflowExecutionCompletedEventAttributes")
        if end:
            phase = (_payload(end, "result") or {}).get("phase", "closed")
        if e.get("workflowExecutionFailedEventAttributes"):
            phase = "failed"

    by_level: dict[int, float] = {}
    not_restored = []
    for cid in sorted(selected):
        c = circuits.get(cid)
        if c is None:
            continue
        parts = up.get(cid, {})
        if {p.device for p in c.paths} - set(parts):
            not_restored.append(cid)
            continue
        seconds = (max(parts.values()) - declared).total_seconds()
        by_level[c.restoration_level] = max(by_level.get(c.restoration_level, 0.0), seconds)

    targets = restore_targets(inp)
    late_levels = {circuits[c].restoration_level for c in not_restored if c in circuits}
    breaches = sorted(
        level
        for level, target in targets.items()
        if level in late_levels or by_level.get(level, 0.0) > target
    )
    changes = json.loads((bundle / "records" / "changes.json").read_text("utf-8"))
    reroutes = [c for c in changes if c["direction"] == "reroute"]
    calls = json.loads((bundle / "records" / "calls.json").read_text("utf-8"))
    ack_at, ack_by = None, None
    for call in calls:
        for ev in call.get("events", []):
            if ev.get("digits") == "1":
                at = _time(ev["at"])
                if ack_at is None or at < ack_at:
                    ack_at, ack_by = at, call["officer_id"]
    classes = Counter(circuits[c].priority_class.value for c in selected if c in circuits)
    return IncidentFigures(
        incident_id=incident_id,
        kind=inp.incident.kind.value,
        area=inp.incident.area,
        declared_at=declared,
        declared_by=inp.incident.declared_by,
        phase=phase,
        circuits_by_class=dict(classes),
        restore_s_by_level=dict(sorted(by_level.items())),
        not_restored=not_restored,
        confirmed=sum(1 for c in reroutes if c["decision"] == "confirm"),
        rejected=sum(1 for c in reroutes if c["decision"] == "reject"),
        unanswered=sum(1 for c in reroutes if c["closed_by"] == "timeout" and not c["decision"]),
        kept_on_timeout=sum(1 for c in reroutes if c["state"] == "kept_on_timeout"),
        calls=len(calls),
        acknowledged_by=ack_by,
        ack_s=(ack_at - declared).total_seconds() if ack_at else None,
        key=str(manifest.get("key", "")),
        breaches=breaches,
        drill=inp.incident.drill,
    )


def period_report(archive: Path, start: datetime, end: datetime) -> PeriodReport:
    """Every archived incident declared in [start, end), oldest first."""
    if not archive.is_dir():
        raise ValidationFailed(f"{archive}: no such archive directory")
    report = PeriodReport(start=start, end=end)
    for bundle in sorted(p for p in archive.iterdir() if (p / MANIFEST).is_file()):
        try:
            figures = incident_figures(bundle)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            report.skipped.append(f"{bundle.name}: {type(e).__name__}: {e}")
            continue
        if start <= figures.declared_at < end:
            report.incidents.append(figures)
    report.incidents.sort(key=lambda f: f.declared_at)
    return report


_TEXT = {
    "vi": {
        "title": "Báo cáo định kỳ sự cố thông tin liên lạc",
        "period": "Kỳ báo cáo",
        "count": "Số sự cố",
        "drill": "diễn tập",
        "keys": "Khóa ký các hồ sơ (kiểm tra bằng `continuity audit verify`)",
        "head": "| Sự cố | Loại | Địa bàn | Công bố lúc | Kênh theo loại "
        "| Thời gian khôi phục theo mức | Xác nhận / từ chối / hết hạn / giữ | Cuộc gọi "
        "| Xác nhận cuộc gọi | Không đạt chỉ tiêu thời gian |",
        "none": "không có",
        "by": "bởi",
        "not_restored": "chưa khôi phục",
        "skipped": "Hồ sơ không đọc được",
    },
    "en": {
        "title": "Periodic report of communications incidents",
        "period": "Period",
        "count": "Incidents",
        "drill": "drill",
        "keys": "Keys that signed the bundles (check with `continuity audit verify`)",
        "head": "| Incident | Kind | Area | Declared | Circuits by class "
        "| Time to restore by level | Confirmed / rejected / unanswered / kept | Calls "
        "| Acknowledged | Time targets missed |",
        "none": "none",
        "by": "by",
        "not_restored": "not restored",
        "skipped": "Bundles that could not be read",
    },
}


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_period(report: PeriodReport, lang: str = "vi") -> str:
    t, names = _TEXT[lang], CLASS_NAMES[lang]
    lines = [
        f"# {t['title']}",
        "",
        f"{t['period']}: {report.start.isoformat()} – {report.end.isoformat()}",
        f"{t['count']}: {len(report.incidents)}",
        f"{t['keys']}: "
        + (", ".join(f"`{k}`" for k in sorted({f.key for f in report.incidents if f.key})) or "-"),
        "",
        t["head"],
        "|" + "---|" * 10,
    ]
    for f in report.incidents:
        classes = ", ".join(
            f"{names.get(k, k)} {n}" for k, n in sorted(f.circuits_by_class.items())
        )
        levels = ", ".join(f"L{lv} {s:.0f} s" for lv, s in f.restore_s_by_level.items())
        if f.not_restored:
            levels += f"; {t['not_restored']}: {', '.join(f.not_restored)}"
        ack = f"{f.ack_s:.0f} s {t['by']} {f.acknowledged_by}" if f.ack_s is not None else t["none"]
        cells = [
            f.incident_id,
            f.kind + (f" ({t['drill']})" if f.drill else ""),
            f.area,
            f.declared_at.astimezone(_VN).isoformat(timespec="seconds"),
            classes or t["none"],
            levels or t["none"],
            f"{f.confirmed} / {f.rejected} / {f.unanswered} / {f.kept_on_timeout}",
            str(f.calls),
            ack,
            ", ".join(f"L{lv}" for lv in f.breaches) or t["none"],
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if report.skipped:
        lines += ["", f"{t['skipped']}:", *(f"- {_cell(s)}" for s in report.skipped)]
    return "\n".join(lines) + "\n"


__all__ = ["IncidentFigures", "PeriodReport", "incident_figures", "period_report", "render_period"]
