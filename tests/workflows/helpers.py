"""Starting and steering workflows on the test stack, as an operator and a duty officer would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio.client import WorkflowHandle

from continuity.messages import (
    ChangeDecisionInput,
    DeviceChangeInput,
    PlaybookRunInput,
    StandDownInput,
    Timings,
)
from continuity.models import (
    ChangeState,
    Decision,
    Incident,
    IncidentKind,
    IncidentStatus,
    RouteChange,
)
from continuity.playbook import PlaybookSpec
from continuity.stack import Stack
from playbooks import get_playbook
from tests.conftest import TEST_TIMINGS, wait_until
from workflows import DeviceChangeWorkflow, PlaybookWorkflow

OPERATOR = "op-hoang-thu-ha"


def device_changes(stack: Stack, device: str) -> list[RouteChange]:
    """Every circuit path on one device, as one DeviceChange batch."""
    inv = stack.store.inventory()
    return [
        RouteChange(circuit_id=c.id, path=p)
        for c in inv.circuits
        for p in c.paths
        if p.device == device
    ]


async def start_playbook(
    stack: Stack,
    area: str,
    *,
    spec: PlaybookSpec | None = None,
    kind: IncidentKind = IncidentKind.SABOTAGE,
    timings: Timings = TEST_TIMINGS,
) -> WorkflowHandle[Any, Any]:
    spec = spec or get_playbook("kon-tum-2a")
    incident = Incident(
        id=f"INC-wf-{uuid.uuid4().hex[:8]}",
        kind=kind,
        area=area,
        declared_by="do-nguyen-van-an",
        declared_at=datetime.now(UTC),
    )
    return await stack.client.start_workflow(
        PlaybookWorkflow.run,
        PlaybookRunInput(
            incident=incident,
            playbook=spec,
            playbook_sha256=spec.sha256(),
            inventory=stack.store.inventory(),
            timings=timings,
        ),
        id=incident.id,
        task_queue=stack.settings.task_queue,
    )


async def decide_until_active(
    handle: WorkflowHandle[Any, Any],
    decision: Decision | None = Decision.CONFIRM,
    *,
    operator: str = OPERATOR,
    timeout_s: float = 90,
) -> IncidentStatus:
    """Answer each change once as it comes up (None: answer nothing); the status once active."""
    decided: set[str] = set()

    async def active() -> IncidentStatus | None:
        st: IncidentStatus = await handle.query(PlaybookWorkflow.status)
        for rec in st.changes:
            if (
                decision is not None
                and rec.state is ChangeState.AWAITING_CONFIRMATION
                and rec.change_id not in decided
            ):
                decided.add(rec.change_id)
                await handle.execute_update(
                    PlaybookWorkflow.decide_change,
                    ChangeDecisionInput(
                        change_id=rec.change_id, decision=decision, operator_id=operator
                    ),
                )
        return st if st.phase == "active" else None

    return await wait_until(active, timeout_s=timeout_s, what=f"{handle.id} active")  # type: ignore[return-value]


async def stand_down(handle: WorkflowHandle[Any, Any]) -> Any:
    await handle.signal(PlaybookWorkflow.stand_down, StandDownInput(by="test"))
    return await handle.result()


async def start_change(
    stack: Stack,
    device: str,
    *,
    task_queue: str | None = None,
    direction: str = "reroute",
    timings: Timings = TEST_TIMINGS,
    incident_id: str = "INC-changes",
) -> WorkflowHandle[Any, Any]:
    """A DeviceChange on its own, as a playbook would start it for one device and wave."""
    cid = f"{'change' if direction == 'reroute' else 'restore'}-{uuid.uuid4().hex[:6]}-{device}"
    return await stack.client.start_workflow(
        DeviceChangeWorkflow.run,
        DeviceChangeInput(
            incident_id=incident_id,
            change_id=cid,
            device=stack.store.inventory().device(device),
            wave=1 if direction == "reroute" else 0,
            direction=direction,  # type: ignore[arg-type]
            changes=device_changes(stack, device),
            require_confirmation=direction == "reroute",
            timings=timings,
        ),
        id=cid,
        task_queue=task_queue or stack.settings.task_queue,
    )


async def decide_change(
    handle: WorkflowHandle[Any, Any], decision: Decision, *, operator: str = OPERATOR
) -> None:
    """Wait until the change asks for an operator, then answer it."""

    async def awaiting() -> bool:
        rec = await handle.query(DeviceChangeWorkflow.record)
        return rec.state is ChangeState.AWAITING_CONFIRMATION

    await wait_until(awaiting, timeout_s=60, what=f"{handle.id} awaiting confirmation")
    await handle.signal(
        DeviceChangeWorkflow.decide,
        ChangeDecisionInput(change_id=handle.id, decision=decision, operator_id=operator),
    )


async def restore(stack: Stack, device: str, *, task_queue: str | None = None) -> None:
    """Put a device back on its primary paths for the rest of the session."""
    handle = await start_change(stack, device, task_queue=task_queue, direction="restore")
    rec = await handle.result()
    assert rec.state is ChangeState.CONFIRMED, rec
