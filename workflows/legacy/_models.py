"""Frozen copies of the models the legacy Playbook and DeviceChange histories decode into."""

# Copied from continuity/models.py, messages.py and playbook.py at commit 4419aad. Field
# names, types, defaults and validators must stay as they are: recorded payloads decode
# through them on replay. Nothing here may import from continuity, which is being rewritten.

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# --- validation (frozen from continuity/validation.py) -----------------------------------

_IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_DEVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_E164 = r"^\+[1-9][0-9]{6,14}$"
_INTERFACE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,31}(?:[-/.:][A-Za-z0-9]{1,16}){0,6}$")
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f|;`$<>\\]")
_PROSE_FORBIDDEN = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


# The live checks raise ValidationFailed, a ValueError: pydantic treats both the same way.
def _check_ipv4_address(value: str) -> str:
    try:
        addr = ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError) as e:
        raise ValueError(f"malformed IPv4 address {value!r}") from e
    if str(addr) != value:
        raise ValueError(f"non-canonical IPv4 address {value!r}")
    return value


def _check_ipv4_prefix(value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError) as e:
        raise ValueError(f"malformed IPv4 prefix {value!r}") from e
    if str(net) != value:
        raise ValueError(f"non-canonical IPv4 prefix {value!r}")
    return value


def _check_interface(value: str) -> str:
    if not _INTERFACE.fullmatch(value):
        raise ValueError(f"malformed interface name {value!r}")
    return value


def _check_text(
    value: str, *, max_len: int = 200, allow_empty: bool = False, prose: bool = False
) -> str:
    if not value and not allow_empty:
        raise ValueError("empty text")
    if len(value) > max_len:
        raise ValueError(f"text longer than {max_len} characters")
    forbidden = _PROSE_FORBIDDEN if prose else _TEXT_FORBIDDEN
    if forbidden.search(value):
        raise ValueError(f"text contains control or shell characters: {value[:40]!r}")
    return value


Identifier = Annotated[str, Field(pattern=_IDENTIFIER, min_length=1, max_length=64)]
DeviceName = Annotated[str, Field(pattern=_DEVICE_NAME, min_length=1, max_length=63)]
PhoneNumber = Annotated[str, Field(pattern=_E164)]


# --- domain models (frozen from continuity/models.py) ------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class IncidentKind(StrEnum):
    UNREST = "unrest"
    RIOT = "riot"
    SABOTAGE = "sabotage"


class PriorityClass(StrEnum):
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


class NextHop(_Model):
    address: str
    interface: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_ipv4_address(v)

    @field_validator("interface")
    @classmethod
    def _interface(cls, v: str | None) -> str | None:
        return None if v is None else _check_interface(v)


class RerouteMechanism(StrEnum):
    STATIC_ROUTE = "static_route"
    SOURCE_PBR = "source_pbr"


class CircuitPath(_Model):
    device: DeviceName
    prefix: str
    primary: NextHop
    backup: NextHop
    mechanism: RerouteMechanism = RerouteMechanism.STATIC_ROUTE
    source_prefix: str | None = None
    ingress_interface: str | None = None

    @field_validator("prefix", "source_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return None if v is None else _check_ipv4_prefix(v)

    @field_validator("ingress_interface")
    @classmethod
    def _ingress(cls, v: str | None) -> str | None:
        return None if v is None else _check_interface(v)

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
    owner: str
    priority_class: PriorityClass
    restoration_level: int = Field(ge=1, le=5)
    area: Identifier
    paths: list[CircuitPath] = Field(min_length=1)

    @field_validator("name", "owner")
    @classmethod
    def _text(cls, v: str) -> str:
        return _check_text(v)


class Device(_Model):
    name: DeviceName
    platform: Platform
    host: str
    port: int = Field(default=22, ge=1, le=65535)
    site: Identifier = "default"
    credential: Identifier
    host_key: str | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return _check_ipv4_address(v) if v[:1].isdigit() else _check_text(v, max_len=253)


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
        return _check_text(v, max_len=2000, allow_empty=True, prose=True)


class TimelineEntry(_Model):
    at: datetime
    event: str
    detail: str = ""


class ChangeState(StrEnum):
    PENDING = "pending"
    APPLYING = "applying"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"
    REVERTED_BY_DEVICE = "reverted_by_device"
    FAILED = "failed"


class Decision(StrEnum):
    CONFIRM = "confirm"
    REJECT = "reject"


class RouteChange(_Model):
    circuit_id: Identifier
    path: CircuitPath


class TranscriptRef(_Model):
    id: str
    sha256: str
    step: str
    # Unused since v0.1, yet present in early histories: dropping it would fail extra="forbid".
    commands: list[str] = []


class ChangeRecord(_Model):
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
    already_applied: bool = False
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


# --- playbook spec (frozen from continuity/playbook.py) ----------------------------------


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SelectCircuits(_Step):
    type: Literal["select_circuits"] = "select_circuits"
    priority_classes: list[PriorityClass] = Field(min_length=1)
    max_restoration_level: int = Field(default=5, ge=1, le=5)


class RerouteWave(_Step):
    type: Literal["reroute_wave"] = "reroute_wave"
    name: str
    restoration_levels: list[int] = Field(min_length=1)
    confirmers: list[Identifier] = []

    @model_validator(mode="after")
    def _levels(self) -> RerouteWave:
        if any(not 1 <= lv <= 5 for lv in self.restoration_levels):
            raise ValueError("restoration levels are 1..5")
        return self


class CallDutyOfficers(_Step):
    type: Literal["call_duty_officers"] = "call_duty_officers"
    message_vi: str
    message_en: str
    sms_fallback: bool = True
    rounds: int = Field(default=2, ge=1, le=9)


class Notify(_Step):
    type: Literal["notify"] = "notify"
    message_vi: str
    message_en: str


class Report(_Step):
    type: Literal["report"] = "report"
    form: Literal["timeline", "dossier_2c"] = "timeline"


Step = Annotated[
    SelectCircuits | RerouteWave | CallDutyOfficers | Notify | Report, Field(discriminator="type")
]


class PlaybookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Identifier
    version: int = Field(ge=1)
    title: str
    directive_item: str = ""
    incident_kinds: list[IncidentKind] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)
    restore_on_stand_down: bool = True

    @model_validator(mode="after")
    def _coherent(self) -> PlaybookSpec:
        kinds = [s.type for s in self.steps]
        if "reroute_wave" in kinds:
            if "select_circuits" not in kinds or kinds.index("select_circuits") > kinds.index(
                "reroute_wave"
            ):
                raise ValueError("a reroute_wave needs a select_circuits step before it")
        names = [s.name for s in self.steps if isinstance(s, RerouteWave)]
        if len(names) != len(set(names)):
            raise ValueError("wave names must be unique")
        return self


def spec_sha256(spec: PlaybookSpec) -> str:
    """The recorded playbook_sha256 was computed this way; the workflow re-checks it."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- workflow, signal, update and activity messages (frozen from continuity/messages.py) -


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timings(_Msg):
    confirm_window_s: float = 600.0
    revert_margin_s: float = 120.0
    verify_timeout_s: float = 30.0
    revert_wait_grace_s: float = 60.0
    ssh_step_timeout_s: float = 120.0
    heartbeat_timeout_s: float = 15.0
    ssh_attempts: int = Field(default=4, ge=1, le=20)
    ssh_retry_initial_s: float = 1.0
    ring_timeout_s: float = 30.0
    escalation_delay_s: float = 120.0
    max_parallel_devices: int = Field(default=8, ge=1, le=64)
    device_time_scale: float = Field(default=1.0, gt=0)


class PlaybookRunInput(_Msg):
    incident: Incident
    playbook: PlaybookSpec
    playbook_sha256: str
    inventory: Inventory
    timings: Timings = Timings()


class PlaybookRunResult(_Msg):
    incident_id: str
    outcome: str
    changes: list[ChangeRecord] = []
    calls: list[CallAttempt] = []
    acknowledged_by: str | None = None


class DeviceChangeInput(_Msg):
    incident_id: Identifier
    change_id: str
    device: Device
    wave: int
    direction: Literal["reroute", "restore"] = "reroute"
    changes: list[RouteChange]
    require_confirmation: bool = True
    timings: Timings = Timings()


class DutyCallInput(_Msg):
    incident_id: Identifier
    officers: list[DutyOfficer]
    message_vi: str
    message_en: str
    sms_fallback: bool = True
    rounds: int = 2
    timings: Timings = Timings()


class DutyCallResult(_Msg):
    acknowledged_by: str | None = None
    attempts: list[CallAttempt] = []


class ChangeDecisionInput(_Msg):
    change_id: str
    decision: Decision
    operator_id: Identifier
    reason: str = Field(default="", max_length=500)


class StandDownInput(_Msg):
    by: str
    reason: str = Field(default="", max_length=500)


class DeviceSessionInput(_Msg):
    incident_id: Identifier
    change_id: str
    device: Device
    direction: Literal["reroute", "restore"] = "reroute"
    changes: list[RouteChange]
    timings: Timings = Timings()


class PathState(_Msg):
    circuit_id: str
    primary_present: bool
    backup_present: bool


class PrecheckResult(_Msg):
    transcript: TranscriptRef
    paths: list[PathState]
    pending_commit: bool = False


class ApplyResult(_Msg):
    transcript: TranscriptRef | None = None
    commands: list[str] = []
    already_applied: bool = False
    auto_revert: Literal["device", "orchestrator"] = "device"
    revert_deadline_s: float = 0.0


class VerifyInput(_Msg):
    session: DeviceSessionInput
    expect: Literal["changed", "original"]
    timeout_s: float


class VerifyResult(_Msg):
    ok: bool
    detail: str
    transcript: TranscriptRef | None = None
    paths: list[PathState] = []


class StepResult(_Msg):
    transcript: TranscriptRef | None = None
    commands: list[str] = []
    detail: str = ""


class LockInput(_Msg):
    device: str
    holder: str
    lease_s: float


class SendSmsInput(_Msg):
    incident_id: Identifier
    key: str
    officer: DutyOfficer
    body: str


class SendSmsResult(_Msg):
    sid: str
    status: str


class ReportInput(_Msg):
    incident_id: Identifier
    form: Literal["timeline", "dossier_2c"]
    status_json: str


class ReportResult(_Msg):
    report_id: str
    sha256: str
