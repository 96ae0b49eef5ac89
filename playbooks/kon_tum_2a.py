"""Directive 06/2009/CT-UBND item 2a: keep command communications up in unrest, riot, sabotage.

Use when a duty officer declares unrest, a riot or sabotage (cable cut) in a district. It selects
the district's circuits serving the armed forces, the Party and the State, moves them to their
backup paths in two waves (restoration levels 1–2, then 3–5) with every device change confirmed
by an operator, phones the duty officers until one acknowledges, and writes the 2c dossier for
police and the provincial Department of Information and Communications.

v2 (2026-12-02): for sabotage, an SMS reminding the officers of item 2c (preserve the scene,
inform the police and the DIC) once the reroute is sent. v1 is kept in playbooks/versions/.
"""

from continuity.models import IncidentKind, PriorityClass
from continuity.playbook import (
    CallDutyOfficers,
    Notify,
    PlaybookSpec,
    Report,
    RerouteWave,
    SelectCircuits,
)

NAME = "kon-tum-2a"


def build() -> PlaybookSpec:
    return PlaybookSpec(
        name=NAME,
        version=2,
        title="Keep command communications up (06/2009/CT-UBND item 2a)",
        directive_item="06/2009/CT-UBND 2a",
        incident_kinds=[IncidentKind.UNREST, IncidentKind.RIOT, IncidentKind.SABOTAGE],
        steps=[
            SelectCircuits(
                priority_classes=[
                    PriorityClass.ARMED_FORCES,
                    PriorityClass.PARTY,
                    PriorityClass.STATE,
                ],
                max_restoration_level=5,
            ),
            CallDutyOfficers(
                message_vi=(
                    "Cảnh báo khẩn cấp: sự cố thông tin liên lạc. Hệ thống đang chuyển các "
                    "kênh ưu tiên sang tuyến dự phòng."
                ),
                message_en=(
                    "Emergency: communications incident. Priority circuits are being moved "
                    "to their backup paths."
                ),
                sms_fallback=True,
                rounds=2,
            ),
            RerouteWave(name="command circuits (levels 1-2)", restoration_levels=[1, 2]),
            RerouteWave(
                name="remaining priority circuits (levels 3-5)", restoration_levels=[3, 4, 5]
            ),
            # v2: on sabotage, the officers are reminded of item 2c once the reroute is sent.
            Notify(
                when_kinds=[IncidentKind.SABOTAGE],
                message_vi=(
                    "Nghi phá hoại: giữ nguyên hiện trường, báo Công an tỉnh và Sở TT&TT; hồ sơ "
                    "2c được lập khi kết thúc sự cố (Chỉ thị 06/2009/CT-UBND, mục 2c)."
                ),
                message_en=(
                    "Suspected sabotage: preserve the scene, inform the provincial police and "
                    "the DIC; the 2c dossier is written at close (directive 06/2009 item 2c)."
                ),
            ),
            Report(form="dossier_2c"),
        ],
        restore_on_stand_down=True,
    )
