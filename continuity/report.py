"""Render an incident's status as a readable timeline (terminal, Markdown, and the 2c dossier)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from continuity.attestation import key_fingerprint
from continuity.messages import IncidentInput
from continuity.models import (
    Area,
    AreaKind,
    CableRoute,
    CableSegment,
    CallAttempt,
    ChangeRecord,
    Circuit,
    CircuitStatus,
    IncidentKind,
    IncidentStatus,
    PriorityClass,
)

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


# The stored reports' layout. An auditor's tool re-renders a report from the history and compares
# it with the stored copy only when the formats match (older copies are read, not compared).
# Any change to what render_markdown writes is a new format: bump it (tests/bundles holds a
# recorded bundle whose reports must keep verifying).
REPORT_FORMAT = 2
LANGUAGES = ("en", "vi")


_FORMAT_LINE = re.compile(r"^_(?:Report format|Mẫu báo cáo) (\d+),", re.MULTILINE)


def report_format(text: str) -> int:
    """The format a stored report was written in: 1 for those written before the line said."""
    m = _FORMAT_LINE.search(text[:600])
    return int(m.group(1)) if m else 1


def restore_targets(inp: IncidentInput) -> dict[int, float]:
    """Level -> target seconds to restore, as the incident ran with them (the deployment's,
    overridden by the playbook's)."""
    return dict(sorted({**inp.timings.restore_targets_s, **inp.playbook.restore_targets_s}.items()))


def stored_form(form: str, lang: str) -> str:
    """The store's name of a report: the form ("timeline", "dossier_2c") in English, with the
    language after a dot in any other ("dossier_2c.vi")."""
    return form if lang == "en" else f"{form}.{lang}"


def form_and_language(stored: str) -> tuple[str, str]:
    form, _, lang = stored.partition(".")
    return form, lang or "en"


@dataclass(frozen=True)
class ReportContext:
    """What the history's input adds to the status: the circuits as the inventory described
    them at declaration, the snapshot's hash, and the keys that attest the human actions."""

    circuits: Mapping[str, Circuit] = field(default_factory=dict)
    inventory_sha256: str = ""
    keys: tuple[str, ...] = ()  # fingerprints of the public keys the incident trusts
    cut: tuple[CableRoute, CableSegment] | None = None  # the cable segment declared cut
    targets: Mapping[int, float] = field(default_factory=dict)  # level -> seconds to restore
    areas: Mapping[str, Area] = field(default_factory=dict)  # the snapshot's units, by id

    @classmethod
    def of(cls, inp: IncidentInput) -> ReportContext:
        segment = inp.incident.segment
        return cls(
            circuits={c.id: c for c in inp.inventory.circuits},
            inventory_sha256=inp.inventory_sha256,
            keys=tuple(key_fingerprint(k) for k in inp.attestation_keys),
            cut=inp.inventory.segment(segment) if segment else None,
            targets=restore_targets(inp),
            areas={a.id: a for a in inp.inventory.areas},
        )


KIND_NAMES = {
    "vi": {
        IncidentKind.UNREST.value: "gây rối",
        IncidentKind.RIOT.value: "bạo loạn",
        IncidentKind.SABOTAGE.value: "phá hoại",
    },
    "en": {k.value: k.value for k in IncidentKind},
}
CLASS_NAMES = {
    "vi": {
        PriorityClass.ARMED_FORCES.value: "lực lượng vũ trang",
        PriorityClass.PARTY.value: "Đảng",
        PriorityClass.STATE.value: "Nhà nước",
    },
    "en": {
        PriorityClass.ARMED_FORCES.value: "armed forces",
        PriorityClass.PARTY.value: "Party",
        PriorityClass.STATE.value: "State",
    },
}

_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "dossier_2c": "Dossier for police and the Department of Information and Communications "
        "(06/2009/CT-UBND item 2c)",
        "timeline": "Incident timeline",
        "format": "Report format {n}, rendered from the incident's recorded history; "
        "times in UTC+7 (Asia/Ho_Chi_Minh) with UTC beside them.",
        "incident": "Incident",
        "drill": "Đây là diễn tập / This is a drill: no real incident; only the devices {devices} "
        "were touched.",
        "in": "in",
        "declared": "Declared by {who} at {at}",
        "description": "Description",
        "units": "Units now: {now}; formerly: {former}",
        "cut": "Cable cut: segment **{segment}** ({segment_id}) of route **{route}** ({route_id})",
        "works": "Works along the cut segment",
        "works_head": "| works | kind | name | location | coordinates |",
        "no_works": "No works recorded along this segment.",
        "playbook": "Playbook",
        "inventory": "Inventory snapshot",
        "keys": "Signing keys (attest every human action)",
        "unsigned": "none: this deployment's actions are unsigned",
        "phase": "Phase",
        "stood_down": "Stood down by",
        "aborted": "Aborted by",
        "ack": "Acknowledged by",
        "nobody": "nobody",
        "restore": "Time to restore per restoration level",
        "restore_head": "| level | circuits | on backup "
        "| slowest (declared → verified on backup) |",
        "not_restored": "not all on backup",
        "restore_head_targets": "| level | circuits | on backup "
        "| slowest (declared → verified on backup) | target | met |",
        "breaches": "Time targets missed",
        "breach_line": "level {level}: target {target:.0f} s, missed at {at}; not on backup: "
        "{circuits}",
        "circuits": "Affected circuits",
        "circuits_head": "| circuit | name | owner | class | level | state | rerouted "
        "| confirmed | restored | parts | also held by |",
        "decisions": "Decisions (who decided what, and why)",
        "decisions_head": "| time | change | device | decision | by | reason |",
        "no_decisions": "No operator decisions recorded.",
        "timeline_h": "Timeline",
        "timeline_head": "| time | event | detail |",
        "changes": "Device changes",
        "change_line": "Device `{device}`, {direction}, wave {wave}, circuits {circuits}.",
        "already": "Found in place on the device; nothing re-applied.",
        "decision": "Decision",
        "error": "Error",
        "transcript": "transcript",
        "calls": "Calls (every attempt, in the order placed)",
        "calls_head": "| # | placed | officer | call | status | acknowledged | SMS |",
        "no_calls": "No calls placed.",
        "yes": "yes",
        "no": "no",
        "review": "For review",
        "evidence": "Closing evidence (read-back of every touched device)",
        "outcome": "Outcome",
    },
    "vi": {
        "dossier_2c": "Hồ sơ gửi Công an và Sở Thông tin và Truyền thông "
        "(Chỉ thị 06/2009/CT-UBND, mục 2c)",
        "timeline": "Diễn biến sự cố",
        "format": "Mẫu báo cáo {n}, lập từ lịch sử đã ghi của sự cố; "
        "giờ theo UTC+7 (Asia/Ho_Chi_Minh), kèm giờ UTC.",
        "incident": "Sự cố",
        "drill": "Đây là diễn tập / This is a drill: không phải sự cố thật; chỉ tác động các thiết "
        "bị {devices}.",
        "in": "tại",
        "declared": "Công bố bởi {who} lúc {at}",
        "description": "Mô tả",
        "units": "Đơn vị hành chính hiện nay: {now}; trước đây: {former}",
        "cut": "Cáp bị cắt: đoạn **{segment}** ({segment_id}) thuộc tuyến **{route}** ({route_id})",
        "works": "Công trình trên đoạn cáp bị cắt",
        "works_head": "| công trình | loại | tên | vị trí | tọa độ |",
        "no_works": "Chưa ghi nhận công trình nào trên đoạn này.",
        "playbook": "Kịch bản",
        "inventory": "Bản chụp danh mục",
        "keys": "Khóa ký (chứng thực mọi thao tác của người)",
        "unsigned": "không có: thao tác của hệ thống này không được ký",
        "phase": "Giai đoạn",
        "stood_down": "Kết thúc bởi",
        "aborted": "Hủy bỏ bởi",
        "ack": "Người xác nhận cuộc gọi",
        "nobody": "không ai",
        "restore": "Thời gian khôi phục theo mức ưu tiên",
        "restore_head": "| mức | số kênh | đã sang dự phòng | chậm nhất (công bố → kiểm tra xong "
        "trên dự phòng) |",
        "not_restored": "chưa sang dự phòng hết",
        "restore_head_targets": "| mức | số kênh | đã sang dự phòng | chậm nhất (công bố → kiểm "
        "tra xong trên dự phòng) | chỉ tiêu | đạt |",
        "breaches": "Chỉ tiêu thời gian không đạt",
        "breach_line": "mức {level}: chỉ tiêu {target:.0f} s, trễ lúc {at}; chưa sang dự phòng: "
        "{circuits}",
        "circuits": "Các kênh bị ảnh hưởng",
        "circuits_head": "| kênh | tên | đơn vị sử dụng | loại | mức | trạng thái | chuyển lúc "
        "| xác nhận lúc | trả về lúc | từng thiết bị | sự cố khác cùng giữ |",
        "decisions": "Quyết định (ai quyết định gì, vì sao)",
        "decisions_head": "| thời gian | thay đổi | thiết bị | quyết định | người | lý do |",
        "no_decisions": "Không có quyết định nào của điều hành viên.",
        "timeline_h": "Diễn biến",
        "timeline_head": "| thời gian | sự kiện | chi tiết |",
        "changes": "Thay đổi trên thiết bị",
        "change_line": "Thiết bị `{device}`, {direction}, đợt {wave}, kênh {circuits}.",
        "already": "Đã có sẵn trên thiết bị; không áp dụng lại.",
        "decision": "Quyết định",
        "error": "Lỗi",
        "transcript": "bản ghi phiên",
        "calls": "Cuộc gọi (mọi lần gọi, theo thứ tự)",
        "calls_head": "| # | gọi lúc | cán bộ | cuộc gọi | kết quả | đã xác nhận | SMS |",
        "no_calls": "Không có cuộc gọi nào.",
        "yes": "có",
        "no": "không",
        "review": "Cần xem xét",
        "evidence": "Bằng chứng khi đóng (đọc lại mọi thiết bị đã tác động)",
        "outcome": "Kết quả",
    },
}


def _vn(at: datetime | None) -> str:
    """A time as the NOC reads it, with UTC beside it; "-" for none."""
    return _when(at, _NOC_FALLBACK) if at else "-"


def _cell_time(at: datetime | None) -> str:
    """A time in a table: UTC+7, to the second (the report's header says so)."""
    return at.astimezone(_NOC_FALLBACK).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def restore_seconds_by_level(
    status: IncidentStatus,
) -> dict[int, tuple[int, int, float | None]]:
    """Per restoration level: (circuits, circuits on backup, slowest seconds from declaration
    until every part of the circuit was verified on backup; None while any is not)."""
    declared = status.incident.declared_at
    out: dict[int, tuple[int, int, float | None]] = {}
    for c in status.circuits:
        n, up, slowest = out.get(c.restoration_level, (0, 0, 0.0))
        if c.rerouted_at is None:
            out[c.restoration_level] = (n + 1, up, None)
            continue
        seconds = (c.rerouted_at - declared).total_seconds()
        out[c.restoration_level] = (
            n + 1,
            up + 1,
            None if slowest is None else max(slowest, seconds),
        )
    return dict(sorted(out.items()))


def render_markdown(
    status: IncidentStatus,
    *,
    form: str = "timeline",
    lang: str = "en",
    context: ReportContext | None = None,
) -> str:
    """The timeline or the 2c dossier, in English or Vietnamese, as Markdown. Every free-text
    field is escaped onto one line of its own cell or paragraph: it can never forge structure."""
    t = _TEXT[lang]
    classes = CLASS_NAMES[lang]
    ctx = context or ReportContext()
    inc = status.incident
    names = {c.officer_id: c.officer_name for c in status.calls}
    ack = status.acknowledged_by
    md = [
        f"# {t['dossier_2c'] if form == 'dossier_2c' else t['timeline']}",
        "",
        f"_{t['format'].format(n=REPORT_FORMAT)}_",
        "",
    ]
    if inc.drill:
        devices = ", ".join(inc.drill_devices)
        md += [f"**{t['drill'].format(devices=devices)}**", ""]
    md += [
        f"- {t['incident']}: **{inc.id}** ({KIND_NAMES[lang][inc.kind.value]}) "
        f"{t['in']} **{_cell(inc.area)}**",
        f"- {t['declared'].format(who=_cell(inc.declared_by), at=_vn(inc.declared_at))}",
        f"- {t['description']}: {_cell(inc.description) or '-'}",
    ]
    units = _units_line(inc.area, inc.areas or [inc.area], ctx.areas, t)
    if units:
        md.append(f"- {units}")
    if ctx.cut is not None:
        route, seg = ctx.cut
        md.append(
            "- "
            + t["cut"].format(
                segment=_cell(seg.name),
                segment_id=seg.id,
                route=_cell(route.name),
                route_id=route.id,
            )
        )
    md.append(f"- {t['playbook']}: {_cell(status.playbook)}, sha256 `{status.playbook_sha256}`")
    if ctx.inventory_sha256:
        md.append(f"- {t['inventory']}: sha256 `{ctx.inventory_sha256}`")
    if context is not None:
        keys = ", ".join(f"`{k}`" for k in ctx.keys) or t["unsigned"]
        md.append(f"- {t['keys']}: {keys}")
    md.append(f"- {t['phase']}: {status.phase.value}")
    if status.stood_down_by or status.aborted_by:
        verb = t["aborted"] if status.aborted_by else t["stood_down"]
        md.append(
            f"- {verb} {_cell(status.aborted_by or status.stood_down_by or '')}: "
            f"{_cell(status.end_reason) or '-'}"
        )
    acked = f"{ack} ({_cell(names[ack])})" if ack in names else _cell(ack or t["nobody"])
    md.append(f"- {t['ack']}: {acked}")
    if ctx.cut is not None:
        works = ctx.cut[1].works
        md += ["", f"## {t['works']}", ""]
        md += [t["works_head"], "|---|---|---|---|---|"] if works else [t["no_works"]]
        for w in works:
            where = f"{w.lat:.5f}, {w.lon:.5f}" if w.lat is not None and w.lon is not None else "-"
            md.append(
                f"| {w.id} | {w.kind.value} | {_cell(w.name)} | {_cell(w.location) or '-'} "
                f"| {where} |"
            )
    targets = ctx.targets
    md += ["", f"## {t['restore']}", ""]
    md += (
        [t["restore_head_targets"], "|---|---|---|---|---|---|"]
        if targets
        else [
            t["restore_head"],
            "|---|---|---|---|",
        ]
    )
    for level, (n, up, slowest) in restore_seconds_by_level(status).items():
        took = f"{slowest:.1f} s" if slowest is not None else t["not_restored"]
        row = f"| {level} | {n} | {up} | {took} |"
        if targets:
            target = targets.get(level)
            met = (
                "-"
                if target is None
                else t["yes"]
                if slowest is not None and slowest <= target
                else t["no"]
            )
            row += f" {f'{target:.0f} s' if target is not None else '-'} | {met} |"
        md.append(row)
    if status.breaches:
        md += ["", f"## {t['breaches']}", ""]
        md += [
            "- "
            + t["breach_line"].format(
                level=b.level,
                target=b.target_s,
                at=_cell_time(b.at),
                circuits=", ".join(b.circuits),
            )
            for b in status.breaches
        ]
    md += ["", f"## {t['circuits']}", "", t["circuits_head"], "|" + "---|" * 11]
    for c in status.circuits:
        known = ctx.circuits.get(c.circuit_id)
        parts = ", ".join(f"{d}: {p.value}" for d, p in c.parts.items())
        cells = [
            c.circuit_id,
            _cell(known.name) if known else "-",
            _cell(known.owner) if known else "-",
            classes.get(known.priority_class.value, "-") if known else "-",
            str(c.restoration_level),
            c.state.value,
            _cell_time(c.rerouted_at),
            _cell_time(c.confirmed_at),
            _cell_time(c.restored_at),
            parts or "-",
            ", ".join(c.held_with) or "-",
        ]
        md.append("| " + " | ".join(cells) + " |")
    decided = [r for r in status.changes if r.decided_by]
    md += ["", f"## {t['decisions']}", ""]
    if decided:
        md += [t["decisions_head"], "|" + "---|" * 6]
        for r in decided:
            md.append(
                f"| {_cell_time(r.settled_at)} | {r.change_id} | {r.device} "
                f"| {r.decision.value if r.decision else '-'} | {_cell(r.decided_by or '')} "
                f"| {_cell(r.decision_reason) or '-'} |"
            )
    else:
        md.append(t["no_decisions"])
    md += ["", f"## {t['timeline_h']}", "", t["timeline_head"], "|---|---|---|"]
    for e in sorted(status.timeline, key=lambda e: e.at):
        md.append(f"| {_cell_time(e.at)} | {_cell(e.event)} | {_cell(e.detail)} |")
    md += ["", f"## {t['changes']}", ""]
    for rec in status.changes:
        md.append(f"### {rec.change_id}: {rec.state.value}")
        md.append("")
        md.append(
            t["change_line"].format(
                device=rec.device,
                direction=rec.direction.value,
                wave=rec.wave,
                circuits=", ".join(rec.circuits),
            )
        )
        if rec.already_applied:
            md.append(f"\n{t['already']}")
        if rec.commands:
            md += ["", "```", *(_fence_safe(c) for c in rec.commands), "```"]
        if rec.detail:
            md.append(f"\n{_cell(rec.detail)}")
        if rec.decided_by:
            md.append(
                f"\n{t['decision']}: {rec.decision.value if rec.decision else '-'} "
                f"by {_cell(rec.decided_by)}"
                + (f": {_cell(rec.decision_reason)}" if rec.decision_reason else "")
            )
        if rec.error:
            md.append(f"\n{t['error']} ({rec.error_type}): {_cell(rec.error)}")
        md.append("")
        for tr in rec.transcripts:
            md.append(
                f"- {t['transcript']} `{tr.id}` ({tr.step} #{tr.attempt}) sha256 `{tr.sha256}`"
            )
        md.append("")
    md += [f"## {t['calls']}", ""]
    if status.calls:
        md += [t["calls_head"], "|" + "---|" * 7]
        for n, call in enumerate(status.calls, start=1):
            md.append(
                f"| {n} | {_cell_time(call.at)} | {_cell(call.officer_name)} ({call.officer_id}) "
                f"| {call.call_sid or '-'} | {_cell(call.status)} "
                f"| {t['yes'] if call.acknowledged else t['no']} | {call.sms_sid or '-'} |"
            )
    else:
        md.append(t["no_calls"])
    if status.review:
        md += ["", f"## {t['review']}", ""]
        md += [f"- {r.kind} `{r.subject}`: {_cell(r.detail)}" for r in status.review]
    if status.closing_evidence:
        md += ["", f"## {t['evidence']}", ""]
        md += [f"- `{e.id}` sha256 `{e.sha256}`" for e in status.closing_evidence]
    md += ["", f"**{t['outcome']}:** {_cell(status.outcome or status.phase.value)}", ""]
    return "\n".join(md)


_CURRENT_UNITS = {AreaKind.WARD, AreaKind.COMMUNE, AreaKind.SPECIAL_ZONE}


def _units_line(
    named: str, covered: list[str], areas: Mapping[str, Area], t: dict[str, str]
) -> str:
    """The units an incident covers as they are now, and the former ones they were part of;
    empty for an inventory without a hierarchy (its reports read as they always did)."""
    units = [areas[a] for a in covered if a in areas]
    if all(u.kind is AreaKind.AREA for u in units):
        return ""
    current = [u for u in units if u.kind in _CURRENT_UNITS]
    parents = sorted({u.parent for u in current if u.parent})
    former = sorted({f for u in current for f in u.former} | ({named} - {u.id for u in current}))

    def name(a: str) -> str:
        return _cell(areas[a].name) if a in areas else a

    now = ", ".join(_cell(u.name) for u in current) or "-"
    if parents:
        now += f" ({', '.join(name(a) for a in parents)})"
    return t["units"].format(
        now=now, former=", ".join(name(a) for a in former if a in areas) or "-"
    )


def _fence_safe(line: str) -> str:
    """A device command inside a code fence: a line of backticks would close the fence."""
    return line.replace("`", "'") if line.lstrip().startswith("```") else line


def render_html(markdown: str, *, title: str, lang: str = "vi") -> str:
    """A report's Markdown as a standalone HTML page. Raw HTML in the Markdown is escaped (free
    text was escaped already when the Markdown was written; this is the second fence)."""
    from html import escape

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        f'<!doctype html>\n<html lang="{escape(lang)}"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/console/console.css"></head>'
        f'<body class="report-page">\n{body}</body></html>\n'
    )


__all__ = [
    "CLASS_NAMES",
    "LANGUAGES",
    "REPORT_FORMAT",
    "ReportContext",
    "form_and_language",
    "render_html",
    "render_markdown",
    "render_text",
    "report_format",
    "restore_seconds_by_level",
    "restore_targets",
    "stored_form",
]
