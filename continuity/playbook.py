"""The typed playbook spec: small step types that one generic workflow interprets."""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from continuity.errors import PlaybookError
from continuity.models import (
    ADDED_LATER,
    Identifier,
    IncidentKind,
    Name,
    PartialOutcome,
    PriorityClass,
    TimeoutOutcome,
    canonical_json,
)


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # A condition: the step runs only for incidents of these kinds (empty: for every kind).
    # A step skipped for it is recorded in the timeline.
    when_kinds: Annotated[list[IncidentKind], ADDED_LATER] = []

    def applies_to(self, kind: IncidentKind) -> bool:
        return not self.when_kinds or kind in self.when_kinds


class SelectCircuits(_Step):
    """Pick the incident area's circuits of these classes, highest restoration priority first.

    Narrowed further, when given, to circuits of these owners or with any of these tags; and
    with `crossing_cut_segment`, the circuits whose paths run over the cable segment the
    declaration names, whatever area they serve (the cut does not stop at a boundary).
    """

    type: Literal["select_circuits"] = "select_circuits"
    priority_classes: list[PriorityClass] = Field(min_length=1)
    max_restoration_level: int = Field(default=5, ge=1, le=5)
    owners: Annotated[list[Name], ADDED_LATER] = []
    tags: Annotated[list[Identifier], ADDED_LATER] = []
    crossing_cut_segment: Annotated[bool, ADDED_LATER] = False


class RerouteWave(_Step):
    """Move the selected circuits of these restoration levels to their backup paths."""

    type: Literal["reroute_wave"] = "reroute_wave"
    name: str
    restoration_levels: list[int] = Field(min_length=1)
    # Operators allowed to confirm; empty means any operator of the inventory.
    confirmers: list[Identifier] = []
    # A confirmation window that closes with no decision: undo (default) or keep and escalate.
    on_timeout: TimeoutOutcome = TimeoutOutcome.ROLLBACK
    # One part of a circuit rejected, failed or reverted: take its other parts back (default),
    # or keep them, flag the circuit and tell the duty officer.
    on_partial: PartialOutcome = PartialOutcome.ROLLBACK

    @model_validator(mode="after")
    def _levels(self) -> RerouteWave:
        if any(not 1 <= lv <= 5 for lv in self.restoration_levels):
            raise ValueError("restoration levels are 1..5")
        return self


class CallDutyOfficers(_Step):
    """Phone the duty officers in escalation order until one presses 1; SMS as fallback."""

    type: Literal["call_duty_officers"] = "call_duty_officers"
    message_vi: str
    message_en: str
    sms_fallback: bool = True
    rounds: int = Field(default=2, ge=1, le=9)


class Notify(_Step):
    """Send an SMS to every duty officer (e.g. a situation summary)."""

    type: Literal["notify"] = "notify"
    message_vi: str
    message_en: str


class NotifyWebhook(_Step):
    """Post the incident's notice to an HTTP webhook (e.g. the DIC's system), beside the run:
    retried with back-off while the receiver does not answer; its answer (status, a digest and
    the start of the body) is recorded. `target` names one of the worker's configured
    webhooks (CONTINUITY_WEBHOOKS): the address and its token never travel in a history."""

    type: Literal["notify_webhook"] = "notify_webhook"
    target: Identifier
    message_vi: str
    message_en: str
    attempts: int = Field(default=5, ge=1, le=20)


class Wait(_Step):
    """Wait this long before the next step (a stand-down or an abort ends the wait)."""

    type: Literal["wait"] = "wait"
    seconds: float = Field(gt=0, le=86400)


class Report(_Step):
    """Have this report written when its facts are final: at close, after the calls settled
    (the timeline is always written; this adds e.g. the 2c dossier for police and the DIC)."""

    type: Literal["report"] = "report"
    form: Literal["timeline", "dossier_2c"] = "timeline"


Step = Annotated[
    SelectCircuits | RerouteWave | CallDutyOfficers | Notify | NotifyWebhook | Wait | Report,
    Field(discriminator="type"),
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
    # Restoration level -> target seconds to restore, overriding the deployment's for those
    # levels (Timings.restore_targets_s).
    restore_targets_s: Annotated[
        dict[Annotated[int, Field(ge=1, le=5)], Annotated[float, Field(gt=0)]], ADDED_LATER
    ] = {}

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

    def sha256(self) -> str:
        return spec_sha256(self)

    @property
    def needs_segment(self) -> bool:
        """Whether a declaration must name the cut cable segment (a selection follows it)."""
        return any(isinstance(s, SelectCircuits) and s.crossing_cut_segment for s in self.steps)


def spec_sha256(spec: PlaybookSpec) -> str:
    """Content hash over canonical JSON, so any edit to a playbook changes it."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def parse_spec(data: object) -> PlaybookSpec:
    try:
        return PlaybookSpec.model_validate(data)
    except ValidationError as e:
        raise PlaybookError(f"invalid playbook: {e}") from e


def load_spec_file(path: Path) -> PlaybookSpec:
    """A playbook from a file: JSON (a spec), or Python (a module whose build() returns one).

    Refusals name each problem by its step (number and type) and field, one a line."""
    if path.suffix == ".py":
        try:
            namespace = runpy.run_path(str(path))
        except OSError as e:
            raise PlaybookError(f"{path}: cannot read it: {e.strerror}") from None
        except Exception as e:  # noqa: BLE001 - an engineer's module: say what broke, no trace
            raise PlaybookError(f"{path}: importing it failed: {type(e).__name__}: {e}") from None
        build = namespace.get("build")
        if not callable(build):
            raise PlaybookError(f"{path}: has no build() returning a PlaybookSpec")
        try:
            spec = build()
        except ValidationError as e:
            raise PlaybookError(_problems(path, e, None)) from None
        if not isinstance(spec, PlaybookSpec):
            raise PlaybookError(f"{path}: build() returned {type(spec).__name__}, not a spec")
        return spec
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PlaybookError(f"{path}: cannot read it: {e.strerror}") from None
    except ValueError as e:
        raise PlaybookError(f"{path}: not JSON: {e}") from None
    try:
        return PlaybookSpec.model_validate(data)
    except ValidationError as e:
        raise PlaybookError(_problems(path, e, data)) from None


def _problems(path: Path, e: ValidationError, data: object) -> str:
    steps = data.get("steps") if isinstance(data, dict) else None
    lines = []
    for err in e.errors(include_url=False):
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc) or "(playbook)"
        if loc[:1] == ["steps"] and len(loc) > 1 and isinstance(loc[1], int):
            step = steps[loc[1]] if isinstance(steps, list) and loc[1] < len(steps) else None
            kind = step.get("type", "?") if isinstance(step, dict) else "?"
            fields = loc[3:] if len(loc) > 2 and loc[2] == kind else loc[2:]  # skip the tag
            where = f"step {loc[1] + 1} ({kind})" + (
                f", field {'.'.join(str(p) for p in fields)}" if fields else ""
            )
        lines.append(f"  - {where}: {err['msg']}")
    return f"{path} is not a valid playbook:\n" + "\n".join(lines)


__all__ = [
    "CallDutyOfficers",
    "Notify",
    "NotifyWebhook",
    "PlaybookSpec",
    "Report",
    "RerouteWave",
    "SelectCircuits",
    "Step",
    "Wait",
    "load_spec_file",
    "parse_spec",
    "spec_sha256",
]
