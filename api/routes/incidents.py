"""Incidents: declare, read, decide a device change, stand down, export history and report."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, Response
from temporalio.client import WorkflowExecutionStatus as ExecStatus
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AnyRole, Auditor, DutyOfficer, Operator, SettingsDep, StoreDep, TemporalDep
from api.errors import Conflict, Forbidden, NotFound, Unavailable, Unprocessable
from api.schemas import (
    DecisionCreate,
    IncidentCreate,
    IncidentCreated,
    IncidentPublic,
    IncidentSummary,
    StandDownCreate,
)
from continuity.dialects import check_timings
from continuity.errors import ValidationFailed
from continuity.messages import (
    ChangeDecisionInput,
    DutyCallResult,
    PlaybookRunInput,
    StandDownInput,
)
from continuity.models import ChangeRecord, Incident, IncidentStatus
from continuity.report import render_markdown
from playbooks import DEFAULT_PLAYBOOK, get_playbook
from workflows import PlaybookWorkflow, calls_workflow_id

router = APIRouter(prefix="/incidents", tags=["incidents"])

_UPDATE_STATUS = {
    "UnknownOperator": Forbidden,
    "UnknownChange": NotFound,
    "ChangeNotPending": Conflict,
}


def _new_incident_id() -> str:
    return f"INC-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@router.post("", status_code=201, response_model=IncidentCreated)
async def declare_incident(
    body: IncidentCreate,
    who: DutyOfficer,
    settings: SettingsDep,
    store: StoreDep,
    temporal: TemporalDep,
) -> IncidentCreated:
    spec = get_playbook(body.playbook or DEFAULT_PLAYBOOK)
    if body.kind not in spec.incident_kinds:
        raise Unprocessable(f"playbook {spec.name} does not handle {body.kind.value} incidents")
    inventory = await asyncio.to_thread(store.inventory)
    if body.area not in {a.id for a in inventory.areas}:
        raise Unprocessable(
            f"unknown area {body.area!r}; known: "
            + ", ".join(sorted(a.id for a in inventory.areas))
        )
    platforms = {
        inventory.device(p.device).platform
        for c in inventory.circuits
        if c.area == body.area
        for p in c.paths
    }
    try:
        check_timings(platforms, settings.timings)
    except ValidationFailed as e:
        # A configuration fault, not the duty officer's: refuse before any device is touched.
        raise Unavailable(f"the configured confirmation window does not fit: {e}") from None
    incident = Incident(
        id=body.id or _new_incident_id(),
        kind=body.kind,
        area=body.area,
        description=body.description,
        declared_by=who.subject,
        declared_at=datetime.now(UTC),
    )
    sha = spec.sha256()
    try:
        handle = await temporal.start_workflow(
            PlaybookWorkflow.run,
            PlaybookRunInput(
                incident=incident,
                playbook=spec,
                playbook_sha256=sha,
                inventory=inventory,
                timings=settings.timings,
            ),
            id=incident.id,
            task_queue=settings.task_queue,
            # The incident id is the workflow id: a second declaration can never start a second run.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        raise Conflict(
            f"incident {incident.id} is already declared", type="AlreadyDeclared"
        ) from None
    return IncidentCreated(
        id=incident.id,
        workflow_id=handle.id,
        run_id=handle.result_run_id,
        playbook=f"{spec.name} v{spec.version}",
        playbook_sha256=sha,
    )


@router.get("", response_model=list[IncidentSummary])
async def list_incidents(_: AnyRole, temporal: TemporalDep) -> list[IncidentSummary]:
    out: list[IncidentSummary] = []
    async for wf in temporal.list_workflows("WorkflowType = 'Playbook'", limit=100):
        out.append(
            IncidentSummary(
                id=wf.id,
                status=wf.status.name if wf.status else "UNKNOWN",
                start_time=wf.start_time.isoformat() if wf.start_time else None,
            )
        )
    return out


async def _handle(temporal: TemporalDep, incident_id: str) -> WorkflowHandle:
    handle = temporal.get_workflow_handle(incident_id)
    try:
        await handle.describe()
    except RPCError as e:
        if e.status is RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no incident {incident_id!r}") from None
        raise Unavailable(f"workflow service: {e.message}") from None
    return handle


@router.get("/{incident_id}", response_model=IncidentPublic)
async def read_incident(incident_id: str, _: AnyRole, temporal: TemporalDep) -> IncidentPublic:
    handle = await _handle(temporal, incident_id)
    desc = await handle.describe()
    status = await handle.query(PlaybookWorkflow.status)
    calls = DutyCallResult()
    try:
        calls = await temporal.get_workflow_handle(calls_workflow_id(incident_id)).query(
            "calls", result_type=DutyCallResult
        )
    except RPCError:
        pass  # the playbook has not phoned anyone (yet)
    return IncidentPublic(
        status=status,
        calls=calls.attempts or status.calls,
        acknowledged_by=calls.acknowledged_by or status.acknowledged_by,
        running=desc.status is ExecStatus.RUNNING,
    )


@router.post("/{incident_id}/changes/{change_id}/decision", response_model=ChangeRecord)
async def decide_change(
    incident_id: str, change_id: str, body: DecisionCreate, who: Operator, temporal: TemporalDep
) -> ChangeRecord:
    handle = await _handle(temporal, incident_id)
    try:
        return await handle.execute_update(
            "decide_change",
            ChangeDecisionInput(
                change_id=change_id,
                decision=body.decision,
                operator_id=who.subject,
                reason=body.reason,
            ),
            result_type=ChangeRecord,
        )
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        if isinstance(cause, ApplicationError) and cause.type in _UPDATE_STATUS:
            raise _UPDATE_STATUS[cause.type](cause.message, type=cause.type) from None
        raise Conflict(str(cause or e)) from None
    except RPCError as e:
        raise Conflict(f"incident {incident_id}: {e.message}") from None


@router.post("/{incident_id}/stand-down", status_code=202)
async def stand_down(
    incident_id: str, body: StandDownCreate, who: DutyOfficer, temporal: TemporalDep
) -> dict[str, str]:
    handle = await _handle(temporal, incident_id)
    try:
        await handle.signal(
            PlaybookWorkflow.stand_down, StandDownInput(by=who.subject, reason=body.reason)
        )
    except RPCError as e:
        raise Conflict(f"incident {incident_id}: {e.message}") from None
    return {"status": "stand-down requested"}


@router.get("/{incident_id}/history")
async def export_history(incident_id: str, _: Auditor, temporal: TemporalDep) -> Response:
    handle = await _handle(temporal, incident_id)
    history = await handle.fetch_history()
    return Response(
        history.to_json(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{incident_id}.json"'},
    )


@router.get("/{incident_id}/report")
async def incident_report(
    incident_id: str, _: AnyRole, temporal: TemporalDep, form: str = "timeline"
) -> Response:
    if form not in ("timeline", "dossier_2c"):
        raise Unprocessable("form is timeline or dossier_2c")
    handle = await _handle(temporal, incident_id)
    status: IncidentStatus = await handle.query(PlaybookWorkflow.status)
    return Response(render_markdown(status, form=form), media_type="text/markdown")
