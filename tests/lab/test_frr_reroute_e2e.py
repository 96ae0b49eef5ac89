"""The orchestrator moves real traffic on real FRRouting routers after a cable cut."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.stack import Stack
from continuity.incidents import prepare_incident
from continuity.messages import DecisionSignal, StandDownInput
from continuity.models import (
    ChangeState,
    CircuitState,
    Decision,
    IncidentKind,
    IncidentPhase,
    IncidentStatus,
)
from continuity.store import Store
from lab.frr_netns import CIRCUIT_ID, CREDENTIAL_NAME, FrrLab, frr_lab_available
from tests.conftest import TEST_TIMINGS, wait_until
from tests.workflows.helpers import sign_declaration, signed, signed_decision, two_waves
from worker import build_worker
from workflows import IncidentWorkflow

_UNAVAILABLE = frr_lab_available()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"real FRR lab: {_UNAVAILABLE}")


async def test_cable_cut_playbook_moves_priority_traffic_to_backup_path(
    stack: Stack, tmp_path: Path
):
    async with FrrLab(tmp_path / "frr") as lab:
        host_b = lab.host_address("host-b")
        assert await asyncio.to_thread(lab.ping, "host-a", host_b)
        await asyncio.to_thread(lab.cut_link, "r1", "r2")  # sabotage on the primary route
        assert not await asyncio.to_thread(lab.ping, "host-a", host_b)

        # Workers of their own on their own store, as a site next to this gear would have.
        queue = f"frr-site-{uuid.uuid4().hex[:6]}"
        settings = stack.settings.model_copy(
            update={
                "device_credentials": {CREDENTIAL_NAME: lab.credential},
                "known_hosts": lab.known_hosts_path,
                "task_queue": queue,
            }
        )
        store = Store(f"sqlite:///{tmp_path / 'frr.db'}")
        store.create_schema()
        store.replace_inventory(lab.inventory)
        inp = prepare_incident(
            spec=two_waves(first=[1, 2, 3, 4, 5]),
            inventory=lab.inventory,
            incident_id=f"INC-frr-{uuid.uuid4().hex[:8]}",
            kind=IncidentKind.SABOTAGE,
            area=lab.inventory.circuits[0].area,
            description="primary fibre r1-r2 cut",
            declared_by="duty-lab",
            timings=TEST_TIMINGS.model_copy(update={"device_time_scale": 1.0}),
        )
        sign_declaration(inp)  # the worker holds circuits only on a signed declaration
        store.save_snapshot(inp.inventory)
        operator = lab.inventory.operators[0].id
        try:
            async with build_worker(stack.client, settings, store, task_queue=queue):
                handle = await stack.client.start_workflow(
                    IncidentWorkflow.run, inp, id=inp.incident.id, task_queue=queue
                )

                async def confirmed() -> IncidentStatus | None:
                    for row in store.changes(handle.id, state="awaiting_confirmation"):
                        if row.decision is None:
                            store.claim_decision(
                                incident_id=handle.id,
                                change_id=row.change_id,
                                decision=Decision.CONFIRM,
                                operator=operator,
                                reason="lab",
                                now=datetime.now(UTC),
                            )
                            decision = DecisionSignal(
                                change_id=row.change_id,
                                decision=Decision.CONFIRM,
                                operator_id=operator,
                            )
                            await handle.signal(
                                IncidentWorkflow.decide, signed_decision(decision, handle.id)
                            )
                    st: IncidentStatus = await handle.query(IncidentWorkflow.status)
                    done = st.changes and all(c.state is ChangeState.CONFIRMED for c in st.changes)
                    return st if st.phase is IncidentPhase.ACTIVE and done else None

                st = await wait_until(confirmed, timeout_s=120, what="both routers confirmed")
                assert [c.circuit_id for c in st.circuits] == [CIRCUIT_ID]
                assert {r.device for r in st.changes} == {"r1", "r2"}
                assert st.circuits[0].state is CircuitState.ON_BACKUP

                # Real packets now flow host-a -> r1 -> r3 -> r2 -> host-b, and it is saved.
                assert await asyncio.to_thread(lab.ping, "host-a", host_b)
                assert "r3" in await asyncio.to_thread(lab.via, "host-a", host_b)
                for router in ("r1", "r2"):
                    saved = await asyncio.to_thread(lab.saved_config, router)
                    assert lab.backup_next_hop(router) in saved
                    assert lab.primary_next_hop(router) not in saved

                # Cable repaired; the duty officer stands down and the primary path comes back.
                await asyncio.to_thread(lab.restore_link, "r1", "r2")
                order = signed(StandDownInput(by="duty-lab"), handle.id, "stand_down")
                await handle.signal(IncidentWorkflow.stand_down, order)
                result = await handle.result()
                assert result.phase is IncidentPhase.CLOSED
                assert result.circuits == {CIRCUIT_ID: CircuitState.ON_PRIMARY}, result.outcome
                assert await asyncio.to_thread(lab.ping, "host-a", host_b)
                assert "r3" not in await asyncio.to_thread(lab.via, "host-a", host_b)
        finally:
            store.close()
