"""Request and response bodies, named for their role."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from continuity.models import (
    CallAttempt,
    Decision,
    Identifier,
    IncidentKind,
    IncidentStatus,
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IncidentCreate(_Body):
    id: Identifier | None = None  # the business key; generated when absent
    kind: IncidentKind
    area: Identifier
    description: str = Field(default="", max_length=2000)
    playbook: Identifier | None = None  # default: the catalogue's default playbook


class IncidentCreated(_Body):
    id: str
    workflow_id: str
    run_id: str | None
    playbook: str
    playbook_sha256: str


class IncidentPublic(_Body):
    status: IncidentStatus
    calls: list[CallAttempt] = []
    acknowledged_by: str | None = None
    running: bool


class IncidentSummary(_Body):
    id: str
    status: str
    start_time: str | None


class DecisionCreate(_Body):
    decision: Decision
    reason: str = Field(default="", max_length=500)


class StandDownCreate(_Body):
    reason: str = Field(default="", max_length=500)


class Health(_Body):
    status: str
    temporal: bool
    database: bool
