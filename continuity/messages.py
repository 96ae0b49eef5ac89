"""One pydantic model in, one out: workflow, activity, update and signal inputs and results."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from continuity.models import (
    CallAttempt,
    ChangeRecord,
    Decision,
    Device,
    DutyOfficer,
    Identifier,
    Incident,
    Inventory,
    RouteChange,
    TranscriptRef,
)
from continuity.playbook import PlaybookSpec


class _Msg(BaseModel):
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
    max_parallel_devices: int = Field(default=8, ge=1, le=64)
    # Device seconds that pass per real second. Real gear: 1. The lab can run its clocks
    # faster so tests need not wait the minutes IOS-XE and Junos timers count in.
    device_time_scale: float = Field(default=1.0, gt=0)


# --- workflows ---------------------------------------------------------------------------


class PlaybookRunInput(_Msg):
    incident: Incident
    playbook: PlaybookSpec
    playbook_sha256: str
    inventory: Inventory  # snapshot at declaration; lets an auditor re-render every command
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


# --- updates and signals -----------------------------------------------------------------


class ChangeDecisionInput(_Msg):
    """An operator's answer to a pending device change; operator_id comes from the API token."""

    change_id: str
    decision: Decision
    operator_id: Identifier
    reason: str = Field(default="", max_length=500)


class StandDownInput(_Msg):
    by: str
    reason: str = Field(default="", max_length=500)


class CallEvent(_Msg):
    """A Twilio callback, after the API checked its signature."""

    call_sid: str
    attempt: int
    kind: Literal["status", "gather"]
    status: str = ""
    digits: str = ""
    answered_by: str = ""


# --- activities: network -----------------------------------------------------------------


class DeviceSessionInput(_Msg):
    """What every network activity gets: the device and the change set, never a secret."""

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
    pending_commit: bool = False  # an unconfirmed change (ours or someone's) is on the device


class ApplyResult(_Msg):
    transcript: TranscriptRef | None = None
    commands: list[str] = []
    already_applied: bool = False
    auto_revert: Literal["device", "orchestrator"] = "device"
    revert_deadline_s: float = 0.0  # seconds from apply until the device reverts by itself


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


# --- activities: telephony and store -----------------------------------------------------


class PlaceCallInput(_Msg):
    incident_id: Identifier
    attempt: int  # unique per call within the incident; part of the idempotency key
    officer: DutyOfficer
    message_vi: str
    message_en: str
    ring_timeout_s: float = 30.0


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


class RecordEventInput(_Msg):
    incident_id: Identifier
    at: datetime
    event: str
    detail: str = ""


class ReportInput(_Msg):
    incident_id: Identifier
    form: Literal["timeline", "dossier_2c"]
    status_json: str  # the IncidentStatus as JSON


class ReportResult(_Msg):
    report_id: str
    sha256: str


__all__ = [
    "ApplyResult",
    "CallEvent",
    "ChangeDecisionInput",
    "DeviceChangeInput",
    "DeviceSessionInput",
    "DutyCallInput",
    "DutyCallResult",
    "LockInput",
    "PathState",
    "PlaceCallInput",
    "PlaceCallResult",
    "PlaybookRunInput",
    "PlaybookRunResult",
    "PrecheckResult",
    "RecordEventInput",
    "ReportInput",
    "ReportResult",
    "SendSmsInput",
    "SendSmsResult",
    "StandDownInput",
    "StepResult",
    "Timings",
    "VerifyInput",
    "VerifyResult",
]
