"""`continuity demo`: the whole mission on the embedded stack, driven through the public API."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from temporalio.client import WorkflowExecutionStatus, WorkflowHistory

from app.audit import export_history, save_history
from app.bundle import make_bundle, verify_bundle
from app.stack import SAMPLE_INVENTORY, Stack
from continuity.errors import ContinuityError, ValidationFailed
from continuity.inventory import read_inventory
from continuity.messages import Timings
from continuity.models import (
    ChangeState,
    CircuitState,
    Direction,
    IncidentPhase,
    IncidentStatus,
    Inventory,
    Role,
)
from continuity.report import render_text
from continuity.signing import load_private_key, load_public_key

log = logging.getLogger("continuity.demo")

DEMO_AREA = "thanh-pho-kon-tum"
# Short durations so the demo takes seconds; the lab's clocks run 60x so that
# minute-granular device timers (IOS-XE, Junos) fit too.
DEMO_TIMINGS = Timings(
    confirm_window_s=60,
    revert_margin_s=30,
    verify_timeout_s=15,
    revert_wait_grace_s=30,
    ssh_step_timeout_s=60,
    heartbeat_timeout_s=15,
    ring_timeout_s=10,
    escalation_delay_s=8,
    max_parallel_devices=4,
    device_time_scale=60.0,
)


async def run_demo(  # type: ignore[no-untyped-def]
    data_dir: Path,
    *,
    inventory_file: Path = SAMPLE_INVENTORY,
    area: str | None = None,
    echo=print,
    timeout_s: float = 240.0,
    on_stage: Callable[[str], None] | None = None,
) -> int:
    inventory = read_inventory(inventory_file).inventory
    area = area or _busiest_area(inventory)
    covered = set(inventory.expand_area(area))  # a former district: its communes
    if not any(c.area in covered for c in inventory.circuits):
        raise ValidationFailed(f"area {area!r} has no circuits in {inventory_file}")
    stack = Stack(
        data_dir=data_dir,
        timings=DEMO_TIMINGS,
        lab_time_scale=60.0,
        inventory_file=inventory_file,
        on_stage=on_stage,
    )
    try:
        settings = await stack.start()
        # Paths go on lines of their own: printed whole, so they can be copied.
        echo(f"embedded stack up: API {stack.api_url}, Temporal {settings.temporal_address}")
        echo(f"  data in {data_dir}")
        officers = stack.store.inventory().duty_officers
        if len(officers) > 1:
            # The first officer does not pick up; escalation reaches the second, who presses 1.
            stack.sandbox.set_callee(officers[0].phone, "no_answer")
            stack.sandbox.set_callee(officers[1].phone, "press_1")
        return await asyncio.wait_for(_drive(stack, data_dir, area, echo), timeout_s)
    finally:
        await stack.stop()


def _busiest_area(inventory: Inventory) -> str:
    """The sample's own demo area, else the area of the inventory with the most circuits."""
    counts = Counter(c.area for c in inventory.circuits)
    if not counts:
        raise ValidationFailed("the inventory has no circuits to reroute")
    if any(c.area in set(inventory.expand_area(DEMO_AREA)) for c in inventory.circuits):
        return DEMO_AREA  # the former city: the circuits of its wards and communes
    return counts.most_common(1)[0][0]


async def _drive(stack: Stack, data_dir: Path, area: str, echo) -> int:  # type: ignore[no-untyped-def]
    def auth(role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {stack.tokens[role]}"}

    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        r = await api.post(
            "/incidents",
            headers=auth(Role.DUTY_OFFICER),
            json={
                "kind": "sabotage",
                "area": area,
                "description": (
                    "Fibre route Kon Tum - Pleiku cut at two points near Ya Chim; "
                    "suspected sabotage."
                    if area == DEMO_AREA
                    else f"Fibre route cut in {area}; suspected sabotage."
                ),
            },
        )
        if r.status_code != 201:
            raise ContinuityError(f"declaring the incident failed: {r.status_code} {r.text}")
        incident_id = r.json()["id"]
        echo(f"declared incident {incident_id} (playbook {r.json()['playbook']})")

        # The operator confirms each change as it comes up, as a NOC operator would.
        decided: set[str] = set()
        while True:
            r = await api.get(
                f"/incidents/{incident_id}/changes",
                params={"state": "awaiting_confirmation"},
                headers=auth(Role.OPERATOR),
            )
            r.raise_for_status()
            for change in r.json():
                cid = change["change_id"]
                if cid in decided:
                    continue
                d = await api.post(
                    f"/incidents/{incident_id}/changes/{cid}/decision",
                    headers=auth(Role.OPERATOR),
                    json={"decision": "confirm", "reason": "backup path verified from the NOC"},
                )
                if d.status_code != 200:
                    raise ContinuityError(f"confirming {cid}: {d.status_code} {d.text}")
                decided.add(cid)
                echo(f"operator confirmed {cid}")
            r = await api.get(f"/incidents/{incident_id}", headers=auth(Role.OPERATOR))
            r.raise_for_status()
            status = IncidentStatus.model_validate(r.json()["status"])
            pending = [c for c in status.changes if not c.state.settled]
            if status.phase is IncidentPhase.ACTIVE and not pending:
                break
            await asyncio.sleep(0.3)
        # Let the phone escalation reach the officer who answers before standing down.
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            r = await api.get(f"/incidents/{incident_id}", headers=auth(Role.OPERATOR))
            if r.json().get("acknowledged_by"):
                break
            await asyncio.sleep(0.5)

        r = await api.post(
            f"/incidents/{incident_id}/stand-down",
            headers=auth(Role.DUTY_OFFICER),
            json={"reason": "cable route repaired; police investigation handed over"},
        )
        r.raise_for_status()
        echo("duty officer stood the incident down")

        handle = stack.client.get_workflow_handle(incident_id)
        await handle.result()
        desc = await handle.describe()
        r = await api.get(f"/incidents/{incident_id}", headers=auth(Role.AUDITOR))
        status = IncidentStatus.model_validate(r.json()["status"])
        echo("")
        echo(render_text(status))

        r = await api.get(f"/incidents/{incident_id}/history", headers=auth(Role.AUDITOR))
        r.raise_for_status()
        # What the auditor's export endpoint serves is what gets replayed.
        history_file = save_history(
            WorkflowHistory.from_json(incident_id, r.text),
            data_dir / "histories" / f"{incident_id}.json",
        )
        # The children's histories too: the duty calls (and any alert calls).
        children = [
            wf.id
            async for wf in stack.client.list_workflows(
                f"WorkflowType = 'DutyCall' AND WorkflowId STARTS_WITH 'calls-{incident_id}'"
            )
        ]
        for child in children:
            await export_history(
                stack.client, child, history_file.parent / incident_id / f"{child}.json"
            )
        r = await api.get(
            f"/incidents/{incident_id}/report",
            params={"form": "dossier_2c"},
            headers=auth(Role.AUDITOR),
        )
        dossier = r.text
        echo("")
        echo("workflow history saved to")
        echo(f"  {history_file}")
        echo(f"and its {len(children)} child workflows in")
        echo(f"  {history_file.parent / incident_id}")
        echo("replay it offline:")
        echo(f"  continuity audit replay {history_file}")

        # The auditor's whole record: a signed bundle, verified as an auditor would, offline.
        assert stack.settings is not None  # set by start()
        key_path = stack.settings.signing_key_path
        bundle_dir = data_dir / "bundles" / incident_id
        await make_bundle(
            stack.client, stack.store, incident_id, bundle_dir, load_private_key(key_path)
        )
        public = key_path.with_name(key_path.name + ".pub")
        trusted = data_dir / "bundles" / "signing-key.pub"  # what an auditor is handed
        shutil.copyfile(public, trusted)
        verified = await verify_bundle(bundle_dir, [load_public_key(trusted)])
        echo("")
        echo(f"audit bundle written to {bundle_dir}")
        echo(
            "  verified: "
            + ("yes" if verified.ok else "NO: " + "; ".join(verified.problems))
            + f" ({verified.attestations} signed actions, {verified.commands} commands)"
        )
        echo(f"  continuity audit verify {bundle_dir} --key {trusted}")

        rerouted = [c for c in status.changes if c.direction is Direction.REROUTE]
        ok = (
            desc.status is WorkflowExecutionStatus.COMPLETED
            and status.phase is IncidentPhase.CLOSED
            and bool(rerouted)
            and all(c.state is ChangeState.CONFIRMED for c in rerouted)
            and all(c.state is CircuitState.ON_PRIMARY for c in status.circuits)
            and status.acknowledged_by is not None
            and f"Acknowledged by: {status.acknowledged_by}" in dossier
            and verified.ok
        )
        return 0 if ok else 1
