"""The orchestrator moves real traffic on real FRRouting routers after a cable cut."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from continuity.messages import PlaybookRunInput, StandDownInput
from continuity.models import ChangeState, Decision, Incident, IncidentKind
from continuity.stack import Stack
from lab.frr_netns import CIRCUIT_ID, CREDENTIAL_NAME, FrrLab, frr_lab_available
from playbooks import get_playbook
from tests.conftest import TEST_TIMINGS
from tests.workflows.helpers import decide_until_active
from worker import build_worker
from workflows import PlaybookWorkflow

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

        # A worker of its own, as a site worker next to this gear would be.
        queue = f"frr-site-{uuid.uuid4().hex[:6]}"
        settings = stack.settings.model_copy(
            update={
                "device_credentials": {CREDENTIAL_NAME: lab.credential},
                "known_hosts": lab.known_hosts_path,
                "task_queue": queue,
            }
        )
        spec = get_playbook("kon-tum-2a")
        incident = Incident(
            id=f"INC-frr-{uuid.uuid4().hex[:8]}",
            kind=IncidentKind.SABOTAGE,
            area=lab.inventory.circuits[0].area,
            declared_by="duty-lab",
            description="primary fibre r1-r2 cut",
            declared_at=datetime.now(UTC),
        )
        # Same database as the API, so Twilio's callbacks find the calls this worker placed.
        async with build_worker(stack.client, settings, stack.store, task_queue=queue):
            handle = await stack.client.start_workflow(
                PlaybookWorkflow.run,
                PlaybookRunInput(
                    incident=incident,
                    playbook=spec,
                    playbook_sha256=spec.sha256(),
                    inventory=lab.inventory,
                    timings=TEST_TIMINGS.model_copy(update={"device_time_scale": 1.0}),
                ),
                id=incident.id,
                task_queue=queue,
            )
            operator = lab.inventory.operators[0].id
            st = await decide_until_active(
                handle, Decision.CONFIRM, operator=operator, timeout_s=120
            )
            assert st.circuits == [CIRCUIT_ID]
            assert {r.device for r in st.changes} == {"r1", "r2"}
            assert all(r.state is ChangeState.CONFIRMED for r in st.changes), st.changes

            # Real packets now flow host-a -> r1 -> r3 -> r2 -> host-b, and it is saved.
            assert await asyncio.to_thread(lab.ping, "host-a", host_b)
            assert "r3" in await asyncio.to_thread(lab.via, "host-a", host_b)
            for router in ("r1", "r2"):
                saved = await asyncio.to_thread(lab.saved_config, router)
                assert lab.backup_next_hop(router) in saved
                assert lab.primary_next_hop(router) not in saved

            # Cable repaired; the duty officer stands down and the primary path comes back.
            await asyncio.to_thread(lab.restore_link, "r1", "r2")
            await handle.signal(PlaybookWorkflow.stand_down, StandDownInput(by="duty-lab"))
            result = await handle.result()
            assert "2 devices restored" in result.outcome, result.outcome
            assert await asyncio.to_thread(lab.ping, "host-a", host_b)
            assert "r3" not in await asyncio.to_thread(lab.via, "host-a", host_b)
