"""PlaybookWorkflowV1: frozen copy of Playbook for replaying pre-rewrite histories."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from workflows.legacy._models import (
        CallDutyOfficers,
        ChangeDecisionInput,
        ChangeRecord,
        ChangeState,
        Circuit,
        DeviceChangeInput,
        DutyCallInput,
        DutyCallResult,
        IncidentStatus,
        Language,
        Notify,
        PlaybookRunInput,
        PlaybookRunResult,
        PriorityClass,
        Report,
        ReportInput,
        ReportResult,
        RerouteWave,
        RouteChange,
        SelectCircuits,
        SendSmsInput,
        SendSmsResult,
        StandDownInput,
        TimelineEntry,
        spec_sha256,
    )

from workflows.legacy._common import (
    SEND_SMS,
    STORE_RETRY,
    STORE_TIMEOUT,
    TELEPHONY_RETRY,
    WRITE_REPORT,
)
from workflows.legacy.device_change_v1 import CHANGE_UPDATED_SIGNAL, DeviceChangeWorkflowV1

# The live DutyCall stays registered and only gains compatible fields, so it is not frozen.
_DUTY_CALL = "DutyCall"

_CLASS_ORDER = [PriorityClass.ARMED_FORCES, PriorityClass.PARTY, PriorityClass.STATE]


def change_id(incident_id: str, device: str, wave: int) -> str:
    return f"change-{incident_id}-{device}-w{wave}"


def calls_workflow_id(incident_id: str) -> str:
    return f"calls-{incident_id}"


@workflow.defn(name="Playbook")
class PlaybookWorkflowV1:
    @workflow.init
    def __init__(self, inp: PlaybookRunInput) -> None:
        self._inp = inp
        self._status = IncidentStatus(
            incident=inp.incident,
            playbook=f"{inp.playbook.name} v{inp.playbook.version}",
            playbook_sha256=inp.playbook_sha256,
        )
        self._selected: list[Circuit] = []
        self._changes: dict[str, ChangeRecord] = {}
        self._children: dict[str, workflow.ChildWorkflowHandle] = {}
        self._confirmers: dict[str, list[str]] = {}
        self._decided: dict[str, str] = {}  # change id -> who decided it
        self._stand_down: StandDownInput | None = None
        self._operators = {o.id for o in inp.inventory.operators}

    @workflow.run
    async def run(self, inp: PlaybookRunInput) -> PlaybookRunResult:
        if spec_sha256(inp.playbook) != inp.playbook_sha256:
            raise ApplicationError(
                "playbook spec does not match its SHA-256", type="PlaybookError", non_retryable=True
            )
        incident = inp.incident
        self._note(
            "declared",
            f"{incident.kind} in {incident.area} by {incident.declared_by}: {incident.description}",
        )
        self._note("playbook", f"{self._status.playbook} sha256 {inp.playbook_sha256[:16]}")
        calls: workflow.ChildWorkflowHandle | None = None
        wave = 0
        for step in inp.playbook.steps:
            if isinstance(step, SelectCircuits):
                self._select(step)
            elif isinstance(step, RerouteWave):
                wave += 1
                await self._reroute_wave(wave, step)
            elif isinstance(step, CallDutyOfficers):
                calls = await self._start_calls(step)
            elif isinstance(step, Notify):
                await self._notify(step, key=f"notify-{len(self._status.timeline)}")
            elif isinstance(step, Report):
                await self._report(step.form)
        if calls is not None:
            self._status.phase = "awaiting acknowledgement"
            result: DutyCallResult = await calls
            self._status.calls = result.attempts
            self._status.acknowledged_by = result.acknowledged_by
            self._note(
                "calls",
                f"acknowledged by {result.acknowledged_by}"
                if result.acknowledged_by
                else "nobody acknowledged; SMS sent as fallback",
            )
        self._status.phase = "active"
        self._note("active", self._summary())
        await workflow.wait_condition(lambda: self._stand_down is not None)
        assert self._stand_down is not None
        self._status.stood_down, self._status.stood_down_by = True, self._stand_down.by
        self._note("stand-down", f"by {self._stand_down.by}: {self._stand_down.reason}")
        if inp.playbook.restore_on_stand_down:
            await self._restore()
        self._status.phase = "closed"
        self._status.outcome = self._summary()
        self._note("closed", self._status.outcome)
        await self._report("timeline")
        return PlaybookRunResult(
            incident_id=incident.id,
            outcome=self._status.outcome,
            # Compact: the per-change event logs stay in the status query and the reports.
            changes=[r.model_copy(update={"events": []}) for r in self._changes.values()],
            calls=self._status.calls,
            acknowledged_by=self._status.acknowledged_by,
        )

    # --- operators and duty officers -----------------------------------------------------

    @workflow.update(name="decide_change")
    async def decide_change(self, d: ChangeDecisionInput) -> ChangeRecord:
        rec = self._changes[d.change_id]
        allowed = self._confirmers.get(d.change_id) or []
        if allowed and d.operator_id not in allowed:
            # A business refusal, not a malformed request: accepted so the history shows it.
            self._status.decisions_refused += 1
            self._note(
                "decision refused",
                f"{d.operator_id} may not decide {d.change_id} (confirmers: {', '.join(allowed)})",
            )
            return rec
        self._decided[d.change_id] = d.operator_id
        self._note(
            "decision",
            f"{d.decision} {d.change_id} by {d.operator_id}"
            + (f": {d.reason}" if d.reason else ""),
        )
        await self._children[d.change_id].signal(DeviceChangeWorkflowV1.decide, d)
        return rec

    @decide_change.validator
    def _validate_decision(self, d: ChangeDecisionInput) -> None:
        # Rejected updates leave no trace in the history: only refuse what is malformed.
        if d.operator_id not in self._operators:
            raise ApplicationError(f"unknown operator {d.operator_id!r}", type="UnknownOperator")
        rec = self._changes.get(d.change_id)
        if rec is None:
            raise ApplicationError(f"unknown change {d.change_id!r}", type="UnknownChange")
        if rec.state is not ChangeState.AWAITING_CONFIRMATION:
            raise ApplicationError(
                f"change {d.change_id} is {rec.state.value}, not awaiting confirmation",
                type="ChangeNotPending",
            )
        if d.change_id in self._decided:
            # A double click or a second operator: the first decision stands.
            raise ApplicationError(
                f"change {d.change_id} was already decided by {self._decided[d.change_id]}",
                type="ChangeNotPending",
            )

    @workflow.signal(name=CHANGE_UPDATED_SIGNAL)
    def change_updated(self, rec: ChangeRecord) -> None:
        self._merge(rec)

    @workflow.signal(name="stand_down")
    def stand_down(self, s: StandDownInput) -> None:
        if self._stand_down is None:
            self._stand_down = s

    @workflow.query(name="status")
    def status(self) -> IncidentStatus:
        # Per-change events are already in the timeline; leaving them out keeps this small.
        self._status.changes = [r.model_copy(update={"events": []}) for r in self._changes.values()]
        return self._status

    # --- steps ---------------------------------------------------------------------------

    def _select(self, step: SelectCircuits) -> None:
        area = self._inp.incident.area
        chosen = [
            c
            for c in self._inp.inventory.circuits
            if c.area == area
            and c.priority_class in step.priority_classes
            and c.restoration_level <= step.max_restoration_level
        ]
        chosen.sort(key=lambda c: (c.restoration_level, _CLASS_ORDER.index(c.priority_class), c.id))
        self._selected = chosen
        self._status.circuits = [c.id for c in chosen]
        self._note(
            "selected",
            f"{len(chosen)} priority circuits in {area}: "
            + ", ".join(f"{c.id}(L{c.restoration_level})" for c in chosen),
        )

    def _device_batches(self, circuits: list[Circuit]) -> list[tuple[str, list[RouteChange]]]:
        """All circuits of one device in one batch; devices with the highest priority first."""
        batches: dict[str, list[RouteChange]] = {}
        for c in circuits:  # already in restoration order
            for p in c.paths:
                batches.setdefault(p.device, []).append(RouteChange(circuit_id=c.id, path=p))
        return list(batches.items())

    async def _reroute_wave(self, wave: int, step: RerouteWave) -> None:
        circuits = [c for c in self._selected if c.restoration_level in step.restoration_levels]
        if not circuits:
            self._note(
                f"wave {wave}", f"{step.name}: no circuits at levels {step.restoration_levels}"
            )
            return
        self._status.phase = f"wave {wave}: {step.name}"
        self._note(f"wave {wave}", f"{step.name}: {len(circuits)} circuits")
        await self._run_changes(
            wave,
            self._device_batches(circuits),
            direction="reroute",
            confirmers=list(step.confirmers),
            require_confirmation=True,
        )

    async def _restore(self) -> None:
        confirmed = [r for r in self._changes.values() if r.state is ChangeState.CONFIRMED]
        if not confirmed:
            self._note("restore", "nothing to restore")
            return
        self._status.phase = "restoring"
        by_id = {c.id: c for c in self._inp.inventory.circuits}
        batches: dict[str, list[RouteChange]] = {}
        for rec in confirmed:
            for cid in rec.circuits:
                for p in by_id[cid].paths:
                    if p.device == rec.device:
                        batches.setdefault(rec.device, []).append(
                            RouteChange(circuit_id=cid, path=p)
                        )
        self._note(
            "restore",
            f"moving {sum(len(v) for v in batches.values())} circuit paths back "
            f"to primary on {len(batches)} devices",
        )
        await self._run_changes(
            0, list(batches.items()), direction="restore", confirmers=[], require_confirmation=False
        )

    async def _run_changes(
        self,
        wave: int,
        batches: list[tuple[str, list[RouteChange]]],
        *,
        direction: str,
        confirmers: list[str],
        require_confirmation: bool,
    ) -> None:
        inp = self._inp
        limit = asyncio.Semaphore(inp.timings.max_parallel_devices)

        async def one(device_name: str, changes: list[RouteChange]) -> None:
            cid = (
                change_id(inp.incident.id, device_name, wave)
                if direction == "reroute"
                else f"restore-{inp.incident.id}-{device_name}"
            )
            self._changes[cid] = ChangeRecord(
                change_id=cid,
                device=device_name,
                wave=wave,
                circuits=[c.circuit_id for c in changes],
            )
            self._confirmers[cid] = confirmers
            async with limit:
                handle = await workflow.start_child_workflow(
                    DeviceChangeWorkflowV1.run,
                    DeviceChangeInput(
                        incident_id=inp.incident.id,
                        change_id=cid,
                        device=inp.inventory.device(device_name),
                        wave=wave,
                        direction=direction,
                        changes=changes,  # type: ignore[arg-type]
                        require_confirmation=require_confirmation,
                        timings=inp.timings,
                    ),
                    id=cid,
                )
                self._children[cid] = handle
                try:
                    self._merge(await handle)
                except ChildWorkflowError as e:
                    rec = self._changes[cid]
                    rec.state, rec.error = ChangeState.FAILED, str(e.cause or e)

        await asyncio.gather(*(one(d, ch) for d, ch in batches))

    async def _start_calls(self, step: CallDutyOfficers) -> workflow.ChildWorkflowHandle:
        inp = self._inp
        self._note(
            "calls", f"phoning {len(inp.inventory.duty_officers)} duty officers in escalation order"
        )
        return await workflow.start_child_workflow(
            _DUTY_CALL,
            DutyCallInput(
                incident_id=inp.incident.id,
                officers=inp.inventory.duty_officers,
                message_vi=step.message_vi,
                message_en=step.message_en,
                sms_fallback=step.sms_fallback,
                rounds=step.rounds,
                timings=inp.timings,
            ),
            id=calls_workflow_id(inp.incident.id),
            result_type=DutyCallResult,
        )

    async def _notify(self, step: Notify, *, key: str) -> None:
        for officer in self._inp.inventory.duty_officers:
            body = step.message_vi if officer.language is Language.VI else step.message_en
            sent: SendSmsResult = await workflow.execute_activity(
                SEND_SMS,
                SendSmsInput(
                    incident_id=self._inp.incident.id,
                    key=f"{key}-{officer.id}",
                    officer=officer,
                    body=body,
                ),
                result_type=SendSmsResult,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=TELEPHONY_RETRY,
            )
            self._note("notified", f"SMS to {officer.name} ({sent.status})")

    async def _report(self, form: str) -> None:
        res: ReportResult = await workflow.execute_activity(
            WRITE_REPORT,
            ReportInput(
                incident_id=self._inp.incident.id,
                form=form,  # type: ignore[arg-type]
                status_json=self.status().model_dump_json(),
            ),
            result_type=ReportResult,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        self._note("report", f"{form} report {res.report_id} sha256 {res.sha256[:16]}")

    # --- bookkeeping ---------------------------------------------------------------------

    def _summary(self) -> str:
        recs = [r for r in self._changes.values() if not r.change_id.startswith("restore-")]
        rerouted = {c for r in recs if r.state is ChangeState.CONFIRMED for c in r.circuits}
        failed = {c for r in recs if r.state is not ChangeState.CONFIRMED for c in r.circuits}
        restored = [
            r
            for r in self._changes.values()
            if r.change_id.startswith("restore-") and r.state is ChangeState.CONFIRMED
        ]
        parts = [
            f"{len(rerouted - failed)}/{len(self._selected)} priority circuits rerouted and "
            "confirmed"
        ]
        if failed:
            parts.append(f"not rerouted: {', '.join(sorted(failed))}")
        if self._status.acknowledged_by:
            parts.append(f"acknowledged by {self._status.acknowledged_by}")
        if self._status.stood_down:
            parts.append(
                f"stood down by {self._status.stood_down_by}; "
                f"{len(restored)} devices restored to primary paths"
            )
        return "; ".join(parts)

    def _merge(self, rec: ChangeRecord) -> None:
        """Take a child's newer record; its events not yet seen go to the incident timeline."""
        seen = len(self._changes[rec.change_id].events) if rec.change_id in self._changes else 0
        self._status.timeline.extend(rec.events[seen:])
        self._changes[rec.change_id] = rec

    def _note(self, event: str, detail: str = "") -> None:
        self._status.timeline.append(TimelineEntry(at=workflow.now(), event=event, detail=detail))
