"""A worker killed mid-apply: the retry finishes the change and sends nothing twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

from continuity.models import ChangeState, Decision
from continuity.stack import Stack
from lab.gear import Fault
from tests.conftest import wait_until
from tests.workflows.helpers import decide_change, device_changes, restore, start_change
from worker import build_worker

ROOT = Path(__file__).parent.parent.parent


async def test_worker_killed_mid_apply_retry_applies_nothing_twice(stack: Stack):
    device = "dt-agg-01"
    backups = {c.path.prefix: c.path.backup.address for c in device_changes(stack, device)}
    queue = f"crash-{uuid.uuid4().hex[:6]}"
    s = stack.settings
    env = {
        **os.environ,
        "CONTINUITY_TEMPORAL_ADDRESS": s.temporal_address,
        "CONTINUITY_TASK_QUEUE": queue,
        "CONTINUITY_DATABASE_URL": s.sqlalchemy_url,
        "CONTINUITY_KNOWN_HOSTS": str(s.known_hosts_path),
        "CONTINUITY_DEVICE_CREDENTIALS": json.dumps(
            {
                k: {"username": v.username, "password": v.password.get_secret_value()}
                for k, v in s.device_credentials.items()
            }
        ),
    }
    # A worker in its own process, so it can really die.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "worker.py"), env=env, cwd=ROOT, start_new_session=True
    )
    stack.network.set_fault(device, Fault.SLOW, delay_s=0.4)  # room to die between make and break
    try:
        handle = await start_change(stack, device, task_queue=queue, incident_id="INC-crash")

        def made_not_broken() -> bool:
            routes = stack.network.devices[device].static_routes()
            return all(backups[p] in routes.get(p, []) for p in backups) and any(
                len(routes.get(p, [])) > 1 for p in backups
            )

        await wait_until(
            made_not_broken,
            timeout_s=60,
            interval_s=0.05,
            what="backup routes added, primaries not yet removed",
        )
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    finally:
        stack.network.set_fault(device, None)
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    # A new worker picks the apply up again after the heartbeat timeout.
    async with build_worker(
        stack.client, s.model_copy(update={"task_queue": queue}), stack.store, task_queue=queue
    ):
        await decide_change(handle, Decision.CONFIRM)
        rec = await handle.result()

    assert rec.state is ChangeState.CONFIRMED
    routes = stack.network.devices[device].static_routes()
    assert all(routes[p] == [b] for p, b in backups.items())
    # Both attempts left a transcript (the killed one as far as its last heartbeat); the
    # retry found the backup routes configured and sent only the removal of the primaries.
    applies = [
        t
        for t in stack.store.transcripts("INC-crash")
        if t.change_id == handle.id and t.step == "apply"
    ]
    assert len(applies) == 2, [t.text[-200:] for t in applies]

    def typed(text: str) -> list[str]:
        return [ln.split("#", 1)[1] for ln in text.splitlines() if "(config)#" in ln]

    retry = next(t for t in applies if any(ln.startswith("no ip route") for ln in typed(t.text)))
    assert not [ln for ln in typed(retry.text) if ln.startswith("ip route")], retry.text
    assert len([ln for ln in typed(retry.text) if ln.startswith("no ip route")]) == len(backups)
    for prefix, backup in backups.items():
        network = prefix.split("/")[0]
        adds = [
            ln
            for t in applies
            for ln in typed(t.text)
            if ln.startswith("ip route") and network in ln and backup in ln
        ]
        assert len(adds) <= 1, adds  # never configured twice
    assert rec.already_applied is False  # half done is not done: the rest was applied

    # Put the device back on its primary paths for the rest of the session.
    await restore(stack, device)
