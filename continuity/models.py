"""Domain models shared by the API, the workflows, the activities and the store."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from continuity.validation import (
    DEVICE_NAME,
    E164,
    IDENTIFIER,
    check_interface,
    check_ipv4_address,
    check_ipv4_prefix,
    check_text,
)

# Identifiers travel into workflow ids, URLs and device descriptions: keep them boring.
Identifier = Annotated[str, Field(pattern=IDENTIFIER.pattern, min_length=1, max_length=64)]
DeviceName = Annotated[str, Field(pattern=DEVICE_NAME.pattern, min_length=1, max_length=63)]
PhoneNumber = Annotated[str, Field(pattern=E164.pattern)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class IncidentKind(StrEnum):
    UNREST = "unrest"
    RIOT = "riot"
    SABOTAGE = "sabotage"


class PriorityClass(StrEnum):
    """Who a circuit serves; directive 06/2009/CT-UBND item 2a names these three."""

    ARMED_FORCES = "armed_forces"
    PARTY = "party"
    STATE = "state"


class Platform(StrEnum):
    CISCO_IOSXE = "cisco_iosxe"
    JUNIPER_JUNOS = "juniper_junos"
    HUAWEI_VRP = "huawei_vrp"
    FRR = "frr"


class Language(StrEnum):
    VI = "vi"
    EN = "en"


class Role(StrEnum):
    DUTY_OFFICER = "duty_officer"
    OPERATOR = "operator"
    AUDITOR = "auditor"


# --- inventory ---------------------------------------------------------------------------


class NextHop(_Model):
    """One way out of a device towards a circuit's far end."""

    address: str
    interface: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return check_ipv4_address(v)

    @field_validator("interface")
    @classmethod
    def _interface(cls, v: str | None) -> str | None:
        return None if v is None else check_interface(v)


class RerouteMechanism(StrEnum):
    STATIC_ROUTE = "static_route"  # move the destination prefix to the backup next hop
    SOURCE_PBR = "source_pbr"  # policy-route the priority users' source prefix


class CircuitPath(_Model):
    """What one device does for one circuit: the prefix and its primary and backup exits."""

    device: DeviceName
    prefix: str
    primary: NextHop
    backup: NextHop
    mechanism: RerouteMechanism = RerouteMechanism.STATIC_ROUTE
    source_prefix: str | None = None  # for SOURCE_PBR: the priority users' addresses
    ingress_interface: str | None = None  # for SOURCE_PBR: where their traffic enters

    @field_validator("prefix", "source_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return None if v is None else check_ipv4_prefix(v)

    @field_validator("ingress_interface")
    @classmethod
    def _ingress(cls, v: str | None) -> str | None:
        return None if v is None else check_interface(v)

    @model_validator(mode="after")
    def _pbr_needs_source(self) -> CircuitPath:
        if self.mechanism is RerouteMechanism.SOURCE_PBR and not (
            self.source_prefix and self.ingress_interface
        ):
            raise ValueError("source_pbr needs source_prefix and ingress_interface")
        if self.primary.address == self.backup.address:
            raise ValueError("primary and backup next hops must differ")
        return self


class Circuit(_Model):
    id: Identifier
    name: str
    owner: str  # the organisation served, e.g. "Provincial Military Command"
    priority_class: PriorityClass
    restoration_level: int = Field(ge=1, le=5)  # 1 is restored first
    area: Identifier  # the district it serves
    paths: list[CircuitPath] = Field(min_length=1)

    @field_validator("name", "owner")
    @classmethod
    def _text(cls, v: str) -> str:
        return check_text(v)


class Device(_Model):
    name: DeviceName
    platform: Platform
    host: str
    port: int = Field(default=22, ge=1, le=65535)
    site: Identifier = "default"
    credential: Identifier  # a name resolved inside activities; never the secret itself
    host_key: str | None = None  # pinned public key ("ssh-ed25519 AAAA..."); None: use known_hosts

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_ipv4_address(v) if v[:1].isdigit() else check_text(v, max_len=253)


class DutyOfficer(_Model):
    id: Identifier
    name: str
    phone: PhoneNumber
    language: Language = Language.VI
    escalation_order: int = Field(ge=1)


class Operator(_Model):
    id: Identifier
    name: str


class Area(_Model):
    id: Identifier
    name: str


class Inventory(_Model):
    """Everything the orchestrator knows about the network and the people; loadable from JSON."""

    province: str = ""
    areas: list[Area] = []
    devices: list[Device] = []
    circuits: list[Circuit] = []
    duty_officers: list[DutyOfficer] = []
    operators: list[Operator] = []

    @model_validator(mode="after")
    def _consistent(self) -> Inventory:
        devices = {d.name for d in self.devices}
        areas = {a.id for a in self.areas}
        for kind, ids in (
            ("device", [d.name for d in self.devices]),
            ("circuit", [c.id for c in self.circuits]),
            ("duty officer", [o.id for o in self.duty_officers]),
            ("operator", [o.id for o in self.operators]),
        ):
            dupes = {i for i in ids if ids.count(i) > 1}
            if dupes:
                raise ValueError(f"duplicate {kind} ids: {sorted(dupes)}")
        for c in self.circuits:
            if areas and c.area not in areas:
                raise ValueError(f"circuit {c.id}: unknown area {c.area!r}")
            for p in c.paths:
                if p.device not in devices:
                    raise ValueError(f"circuit {c.id}: unknown device {p.device!r}")
        return self

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)


# --- incidents ---------------------------------------------------------------------------


class Incident(_Model):
    id: Identifier
    kind: IncidentKind
    area: Identifier
    description: str = ""
    declared_by: str
    declared_at: datetime

    @field_validator("description")
    @classmethod
    def _description(cls, v: str) -> str:
        return check_text(v, max_len=2000, allow_empty=True, prose=True)


class TimelineEntry(_Model):
    at: datetime
    event: str
    detail: str = ""


class ChangeState(StrEnum):
    PENDING = "pending"
    APPLYING = "applying"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"  # by the orchestrator, after a rejection
    REVERTED_BY_DEVICE = "reverted_by_device"  # the device's own timer fired
    FAILED = "failed"


class Decision(StrEnum):
    CONFIRM = "confirm"
    REJECT = "reject"


class RouteChange(_Model):
    """One circuit's change on one device: the unit a dialect renders."""

    circuit_id: Identifier
    path: CircuitPath


class TranscriptRef(_Model):
    """A device session stored outside the history: only its id and digest travel."""

    id: str
    sha256: str
    step: str
    # Unused since v0.1: the configuration lines live in ChangeRecord.commands and the full
    # session in the store. Kept so histories recorded with it still decode on replay.
    commands: list[str] = []


class ChangeRecord(_Model):
    """What the history shows about one device change (per device, per wave)."""

    change_id: str
    device: DeviceName
    wave: int
    circuits: list[str]
    state: ChangeState = ChangeState.PENDING
    commands: list[str] = []
    verified: bool = False
    verification: str = ""
    decided_by: str | None = None
    decision: Decision | None = None
    decision_reason: str = ""
    error: str | None = None
    error_type: str | None = None
    retryable: bool | None = None
    transcripts: list[TranscriptRef] = []
    already_applied: bool = False  # a retry found the change on the device
    events: list[TimelineEntry] = []


class CallAttempt(_Model):
    officer_id: str
    officer_name: str
    call_sid: str | None = None
    status: str = "placed"
    acknowledged: bool = False
    sms_sid: str | None = None
    error: str | None = None
    at: datetime | None = None


class IncidentStatus(_Model):
    incident: Incident
    playbook: str
    playbook_sha256: str
    phase: str = "started"
    circuits: list[str] = []
    changes: list[ChangeRecord] = []
    calls: list[CallAttempt] = []
    acknowledged_by: str | None = None
    decisions_refused: int = 0
    stood_down: bool = False
    stood_down_by: str | None = None
    outcome: str | None = None
    timeline: list[TimelineEntry] = []


__all__ = [
    "Area",
    "CallAttempt",
    "ChangeRecord",
    "ChangeState",
    "Circuit",
    "CircuitPath",
    "Decision",
    "Device",
    "DutyOfficer",
    "Incident",
    "IncidentKind",
    "IncidentStatus",
    "Inventory",
    "Language",
    "NextHop",
    "Operator",
    "Platform",
    "PriorityClass",
    "RerouteMechanism",
    "Role",
    "RouteChange",
    "TimelineEntry",
    "TranscriptRef",
]
