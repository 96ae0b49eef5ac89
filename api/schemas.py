"""Request and response bodies, named for their role."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from continuity.models import (
    CallAttempt,
    CircuitState,
    Decision,
    Description,
    DeviceName,
    Identifier,
    IncidentKind,
    IncidentStatus,
    PartState,
    PriorityClass,
    Reason,
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IncidentCreate(_Body):
    id: Identifier | None = None  # the business key; generated when absent
    kind: IncidentKind
    area: Identifier
    description: Description = ""
    playbook: Identifier | None = None  # default: the catalogue's default playbook
    # The cable segment that was cut (the inventory's cable routes): what a playbook that
    # follows the cut (sabotage-cable-cut) reroutes by, and what the 2c dossier names.
    segment: Identifier | None = None
    # Further units covered by the same incident (a set of communes; former units too).
    also: list[Identifier] = Field(default=[], max_length=200)
    # A drill: marked so in every record, report, SMS and call ("Đây là diễn tập / This is a
    # drill"), and it may touch only these devices (only circuits lying wholly on them move).
    drill: bool = False
    drill_devices: list[DeviceName] = []

    @model_validator(mode="after")
    def _drill(self) -> IncidentCreate:
        if self.drill_devices and not self.drill:
            raise ValueError("drill_devices are for a drill: set drill to true")
        return self


class IncidentCreated(_Body):
    id: str
    workflow_id: str
    run_id: str | None
    playbook: str
    playbook_sha256: str


class IncidentPublic(_Body):
    status: IncidentStatus  # its circuits are the ledger's: the one state each circuit has
    calls: list[CallAttempt] = []
    acknowledged_by: str | None = None
    running: bool


class IncidentSummary(_Body):
    id: str
    status: str
    start_time: str | None


class DecisionCreate(_Body):
    decision: Decision
    reason: Reason = ""
    # The change's `lines_sha256` as the operator's screen showed it: a change that sent other
    # lines (the screen is stale) is refused with 409 StaleChange. Omitted: not checked.
    lines_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")


class DecisionAccepted(_Body):
    """The decision won the change; the incident carries it out on the device."""

    incident_id: str
    change_id: str
    decision: Decision
    decided_by: str
    decided_at: datetime
    # False: the incident was not reachable just now; it finds the decision when the window
    # closes at the latest, before the device's own timer.
    delivered: bool = True


class ChangePublic(_Body):
    change_id: str
    incident_id: str
    device: str
    wave: int
    direction: str
    circuits: list[str]
    state: str
    detail: str
    deadline: datetime | None
    decision: Decision | None
    decided_by: str | None
    lines_sha256: str | None = None  # of the lines the change sent, once it awaits a decision


class StandDownCreate(_Body):
    reason: Reason = ""


class WriteOffCreate(_Body):
    """Why a device is written off: it is on the record and in every report."""

    reason: Reason = Field(min_length=1)


class AbortCreate(_Body):
    reason: Reason = ""


class EndAccepted(_Body):
    status: str


class CircuitPartPublic(_Body):
    device: str
    state: PartState
    incident_id: str = ""
    change_id: str = ""
    detail: str = ""
    updated_at: datetime | None = None


class CircuitPublic(_Body):
    id: str
    name: str
    owner: str
    area: str
    priority_class: PriorityClass
    restoration_level: int
    state: CircuitState
    held_by: list[str]  # active incidents that need it on its backup path
    parts: list[CircuitPartPublic]


class AreaPublic(_Body):
    id: str
    name: str
    kind: str = "area"  # province, ward, commune, … or a former unit (former_district, …)
    parent: str | None = None
    former: list[str] = []  # the former units it was part of


class SegmentPublic(_Body):
    """A cable segment a duty officer can declare cut, with its route and what crosses it."""

    id: str
    name: str
    route_id: str
    route_name: str
    works: int  # manholes, poles, cabinets… along it
    circuits: list[str]  # the circuits whose paths run over it


class Display(_Body):
    zone: str  # an IANA time zone, e.g. Asia/Ho_Chi_Minh


class Health(_Body):
    status: str
    temporal: bool
    database: bool
