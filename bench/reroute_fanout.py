"""Benchmark: one incident rerouting N lab devices, every change confirmed; wall time per device.

    python bench/reroute_fanout.py [--sizes 10 50 200] [--parallel 16]

Everything is real: the Temporal dev server, the worker, SSH sessions to the simulated lab.
Figures are reported as ratios to the smallest size measured in the same run (machines are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from continuity.messages import ChangeDecisionInput, PlaybookRunInput, StandDownInput, Timings  # noqa: E402
from continuity.models import (  # noqa: E402
    Area,
    ChangeState,
    Decision,
    DutyOfficer,
    Incident,
    IncidentKind,
    Operator,
    PriorityClass,
)
from continuity.playbook import PlaybookSpec, RerouteWave, SelectCircuits  # noqa: E402
from continuity.settings import DeviceCredential, Settings  # noqa: E402
from continuity.stack import TemporalDevServer, free_port  # noqa: E402
from continuity.store import Store  # noqa: E402
from lab.gear import LabNetwork, LabServer  # noqa: E402
from lab.gear.network import generate_inventory  # noqa: E402
from worker import build_worker  # noqa: E402
from workflows import PlaybookWorkflow  # noqa: E402

SPEC = PlaybookSpec(
    name="bench-fanout",
    version=1,
    title="Reroute every circuit of the area in one wave",
    incident_kinds=[IncidentKind.SABOTAGE],
    steps=[
        SelectCircuits(priority_classes=list(PriorityClass)),
        RerouteWave(name="all", restoration_levels=[1, 2, 3, 4, 5]),
    ],
    restore_on_stand_down=False,
)


async def one_size(root: Path, client, n: int, parallel: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    inv = generate_inventory(n, circuits_per_device=2).model_copy(
        update={
            "areas": [Area(id="lab", name="Lab")],
            "operators": [Operator(id="op-bench", name="Bench operator")],
            "duty_officers": [
                DutyOfficer(id="do-bench", name="Bench", phone="+84905100299", escalation_order=1)
            ],
        }
    )
    net = LabNetwork.from_inventory(inv, time_scale=60)
    lab = LabServer(net, root / f"lab-{n}", password="bench")
    await lab.start()
    settings = Settings(
        data_dir=root,
        device_credentials={"lab": DeviceCredential(username="netops", password="bench")},
        known_hosts=lab.known_hosts_path,
        ssh_max_sessions=parallel,
        ssh_new_connections_per_s=200,
        task_queue=f"bench-{n}",
    )
    store = Store(f"sqlite:///{root / f'bench-{n}.db'}")
    store.create_schema()
    timings = Timings(
        confirm_window_s=60,
        verify_timeout_s=15,
        revert_margin_s=30,
        max_parallel_devices=parallel,
        device_time_scale=60,
    )
    incident = Incident(
        id=f"INC-bench-{n}-{uuid.uuid4().hex[:6]}",
        kind=IncidentKind.SABOTAGE,
        area="lab",
        declared_by="bench",
        declared_at=datetime.now(UTC),
    )
    try:
        async with build_worker(client, settings, store, task_queue=settings.task_queue):
            started = time.perf_counter()
            handle = await client.start_workflow(
                PlaybookWorkflow.run,
                PlaybookRunInput(
                    incident=incident,
                    playbook=SPEC,
                    playbook_sha256=SPEC.sha256(),
                    inventory=lab.inventory(),
                    timings=timings,
                ),
                id=incident.id,
                task_queue=settings.task_queue,
            )
            decided: set[str] = set()
            while True:
                st = await handle.query(PlaybookWorkflow.status)
                pending = [
                    r
                    for r in st.changes
                    if r.state is ChangeState.AWAITING_CONFIRMATION and r.change_id not in decided
                ]
                await asyncio.gather(
                    *(
                        handle.execute_update(
                            PlaybookWorkflow.decide_change,
                            ChangeDecisionInput(
                                change_id=r.change_id,
                                decision=Decision.CONFIRM,
                                operator_id="op-bench",
                            ),
                        )
                        for r in pending
                    )
                )
                decided |= {r.change_id for r in pending}
                if st.phase == "active":
                    break
                await asyncio.sleep(0.2)
            wall = time.perf_counter() - started
            confirmed = sum(r.state is ChangeState.CONFIRMED for r in st.changes)
            await handle.signal(PlaybookWorkflow.stand_down, StandDownInput(by="bench"))
            await handle.result()
            history = await handle.fetch_history()
    finally:
        await lab.stop()
        store.close()
    return {
        "devices": n,
        "confirmed": confirmed,
        "wall_s": wall,
        "s_per_device": wall / n,
        "history_events": len(history.events),
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    p.add_argument("--parallel", type=int, default=16)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = TemporalDevServer(root / "temporal.db", free_port(), fast_timers=True)
        client = await server.start()
        try:
            rows = [await one_size(root, client, n, args.parallel) for n in args.sizes]
        finally:
            await server.stop()
    base = rows[0]["s_per_device"]
    print(
        f"{'devices':>8} {'confirmed':>9} {'wall s':>8} {'s/device':>9} {'vs first':>9} "
        f"{'parent events':>13}"
    )
    for r in rows:
        print(
            f"{r['devices']:>8} {r['confirmed']:>9} {r['wall_s']:>8.2f} {r['s_per_device']:>9.3f} "
            f"{r['s_per_device'] / base:>8.2f}x {r['history_events']:>13}"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (worker + lab + client): {peak_mb:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
