"""IncidentWorkflow: one incident as an event-driven state machine over its priority circuits.

See docs/incident-core.md. The playbook's steps run in order; stand-down, abort, decisions and
refusals are signals that can arrive at any moment, and every wait also wakes on an ending.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities._errors import failure_details
    from continuity.attestation import Action, Attestation, attestation_problem
    from continuity.circuits import circuit_state, dedupe, select_circuits, wave_batches
    from continuity.messages import (
        STATUS_LISTS,
        AbortInput,
        ChangeStepInput,
        DecisionBatch,
        DecisionRefusedSignal,
        DecisionSignal,
        DeviceStepInput,
        DeviceStepResult,
        DutyCallInput,
        DutyCallResult,
        Evidence,
        HoldInput,
        HoldResult,
        IncidentInput,
        IncidentResult,
        LockInput,
        ReadBackInput,
        ReadBackResult,
        ReleaseInput,
        ReportsInput,
        ReportsResult,
        SendSmsInput,
        SendSmsResult,
        StandDownInput,
        StatusPage,
        StatusPageRequest,
        StepClaim,
        StepTimings,
        WebhookInput,
        WebhookResult,
        WriteOffInput,
        WriteOffRecordInput,
    )
    from continuity.models import (
        Breach,
        ChangeRecord,
        ChangeState,
        Circuit,
        CircuitState,
        CircuitStatus,
        Decision,
        Device,
        Direction,
        IncidentPhase,
        IncidentStatus,
        Language,
        PartialOutcome,
        PartState,
        ReviewItem,
        RouteChange,
        TimelineEntry,
        TimeoutOutcome,
        TranscriptRef,
        inventory_sha256,
        site_task_queue,
    )
    from continuity.playbook import (
        CallDutyOfficers,
        Notify,
        NotifyWebhook,
        Report,
        RerouteWave,
        SelectCircuits,
        Wait,
        spec_sha256,
    )

from workflows._common import (
    APPLY_DEVICE_CHANGE,
    AWAIT_DEVICE_LOCK,
    CONFIRM_DEVICE_CHANGE,
    HOLD_CIRCUITS,
    POST_WEBHOOK,
    READ_BACK_DEVICE,
    RELEASE_CIRCUITS,
    SEND_SMS,
    STOP_SIGNAL,
    STORE_RETRY,
    STORE_TIMEOUT,
    TELEPHONY_RETRY,
    UNDO_DEVICE_CHANGE,
    WRITE_OFF_DEVICE,
    WRITE_REPORTS,
    ssh_retry,
    webhook_retry,
)
from workflows.duty_call import DutyCallWorkflow

# A change in one of these is still being worked on the device.
_IN_FLIGHT = frozenset({ChangeState.PENDING, ChangeState.APPLYING})
_ON_BACKUP = frozenset({ChangeState.CONFIRMED, ChangeState.KEPT_ON_TIMEOUT})
_BROKEN = frozenset(
    {
        ChangeState.ROLLED_BACK,
        ChangeState.REVERTED_BY_DEVICE,
        ChangeState.FAILED,
        ChangeState.REFUSED,
    }
)
# Bigger than any attempt number of one escalation: each alert's calls get their own range.
_ALERT_ATTEMPTS = 1000


def change_id(incident_id: str, device: str, wave: int) -> str:
    return f"chg-{incident_id}-{device}-w{wave}"


def restore_id(incident_id: str, device: str, n: int) -> str:
    return f"rst-{incident_id}-{device}-{n}"


def calls_workflow_id(incident_id: str) -> str:
    return f"calls-{incident_id}"


@dataclass
class _Change:
    """A device change and what the workflow needs to drive it (the record is what is shown)."""

    record: ChangeRecord
    device: Device
    routes: list[RouteChange]
    wave: RerouteWave | None  # None: a restore, no human to ask
    seq: int  # order of creation: an abort undoes newest first
    sent: bool = False  # some attempt may have sent configuration lines
    running: Any = None  # the activity on the wire for it, which an ending cancels

    @property
    def id(self) -> str:
        return self.record.change_id

    @property
    def state(self) -> ChangeState:
        return self.record.state


@dataclass
class _Ending:
    kind: str  # "stand_down" or "abort"
    by: str
    reason: str
    at: datetime
    released: dict[str, list[str]] | None = None  # circuit -> incidents still holding it
    generation: int = 0  # abort: waves >= this may be undone now
    ready: bool = False  # holds released: pending changes may be undone


@dataclass
class _Calls:
    alert: bool = False
    handle: Any = None
    task: asyncio.Task[None] | None = None
    stop: bool = False
    signalled: bool = False


REPORTS_TIMEOUT = timedelta(minutes=10)
# Every call and SMS of a drill starts so (directive drills are announced as such).
_DRILL_VI = "Đây là diễn tập. "
_DRILL_EN = "This is a drill. "
_NO_TELEPHONY = "no calls: telephony disabled (settings.telephony is none)"


@workflow.defn(name="Incident")
class IncidentWorkflow:
    @workflow.init
    def __init__(self, inp: IncidentInput) -> None:
        self._inp = inp
        self._status = IncidentStatus(
            incident=inp.incident,
            playbook=f"{inp.playbook.name} v{inp.playbook.version}",
            playbook_sha256=inp.playbook_sha256,
        )
        self._steps = StepTimings.of(inp.timings)
        self._circuits: dict[str, Circuit] = {c.id: c for c in inp.inventory.circuits}
        self._devices: dict[str, Device] = {d.name: d for d in inp.inventory.devices}
        self._written_off: dict[str, WriteOffInput] = {}
        self._selected: list[str] = []
        self._status_of: dict[str, CircuitStatus] = {}
        self._parts: dict[tuple[str, str], PartState] = {}  # (circuit, device) -> part
        self._changes: dict[str, _Change] = {}
        self._decisions: dict[str, DecisionSignal] = {}
        self._ending: _Ending | None = None
        self._turns: dict[str, asyncio.Lock] = {}
        self._ssh = asyncio.Semaphore(inp.timings.max_parallel_devices)
        # Change id -> its window's end, while it awaits a decision: what the one clock of all
        # the windows arms for (set in run(); histories from before it had a timer a change).
        self._one_window_clock = False
        self._awaiting: dict[str, datetime] = {}
        self._window_clock: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._watching = False  # the restoration targets' watch has started
        self._webhooks = 0  # notify_webhook steps run so far (each notice's own key)
        self._calls: list[_Calls] = []
        self._pull_back: set[str] = set()
        self._alerted: set[str] = set()
        # Every report the playbook names is written at close, however the run ends: a
        # stand-down before the Report step must not lose the police's 2c dossier.
        self._forms: list[str] = ["timeline"] + [
            s.form
            for s in inp.playbook.steps
            if isinstance(s, Report) and s.form != "timeline" and s.applies_to(inp.incident.kind)
        ]
        self._seq = 0
        self._restores = 0
        self._kept: set[tuple[str, str]] = set()  # (circuit, device) left on backup for others
        self._closing_reads: dict[str, TranscriptRef] = {}  # device -> its read at the end

    # --- the run -------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: IncidentInput) -> IncidentResult:
        if spec_sha256(inp.playbook) != inp.playbook_sha256:
            raise ApplicationError(
                "playbook spec does not match its SHA-256", type="PlaybookError", non_retryable=True
            )
        if inventory_sha256(inp.inventory) != inp.inventory_sha256:
            raise ApplicationError(
                "inventory snapshot does not match its SHA-256",
                type="ValidationFailed",
                non_retryable=True,
            )
        incident = inp.incident
        self._one_window_clock = workflow.patched("one-window-clock")
        if inp.attestation_keys:
            why = self._unattested(inp.declaration, "declare", incident.declared_by, inp.attested())
            if why:  # started straight on Temporal, not through the API: nothing is done
                raise ApplicationError(
                    f"declaration refused: {why}", type="Unattested", non_retryable=True
                )
        self._note(
            "declared",
            f"{incident.kind} in {incident.area} by {incident.declared_by}: {incident.description}",
        )
        self._note("playbook", f"{self._status.playbook} sha256 {inp.playbook_sha256[:16]}")
        if not inp.attestation_keys:
            self._note("unattested", "no signing key in this deployment: actions are unsigned")
        if incident.drill:
            self._note(
                "drill",
                f"{_DRILL_VI}/ {_DRILL_EN}devices {', '.join(incident.drill_devices)} only",
            )
        wave = 0
        for step in inp.playbook.steps:
            if self._ending is not None:
                break
            if not step.applies_to(incident.kind):
                kinds = ", ".join(k.value for k in step.when_kinds)
                self._note("step skipped", f"{step.type}: only for {kinds} incidents")
                continue
            match step:
                case SelectCircuits():
                    await self._select(step)
                case RerouteWave():
                    wave += 1
                    await self._reroute_wave(wave, step)
                case CallDutyOfficers():
                    self._start_calls(step)
                case Notify():
                    await self._notify_officers(step.message_vi, step.message_en, key="notify")
                case NotifyWebhook():
                    self._webhooks += 1
                    self._spawn(self._post_webhook(step, self._webhooks))
                case Wait():
                    self._note("waiting", f"{step.seconds:g} s")
                    try:
                        await workflow.wait_condition(
                            lambda: self._ending is not None, timeout=step.seconds
                        )
                    except TimeoutError:
                        pass
                case Report():
                    pass  # registered at start (above), written at close
                case _:
                    assert_never(step)
        if self._ending is None:
            self._status.phase = IncidentPhase.ACTIVE
            self._note("active", self._summary())
            await workflow.wait_condition(lambda: self._ending is not None)
        await self._wind_down()
        return IncidentResult(
            incident_id=incident.id,
            phase=self._status.phase,
            outcome=self._status.outcome or "",
            circuits={c.circuit_id: c.state for c in self._circuit_list()},
            acknowledged_by=self._status.acknowledged_by,
        )

    # --- signals and queries -------------------------------------------------------------

    @workflow.signal(name="stand_down")
    def stand_down(self, s: StandDownInput) -> None:
        if why := self._unattested(s.attestation, "stand_down", s.by, s.attested()):
            self._note("stand-down refused", f"by {s.by}: {why}")
            return
        self._end("stand_down", s.by, s.reason)

    @workflow.signal(name="abort")
    def abort(self, a: AbortInput) -> None:
        if why := self._unattested(a.attestation, "abort", a.by, a.attested()):
            self._note("abort refused", f"by {a.by}: {why}")
            return
        self._end("abort", a.by, a.reason)

    @workflow.signal(name="write_off")
    def write_off(self, w: WriteOffInput) -> None:
        """Stop waiting for a device that will not answer (destroyed, cut off for good)."""
        if why := self._unattested(w.attestation, "write_off", w.by, w.attested(), w.device):
            self._note("write-off refused", f"{w.device} by {w.by}: {why}")
            return
        if w.device not in self._devices:
            self._note("write-off refused", f"{w.device} is not a device of this incident")
            return
        if w.device in self._written_off:
            return
        self._written_off[w.device] = w
        detail = (
            f"{w.device} written off by {w.by}: {w.reason}; its state is unknown and its "
            "circuits on it need a check on site"
        )
        self._note("write-off", detail)
        self._review("written_off", w.device, detail)
        self._spawn(self._record_write_off(w.device, detail))

    @workflow.signal(name="decide")
    def decide(self, d: DecisionSignal) -> None:
        """A decision the store accepted; the change's coroutine carries it out."""
        if why := self._unattested(
            d.attestation, "decide", d.operator_id, d.attested(), d.change_id
        ):
            self._refused(
                DecisionRefusedSignal(
                    change_id=d.change_id,
                    decision=d.decision,
                    operator_id=d.operator_id,
                    refusal="Unattested",
                    detail=why,
                )
            )
            return
        if d.operator_id == self._inp.incident.declared_by:
            # The API refuses this; a client that bypassed it is refused here too.
            self._refused(
                DecisionRefusedSignal(
                    change_id=d.change_id,
                    decision=d.decision,
                    operator_id=d.operator_id,
                    refusal="SelfDecision",
                    detail="the declarer may not decide the incident's changes",
                )
            )
            return
        if d.change_id in self._decisions:
            self._note("decision ignored", f"{d.change_id} already decided; {d.operator_id} late")
            return
        self._decisions[d.change_id] = d
        self._note(
            "decision",
            f"{d.decision.value} {d.change_id} by {d.operator_id}"
            + (f": {d.reason}" if d.reason else ""),
        )

    def _unattested(
        self,
        a: Attestation | None,
        action: Action,
        subject: str,
        content: dict[str, str],
        change_id: str = "",
    ) -> str | None:
        """Why a human action is refused for want of the API's attestation (None: taken).
        A deployment without a signing key gives no keys: its actions are taken unsigned."""
        if not self._inp.attestation_keys:
            return None
        # cryptography imports its exception types at run time, from Rust: let that import
        # reach the real module (inside the sandbox a second copy aborts the process).
        with workflow.unsafe.imports_passed_through():
            return attestation_problem(
                a,
                self._inp.attestation_keys,
                action=action,
                incident_id=self._inp.incident.id,
                subject=subject,
                content=content,
                change_id=change_id,
            )

    @workflow.signal(name="decision_refused")
    def decision_refused(self, r: DecisionRefusedSignal) -> None:
        self._signalled_refusal(r)

    @workflow.signal(name="decisions")
    def decisions(self, batch: DecisionBatch) -> None:
        """What the API sends: a burst of decisions (and refusals) in one signal."""
        for d in batch.decisions:
            self.decide(d)
        for r in batch.refusals:
            self._signalled_refusal(r)

    def _signalled_refusal(self, r: DecisionRefusedSignal) -> None:
        """A refusal the API reports: recorded in the operator's name only when the API signed
        it; anything else is noted without a name (it could be anyone's invention)."""
        if why := self._unattested(
            r.attestation, "decide_refused", r.operator_id, r.attested(), r.change_id
        ):
            self._note("refusal report dropped", f"an unattested report on {r.change_id}: {why}")
            return
        self._refused(r)

    @workflow.query(name="phase")
    def phase(self) -> IncidentPhase:
        """The phase alone: what an ending order checks, at any size of incident (the whole
        status of a thousand-device incident is past Temporal's payload limit)."""
        return self._status.phase

    @workflow.query(name="status")
    def status(self) -> IncidentStatus:
        self._status.circuits = self._circuit_list()
        self._status.changes = [c.record for c in self._changes.values()]
        return self._status

    @workflow.query(name="status_page")
    def status_page(self, page: StatusPageRequest) -> StatusPage:
        """The status with each of its lists cut to their `index`th `size` items: past
        Temporal's payload limit (about a thousand devices) the whole is read in pages
        (continuity.temporal.StatusReader). The lists only grow at their ends, so pages read
        moments apart still fit together."""
        whole = self.status()
        lists = {name: getattr(whole, name) for name in STATUS_LISTS}
        cut = {}
        for n, items in lists.items():
            lo = page.index * page.of(n)
            cut[n] = items[lo : lo + page.of(n)]
        return StatusPage(
            status=whole.model_copy(update=cut),
            totals={n: len(items) for n, items in lists.items()},
        )

    # --- steps ---------------------------------------------------------------------------

    async def _select(self, step: SelectCircuits) -> None:
        area = self._inp.incident.area
        segment = self._inp.incident.segment
        covered = self._inp.incident.areas or [area]  # recorded before areas had units: [area]
        chosen = select_circuits(self._inp.inventory.circuits, covered, step, segment=segment)
        self._selected = [c.id for c in chosen]
        for c in chosen:
            self._status_of[c.id] = CircuitStatus(
                circuit_id=c.id,
                restoration_level=c.restoration_level,
                parts={p.device: PartState.PRIMARY for p in c.paths},
            )
        where = (
            f"crossing cut cable segment {segment}" if step.crossing_cut_segment else f"in {area}"
        )
        self._note(
            "selected",
            f"{len(chosen)} priority circuits {where}: "
            + ", ".join(f"{c.id}(L{c.restoration_level})" for c in chosen),
        )
        targets = {**self._inp.timings.restore_targets_s, **self._inp.playbook.restore_targets_s}
        if targets and not self._watching:
            self._watching = True
            self._spawn(self._watch_targets(targets))
        held: HoldResult = await workflow.execute_activity(
            HOLD_CIRCUITS,
            HoldInput(
                incident_id=self._inp.incident.id,
                circuits=self._selected,
                declared_by=self._inp.incident.declared_by,
                declared=self._inp.attested(),
                declaration=self._inp.declaration,
            ),
            result_type=HoldResult,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        joined: dict[str, list[str]] = {}
        for cid, others in held.others.items():
            if others and cid in self._status_of:
                self._status_of[cid].held_with = others
                for inc in others:
                    joined.setdefault(inc, []).append(cid)
        for inc, cids in joined.items():
            self._note(
                "joined",
                f"incident {inc} already holds {', '.join(cids)}: this incident joins them; "
                "nothing is sent for a path already in place",
            )

    async def _reroute_wave(self, n: int, step: RerouteWave) -> None:
        circuits = [
            self._circuits[c]
            for c in self._selected
            if self._circuits[c].restoration_level in step.restoration_levels
        ]
        if not circuits:
            self._note(f"wave {n}", f"{step.name}: no circuits at levels {step.restoration_levels}")
            return
        self._status.phase = IncidentPhase.REROUTING
        self._note(f"wave {n}", f"{step.name}: {len(circuits)} circuits")
        batches = wave_batches(circuits, step.restoration_levels)
        wave: list[_Change] = []
        for device, routes in batches.items():
            ch = self._new_change(
                change_id(self._inp.incident.id, device, n), device, routes, n, step
            )
            wave.append(ch)
            self._spawn(self._run_reroute(ch))
        await workflow.wait_condition(
            lambda: self._ending is not None or all(c.state not in _IN_FLIGHT for c in wave)
        )

    def _start_calls(self, step: CallDutyOfficers) -> None:
        officers = self._inp.inventory.duty_officers
        if not self._inp.telephony:
            self._note("calls", _NO_TELEPHONY)
            return
        self._note("calls", f"phoning {len(officers)} duty officers in escalation order")
        self._call(
            calls_workflow_id(self._inp.incident.id),
            step.message_vi,
            step.message_en,
            rounds=step.rounds,
            sms_fallback=step.sms_fallback,
        )

    # --- one change ----------------------------------------------------------------------

    async def _run_reroute(self, ch: _Change) -> None:
        async with self._turn(ch.record.device):
            if self._ending is not None:
                self._settle(ch, ChangeState.SKIPPED, "not started: the incident is ending")
                return
            ch.routes = [r for r in ch.routes if r.circuit_id not in self._pull_back]
            ch.record.circuits = [r.circuit_id for r in ch.routes]
            if not ch.routes:
                self._settle(ch, ChangeState.SKIPPED, "nothing left: its circuits are pulled back")
                return
            res = await self._apply(ch)
            if res is None or res.state is not ChangeState.AWAITING_CONFIRMATION:
                return
            await self._await_decision(ch)

    async def _apply(self, ch: _Change) -> DeviceStepResult | None:
        """The device step; None when it did not happen (recorded; a reroute that may have sent
        lines is undone, a restore is retried by its caller)."""
        rec = ch.record
        reroute = rec.direction is Direction.REROUTE
        inp = DeviceStepInput(
            incident_id=self._inp.incident.id,
            change_id=ch.id,
            wave=rec.wave,
            device=ch.device.name,
            circuits=[r.circuit_id for r in ch.routes],
            snapshot=self._inp.inventory_sha256,
            direction=rec.direction,
            declared_by=self._inp.incident.declared_by,
            confirmers=list(ch.wave.confirmers) if ch.wave else [],
            timings=self._steps,
            known=self._known(ch),
        )
        t = self._inp.timings
        while True:
            try:
                async with self._ssh:
                    if reroute and self._ending is not None:
                        self._settle(ch, ChangeState.SKIPPED, "not started: the incident is ending")
                        return None
                    self._set(
                        ch, ChangeState.APPLYING, "applying with the device's auto-revert armed"
                    )
                    ch.running = workflow.start_activity(
                        APPLY_DEVICE_CHANGE,
                        inp,
                        result_type=DeviceStepResult,
                        task_queue=self._queue(ch.device),
                        start_to_close_timeout=timedelta(
                            seconds=2 * t.verify_timeout_s + t.ssh_step_timeout_s
                        ),
                        heartbeat_timeout=timedelta(seconds=t.heartbeat_timeout_s),
                        retry_policy=ssh_retry(
                            attempts=t.ssh_attempts, initial_s=t.ssh_retry_initial_s
                        ),
                        # An ending cancels it; the undo must not start before it has stopped.
                        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    )
                    if reroute and self._ending is not None:
                        ch.running.cancel()
                    try:
                        res: DeviceStepResult = await ch.running
                    finally:
                        ch.running = None
                break
            except ActivityError as e:
                cause = e.cause
                if isinstance(cause, ApplicationError) and cause.type == "DeviceLocked":
                    # Another incident's change holds the device: wait for it without a slot.
                    self._set(ch, ChangeState.PENDING, f"waiting: {cause.message}")
                    if not await self._await_lock(ch):
                        self._settle(ch, ChangeState.SKIPPED, "not started: the incident is ending")
                        return None
                    continue
                if reroute and isinstance(cause, CancelledError):
                    await self._apply_cancelled(ch)
                elif reroute:
                    await self._apply_failed(ch, e)
                else:
                    self._failed(ch, e)
                return None
        self._absorb(ch, res)
        if res.state is ChangeState.AWAITING_CONFIRMATION:
            rec.deadline = res.deadline
            self._set(ch, res.state, res.detail)
            return res
        self._settle(ch, res.state, res.detail)
        return res

    async def _await_lock(self, ch: _Change) -> bool:
        """Wait for another incident to let go of the device; False when an ending came first."""
        if ch.record.direction is Direction.REROUTE and self._ending is not None:
            return False
        ch.running = workflow.start_activity(
            AWAIT_DEVICE_LOCK,
            LockInput(
                device=ch.device.name, holder=self._inp.incident.id, lease_s=self._steps.lease_s
            ),
            start_to_close_timeout=timedelta(seconds=self._steps.lease_s + 60),
            heartbeat_timeout=timedelta(seconds=self._inp.timings.heartbeat_timeout_s),
            retry_policy=STORE_RETRY,
        )
        try:
            await ch.running
        except ActivityError as e:
            if isinstance(e.cause, CancelledError):
                return False
            raise
        finally:
            ch.running = None
        return True

    async def _apply_cancelled(self, ch: _Change) -> None:
        """An ending stopped the apply mid-way: whatever reached the device is undone."""
        self._set(ch, ChangeState.ROLLING_BACK, "stopped by the ending; undoing what was sent")
        res = await self._drive(
            ch,
            UNDO_DEVICE_CHANGE,
            StepClaim(
                kind="order",
                by=self._ending.by if self._ending else "continuity",
                reason=self._ending_reason() if self._ending else "cancelled",
            ),
        )
        state = ChangeState.SKIPPED if not ch.record.commands else res.state
        self._settle(ch, state, f"stopped by the ending: {res.detail}")

    def _failed(self, ch: _Change, e: ActivityError) -> None:
        """Record why a device step failed, with every transcript and line it left behind."""
        rec = ch.record
        cause = e.cause
        details = failure_details(e)
        if details.get("commands"):
            rec.commands = [str(c) for c in details["commands"]]
        refs = [TranscriptRef.model_validate(r) for r in details.get("transcripts", [])]
        rec.transcripts += [r for r in refs if r not in rec.transcripts]
        if rec.commands:
            ch.sent = True
        if isinstance(cause, ApplicationError):
            rec.error_type, rec.retryable = (
                cause.type or "ApplicationError",
                not cause.non_retryable,
            )
            rec.error = cause.message
        else:
            rec.error_type, rec.retryable = type(cause).__name__ if cause else "ActivityError", True
            rec.error = str(cause or e)
        if rec.retryable:
            rec.error = f"{rec.error} (gave up after retries)"

    async def _apply_failed(self, ch: _Change, e: ActivityError) -> None:
        self._failed(ch, e)
        rec = ch.record
        if rec.error_type == "ForeignPendingCommit":
            self._settle(ch, ChangeState.REFUSED, rec.error or "")
            self._review("refused", ch.id, rec.error or "")
            self._spawn(self._alert(f"{ch.id} refused: {rec.error}", key=f"refused-{ch.id}"))
            return
        if not rec.commands:
            self._settle(ch, ChangeState.FAILED, f"{rec.error_type}: {rec.error}; nothing sent")
            return
        # Lines may have reached the device: drive it back to what it was.
        self._set(ch, ChangeState.NEEDS_ATTENTION, f"{rec.error_type}: {rec.error}; undoing")
        res = await self._drive(
            ch,
            UNDO_DEVICE_CHANGE,
            StepClaim(kind="order", by="continuity", reason=f"{rec.error_type} during apply"),
        )
        self._settle(
            ch,
            ChangeState.FAILED if res.state is ChangeState.ROLLED_BACK else res.state,
            f"{rec.error_type}: {rec.error}; {res.detail}",
        )

    async def _await_decision(self, ch: _Change) -> None:
        rec = ch.record
        policy = ch.wave
        assert policy is not None and rec.deadline is not None
        while True:
            if await self._window_closed(ch):
                if policy.on_timeout is TimeoutOutcome.KEEP:
                    claim = StepClaim(kind="timeout", keep=True, by="playbook")
                    res = await self._drive(ch, CONFIRM_DEVICE_CHANGE, claim)
                else:
                    claim = StepClaim(kind="timeout", by="playbook")
                    res = await self._drive(ch, UNDO_DEVICE_CHANGE, claim, let_device_revert=True)
                if self._adopt_decision(ch, res):
                    continue
                self._settle(ch, res.state, res.detail)
                if res.state is ChangeState.KEPT_ON_TIMEOUT:
                    self._review("kept_on_timeout", ch.id, res.detail)
                    await self._alert(
                        f"{ch.id}: nobody confirmed within the window; kept on backup as the "
                        "playbook says. Review it.",
                        key=f"kept-{ch.id}",
                        phone=True,
                    )
                return
            d = self._decisions.get(ch.id)
            if d is None:
                # Ending, and no other incident needs these circuits: undo it now.
                ending = self._ending
                assert ending is not None
                claim = StepClaim(kind="order", by=ending.by, reason=self._ending_reason())
                res = await self._drive(ch, UNDO_DEVICE_CHANGE, claim)
                if self._adopt_decision(ch, res):
                    continue
                self._settle(ch, res.state, res.detail)
                return
            rec.decided_by, rec.decision, rec.decision_reason = d.operator_id, d.decision, d.reason
            claim = StepClaim(
                kind="decision", decision=d.decision, by=d.operator_id, reason=d.reason
            )
            if d.decision is Decision.CONFIRM:
                self._set(ch, ChangeState.CONFIRMING, f"confirmed by {d.operator_id}")
                res = await self._drive(ch, CONFIRM_DEVICE_CHANGE, claim)
            else:
                self._set(ch, ChangeState.ROLLING_BACK, f"rejected by {d.operator_id}")
                res = await self._drive(ch, UNDO_DEVICE_CHANGE, claim)
            if res.refusal is not None:
                self._decisions.pop(ch.id, None)
                rec.decided_by, rec.decision, rec.decision_reason = None, None, ""
                self._refused(res.refusal)
                self._set(ch, ChangeState.AWAITING_CONFIRMATION, "awaiting confirmation")
                continue
            if self._adopt_decision(ch, res):
                continue
            self._settle(ch, res.state, res.detail)
            return

    async def _window_closed(self, ch: _Change) -> bool:
        """Wait for a decision, an undo at the ending, or the window's end (True)."""
        rec = ch.record
        assert rec.deadline is not None
        deadline = rec.deadline

        def answered() -> bool:
            return ch.id in self._decisions or self._undo_now(ch)

        if not self._one_window_clock:
            left = max(0.0, (deadline - workflow.now()).total_seconds())
            try:
                await workflow.wait_condition(
                    answered,
                    timeout=timedelta(seconds=left),
                    timeout_summary="operator-confirmation",
                )
            except TimeoutError:
                return True
            return False
        self._awaiting[ch.id] = deadline
        if self._window_clock is None:
            # Not one of _tasks: the ending waits for those, and this one never ends by itself.
            self._window_clock = asyncio.create_task(self._windows())
        try:
            await workflow.wait_condition(lambda: answered() or workflow.now() >= deadline)
        finally:
            del self._awaiting[ch.id]
        return not answered()  # a decision in the same moment as the window's end wins

    async def _windows(self) -> None:
        """One timer for every change awaiting its operator, not one a change (200 changes
        were 400 timer events in the history): armed for the earliest window's end. It may
        wake early, that change decided meanwhile, and is armed again; a change with an
        earlier end than the one armed for re-arms it."""
        while True:
            await workflow.wait_condition(lambda: bool(self._awaiting))
            if self._awaiting:  # a waiter answered at once may have left before this resumed
                await self._window_end(min(self._awaiting.values()))

    async def _window_end(self, target: datetime) -> None:
        """Until `target` (or a sooner end awaits); if it is due now, until its waiter left."""
        left = (target - workflow.now()).total_seconds()
        if left <= 0:
            await workflow.wait_condition(
                lambda: not self._awaiting or min(self._awaiting.values()) > target
            )
            return
        with suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: bool(self._awaiting) and min(self._awaiting.values()) < target,
                timeout=timedelta(seconds=left),
                timeout_summary="confirmation-windows",
            )

    def _adopt_decision(self, ch: _Change, res: DeviceStepResult) -> bool:
        """The store had a decision the workflow had not seen (its signal still on the way)."""
        if res.decision is None:
            return False
        self._decisions[ch.id] = res.decision
        self._note(
            "decision", f"{res.decision.decision.value} {ch.id} by {res.decision.operator_id}"
        )
        return True

    async def _drive(
        self, ch: _Change, activity: str, claim: StepClaim, *, let_device_revert: bool = False
    ) -> DeviceStepResult:
        """Run a confirm or undo step until the device answers; never abandon a device."""
        t = self._inp.timings
        extra = t.verify_timeout_s + t.revert_margin_s + t.revert_wait_grace_s
        delay = max(1.0, t.ssh_retry_initial_s)
        while True:
            if ch.device.name in self._written_off:
                return self._written_off_result(ch)
            inp = ChangeStepInput(
                incident_id=self._inp.incident.id,
                change_id=ch.id,
                claim=claim,
                timings=self._steps,
                let_device_revert=let_device_revert,
                known=self._known(ch),
            )
            try:
                async with self._ssh:
                    res: DeviceStepResult = await workflow.execute_activity(
                        activity,
                        inp,
                        result_type=DeviceStepResult,
                        task_queue=self._queue(ch.device),
                        start_to_close_timeout=timedelta(
                            seconds=t.ssh_step_timeout_s + (extra if let_device_revert else 0)
                        ),
                        heartbeat_timeout=timedelta(seconds=t.heartbeat_timeout_s),
                        retry_policy=ssh_retry(
                            attempts=t.ssh_attempts, initial_s=t.ssh_retry_initial_s
                        ),
                    )
                self._absorb(ch, res)
                return res
            except ActivityError as e:
                self._failed(ch, e)
                what = f"{ch.record.error_type}: {ch.record.error}"
                self._set(
                    ch,
                    ChangeState.NEEDS_ATTENTION,
                    f"{activity} failed ({what}); retrying in {delay:g}s",
                )
                for cid in ch.record.circuits:
                    self._part(cid, ch.device.name, PartState.UNKNOWN)
                self._attention(
                    ch,
                    f"{ch.device.name} does not answer for {ch.id} ({what}); the incident "
                    "keeps trying and will not close until it is back on record (or written "
                    "off)",
                )
                await self._retry_wait(ch.device.name, delay)
                delay = min(delay * 2, t.drive_retry_max_s)

    async def _restore(self, device: str, routes: list[RouteChange], why: str) -> _Change:
        """Back to primary (no human to ask); retried until the device answers."""
        self._restores += 1
        ch = self._new_change(
            restore_id(self._inp.incident.id, device, self._restores), device, routes, 0, None
        )
        t = self._inp.timings
        delay = max(1.0, t.ssh_retry_initial_s)
        async with self._turn(device):
            self._note(ch.id, f"restore: {why}")
            while True:
                if device in self._written_off:
                    gone = self._written_off_result(ch)
                    self._settle(ch, gone.state, gone.detail)
                    return ch
                res = await self._apply(ch)
                if res is not None and res.state is not ChangeState.FAILED:
                    for cid in res.kept:
                        self._kept.add((cid, device))
                    if self._ending is not None and not res.kept and ch.record.transcripts:
                        # Its last read is the device as it closes: the closing evidence.
                        self._closing_reads[device] = ch.record.transcripts[-1]
                    if res.kept:
                        self._note(
                            ch.id,
                            "kept on backup: "
                            + "; ".join(f"{c} held by {', '.join(i)}" for c, i in res.kept.items()),
                        )
                    return ch
                # Not back on primary (device down, primary not forwarding): try again later.
                why_not = ch.record.error or ch.record.detail
                self._set(
                    ch,
                    ChangeState.NEEDS_ATTENTION,
                    f"not restored ({why_not}); again in {delay:g}s",
                )
                self._attention(
                    ch, f"{device} is not back on primary ({why_not}); the incident keeps trying"
                )
                await self._retry_wait(device, delay)
                delay = min(delay * 2, t.drive_retry_max_s)
                ch.record.error = None

    # --- circuits as units ---------------------------------------------------------------

    def _circuits_after(self, ch: _Change) -> None:
        """A change settled: keep each of its circuits whole, as its wave says."""
        if ch.record.direction is Direction.RESTORE:
            return
        for cid in ch.record.circuits:
            circuit = self._circuits[cid]
            if len(circuit.paths) < 2:
                continue
            if ch.state in _ON_BACKUP and cid in self._pull_back:
                self._pull(cid, ch.device.name)
                continue
            if ch.state not in _BROKEN or cid in self._pull_back:
                continue
            others = [p.device for p in circuit.paths if p.device != ch.device.name]
            policy = ch.wave.on_partial if ch.wave else PartialOutcome.ROLLBACK
            what = f"{cid}: its part on {ch.device.name} is {ch.state.value}"
            if policy is PartialOutcome.KEEP:
                self._review("kept_partial", cid, what + "; other parts kept as the playbook says")
                self._spawn(self._alert(what + "; other parts kept. Review it.", key=f"part-{cid}"))
                continue
            self._pull_back.add(cid)
            self._note("circuit", what + f"; its parts on {', '.join(others)} are taken back")
            self._spawn(self._alert(what + "; its other parts are taken back", key=f"part-{cid}"))
            for other in self._changes.values():
                if (
                    other.record.direction is Direction.REROUTE
                    and other.device.name in others
                    and cid in other.record.circuits
                    and other.state in _ON_BACKUP
                ):
                    self._pull(cid, other.device.name)

    def _pull(self, cid: str, device: str) -> None:
        routes = [
            RouteChange(circuit_id=cid, path=p)
            for p in self._circuits[cid].paths
            if p.device == device
        ]
        self._spawn(self._pulled(device, routes, cid))

    async def _pulled(self, device: str, routes: list[RouteChange], cid: str) -> None:
        await self._restore(device, routes, f"pull back {cid}: the circuit could not move whole")

    # --- ending ----------------------------------------------------------------------------

    def _end(self, kind: str, by: str, reason: str) -> None:
        if self._ending is None:
            # No reroute runs on after the order: stop those on the wire, and lock waits.
            for ch in self._changes.values():
                if ch.running is not None and ch.record.direction is Direction.REROUTE:
                    ch.running.cancel()
        if self._ending is not None:
            self._note(
                f"{kind} ignored", f"by {by}: the incident is already ending ({self._ending.kind})"
            )
            return
        self._ending = _Ending(kind=kind, by=by, reason=reason, at=workflow.now())
        self._status.end_reason = reason
        if kind == "abort":
            self._status.aborted_by = by
            self._status.phase = IncidentPhase.ABORTING
        else:
            self._status.stood_down_by = by
            self._status.phase = IncidentPhase.STANDING_DOWN
        self._note(kind.replace("_", "-"), f"by {by}: {reason}")

    def _ending_reason(self) -> str:
        e = self._ending
        assert e is not None
        return f"{e.kind.replace('_', '-')} by {e.by}" + (f": {e.reason}" if e.reason else "")

    def _undo_now(self, ch: _Change) -> bool:
        """An awaiting change is undone at an ending unless another incident still needs it."""
        e = self._ending
        if e is None or not e.ready or ch.record.wave < e.generation:
            return False
        held = e.released or {}
        return not all(held.get(cid) for cid in ch.record.circuits)

    async def _wind_down(self) -> None:
        e = self._ending
        assert e is not None
        for calls in self._calls:
            await self._stop_calls(calls)
        verb = "aborted" if e.kind == "abort" else "stood down"
        self._spawn(
            self._notify_officers(
                f"Sự cố {self._inp.incident.id} đã kết thúc ({verb}) bởi {e.by}: {e.reason}",
                f"Incident {self._inp.incident.id} {verb} by {e.by}: {e.reason}",
                key="ended",
            )
        )
        # No change starts from here on; those already on the device finish first.
        await workflow.wait_condition(
            lambda: not any(c.state is ChangeState.APPLYING for c in self._changes.values())
        )
        released = await workflow.execute_activity(
            RELEASE_CIRCUITS,
            ReleaseInput(incident_id=self._inp.incident.id),
            result_type=HoldResult,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        e.released = released.others
        kept = sorted(c for c, others in released.others.items() if others)
        if kept:
            self._note("released", f"still held by other incidents: {', '.join(kept)}")
        waves = sorted(
            {
                c.record.wave
                for c in self._changes.values()
                if c.record.direction is Direction.REROUTE
            },
            reverse=True,
        )
        # Abort undoes the newest wave first; a stand-down undoes everything at once.
        generations = [[w] for w in waves] if e.kind == "abort" else [waves]
        for generation in generations:
            e.generation, e.ready = min(generation, default=0), True
            await workflow.wait_condition(
                lambda g=generation: all(  # type: ignore[misc]
                    c.state.settled
                    for c in self._changes.values()
                    if c.record.wave in g and c.record.direction is Direction.REROUTE
                )
            )
            await self._restore_all(set(generation))
        await workflow.wait_condition(lambda: all(t.done() for t in self._tasks))
        await self._close_evidence()
        for calls in self._calls:
            if calls.task is not None:
                await calls.task
        self._status.phase = IncidentPhase.ABORTED if e.kind == "abort" else IncidentPhase.CLOSED
        self._status.outcome = self._summary()
        self._note(self._status.phase.value, self._status.outcome)
        await self._write_reports()

    async def _restore_all(self, waves: set[int]) -> None:
        """Every device these waves may have left off primary, one restore per device."""
        todo: dict[str, list[RouteChange]] = {}
        for ch in list(self._changes.values()):
            if ch.record.direction is not Direction.REROUTE or ch.record.wave not in waves:
                continue
            if ch.state in _ON_BACKUP or ch.sent and ch.state is not ChangeState.ROLLED_BACK:
                todo.setdefault(ch.device.name, []).extend(ch.routes)
        restores = [
            self._spawn(self._restore(device, dedupe(routes), self._ending_reason()))
            for device, routes in todo.items()
        ]
        for task in restores:
            await task

    async def _close_evidence(self) -> None:
        """Read back every touched device; drive again what is off its record; keep the reads."""
        touched: dict[str, list[RouteChange]] = {}
        for ch in self._changes.values():
            if ch.record.commands or ch.record.already_applied or ch.sent:
                touched.setdefault(ch.device.name, []).extend(ch.routes)
        if not touched:
            return

        async def check(device: str, routes: list[RouteChange]) -> None:
            routes = dedupe(routes)
            if device in self._closing_reads:
                # Restored at this ending and verified in that session: that read is the one.
                self._status.closing_evidence.append(self._closing_reads[device])
                self._note("read back", f"{device}: as recorded (read by its restore)")
                return
            while True:
                if device in self._written_off:
                    self._note("read back", f"{device}: written off; not read")
                    return
                async with self._ssh:
                    reading = asyncio.ensure_future(
                        workflow.execute_activity(
                            READ_BACK_DEVICE,
                            ReadBackInput(
                                incident_id=self._inp.incident.id,
                                device=device,
                                circuits=[r.circuit_id for r in routes],
                                snapshot=self._inp.inventory_sha256,
                            ),
                            result_type=ReadBackResult,
                            task_queue=self._queue(self._devices[device]),
                            start_to_close_timeout=timedelta(
                                seconds=self._inp.timings.ssh_step_timeout_s
                            ),
                            # The step beats: a dead worker is noticed in a heartbeat timeout.
                            heartbeat_timeout=(
                                timedelta(seconds=self._inp.timings.heartbeat_timeout_s)
                                if workflow.patched("read-back-heartbeat")
                                else None
                            ),
                            retry_policy=ssh_retry(attempts=0, initial_s=1.0),
                        )
                    )
                    # The read retries until the device answers, or until it is written off.
                    await workflow.wait_condition(
                        lambda d=device, r=reading: r.done() or d in self._written_off  # type: ignore[misc]
                    )
                    if not reading.done():
                        reading.cancel()
                        continue
                    read: ReadBackResult = reading.result()
                if read.transcript is not None:
                    self._status.closing_evidence.append(read.transcript)
                for cid, state in read.parts.items():
                    self._part(cid, device, state)
                off = [
                    r
                    for r in routes
                    if read.parts.get(r.circuit_id, PartState.PRIMARY) is not PartState.PRIMARY
                    and (r.circuit_id, device) not in self._kept
                ]
                if not off:
                    self._note("read back", f"{device}: as recorded")
                    return
                self._note(
                    "read back", f"{device}: off record ({', '.join(r.circuit_id for r in off)})"
                )
                await self._restore(device, off, "read back at close found it off record")

        tasks = [self._spawn(check(d, r)) for d, r in touched.items()]
        for task in tasks:
            await task

    # --- people --------------------------------------------------------------------------

    def _call(
        self,
        wid: str,
        message_vi: str,
        message_en: str,
        *,
        rounds: int,
        sms_fallback: bool,
        alert: bool = False,
        first_attempt: int = 1,
    ) -> None:
        inp = self._inp
        calls = _Calls(alert=alert)
        message_vi, message_en = self._marked(message_vi, message_en)

        async def run() -> None:
            handle = await workflow.start_child_workflow(
                DutyCallWorkflow.run,
                DutyCallInput(
                    incident_id=inp.incident.id,
                    officers=inp.inventory.duty_officers,
                    message_vi=message_vi,
                    message_en=message_en,
                    sms_fallback=sms_fallback,
                    rounds=rounds,
                    timings=inp.timings,
                    first_attempt=first_attempt,
                ),
                id=wid,
            )
            calls.handle = handle
            if calls.stop:
                await self._stop_calls(calls)
            try:
                result: DutyCallResult = await handle
            except ChildWorkflowError as e:
                self._note("calls", f"{wid} failed: {e.cause or e}")
                return
            self._status.calls += result.attempts
            if result.acknowledged_by and not self._status.acknowledged_by and not alert:
                self._status.acknowledged_by = result.acknowledged_by
            self._note(
                "calls",
                f"{wid}: acknowledged by {result.acknowledged_by}"
                if result.acknowledged_by
                else f"{wid}: nobody acknowledged; SMS sent as fallback",
            )

        calls.task = asyncio.create_task(run())
        self._calls.append(calls)

    async def _stop_calls(self, calls: _Calls) -> None:
        """End an escalation; one not started yet is stopped as soon as it is."""
        calls.stop = True
        if calls.handle is None or calls.task is None or calls.task.done() or calls.signalled:
            return
        calls.signalled = True
        try:
            await calls.handle.signal(STOP_SIGNAL)
        except Exception as e:  # noqa: BLE001 - it finished meanwhile: nothing left to stop
            self._note("calls", f"stop not delivered: {e}")

    async def _watch_targets(self, targets: dict[int, float]) -> None:
        """Each restoration level's target time to restore (declared → every circuit of the
        level verified on backup): missed, a recorded breach, and the duty officer phoned."""
        declared = self._inp.incident.declared_at
        for level, target in sorted(targets.items(), key=lambda t: (t[1], t[0])):
            circuits = [c for c in self._selected if self._status_of[c].restoration_level == level]
            if not circuits:
                continue

            def met(cs: list[str] = circuits) -> bool:
                return self._ending is not None or all(
                    self._status_of[c].rerouted_at is not None for c in cs
                )

            left = (declared + timedelta(seconds=target) - workflow.now()).total_seconds()
            if left > 0:
                try:
                    await workflow.wait_condition(met, timeout=left)
                except TimeoutError:
                    pass
            if self._ending is not None:
                return
            late = [c for c in circuits if self._status_of[c].rerouted_at is None]
            if not late:
                continue
            self._status.breaches.append(
                Breach(level=level, target_s=target, at=workflow.now(), circuits=late)
            )
            what = (
                f"level {level} target of {target:.0f} s to restore missed: "
                f"{', '.join(late)} not on backup"
            )
            self._note("target missed", what)
            self._review("breach", f"level-{level}", what)
            self._spawn(self._alert(what, key=f"breach-{level}", phone=True))

    async def _alert(self, text: str, *, key: str, phone: bool = False) -> None:
        """Tell the duty officers (SMS; `phone`: ring them too, beside everything else)."""
        self._note("alert", text)
        await self._notify_officers(text, text, key=f"alert-{key}")
        if phone and self._ending is None and self._inp.telephony:
            n = len([c for c in self._calls if c.alert]) + 1
            self._call(
                f"{calls_workflow_id(self._inp.incident.id)}-alert-{n}",
                text,
                text,
                rounds=1,
                sms_fallback=False,
                alert=True,
                first_attempt=n * _ALERT_ATTEMPTS + 1,
            )

    async def _post_webhook(self, step: NotifyWebhook, n: int) -> None:
        """The incident's notice to a webhook receiver, its answer recorded; a receiver that
        never answers or refuses is noted and the run goes on."""
        inc = self._inp.incident
        message_vi, message_en = self._marked(step.message_vi, step.message_en)
        payload = {
            "incident": inc.id,
            "kind": inc.kind.value,
            "area": inc.area,
            "segment": inc.segment,
            "drill": inc.drill,
            "declared_at": inc.declared_at.isoformat(),
            "declared_by": inc.declared_by,
            "circuits": list(self._selected),
            "phase": self._status.phase.value,
            "message_vi": message_vi,
            "message_en": message_en,
        }
        try:
            res: WebhookResult = await workflow.execute_activity(
                POST_WEBHOOK,
                WebhookInput(
                    incident_id=inc.id, target=step.target, key=f"webhook-{n}", payload=payload
                ),
                result_type=WebhookResult,
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=webhook_retry(step.attempts),
            )
        except ActivityError as e:
            self._note("webhook", f"{step.target} failed: {e.cause or e}")
            self._review("webhook_failed", step.target, str(e.cause or e))
            return
        self._note(
            "webhook",
            f"{step.target} answered {res.status} (sha256 {res.body_sha256[:16]}): "
            f"{res.body_excerpt}",
        )

    def _marked(self, message_vi: str, message_en: str) -> tuple[str, str]:
        """What officers hear and read: a drill says so first, in both languages."""
        if not self._inp.incident.drill:
            return message_vi, message_en
        return _DRILL_VI + message_vi, _DRILL_EN + message_en

    async def _notify_officers(self, message_vi: str, message_en: str, *, key: str) -> None:
        message_vi, message_en = self._marked(message_vi, message_en)
        if not self._inp.telephony:
            self._note("notified", f"no SMS ({key}): telephony disabled")
            return
        for officer in self._inp.inventory.duty_officers:
            body = message_vi if officer.language is Language.VI else message_en
            try:
                sent: SendSmsResult = await workflow.execute_activity(
                    SEND_SMS,
                    SendSmsInput(
                        incident_id=self._inp.incident.id,
                        key=f"{key}-{officer.id}"[:200],
                        officer=officer,
                        body=body[:1500],
                    ),
                    result_type=SendSmsResult,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=TELEPHONY_RETRY,
                )
                self._note("notified", f"SMS to {officer.name} ({sent.status})")
            except ActivityError as e:
                self._note("notified", f"SMS to {officer.name} failed: {e.cause or e}")

    async def _write_reports(self) -> None:
        self.status()  # the status query's lists, as the reports will read them
        try:
            res: ReportsResult = await workflow.execute_activity(
                WRITE_REPORTS,
                ReportsInput(
                    incident_id=self._inp.incident.id,
                    forms=self._forms,  # type: ignore[arg-type]
                ),
                result_type=ReportsResult,
                # A thousand-device incident's reports come from replaying its history.
                start_to_close_timeout=(
                    REPORTS_TIMEOUT if workflow.patched("reports-timeout") else STORE_TIMEOUT
                ),
                # A worker that dies while writing is noticed in a heartbeat timeout, not in
                # the ten minutes a thousand-device replay may take.
                heartbeat_timeout=(
                    timedelta(seconds=self._inp.timings.heartbeat_timeout_s)
                    if workflow.patched("reports-heartbeat")
                    else None
                ),
                retry_policy=STORE_RETRY,
            )
        except ActivityError as e:
            # Every device is already where the record says: the incident closes; its reports
            # can be rendered from its history (`continuity audit report`).
            why = f"reports not written: {e.cause or e}"
            self._note("report", why)
            self._review("reports_missing", self._inp.incident.id, why)
            return
        for r in res.reports:
            self._note("report", f"{r.form} report {r.report_id} sha256 {r.sha256[:16]}")

    # --- bookkeeping ---------------------------------------------------------------------

    def _new_change(
        self,
        cid: str,
        device: str,
        routes: list[RouteChange],
        wave: int,
        policy: RerouteWave | None,
    ) -> _Change:
        self._seq += 1
        ch = _Change(
            record=ChangeRecord(
                change_id=cid,
                device=device,
                wave=wave,
                direction=Direction.RESTORE if policy is None else Direction.REROUTE,
                circuits=[r.circuit_id for r in routes],
            ),
            device=self._devices[device],
            routes=routes,
            wave=policy,
            seq=self._seq,
        )
        self._changes[cid] = ch
        return ch

    def _absorb(self, ch: _Change, res: DeviceStepResult) -> None:
        rec = ch.record
        # The store's journal beyond what the step was told we had (see _known).
        if res.commands:
            rec.commands += res.commands
            ch.sent = True
        rec.transcripts += [t for t in res.transcripts if t not in rec.transcripts]
        if res.already_applied:
            rec.already_applied = True
        if res.verified:
            rec.verified = True
            rec.verification = res.detail
        for cid, state in res.parts.items():
            self._part(cid, ch.device.name, state)

    @staticmethod
    def _known(ch: _Change) -> Evidence:
        return Evidence(commands=len(ch.record.commands), transcripts=len(ch.record.transcripts))

    def _set(self, ch: _Change, state: ChangeState, detail: str) -> None:
        rec = ch.record
        if rec.started_at is None and state is not ChangeState.PENDING:
            rec.started_at = workflow.now()
        rec.state, rec.detail = state, detail
        self._note(ch.id, f"{state.value}: {detail}")

    def _settle(self, ch: _Change, state: ChangeState, detail: str) -> None:
        self._set(ch, state, detail)
        ch.record.settled_at = workflow.now()
        self._circuits_after(ch)

    def _part(self, cid: str, device: str, state: PartState) -> None:
        status = self._status_of.get(cid)
        if status is None or device not in status.parts:
            return
        self._parts[(cid, device)] = state
        status.parts[device] = state
        before = status.state
        status.state = circuit_state(status.parts.values())
        now = workflow.now()
        if status.state in (CircuitState.ON_BACKUP_UNCONFIRMED, CircuitState.ON_BACKUP):
            status.rerouted_at = status.rerouted_at or now
            status.restored_at = None
        if status.state is CircuitState.ON_BACKUP:
            status.confirmed_at = status.confirmed_at or now
        if (
            status.state is CircuitState.ON_PRIMARY
            and status.rerouted_at
            and before != status.state
        ):
            status.restored_at = now

    def _circuit_list(self) -> list[CircuitStatus]:
        return [self._status_of[c] for c in self._selected]

    def _summary(self) -> str:
        total = len(self._selected)
        circuits = self._circuit_list()
        by = {s: [c.circuit_id for c in circuits if c.state is s] for s in CircuitState}
        confirmed = [c.circuit_id for c in circuits if c.confirmed_at]
        parts = [f"{len(confirmed)}/{total} priority circuits rerouted and confirmed"]
        if by[CircuitState.ON_BACKUP_UNCONFIRMED]:
            parts.append(
                f"awaiting confirmation: {', '.join(by[CircuitState.ON_BACKUP_UNCONFIRMED])}"
            )
        never = [c.circuit_id for c in circuits if not c.rerouted_at]
        if never:
            parts.append(f"not rerouted: {', '.join(never)}")
        if by[CircuitState.NEEDS_ATTENTION]:
            parts.append(f"needs attention: {', '.join(by[CircuitState.NEEDS_ATTENTION])}")
        joined = sorted({i for c in circuits for i in c.held_with})
        if joined:
            parts.append(f"joined with {', '.join(joined)}")
        if self._status.acknowledged_by:
            parts.append(f"acknowledged by {self._status.acknowledged_by}")
        e = self._ending
        if e is not None and self._status.phase in (IncidentPhase.CLOSED, IncidentPhase.ABORTED):
            kept = sorted(c for c, others in (e.released or {}).items() if others)
            back = [c.circuit_id for c in circuits if c.state is CircuitState.ON_PRIMARY]
            verb = "aborted" if e.kind == "abort" else "stood down"
            line = f"{verb} by {e.by}: {len(back)}/{total} circuits on primary"
            if kept:
                line += f", kept on backup for other incidents: {', '.join(kept)}"
            parts.append(line)
        return "; ".join(parts)

    async def _record_write_off(self, device: str, detail: str) -> None:
        await workflow.execute_activity(
            WRITE_OFF_DEVICE,
            WriteOffRecordInput(incident_id=self._inp.incident.id, device=device, detail=detail),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )

    async def _retry_wait(self, device: str, delay: float) -> None:
        """Back off before trying a device again; a write-off ends the wait at once."""
        try:
            await workflow.wait_condition(
                lambda: device in self._written_off, timeout=timedelta(seconds=delay)
            )
        except TimeoutError:
            pass

    def _written_off_result(self, ch: _Change) -> DeviceStepResult:
        w = self._written_off[ch.device.name]
        for cid in ch.record.circuits:
            self._part(cid, ch.device.name, PartState.UNKNOWN)
        return DeviceStepResult(
            state=ChangeState.WRITTEN_OFF,
            detail=f"written off by {w.by}: {w.reason}; device state unknown",
        )

    def _attention(self, ch: _Change, text: str) -> None:
        """Once per change: on the review list, and the duty officers told."""
        if ch.id in self._alerted:
            return
        self._alerted.add(ch.id)
        self._review("needs_attention", ch.id, text)
        self._spawn(self._alert(text, key=f"attention-{ch.id}"))

    def _review(self, kind: str, subject: str, detail: str) -> None:
        self._status.review.append(
            ReviewItem(at=workflow.now(), kind=kind, subject=subject, detail=detail)
        )

    def _refused(self, r: DecisionRefusedSignal) -> None:
        self._status.decisions_refused += 1
        self._note(
            "decision refused",
            f"{r.decision.value} {r.change_id} by {r.operator_id}: {r.refusal} ({r.detail})",
        )

    def _note(self, event: str, detail: str = "") -> None:
        self._status.timeline.append(TimelineEntry(at=workflow.now(), event=event, detail=detail))

    def _queue(self, device: Device) -> str:
        return site_task_queue(workflow.info().task_queue, device.site)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._tasks.append(task)
        return task

    @asynccontextmanager
    async def _turn(self, device: str) -> AsyncIterator[None]:
        """Within one incident, one change per device at a time (its commit is exclusive)."""
        lock = self._turns.setdefault(device, asyncio.Lock())
        async with lock:
            yield


__all__ = ["IncidentWorkflow", "calls_workflow_id", "change_id", "restore_id"]
