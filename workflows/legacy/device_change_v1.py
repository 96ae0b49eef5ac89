"""DeviceChangeWorkflowV1: frozen copy of DeviceChange for replaying pre-rewrite histories."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.legacy._models import (
        ApplyResult,
        ChangeDecisionInput,
        ChangeRecord,
        ChangeState,
        Decision,
        DeviceChangeInput,
        DeviceSessionInput,
        LockInput,
        PrecheckResult,
        StepResult,
        TimelineEntry,
        VerifyInput,
        VerifyResult,
    )

from workflows.legacy._common import (
    APPLY_CHANGE,
    AWAIT_DEVICE_REVERT,
    CONFIRM_CHANGE,
    LOCK_DEVICE,
    LOCK_RETRY,
    PRECHECK_DEVICE,
    ROLLBACK_CHANGE,
    UNLOCK_DEVICE,
    VERIFY_CHANGE,
    ssh_retry,
)

CHANGE_UPDATED_SIGNAL = "change_updated"


@workflow.defn(name="DeviceChange")
class DeviceChangeWorkflowV1:
    @workflow.init
    def __init__(self, inp: DeviceChangeInput) -> None:
        self._inp = inp
        self._decision: ChangeDecisionInput | None = None
        self._record = ChangeRecord(
            change_id=inp.change_id,
            device=inp.device.name,
            wave=inp.wave,
            circuits=[c.circuit_id for c in inp.changes],
        )

    @workflow.run
    async def run(self, inp: DeviceChangeInput) -> ChangeRecord:
        t = inp.timings
        session = DeviceSessionInput(
            incident_id=inp.incident_id,
            change_id=inp.change_id,
            device=inp.device,
            direction=inp.direction,
            changes=inp.changes,
            timings=t,
        )
        # The lease outlives the longest honest step sequence, so a dead worker's lock expires.
        lease_s = (
            t.confirm_window_s
            + t.verify_timeout_s
            + t.revert_margin_s
            + t.revert_wait_grace_s
            + 4 * t.ssh_step_timeout_s
        )
        lock = LockInput(device=inp.device.name, holder=inp.change_id, lease_s=lease_s)
        await workflow.execute_activity(
            LOCK_DEVICE,
            lock,
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(seconds=lease_s + 60),
            retry_policy=LOCK_RETRY,
        )
        applied: ApplyResult | None = None
        try:
            pre = await self._ssh(PRECHECK_DEVICE, session, PrecheckResult)
            self._record.transcripts.append(pre.transcript)
            await self._set(ChangeState.APPLYING, "applying with auto-revert armed")
            applied = await self._ssh(APPLY_CHANGE, session, ApplyResult, heartbeat=True)
            self._record.commands = applied.commands
            self._record.already_applied = applied.already_applied
            if applied.transcript:
                self._record.transcripts.append(applied.transcript)
            verified = await self._verify(session, expect="changed", timeout_s=t.verify_timeout_s)
            self._record.verified = verified.ok
            self._record.verification = verified.detail
            if not verified.ok:
                await self._rollback(session, reason=f"verification failed: {verified.detail}")
                self._record.error = f"verification failed: {verified.detail}"
                self._record.error_type = "VerificationFailed"
                self._record.retryable = False
                await self._set(ChangeState.FAILED, self._record.error)
                return self._record
            if not inp.require_confirmation:
                await self._confirm(session, by="stand-down order")
                return self._record
            await self._set(ChangeState.AWAITING_CONFIRMATION, verified.detail)
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None,
                    timeout=timedelta(seconds=t.confirm_window_s),
                    timeout_summary="operator-confirmation",
                )
            except TimeoutError:
                await self._no_confirmation(session, applied)
                return self._record
            decision = self._decision
            assert decision is not None
            self._record.decided_by = decision.operator_id
            self._record.decision = decision.decision
            self._record.decision_reason = decision.reason
            if decision.decision is Decision.CONFIRM:
                await self._confirm(session, by=decision.operator_id)
            else:
                await self._rollback(session, reason=f"rejected by {decision.operator_id}")
                await self._set(ChangeState.ROLLED_BACK, f"rejected by {decision.operator_id}")
            return self._record
        except ActivityError as e:
            await self._failed(
                e, session, applied_maybe=self._record.state is not ChangeState.PENDING
            )
            return self._record
        finally:
            await workflow.execute_activity(
                UNLOCK_DEVICE,
                lock,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )

    @workflow.signal(name="decide")
    def decide(self, decision: ChangeDecisionInput) -> None:
        if (
            self._decision is not None
            or self._record.state is not ChangeState.AWAITING_CONFIRMATION
        ):
            # A late or second answer: accepted by the playbook, recorded here, changes nothing.
            self._note(
                f"late decision {decision.decision} by {decision.operator_id} ignored "
                f"(change {self._record.state})"
            )
            return
        self._decision = decision

    @workflow.query(name="record")
    def record(self) -> ChangeRecord:
        return self._record

    # --- steps ---------------------------------------------------------------------------

    async def _ssh(
        self,
        name: str,
        arg: object,
        result_type: type,
        *,
        heartbeat: bool = False,
        timeout_s: float | None = None,
    ):  # type: ignore[no-untyped-def]
        t = self._inp.timings
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=timedelta(seconds=timeout_s or t.ssh_step_timeout_s),
            heartbeat_timeout=timedelta(seconds=t.heartbeat_timeout_s) if heartbeat else None,
            retry_policy=ssh_retry(attempts=t.ssh_attempts, initial_s=t.ssh_retry_initial_s),
        )

    async def _verify(
        self, session: DeviceSessionInput, *, expect: str, timeout_s: float
    ) -> VerifyResult:
        t = self._inp.timings
        res: VerifyResult = await self._ssh(
            VERIFY_CHANGE,
            VerifyInput(session=session, expect=expect, timeout_s=timeout_s),  # type: ignore[arg-type]
            VerifyResult,
            heartbeat=True,
            timeout_s=timeout_s + t.ssh_step_timeout_s,
        )
        if res.transcript:
            self._record.transcripts.append(res.transcript)
        return res

    async def _confirm(self, session: DeviceSessionInput, *, by: str) -> None:
        res: StepResult = await self._ssh(CONFIRM_CHANGE, session, StepResult)
        if res.transcript:
            self._record.transcripts.append(res.transcript)
        self._record.commands = [*self._record.commands, *res.commands]
        await self._set(ChangeState.CONFIRMED, f"confirmed on the device ({by})")

    async def _rollback(self, session: DeviceSessionInput, *, reason: str) -> None:
        res: StepResult = await self._ssh(ROLLBACK_CHANGE, session, StepResult)
        if res.transcript:
            self._record.transcripts.append(res.transcript)
        self._record.commands = [*self._record.commands, *res.commands]
        back = await self._verify(
            session, expect="original", timeout_s=self._inp.timings.verify_timeout_s
        )
        verdict = "verified" if back.ok else f"NOT verified: {back.detail}"
        self._note(f"rolled back ({reason}); original path {verdict}")

    async def _no_confirmation(self, session: DeviceSessionInput, applied: ApplyResult) -> None:
        t = self._inp.timings
        if applied.auto_revert == "device":
            # The device's own timer undoes the change; we only watch it happen.
            window = t.verify_timeout_s + t.revert_margin_s + t.revert_wait_grace_s
            reverted: VerifyResult = await self._ssh(
                AWAIT_DEVICE_REVERT,
                VerifyInput(session=session, expect="original", timeout_s=window),
                VerifyResult,
                heartbeat=True,
                timeout_s=window + t.ssh_step_timeout_s,
            )
            if reverted.transcript:
                self._record.transcripts.append(reverted.transcript)
            if reverted.ok:
                await self._set(
                    ChangeState.REVERTED_BY_DEVICE,
                    f"no confirmation in {t.confirm_window_s:g}s; {reverted.detail}",
                )
                return
            self._note(f"device did not revert by itself: {reverted.detail}")
        await self._rollback(session, reason="no confirmation")
        await self._set(
            ChangeState.ROLLED_BACK,
            f"no confirmation in {t.confirm_window_s:g}s; reverted by the orchestrator",
        )

    async def _failed(
        self, e: ActivityError, session: DeviceSessionInput, *, applied_maybe: bool
    ) -> None:
        cause = e.cause
        if isinstance(cause, ApplicationError):
            self._record.error_type = cause.type or "ApplicationError"
            self._record.retryable = not cause.non_retryable
            self._record.error = cause.message
        else:
            self._record.error_type = type(cause).__name__ if cause else "ActivityError"
            self._record.retryable = True
            self._record.error = str(cause or e)
        if self._record.retryable:
            self._record.error = f"{self._record.error} (gave up after retries)"
        if applied_maybe:
            # Best effort: never leave a device half-changed because a later step failed.
            try:
                await self._rollback(session, reason=f"{self._record.error_type} after apply")
            except ActivityError as again:
                self._note(f"rollback after failure also failed: {again.cause or again}")
        await self._set(ChangeState.FAILED, f"{self._record.error_type}: {self._record.error}")

    async def _set(self, state: ChangeState, detail: str) -> None:
        self._record.state = state
        self._note(f"{state.value}: {detail}")
        parent = workflow.info().parent
        if parent is not None:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                CHANGE_UPDATED_SIGNAL, self._record
            )

    def _note(self, text: str) -> None:
        self._record.events.append(
            TimelineEntry(at=workflow.now(), event=self._record.change_id, detail=text)
        )
        workflow.logger.info("%s: %s", self._record.change_id, text)
