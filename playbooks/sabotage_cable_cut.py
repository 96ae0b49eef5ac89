"""Directive 06/2009/CT-UBND items 2a and 2c: a cable route cut by sabotage.

Use when a fibre cable is cut on purpose and the duty officer can name the cut segment (the
inventory's cable routes). It moves exactly the priority circuits whose paths run over that
segment, wherever they serve (a cut on QL14 between Kon Tum and Đắk Hà takes down Đắk Hà,
Đắk Tô and Ngọc Hồi alike), command circuits first, each device change confirmed by an
operator; phones the duty officers until one acknowledges; and writes the 2c dossier naming
the route, the segment and the works along it (manholes, poles, cabinets, with locations)
for the police and the provincial Department of Information and Communications.
"""

from continuity.models import IncidentKind, PriorityClass
from continuity.playbook import (
    CallDutyOfficers,
    PlaybookSpec,
    Report,
    RerouteWave,
    SelectCircuits,
)

NAME = "sabotage-cable-cut"


def build() -> PlaybookSpec:
    return PlaybookSpec(
        name=NAME,
        version=1,
        title="Cable route cut by sabotage: move the circuits crossing the cut (06/2009 2a, 2c)",
        directive_item="06/2009/CT-UBND 2a, 2c",
        incident_kinds=[IncidentKind.SABOTAGE],
        steps=[
            SelectCircuits(
                priority_classes=[
                    PriorityClass.ARMED_FORCES,
                    PriorityClass.PARTY,
                    PriorityClass.STATE,
                ],
                crossing_cut_segment=True,
            ),
            CallDutyOfficers(
                message_vi=(
                    "Cảnh báo khẩn cấp: tuyến cáp bị cắt. Hệ thống đang chuyển các kênh ưu "
                    "tiên đi qua đoạn cáp bị cắt sang tuyến dự phòng."
                ),
                message_en=(
                    "Emergency: a cable route was cut. Priority circuits crossing the cut "
                    "segment are being moved to their backup paths."
                ),
                rounds=2,
            ),
            RerouteWave(name="command circuits (levels 1-2)", restoration_levels=[1, 2]),
            RerouteWave(
                name="remaining priority circuits (levels 3-5)", restoration_levels=[3, 4, 5]
            ),
            Report(form="dossier_2c"),
        ],
    )
