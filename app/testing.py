"""Test a playbook against the lab, as an engineer does before it ships (docs/playbooks.md).

    async with playbook_lab(tmp_path) as lab:
        status = await lab.run(spec, area="ngoc-hoi")          # declared, every change confirmed
        assert lab.forwards_via("bgc-ngoc-hoi-post", "backup")  # what the device's config says
        await lab.stand_down()
        assert lab.forwards_via("bgc-ngoc-hoi-post", "primary")

The real thing, not a mock: the Temporal dev server, the worker, the incident workflow, the
store, and simulated routers over SSH; only the telephony is the local sandbox. The playbook
runs as the API runs it (the declaration and every order signed), and each change waits for a
real confirmation, given here as an operator of the inventory would give it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

from app.stack import SAMPLE_INVENTORY, Stack
from continuity.incidents import prepare_incident
from continuity.messages import (
    DecisionBatch,
    DecisionSignal,
    IncidentResult,
    StandDownInput,
    Timings,
)
from continuity.models import (
    ChangeState,
    Decision,
    IncidentKind,
    IncidentPhase,
    IncidentStatus,
    RerouteMechanism,
)
from continuity.playbook import PlaybookSpec
from workflows import IncidentWorkflow

# Short windows and a fast lab clock: a whole incident in seconds.
FAST = Timings(
    confirm_window_s=20.0,
    revert_margin_s=2.0,
    verify_timeout_s=5.0,
    revert_wait_grace_s=5.0,
    ssh_step_timeout_s=30.0,
    heartbeat_timeout_s=10.0,
    ssh_retry_initial_s=0.2,
    ring_timeout_s=2.0,
    escalation_delay_s=1.0,
    device_time_scale=60.0,
    drive_retry_max_s=2.0,
)


class PlaybookLab:
    """One playbook at a time against a running embedded stack."""

    def __init__(self, stack: Stack, *, timings: Timings = FAST) -> None:
        self.stack = stack
        self.timings = timings
        self.handle: WorkflowHandle[Any, Any] | None = None

    async def run(
        self,
        spec: PlaybookSpec,
        *,
        area: str,
        kind: IncidentKind = IncidentKind.SABOTAGE,
        confirm: bool = True,
        timeout_s: float = 120.0,
    ) -> IncidentStatus:
        """Declare `kind` in `area` with `spec`; confirm every change as it comes (unless
        `confirm` is False); the status once the incident is active and every change settled."""
        inp = prepare_incident(
            spec=spec,
            inventory=self.stack.store.inventory(),
            incident_id=f"INC-lab-{uuid.uuid4().hex[:8]}",
            kind=kind,
            area=area,
            description=f"playbook test of {spec.name}",
            declared_by=self._officer(),
            timings=self.timings,
        )
        if self.stack.attester is not None:
            inp.attestation_keys = self.stack.attester.public_keys
            inp.declaration = self._attest("declare", inp.incident.id, inp.attested(), "")
        self.stack.store.save_snapshot(inp.inventory)
        assert self.stack.settings is not None  # the stack is started
        self.handle = await self.stack.client.start_workflow(
            IncidentWorkflow.run, inp, id=inp.incident.id, task_queue=self.stack.settings.task_queue
        )
        return await asyncio.wait_for(self._until_active(confirm), timeout_s)

    async def stand_down(self, reason: str = "test over") -> IncidentResult:
        handle = self._running()
        order = StandDownInput(by=self._officer(), reason=reason)
        order.attestation = self._attest("stand_down", handle.id, order.attested(), "")
        await handle.signal(IncidentWorkflow.stand_down, order)
        result: IncidentResult = await handle.result()
        return result

    def forwards_via(self, circuit_id: str, which: str) -> bool:
        """Every part of the circuit is configured on its `which` path ("primary"/"backup")."""
        circuit = next(c for c in self.stack.store.inventory().circuits if c.id == circuit_id)
        for path in circuit.paths:
            device = self.stack.network.devices[path.device]
            if path.mechanism is RerouteMechanism.SOURCE_PBR:
                on_backup = f"CT-{circuit_id}" in device.running_config()
                if on_backup != (which == "backup"):
                    return False
                continue
            hop = path.backup if which == "backup" else path.primary
            if device.static_routes().get(path.prefix, []) != [hop.address]:
                return False
        return True

    def received(self, device: str) -> list[str]:
        """Every line the simulated device was sent, reads included, in order."""
        return list(self.stack.network.devices[device].received)

    # --- the people --------------------------------------------------------------------

    def _officer(self) -> str:
        return self.stack.store.inventory().duty_officers[0].id

    def _operator(self) -> str:
        return self.stack.store.inventory().operators[0].id

    def _attest(self, action: Any, incident_id: str, content: dict[str, str], change: str) -> Any:
        if self.stack.attester is None:
            return None
        subject = self._operator() if action == "decide" else self._officer()
        role = "operator" if action == "decide" else "duty_officer"
        return self.stack.attester(
            action=action,
            incident_id=incident_id,
            subject=subject,
            role=role,
            token_id="",
            content=content,
            at=datetime.now(UTC),
            change_id=change,
        )

    def _running(self) -> WorkflowHandle[Any, Any]:
        if self.handle is None:
            raise RuntimeError("no playbook is running: call run() first")
        return self.handle

    async def _until_active(self, confirm: bool) -> IncidentStatus:
        handle = self._running()
        decided: set[str] = set()
        while True:
            if confirm:
                await self._confirm_pending(handle, decided)
            st: IncidentStatus = await handle.query(IncidentWorkflow.status)
            if st.phase is IncidentPhase.ACTIVE and all(c.state.settled for c in st.changes):
                return st
            if not confirm and any(
                c.state is ChangeState.AWAITING_CONFIRMATION for c in st.changes
            ):
                return st
            await asyncio.sleep(0.1)

    async def _confirm_pending(self, handle: WorkflowHandle[Any, Any], decided: set[str]) -> None:
        """As an operator's screen does: claim each awaiting change, then tell the incident."""
        rows = await asyncio.to_thread(
            self.stack.store.changes, handle.id, state=ChangeState.AWAITING_CONFIRMATION.value
        )
        signals = []
        for row in rows:
            if row.change_id in decided:
                continue
            decided.add(row.change_id)
            d = DecisionSignal(
                change_id=row.change_id, decision=Decision.CONFIRM, operator_id=self._operator()
            )
            att = self._attest("decide", handle.id, d.attested(), row.change_id)
            d.attestation = att
            await asyncio.to_thread(
                self.stack.store.claim_decision,
                incident_id=handle.id,
                change_id=row.change_id,
                decision=Decision.CONFIRM,
                operator=self._operator(),
                reason="",
                now=datetime.now(UTC),
                attestation=att.model_dump(mode="json") if att else None,
            )
            signals.append(d)
        if signals:
            await handle.signal(IncidentWorkflow.decisions, DecisionBatch(decisions=signals))


@asynccontextmanager
async def playbook_lab(
    data_dir: Path, *, inventory: Path = SAMPLE_INVENTORY, timings: Timings = FAST
) -> AsyncIterator[PlaybookLab]:
    """An embedded stack (Temporal dev server, worker, store, SSH lab) for one test module."""
    stack = Stack(
        data_dir=data_dir,
        inventory_file=inventory,
        timings=timings,
        lab_time_scale=timings.device_time_scale,
    )
    await stack.start()
    try:
        yield PlaybookLab(stack, timings=timings)
    finally:
        await stack.stop()


__all__ = ["FAST", "PlaybookLab", "playbook_lab"]
