"""Domain models shared by the API, the workflows, the activities and the store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from enum import Enum, StrEnum
from functools import cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

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


def _prose(value: str, max_len: int) -> str:
    """One line end, whatever the client sent (a textarea, curl, a Windows console)."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return check_text(value, max_len=max_len, allow_empty=True, prose=True)


# Human-entered text: a clear refusal for control characters at the edge, so no free text can
# ever fail a running incident further in (a NUL makes PostgreSQL refuse the whole row).
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_text)]
Description = Annotated[
    str,
    Field(max_length=2000),
    AfterValidator(lambda v: _prose(v, 2000)),
]
Reason = Annotated[str, Field(max_length=500), AfterValidator(lambda v: _prose(v, 500))]


# Serialisation context of the Temporal payload converter (continuity.temporal): a model dumped
# under it leaves out the fields that hold their default. Histories carry what differs (an
# incident over 200 devices: a tenth of its bytes were defaults); decoding fills them back in.
COMPACT = "compact"


class Compact(BaseModel):
    """A model whose Temporal payloads leave out default values; API responses keep them."""

    @model_serializer(mode="wrap")
    # No return annotation: pydantic then keeps the model's own schema in OpenAPI.
    def _drop_defaults(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):  # type: ignore[no-untyped-def]  # noqa: E501
        data = handler(self)
        if not (info.context and info.context.get(COMPACT)) or not isinstance(data, dict):
            return data
        for key, default in _defaults(type(self), info.mode_is_json()):
            if key in data and data[key] == default:
                del data[key]
        return data


@cache
def _defaults(cls: type[BaseModel], json_mode: bool) -> tuple[tuple[str, Any], ...]:
    """(serialised key, default as it serialises) of each optional field of `cls`."""
    out = []
    for name, f in cls.model_fields.items():
        if f.is_required() or f.exclude:
            continue
        default = f.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump(
                mode="json" if json_mode else "python", context={COMPACT: True}
            )
        elif isinstance(default, Enum) and json_mode:
            default = default.value
        out.append((f.serialization_alias or f.alias or name, default))
    return tuple(out)


class _AddedLater:
    """Marks a field added after records were made with its model (see canonical_json)."""

    def __repr__(self) -> str:
        return "ADDED_LATER"


# `Annotated[T, ADDED_LATER]`: a field that content hashes leave out while it holds its
# default, so every playbook and inventory recorded before it existed hashes as it did (the
# workflow checks those hashes on replay; the declaration's signature covers them).
ADDED_LATER = _AddedLater()


def canonical_json(model: BaseModel) -> str:
    """The JSON a content hash is taken over: sorted keys, no spaces, and no field marked
    ADDED_LATER that holds its default."""
    data = model.model_dump(mode="json")
    _drop_added_defaults(model, data)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _drop_added_defaults(value: Any, data: Any) -> None:
    if isinstance(value, BaseModel) and isinstance(data, dict):
        for name, f in type(value).model_fields.items():
            v = getattr(value, name)
            if ADDED_LATER in f.metadata and v == f.get_default(call_default_factory=True):
                data.pop(name, None)
            elif name in data:
                _drop_added_defaults(v, data[name])
    elif isinstance(value, list | tuple) and isinstance(data, list):
        for v, d in zip(value, data, strict=False):
            _drop_added_defaults(v, d)
    elif isinstance(value, dict) and isinstance(data, dict):
        for v, d in zip(value.values(), data.values(), strict=False):
            _drop_added_defaults(v, d)


class _Model(Compact):
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
    """What a principal may do; docs/access.md has the route matrix (api/access.py)."""

    DUTY_OFFICER = "duty_officer"  # declares, stands down, aborts
    OPERATOR = "operator"  # confirms or rejects device changes
    ENGINEER = "engineer"  # writes playbooks; reads incidents, circuits and reports
    AUDITOR = "auditor"  # reads everything, exports histories
    ADMIN = "admin"  # manages principals and the inventory; acts in no incident


# --- the vocabulary of the incident core, defined once ------------------------------------


class Direction(StrEnum):
    """Which way a change moves a circuit path: to its backup, or back to its primary."""

    REROUTE = "reroute"
    RESTORE = "restore"


class PartState(StrEnum):
    """One circuit's path on one device, as the device activities last saw it."""

    PRIMARY = "primary"
    APPLYING = "applying"
    BACKUP_UNCONFIRMED = "backup_unconfirmed"
    BACKUP = "backup"
    RETURNING = "returning"
    UNKNOWN = "unknown"  # the device did not answer, or answered something we did not expect


class CircuitState(StrEnum):
    ON_PRIMARY = "on_primary"
    MOVING = "moving"
    ON_BACKUP_UNCONFIRMED = "on_backup_unconfirmed"
    ON_BACKUP = "on_backup"
    NEEDS_ATTENTION = "needs_attention"
    RETURNING = "returning"


class IncidentPhase(StrEnum):
    DECLARED = "declared"
    REROUTING = "rerouting"
    ACTIVE = "active"
    STANDING_DOWN = "standing_down"
    CLOSED = "closed"
    ABORTING = "aborting"
    ABORTED = "aborted"


class TimeoutOutcome(StrEnum):
    """What a confirmation window that closes without a decision means for a wave."""

    ROLLBACK = "rollback"  # the device reverts by itself where it can; else we undo it
    KEEP = "keep"  # confirm on the device, record it, phone the duty officer, review later


class PartialOutcome(StrEnum):
    """What happens to a circuit's other parts when one part is rejected, fails or reverts."""

    ROLLBACK = "rollback"  # take them back to primary: a circuit is a unit
    KEEP = "keep"  # leave them, flag the circuit, tell the duty officer


# Twilio call statuses after which a call rings no more.
TERMINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# Those of them in which nobody picked up: no key press can belong to such a call.
ENDED_UNANSWERED = TERMINAL_CALL_STATUSES - {"completed"}


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
    # The cable segments (Inventory.cable_routes) this path's primary runs over: a cut there
    # takes the path down, and the sabotage-cable-cut playbook moves it.
    crosses: Annotated[list[Identifier], ADDED_LATER] = []

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
    name: Name
    owner: Name  # the organisation served, e.g. "Provincial Military Command"
    priority_class: PriorityClass
    restoration_level: int = Field(ge=1, le=5)  # 1 is restored first
    area: Identifier  # the district it serves
    paths: list[CircuitPath] = Field(min_length=1)
    tags: Annotated[list[Identifier], ADDED_LATER] = []  # for playbooks to select by

    def crosses(self, segment: str) -> bool:
        """Whether any of its paths' primaries runs over `segment`."""
        return any(segment in p.crosses for p in self.paths)


class WorksKind(StrEnum):
    MANHOLE = "manhole"
    HANDHOLE = "handhole"
    POLE = "pole"
    CABINET = "cabinet"
    SPLICE_CLOSURE = "splice_closure"


class Works(_Model):
    """A structure along a cable segment where the cable can be reached: where a cut is
    looked for, and where the police and the repair crew go."""

    id: Identifier
    kind: WorksKind
    name: Name
    location: Annotated[str, AfterValidator(lambda v: check_text(v, allow_empty=True))] = ""
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class CableSegment(_Model):
    """A stretch of a cable route between two joints: the unit a cut is declared on."""

    id: Identifier
    name: Name
    length_m: int | None = Field(default=None, ge=1)
    works: list[Works] = []


class CableRoute(_Model):
    """A fibre route (e.g. Kon Tum – Pleiku) and its segments, in order along it."""

    id: Identifier
    name: Name
    segments: list[CableSegment] = Field(min_length=1)


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


def site_task_queue(base: str, site: str) -> str:
    """Where a device's activities run: a worker next to the site's gear polls it."""
    return f"{base}-site-{site}"


class DutyOfficer(_Model):
    id: Identifier
    name: Name
    phone: PhoneNumber
    language: Language = Language.VI
    escalation_order: int = Field(ge=1)


class Operator(_Model):
    id: Identifier
    name: Name


class AreaKind(StrEnum):
    AREA = "area"  # an area with no place in a hierarchy (inventories before areas had one)
    PROVINCE = "province"
    WARD = "ward"  # phường
    COMMUNE = "commune"  # xã
    SPECIAL_ZONE = "special_zone"  # đặc khu
    # Units abolished on 1 July 2025 (two-tier local government): kept so that an incident can
    # still be declared by the names people use, and reports can name them.
    FORMER_PROVINCE = "former_province"
    FORMER_DISTRICT = "former_district"
    FORMER_CITY = "former_city"


class Area(_Model):
    """An administrative unit incidents are declared for. Circuits serve communes and wards;
    a province, or a former unit (the old province, districts and city), stands for every
    unit under it: naming it selects the circuits of all of them."""

    id: Identifier
    name: Name
    kind: Annotated[AreaKind, ADDED_LATER] = AreaKind.AREA
    parent: Annotated[Identifier | None, ADDED_LATER] = None  # the unit it lies in now
    # The former units it was part of (its old district or city, its old province).
    former: Annotated[list[Identifier], ADDED_LATER] = []


class Inventory(_Model):
    """Everything the orchestrator knows about the network and the people; loadable from JSON."""

    province: Annotated[str, AfterValidator(lambda v: check_text(v, allow_empty=True))] = ""
    areas: list[Area] = []
    devices: list[Device] = []
    circuits: list[Circuit] = []
    duty_officers: list[DutyOfficer] = []
    operators: list[Operator] = []
    cable_routes: Annotated[list[CableRoute], ADDED_LATER] = []

    def expand_area(self, area_id: str) -> list[str]:
        """`area_id` and every unit under it, now or formerly (a former district: its
        communes; a province: all of its units), sorted."""
        out, todo = {area_id}, [area_id]
        while todo:
            current = todo.pop()
            for a in self.areas:
                if a.id not in out and (a.parent == current or current in a.former):
                    out.add(a.id)
                    todo.append(a.id)
        return sorted(out)

    def expand_areas(self, area_ids: Iterable[str]) -> list[str]:
        """Every unit named and every unit under them, sorted."""
        return sorted({a for i in area_ids for a in self.expand_area(i)})

    def area(self, area_id: str) -> Area | None:
        return next((a for a in self.areas if a.id == area_id), None)

    def segment(self, segment_id: str) -> tuple[CableRoute, CableSegment] | None:
        """The route and the segment of that id, or None."""
        for route in self.cable_routes:
            for seg in route.segments:
                if seg.id == segment_id:
                    return route, seg
        return None

    @model_validator(mode="after")
    def _consistent(self) -> Inventory:
        devices = {d.name for d in self.devices}
        areas = {a.id for a in self.areas}
        segments = [seg.id for r in self.cable_routes for seg in r.segments]
        dupes = {i for i in segments if segments.count(i) > 1}
        if dupes:
            raise ValueError(f"duplicate cable segment ids: {sorted(dupes)}")
        for kind, ids in (
            ("device", [d.name for d in self.devices]),
            ("circuit", [c.id for c in self.circuits]),
            ("duty officer", [o.id for o in self.duty_officers]),
            ("operator", [o.id for o in self.operators]),
        ):
            dupes = {i for i in ids if ids.count(i) > 1}
            if dupes:
                raise ValueError(f"duplicate {kind} ids: {sorted(dupes)}")
        for a in self.areas:
            for ref in [a.parent, *a.former]:
                if ref is not None and ref not in areas:
                    raise ValueError(f"area {a.id}: names unknown area {ref!r}")
        for c in self.circuits:
            if areas and c.area not in areas:
                raise ValueError(f"circuit {c.id}: unknown area {c.area!r}")
            for p in c.paths:
                if p.device not in devices:
                    raise ValueError(f"circuit {c.id}: unknown device {p.device!r}")
                unknown = sorted(set(p.crosses) - set(segments))
                if unknown:
                    raise ValueError(
                        f"circuit {c.id}: its path on {p.device} crosses unknown cable "
                        f"segments {unknown} (define them under cable_routes)"
                    )
        return self

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)


def inventory_sha256(inv: Inventory) -> str:
    """Content hash over canonical JSON: the same inventory always hashes the same."""
    return hashlib.sha256(canonical_json(inv).encode()).hexdigest()


# --- incidents ---------------------------------------------------------------------------


class Incident(_Model):
    id: Identifier
    kind: IncidentKind
    area: Identifier
    description: Description = ""
    declared_by: str
    declared_at: datetime
    # The cable segment that was cut (Inventory.cable_routes), when the duty officer names one.
    segment: Identifier | None = None
    # Further units named with `area` (a set of communes), and every unit it covers: those
    # named and the units under them (a former district: its communes), resolved from the
    # inventory at declaration. `areas` empty in incidents recorded before: [area].
    also: list[Identifier] = []
    areas: list[Identifier] = []
    # A drill: marked so in every record, report, SMS and call; it touches only these devices.
    drill: bool = False
    drill_devices: list[DeviceName] = []


class TimelineEntry(_Model):
    at: datetime
    event: str
    detail: str = ""


class ChangeState(StrEnum):
    PENDING = "pending"  # planned, not started
    APPLYING = "applying"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    CONFIRMING = "confirming"  # a decision to confirm is being carried out on the device
    CONFIRMED = "confirmed"
    KEPT_ON_TIMEOUT = "kept_on_timeout"  # nobody decided; the wave's policy kept it
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"  # by the orchestrator (rejection, timeout, stand-down, partial)
    REVERTED_BY_DEVICE = "reverted_by_device"  # the device's own timer fired
    NEEDS_ATTENTION = "needs_attention"  # the device is off its record; the incident drives it
    FAILED = "failed"  # did not happen; the device was left as it was found
    REFUSED = "refused"  # refused before anything was sent (e.g. someone else's pending commit)
    SKIPPED = "skipped"  # not started: an ending order came first, or nothing was left to do
    # The duty officer wrote the device off (destroyed, unreachable for good): its state is
    # unknown, recorded for review; the incident no longer waits for it.
    WRITTEN_OFF = "written_off"

    @property
    def settled(self) -> bool:
        """No more device work will follow for this change."""
        return self in _SETTLED


_SETTLED = {
    ChangeState.CONFIRMED,
    ChangeState.KEPT_ON_TIMEOUT,
    ChangeState.ROLLED_BACK,
    ChangeState.REVERTED_BY_DEVICE,
    ChangeState.FAILED,
    ChangeState.REFUSED,
    ChangeState.SKIPPED,
    ChangeState.WRITTEN_OFF,
}


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
    attempt: int = 1


class ChangeRecord(_Model):
    """What the history shows about one device change (one device, one wave, one direction)."""

    change_id: str
    device: DeviceName
    wave: int
    direction: Direction = Direction.REROUTE
    circuits: list[str]
    state: ChangeState = ChangeState.PENDING
    detail: str = ""
    commands: list[str] = []
    verified: bool = False
    verification: str = ""
    deadline: datetime | None = None  # awaiting confirmation until then
    decided_by: str | None = None
    decision: Decision | None = None
    decision_reason: str = ""
    error: str | None = None
    error_type: str | None = None
    retryable: bool | None = None
    transcripts: list[TranscriptRef] = []
    already_applied: bool = False  # a retry (or another incident) had it in place already
    started_at: datetime | None = None
    settled_at: datetime | None = None


class CircuitStatus(_Model):
    """One circuit as an incident sees it: its one state, its parts, who else holds it."""

    circuit_id: str
    restoration_level: int = 1
    state: CircuitState = CircuitState.ON_PRIMARY
    parts: dict[str, PartState] = {}  # device -> part state
    held_with: list[str] = []  # other active incidents that hold it too
    detail: str = ""
    rerouted_at: datetime | None = None  # every part verified on backup
    confirmed_at: datetime | None = None  # every part confirmed
    restored_at: datetime | None = None  # back on primary after being rerouted


class ReviewItem(_Model):
    """Something the duty officer must look at after the incident."""

    at: datetime
    kind: str  # kept_on_timeout, kept_partial, needs_attention, refused
    subject: str  # a change or circuit id
    detail: str


class CallAttempt(_Model):
    officer_id: str
    officer_name: str
    call_sid: str | None = None
    status: str = "placed"
    acknowledged: bool = False
    sms_sid: str | None = None
    error: str | None = None
    at: datetime | None = None


class Breach(_Model):
    """A restoration level's target time to restore, missed."""

    level: int
    target_s: float
    at: datetime
    circuits: list[str]  # not verified on backup by the target


class IncidentStatus(_Model):
    incident: Incident
    playbook: str
    playbook_sha256: str
    phase: IncidentPhase = IncidentPhase.DECLARED
    circuits: list[CircuitStatus] = []
    changes: list[ChangeRecord] = []
    calls: list[CallAttempt] = []
    acknowledged_by: str | None = None
    decisions_refused: int = 0
    stood_down_by: str | None = None
    aborted_by: str | None = None
    end_reason: str = ""
    outcome: str | None = None
    review: list[ReviewItem] = []
    closing_evidence: list[TranscriptRef] = []  # the read-back of every touched device at close
    breaches: list[Breach] = []
    timeline: list[TimelineEntry] = []


__all__ = [
    "ADDED_LATER",
    "canonical_json",
    "ENDED_UNANSWERED",
    "TERMINAL_CALL_STATUSES",
    "Area",
    "AreaKind",
    "Breach",
    "CableRoute",
    "CableSegment",
    "CallAttempt",
    "ChangeRecord",
    "ChangeState",
    "Circuit",
    "CircuitPath",
    "CircuitState",
    "CircuitStatus",
    "Decision",
    "Device",
    "Direction",
    "DutyOfficer",
    "Incident",
    "IncidentKind",
    "IncidentPhase",
    "IncidentStatus",
    "Inventory",
    "Language",
    "Works",
    "WorksKind",
    "NextHop",
    "Operator",
    "PartState",
    "PartialOutcome",
    "Platform",
    "PriorityClass",
    "RerouteMechanism",
    "ReviewItem",
    "Role",
    "RouteChange",
    "TimelineEntry",
    "TimeoutOutcome",
    "TranscriptRef",
    "inventory_sha256",
]
