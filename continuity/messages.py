"""One pydantic model in, one out: workflow, activity, update and signal inputs and results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_origin

from pydantic import ConfigDict, Field

from continuity.attestation import Attestation
from continuity.models import (
    CallAttempt,
    ChangeState,
    CircuitState,
    Compact,
    Decision,
    DeviceName,
    Direction,
    DutyOfficer,
    Identifier,
    Incident,
    IncidentPhase,
    IncidentStatus,
    Inventory,
    PartState,
    Reason,
    TranscriptRef,
)
from continuity.playbook import PlaybookSpec


class _Msg(Compact):
    model_config = ConfigDict(extra="forbid")


class Timings(_Msg):
    """Every duration a run uses; workflow input so tests can make them short."""

    confirm_window_s: float = 600.0  # how long an operator has to confirm a device change
    revert_margin_s: float = 120.0  # device auto-revert fires this long after the window closes
    verify_timeout_s: float = 30.0  # polling the route table for the new path
    revert_wait_grace_s: float = 60.0  # extra time allowed for a device's own revert to show
    ssh_step_timeout_s: float = 120.0  # start-to-close of one SSH activity
    heartbeat_timeout_s: float = 15.0
    ssh_attempts: int = Field(default=4, ge=1, le=20)  # tries of one SSH step on retryable errors
    ssh_retry_initial_s: float = 1.0  # first back-off; doubles, capped at 10 s
    ring_timeout_s: float = 30.0  # how long Twilio lets a phone ring
    escalation_delay_s: float = 120.0  # wait for "press 1" before the next officer
    max_parallel_devices: int = Field(default=32, ge=1, le=256)  # SSH steps in flight at once
    # Device seconds that pass per real second. Real gear: 1. The lab can run its clocks
    # faster so tests need not wait the minutes IOS-XE and Junos timers count in.
    device_time_scale: float = Field(default=1.0, gt=0)
    # Driving a device back to its recorded state never gives up; this caps the back-off.
    drive_retry_max_s: float = Field(default=60.0, gt=0)
    # Restoration level -> target seconds from declaration until its circuits are verified on
    # backup; missed, a recorded breach and a call to the duty officer. Empty here (and in
    # every history recorded before targets existed); the settings give a deployment's own.
    restore_targets_s: dict[Annotated[int, Field(ge=1, le=5)], Annotated[float, Field(gt=0)]] = {}


# --- workflows ---------------------------------------------------------------------------


class DutyCallInput(_Msg):
    incident_id: Identifier
    officers: list[DutyOfficer]
    message_vi: str
    message_en: str
    sms_fallback: bool = True
    rounds: int = 2
    timings: Timings = Timings()
    # Attempt numbers are unique per incident; a later escalation (an alert) starts higher.
    first_attempt: int = Field(default=1, ge=1)


class DutyCallResult(_Msg):
    acknowledged_by: str | None = None
    attempts: list[CallAttempt] = []


# --- updates and signals -----------------------------------------------------------------


class StandDownInput(_Msg):
    by: str
    reason: Reason = ""
    attestation: Attestation | None = None  # the API's signature of this order

    def attested(self) -> dict[str, str]:
        """What the attestation's content hash covers."""
        return {"reason": self.reason}


class CallEvent(_Msg):
    """A Twilio callback, after the API checked its signature."""

    call_sid: str
    attempt: int
    kind: Literal["status", "gather"]
    status: str = ""
    digits: str = ""
    answered_by: str = ""


# --- activities: network -----------------------------------------------------------------


class PathState(_Msg):
    circuit_id: str
    primary_present: bool
    backup_present: bool


class LockInput(_Msg):
    device: str
    holder: str
    lease_s: float


# --- activities: telephony and store -----------------------------------------------------


class PlaceCallInput(_Msg):
    incident_id: Identifier
    attempt: int  # unique per call within the incident; part of the idempotency key
    officer: DutyOfficer
    message_vi: str
    message_en: str
    ring_timeout_s: float = 30.0
    workflow_id: str | None = None  # the DutyCall that places it: where webhooks go


class PlaceCallResult(_Msg):
    call_sid: str
    status: str


class SendSmsInput(_Msg):
    incident_id: Identifier
    key: str  # idempotency key within the incident
    officer: DutyOfficer
    body: str


class SendSmsResult(_Msg):
    sid: str
    status: str


class ReportResult(_Msg):
    report_id: str
    sha256: str
    form: str = ""


# --- the incident core ---------------------------------------------------------------------


class IncidentInput(_Msg):
    incident: Incident
    playbook: PlaybookSpec
    playbook_sha256: str
    # The area's circuits, their devices, the officers and operators, at declaration: lets an
    # auditor re-render every command from the history alone. Device steps name it by hash
    # (the store keeps a copy), so their inputs stay small.
    inventory: Inventory
    inventory_sha256: str
    timings: Timings = Timings()
    # The deployment's public keys (base64, raw Ed25519) that attest human actions, and the
    # declaration's own attestation. No keys: a deployment without a signing key, whose
    # actions the workflow takes unattested (and says so in the timeline).
    attestation_keys: list[str] = []
    declaration: Attestation | None = None

    def attested(self) -> dict[str, str]:
        """What the declaration's attestation covers: the incident, the playbook and the
        inventory snapshot it runs on, by their hashes."""
        i = self.incident
        out = {
            "kind": i.kind.value,
            "area": i.area,
            "description": i.description,
            "declared_by": i.declared_by,
            "playbook_sha256": self.playbook_sha256,
            "inventory_sha256": self.inventory_sha256,
        }
        if i.segment is not None:  # only when named: earlier declarations verify unchanged
            out["segment"] = i.segment
        if i.also:  # likewise: the further units named with the area
            out["also"] = ",".join(i.also)
        if i.drill:  # likewise: a drill, and the only devices it may touch
            out["drill_devices"] = ",".join(sorted(i.drill_devices))
        return out

    # False when the deployment places no calls (settings.telephony "none"); recorded as such.
    telephony: bool = True


class IncidentResult(_Msg):
    """Small on purpose: the full record is the status query and the stored reports."""

    incident_id: str
    phase: IncidentPhase
    outcome: str
    circuits: dict[str, CircuitState] = {}
    acknowledged_by: str | None = None


class AbortInput(_Msg):
    by: str
    reason: Reason = ""
    attestation: Attestation | None = None

    def attested(self) -> dict[str, str]:
        return {"reason": self.reason}


class WriteOffInput(_Msg):
    """A duty officer's order: stop waiting for a device that will not answer again."""

    device: DeviceName
    by: str
    reason: Reason
    attestation: Attestation | None = None

    def attested(self) -> dict[str, str]:
        return {"device": self.device, "reason": self.reason}


class WriteOffRecordInput(_Msg):
    incident_id: Identifier
    device: DeviceName
    detail: str


class WebhookInput(_Msg):
    incident_id: Identifier
    target: Identifier
    key: str  # the notice's idempotency key: a retry is the same notice, never a second
    payload: dict[str, Any]


class WebhookResult(_Msg):
    status: int
    body_sha256: str
    body_excerpt: str = ""  # the start of the receiver's answer, for the record


class DecisionSignal(_Msg):
    """A decision the store accepted for a change (the API claimed it first)."""

    change_id: str
    decision: Decision
    operator_id: Identifier
    reason: Reason = ""
    attestation: Attestation | None = None  # the API's signature of this decision

    def attested(self) -> dict[str, str]:
        return {"decision": self.decision.value, "reason": self.reason}


class DecisionRefusedSignal(_Msg):
    """A decision the store refused, sent so the history shows it too."""

    change_id: str
    decision: Decision
    operator_id: str
    refusal: str  # the DecisionRefused subclass name
    detail: str = ""
    attestation: Attestation | None = None  # the API's signature of this refusal

    def attested(self) -> dict[str, str]:
        return {"decision": self.decision.value, "refusal": self.refusal, "detail": self.detail}


class DecisionBatch(_Msg):
    """Decisions and refusals for one incident, as many as arrived while the last batch was
    in flight: one signal for a burst of operators, not one each (api/signals.py)."""

    decisions: list[DecisionSignal] = Field(default_factory=list)
    refusals: list[DecisionRefusedSignal] = Field(default_factory=list)


def _lease_s(t: Timings) -> float:
    """How long a device lock outlives a step of these timings if nobody releases it."""
    return (
        t.confirm_window_s
        + t.verify_timeout_s
        + t.revert_margin_s
        + t.revert_wait_grace_s
        + 4 * t.ssh_step_timeout_s
    )


_DEFAULT = Timings()


class StepTimings(_Msg):
    """The durations one device step needs; a subset of Timings, kept small for the history.

    Each defaults to what Timings' defaults give, so an input carries only what a deployment
    (or a test) changed: 600 device steps of 200 devices carried 69 KB of default durations.
    """

    confirm_window_s: float = _DEFAULT.confirm_window_s
    verify_timeout_s: float = _DEFAULT.verify_timeout_s
    revert_margin_s: float = _DEFAULT.revert_margin_s
    revert_wait_grace_s: float = _DEFAULT.revert_wait_grace_s
    device_time_scale: float = _DEFAULT.device_time_scale
    lease_s: float = _lease_s(_DEFAULT)

    @classmethod
    def of(cls, t: Timings) -> StepTimings:
        return cls(
            confirm_window_s=t.confirm_window_s,
            verify_timeout_s=t.verify_timeout_s,
            revert_margin_s=t.revert_margin_s,
            revert_wait_grace_s=t.revert_wait_grace_s,
            device_time_scale=t.device_time_scale,
            lease_s=_lease_s(t),
        )

    @property
    def revert_window_s(self) -> float:
        """Real seconds a device keeps a change unconfirmed before its own timer may undo it."""
        return self.confirm_window_s + self.verify_timeout_s + self.revert_margin_s


class Evidence(_Msg):
    """How much of a change's journal the workflow already holds: results send only the rest."""

    commands: int = 0
    transcripts: int = 0


class DeviceStepInput(_Msg):
    """Apply a change (reroute, awaiting an operator; or restore, confirmed in the session).

    The device and the circuits' paths on it are named, not carried: the step reads them from
    the incident's inventory snapshot (`snapshot`, its SHA-256), as the workflow input has it.
    """

    incident_id: Identifier
    change_id: str
    wave: int
    device: DeviceName
    circuits: list[Identifier]
    snapshot: str
    direction: Direction
    declared_by: str = ""  # the store refuses this principal's decisions on the change
    confirmers: list[str] = []  # empty: any operator
    timings: StepTimings
    known: Evidence = Evidence()


class StepClaim(_Msg):
    """Why a confirm or undo step runs; checked against the store before the device is touched."""

    kind: Literal["decision", "timeout", "order"]
    decision: Decision | None = None  # kind "decision": the operator's
    by: str = ""  # the operator, or who gave the order
    reason: str = ""
    keep: bool = False  # kind "timeout" under a keep policy: confirm instead of undoing


class ChangeStepInput(_Msg):
    """Confirm or undo a change by id: the store holds the device and routes it acts on."""

    incident_id: Identifier
    change_id: str
    claim: StepClaim
    timings: StepTimings
    let_device_revert: bool = False  # undo on timeout: watch the device's own timer first
    release_lock: bool = True
    known: Evidence = Evidence()


class DeviceStepResult(_Msg):
    state: ChangeState
    detail: str = ""
    # The change's journal beyond what the input said was known: every line sent by any step
    # and attempt (killed ones too), and every session's transcript, in order.
    commands: list[str] = []
    transcripts: list[TranscriptRef] = []
    parts: dict[str, PartState] = {}  # circuit -> part state recorded on this device
    verified: bool = False
    already_applied: bool = False
    deadline: datetime | None = None  # awaiting: when the confirmation window closes
    auto_revert: Literal["device", "orchestrator"] = "device"
    kept: dict[str, list[str]] = {}  # restore: circuit -> incidents that still hold it
    decision: DecisionSignal | None = None  # the store had a decision: carry it out instead
    refusal: DecisionRefusedSignal | None = None  # the claimed decision was refused


class ReadBackInput(_Msg):
    incident_id: Identifier
    device: DeviceName
    circuits: list[Identifier]
    snapshot: str


class ReadBackResult(_Msg):
    parts: dict[str, PartState] = {}
    pending: bool = False
    transcript: TranscriptRef | None = None


class HoldInput(_Msg):
    incident_id: Identifier
    circuits: list[str]
    # The declaration and what it attests: the worker checks it against the deployment's own
    # key before the incident holds a circuit (an input can name any key; the worker's is
    # the one it trusts).
    declared_by: str = ""
    declared: dict[str, str] = {}
    declaration: Attestation | None = None


class HoldResult(_Msg):
    others: dict[str, list[str]] = {}  # circuit -> other active incidents holding it


class ReleaseInput(_Msg):
    incident_id: Identifier


class ReportsInput(_Msg):
    """Write the reports of a closing incident; the activity reads its final status from the
    workflow (a query), so the history keeps the report ids and hashes, not their text."""

    incident_id: Identifier
    forms: list[Literal["timeline", "dossier_2c"]]


class ReportsResult(_Msg):
    reports: list[ReportResult] = []


# The status's lists (changes, circuits, timeline, ...): what grows with an incident's size.
STATUS_LISTS = tuple(
    name for name, f in IncidentStatus.model_fields.items() if get_origin(f.annotation) is list
)


class StatusPageRequest(_Msg):
    """The `index`th page of an incident's status: `size` items of each of its lists, or of
    a list named in `sizes` that many."""

    index: int = Field(ge=0)
    size: int = Field(ge=1)
    sizes: dict[str, Annotated[int, Field(ge=1)]] = {}

    def of(self, name: str) -> int:
        return self.sizes.get(name, self.size)


class StatusPage(_Msg):
    """The status with each list cut to one page, and how long each list is in all."""

    status: IncidentStatus
    totals: dict[str, int] = {}


__all__ = [
    "AbortInput",
    "ChangeStepInput",
    "DecisionBatch",
    "DecisionRefusedSignal",
    "DecisionSignal",
    "DeviceStepInput",
    "DeviceStepResult",
    "Evidence",
    "HoldInput",
    "HoldResult",
    "IncidentInput",
    "IncidentResult",
    "ReadBackInput",
    "ReadBackResult",
    "ReleaseInput",
    "ReportsInput",
    "ReportsResult",
    "STATUS_LISTS",
    "StatusPage",
    "StatusPageRequest",
    "StepClaim",
    "StepTimings",
    "CallEvent",
    "DutyCallInput",
    "DutyCallResult",
    "LockInput",
    "PathState",
    "PlaceCallInput",
    "PlaceCallResult",
    "ReportResult",
    "SendSmsInput",
    "SendSmsResult",
    "StandDownInput",
    "WriteOffInput",
    "WriteOffRecordInput",
    "Timings",
]
