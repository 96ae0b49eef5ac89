"""Incidents: declare, read, decide a device change, stand down, abort, export history and report.

Decisions are claimed in the store (one winner per change, in one transaction) and then
signalled to the incident; see docs/incident-core.md §5.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Response
from pydantic_core import to_json
from temporalio.client import WorkflowExecutionStatus as ExecStatus
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import (
    AUTHORIZED,
    AttesterDep,
    ClaimsDep,
    CourierDep,
    Principal,
    SettingsDep,
    StatusViewsDep,
    StoreDep,
    TemporalDep,
)
from api.errors import Conflict, NotFound, Unavailable, Unprocessable, documented, ok_as
from api.routes.circuits import circuit_statuses
from api.schemas import (
    AbortCreate,
    ChangePublic,
    DecisionAccepted,
    DecisionCreate,
    EndAccepted,
    IncidentCreate,
    IncidentCreated,
    IncidentPublic,
    IncidentSummary,
    StandDownCreate,
    WriteOffCreate,
)
from api.signals import signal_incident
from continuity.attestation import Action, Attestation, Attester
from continuity.errors import DecisionRefused
from continuity.incidents import prepare_incident
from continuity.messages import (
    AbortInput,
    DecisionRefusedSignal,
    DecisionSignal,
    DutyCallResult,
    StandDownInput,
    WriteOffInput,
)
from continuity.models import ChangeState, DeviceName, IncidentPhase, IncidentStatus
from continuity.report import ReportContext, render_html, render_markdown, stored_form
from continuity.settings import ApiToken
from continuity.store import DecisionClaim
from continuity.temporal import StatusReader, incident_input_of
from playbooks import DEFAULT_PLAYBOOK, get_playbook
from workflows import IncidentWorkflow, calls_workflow_id

log = logging.getLogger(__name__)
router = APIRouter(prefix="/incidents", tags=["incidents"], dependencies=AUTHORIZED)

_MARKDOWN = "text/markdown; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_MARKDOWN_OK = ok_as("text/markdown", "the report (format=markdown)")
_MARKDOWN_OK[200]["content"]["text/html"] = {"schema": {"type": "string"}}  # format=html
# Temporal's own JSON form of a history, as `continuity audit replay` reads it.
_HISTORY_OK = ok_as("application/json", "the workflow history", "object")


def _new_incident_id() -> str:
    return f"INC-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@router.post(
    "",
    status_code=201,
    response_model=IncidentCreated,
    responses=documented(401, 403, 409, 422, 503),
)
async def declare_incident(
    body: IncidentCreate,
    who: Principal,
    settings: SettingsDep,
    store: StoreDep,
    temporal: TemporalDep,
    attester: AttesterDep,
) -> IncidentCreated:
    spec = get_playbook(body.playbook or DEFAULT_PLAYBOOK)
    inp = prepare_incident(
        spec=spec,
        inventory=await asyncio.to_thread(store.inventory),
        incident_id=body.id or _new_incident_id(),
        kind=body.kind,
        area=body.area,
        description=body.description,
        declared_by=who.subject,
        timings=settings.timings,
        telephony=settings.telephony != "none",
        segment=body.segment,
        drill_devices=body.drill_devices if body.drill else None,
        also=body.also,
        max_devices=settings.max_devices_per_incident,
    )
    if attester is not None:
        inp.attestation_keys = attester.public_keys
        inp.declaration = _attest(attester, who, "declare", inp.incident.id, inp.attested())
    await asyncio.to_thread(store.save_snapshot, inp.inventory)
    try:
        handle = await temporal.start_workflow(
            IncidentWorkflow.run,
            inp,
            id=inp.incident.id,
            task_queue=settings.task_queue,
            # The incident id is the workflow id: a second declaration can never start a second run.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        raise Conflict(
            f"incident {inp.incident.id} is already declared", type="AlreadyDeclared"
        ) from None
    except RPCError as e:
        raise Unavailable(f"workflow service: {e.message}") from None
    return IncidentCreated(
        id=inp.incident.id,
        workflow_id=handle.id,
        run_id=handle.result_run_id,
        playbook=f"{spec.name} v{spec.version}",
        playbook_sha256=inp.playbook_sha256,
    )


def _attest(
    attester: Attester | None,
    who: ApiToken,
    action: Action,
    incident_id: str,
    content: dict[str, str],
    change_id: str = "",
) -> Attestation | None:
    """The API's signature of a human action it forwards (None: no signing key)."""
    if attester is None:
        return None
    return attester(
        action=action,
        incident_id=incident_id,
        subject=who.subject,
        role=who.role.value,
        token_id=who.token_id,
        content=content,
        at=datetime.now(UTC),
        change_id=change_id,
    )


@router.get("", response_model=list[IncidentSummary], responses=documented(401, 403, 503))
async def list_incidents(_: Principal, temporal: TemporalDep) -> list[IncidentSummary]:
    out: list[IncidentSummary] = []
    try:
        async for wf in temporal.list_workflows(
            "WorkflowType = 'Incident' OR WorkflowType = 'Playbook'", limit=100
        ):
            out.append(
                IncidentSummary(
                    id=wf.id,
                    status=wf.status.name if wf.status else "UNKNOWN",
                    start_time=wf.start_time.isoformat() if wf.start_time else None,
                )
            )
    except RPCError as e:
        raise Unavailable(f"workflow service: {e.message}") from None
    return out


async def _describe(temporal: TemporalDep, incident_id: str) -> tuple[WorkflowHandle, bool]:
    """The incident's handle and whether it still runs; 404 for an unknown id."""
    handle = temporal.get_workflow_handle(incident_id)
    try:
        desc = await handle.describe()
    except RPCError as e:
        if e.status is RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no incident {incident_id!r}") from None
        raise Unavailable(f"workflow service: {e.message}") from None
    if desc.workflow_type != "Incident":
        raise NotFound(f"{incident_id!r} is not an incident of this version")
    return handle, desc.status is ExecStatus.RUNNING


async def _status(handle: WorkflowHandle, reader: StatusReader) -> IncidentStatus:
    try:
        return await reader.read(handle)
    except RPCError as e:
        raise Unavailable(f"workflow service: {e.message}") from None
    except WorkflowQueryFailedError as e:
        raise Unavailable(f"the status of {handle.id} could not be read: {e}") from None


@router.get(
    "/{incident_id}",
    response_model=IncidentPublic,
    responses={
        304: {"description": "Not Modified: the status is the one whose ETag If-None-Match names"},
        **documented(401, 403, 404, 422, 503),
    },
)
async def read_incident(
    incident_id: str,
    _: Principal,
    store: StoreDep,
    temporal: TemporalDep,
    views: StatusViewsDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The incident's status, its circuits as the ledger has them now, and its calls.

    Consoles poll this: the answer is shared by every reader for up to `status_fresh_s`
    (an order sent through the API makes the next read new; a reading that took longer than
    0.25 s is shared for as long again) and carries an ETag; a poll that sends it back in
    If-None-Match gets 304 and no body while the status is unchanged. An incident whose
    status is past Temporal's payload limit (about a thousand devices) is read in pages and
    shown whole."""

    body, etag = await views.read(
        incident_id, lambda: _incident_json(incident_id, store, temporal, views.reader)
    )
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def _incident_json(
    incident_id: str, store: StoreDep, temporal: TemporalDep, reader: StatusReader
) -> bytes:
    """The status (its circuits as the ledger has them now while it runs) and its calls, as
    JSON: the ledger read and the encoding (~450 KB at 200 devices) in one thread, beside the
    event loop the decisions wait on."""
    handle, running = await _describe(temporal, incident_id)
    status = await _status(handle, reader)
    calls = DutyCallResult()
    if running:
        try:
            calls = await temporal.get_workflow_handle(calls_workflow_id(incident_id)).query(
                "calls", result_type=DutyCallResult
            )
        except RPCError:
            pass  # the playbook has not phoned anyone (yet)

    def encoded() -> bytes:
        shown = status
        if running:
            # While it runs, its circuits are what the ledger says now (another incident may
            # share them); once closed, the record the incident ended with.
            ledger = circuit_statuses(store, status.circuits)
            shown = status.model_copy(update={"circuits": ledger})
        public = IncidentPublic(
            status=shown,
            calls=calls.attempts or shown.calls,
            acknowledged_by=calls.acknowledged_by or shown.acknowledged_by,
            running=running,
        )
        return public.model_dump_json().encode()

    return await asyncio.to_thread(encoded)


@router.get(
    "/{incident_id}/changes",
    response_model=list[ChangePublic],
    responses={
        304: {"description": "Not Modified: the list is the one whose ETag If-None-Match names"},
        **documented(401, 403, 404, 422, 503),
    },
)
async def list_changes(
    incident_id: str,
    _: Principal,
    store: StoreDep,
    temporal: TemporalDep,
    state: ChangeState | None = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The incident's device changes as the store has them (what an operator's screen polls).

    The answer carries an ETag; a poll that sends it back in If-None-Match gets 304 and no
    body while the list is unchanged."""

    def listed() -> tuple[int, bytes, str]:
        rows = store.change_list(incident_id, state=state.value if state else None)
        # Serialised straight from the rows (their columns are ChangePublic's fields, which
        # document them), in this thread: screens poll this several times a second, and 200
        # rows built on the event loop held back the decisions it was waiting for.
        body = to_json([r._asdict() for r in rows])
        # Of the body itself: it changes exactly when the list does, whoever wrote the store.
        return len(rows), body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'

    count, body, etag = await asyncio.to_thread(listed)
    if not count and not await asyncio.to_thread(store.change_list, incident_id):
        # No change yet, or no such incident: only the workflow service knows which (404).
        await _describe(temporal, incident_id)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match's weak comparison (RFC 9110 §13.1.2): any listed tag, W/ or not, or *."""
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


@router.post(
    "/{incident_id}/changes/{change_id}/decision",
    response_model=DecisionAccepted,
    responses=documented(401, 403, 404, 409, 422, 503),
)
async def decide_change(
    incident_id: str,
    change_id: str,
    body: DecisionCreate,
    who: Principal,
    courier: CourierDep,
    claims: ClaimsDep,
    attester: AttesterDep,
    settings: SettingsDep,
    views: StatusViewsDep,
    response: Response,
) -> DecisionAccepted:
    """Claim the change for this decision in the store, then tell the incident.

    The answer's Server-Timing header gives the claim's and the signal's milliseconds (where a
    slow decision spent its time, as the bench reports it)."""
    started = time.perf_counter()
    signal = DecisionSignal(
        change_id=change_id, decision=body.decision, operator_id=who.subject, reason=body.reason
    )

    def prepare() -> DecisionClaim:
        # Signed in the claim's thread hop: CPU the event loop need not spend.
        signal.attestation = _attest(
            attester, who, "decide", incident_id, signal.attested(), change_id
        )
        return DecisionClaim(
            incident_id=incident_id,
            change_id=change_id,
            decision=body.decision,
            operator=who.subject,
            reason=body.reason,
            now=datetime.now(UTC),
            attestation=signal.attestation.model_dump(mode="json") if signal.attestation else None,
            shown=body.lines_sha256,
        )

    try:
        won = await claims.claim(prepare)
    except DecisionRefused as e:
        refusal = DecisionRefusedSignal(
            change_id=change_id,
            decision=body.decision,
            operator_id=who.subject,
            refusal=e.type,
            detail=e.message,
        )
        refusal.attestation = _attest(
            attester, who, "decide_refused", incident_id, refusal.attested(), change_id
        )
        try:  # so the history shows the refusal too; the store already has it
            await courier.send(incident_id, refusal, wait_s=settings.decision_signal_wait_s)
        except (NotFound, Unavailable) as again:
            log.warning("refusal of %s not signalled: %s", change_id, again.message)
        raise
    claimed = time.perf_counter()
    views.forget(incident_id)  # the claim is in the store: the next read shows who decided
    try:
        delivered = await courier.send(incident_id, signal, wait_s=settings.decision_signal_wait_s)
    except (NotFound, Unavailable) as e:
        # The claim is durable: the incident finds it when the window closes, at the latest.
        log.warning("decision on %s claimed but not signalled: %s", change_id, e.message)
        delivered = False
    # claim: from the request's handler to the store's answer; store: of that, its batch in
    # the thread (the rest waited for the batch before it, a thread and the GIL).
    response.headers["Server-Timing"] = (
        f"claim;dur={(claimed - started) * 1000:.1f}, "
        f"store;dur={won.store_s * 1000:.1f}, "
        f"signal;dur={(time.perf_counter() - claimed) * 1000:.1f}"
    )
    return DecisionAccepted(
        incident_id=incident_id,
        change_id=change_id,
        decision=body.decision,
        decided_by=who.subject,
        decided_at=won.at,
        delivered=delivered,
    )


@router.post(
    "/{incident_id}/stand-down",
    status_code=202,
    response_model=EndAccepted,
    responses=documented(401, 403, 404, 409, 422, 503),
)
async def stand_down(
    incident_id: str,
    body: StandDownCreate,
    who: Principal,
    temporal: TemporalDep,
    attester: AttesterDep,
    views: StatusViewsDep,
) -> EndAccepted:
    handle = await _ending_allowed(temporal, incident_id)
    order = StandDownInput(by=who.subject, reason=body.reason)
    order.attestation = _attest(attester, who, "stand_down", incident_id, order.attested())
    await signal_incident(handle, IncidentWorkflow.stand_down, order)
    views.forget(incident_id)
    return EndAccepted(status="stand-down requested")


@router.post(
    "/{incident_id}/abort",
    status_code=202,
    response_model=EndAccepted,
    responses=documented(401, 403, 404, 409, 422, 503),
)
async def abort(
    incident_id: str,
    body: AbortCreate,
    who: Principal,
    temporal: TemporalDep,
    attester: AttesterDep,
    views: StatusViewsDep,
) -> EndAccepted:
    handle = await _ending_allowed(temporal, incident_id)
    order = AbortInput(by=who.subject, reason=body.reason)
    order.attestation = _attest(attester, who, "abort", incident_id, order.attested())
    await signal_incident(handle, IncidentWorkflow.abort, order)
    views.forget(incident_id)
    return EndAccepted(status="abort requested")


@router.post(
    "/{incident_id}/devices/{device}/write-off",
    status_code=202,
    response_model=EndAccepted,
    responses=documented(401, 403, 404, 409, 422, 503),
)
async def write_off_device(
    incident_id: str,
    device: DeviceName,
    body: WriteOffCreate,
    who: Principal,
    temporal: TemporalDep,
    attester: AttesterDep,
    views: StatusViewsDep,
) -> EndAccepted:
    """Stop waiting for a device that will not answer again (destroyed, cut off for good): the
    incident records it as written off, its circuits there as of unknown state, and can close."""
    handle = await _running(temporal, incident_id)
    order = WriteOffInput(device=device, by=who.subject, reason=body.reason)
    order.attestation = _attest(attester, who, "write_off", incident_id, order.attested(), device)
    await signal_incident(handle, IncidentWorkflow.write_off, order)
    views.forget(incident_id)
    return EndAccepted(status=f"write-off of {device} requested")


async def _running(temporal: TemporalDep, incident_id: str) -> WorkflowHandle:
    """The incident's handle while it runs; an ended one is 409 IncidentEnded."""
    handle, running = await _describe(temporal, incident_id)
    if not running:
        raise Conflict(f"incident {incident_id} has already ended", type="IncidentEnded")
    return handle


async def _ending_allowed(temporal: TemporalDep, incident_id: str) -> WorkflowHandle:
    """Only one ending order per incident: the first one is carried out, a second is 409."""
    handle = await _running(temporal, incident_id)
    try:
        phase = await handle.query(IncidentWorkflow.phase)
    except RPCError as e:
        raise Unavailable(f"workflow service: {e.message}") from None
    if phase in (IncidentPhase.STANDING_DOWN, IncidentPhase.ABORTING):
        raise Conflict(
            f"incident {incident_id} is already {phase.value.replace('_', ' ')}",
            type="IncidentEnding",
        )
    return handle


@router.get(
    "/{incident_id}/history",
    response_class=Response,
    responses={**_HISTORY_OK, **documented(401, 403, 404, 422, 503)},
)
async def export_history(incident_id: str, _: Principal, temporal: TemporalDep) -> Response:
    handle, _running = await _describe(temporal, incident_id)
    history = await handle.fetch_history()
    return Response(
        history.to_json(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{incident_id}.json"'},
    )


@router.get(
    "/{incident_id}/report",
    response_class=Response,
    responses={**_MARKDOWN_OK, **documented(401, 403, 404, 422, 503)},
)
async def incident_report(
    incident_id: str,
    _: Principal,
    store: StoreDep,
    temporal: TemporalDep,
    views: StatusViewsDep,
    form: str = "timeline",
    format: Literal["markdown", "html"] = "markdown",  # noqa: A002 - the query's own name
    lang: Literal["en", "vi"] = "en",
) -> Response:
    """A closed incident's stored report (what was written at close), else one rendered now;
    in English or Vietnamese; as Markdown, or as an HTML page of the same text (free text in
    it is only ever text)."""
    if form not in ("timeline", "dossier_2c"):
        raise Unprocessable("form is timeline or dossier_2c")
    handle, running = await _describe(temporal, incident_id)
    text, headers = None, {}
    if not running:
        name = stored_form(form, lang)
        stored = [r for r in await asyncio.to_thread(store.reports, incident_id) if r.form == name]
        if stored:
            latest = max(stored, key=lambda r: r.created_at)
            text, headers = latest.text, {"X-Report-Id": latest.id}
    if text is None:
        status = await _status(handle, views.reader)
        try:
            context = ReportContext.of(await incident_input_of(handle))
        except RPCError as e:
            raise Unavailable(f"workflow service: {e.message}") from None
        text = render_markdown(status, form=form, lang=lang, context=context)
        if status.phase not in (IncidentPhase.CLOSED, IncidentPhase.ABORTED):
            interim = f"the incident is {status.phase.value}; facts may still change"
            text = f"> Interim: {interim}.\n\n{text}"
    if format == "html":
        return Response(
            render_html(text, title=f"{incident_id} {form}", lang=lang),
            media_type=_HTML,
            headers=headers,
        )
    return Response(text, media_type=_MARKDOWN, headers=headers)
