"""Fixtures for the network activities: a fresh simulated lab over real SSH and a real store."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from activities.network import NetworkActivities
from continuity.messages import (
    ChangeStepInput,
    DeviceStepInput,
    ReadBackInput,
    StepClaim,
    StepTimings,
)
from continuity.models import (
    Area,
    CircuitPath,
    Decision,
    Device,
    Direction,
    Inventory,
    Operator,
    Platform,
    RerouteMechanism,
    RouteChange,
)
from continuity.settings import DeviceCredential, Settings
from continuity.store import Store
from lab.gear import LabNetwork, LabServer, SimDevice
from lab.gear.network import generate_inventory

# Device clocks run 60x: a one-minute IOS-XE / Junos timer (and VRP's 60 s minimum) takes 1 s.
TIME_SCALE = 60.0
# QUICK: revert window 0.3 + 0.5 + 0.2 = 1 s real = 60 device seconds, the shortest timer each
# platform accepts: an unconfirmed change reverts by itself about a second after its arm.
QUICK = StepTimings(
    confirm_window_s=0.3,
    verify_timeout_s=0.5,
    revert_margin_s=0.2,
    revert_wait_grace_s=1.0,
    device_time_scale=TIME_SCALE,
    lease_s=60,
)
# TIMINGS: a window long enough that no device timer fires while a test decides.
TIMINGS = QUICK.model_copy(update={"confirm_window_s": 5.0})
COMMAND_TIMEOUT_S = 1.5
USERNAME, PASSWORD = "netops", "lab-secret-7c1f"
INCIDENT = "inc-1"
OPERATOR, SECOND_OPERATOR, DECLARER = "op-1", "op-2", "duty-1"
# generate_inventory gives r1..r4 the platforms in this order.
DEVICE_OF = {
    Platform.CISCO_IOSXE: "r1",
    Platform.JUNIPER_JUNOS: "r2",
    Platform.HUAWEI_VRP: "r3",
    Platform.FRR: "r4",
}


@dataclasses.dataclass
class Lab:
    net: LabNetwork
    server: LabServer
    store: Store
    settings: Settings
    activities: NetworkActivities
    tmp: Path
    snapshot: str  # the lab inventory as an incident's snapshot (what device steps read)

    def device(self, platform: Platform) -> Device:
        return self.server.inventory().device(DEVICE_OF[platform])

    def gear(self, platform: Platform) -> SimDevice:
        return self.net.devices[DEVICE_OF[platform]]

    def changes(
        self, platform: Platform, *, pbr: bool | None = False, circuits: list[str] | None = None
    ) -> list[RouteChange]:
        """The device's circuits: static routes (pbr False), policy routes (True), all (None)."""
        name = DEVICE_OF[platform]
        return [
            RouteChange(circuit_id=c.id, path=p)
            for c in self.net.inventory.circuits
            for p in c.paths
            if p.device == name
            and (circuits is None or c.id in circuits)
            and (pbr is None or (p.mechanism is RerouteMechanism.SOURCE_PBR) == pbr)
        ]

    def step(
        self,
        platform: Platform,
        *,
        direction: Direction = Direction.REROUTE,
        change_id: str = "change-1",
        incident: str = INCIDENT,
        pbr: bool | None = False,
        circuits: list[str] | None = None,
        timings: StepTimings = TIMINGS,
    ) -> DeviceStepInput:
        return DeviceStepInput(
            incident_id=incident,
            change_id=change_id,
            wave=1,
            device=DEVICE_OF[platform],
            circuits=[c.circuit_id for c in self.changes(platform, pbr=pbr, circuits=circuits)],
            snapshot=self.snapshot,
            direction=direction,
            declared_by=DECLARER,
            timings=timings,
        )

    def changes_of(self, inp: DeviceStepInput) -> list[RouteChange]:
        """The routes a step acts on, as the activity reads them from the snapshot."""
        inv = self.store.snapshot(inp.snapshot)
        return [
            RouteChange(circuit_id=c.id, path=p)
            for c in inv.circuits
            if c.id in inp.circuits
            for p in c.paths
            if p.device == inp.device
        ]

    def variant(
        self,
        inp: DeviceStepInput,
        *,
        device: dict[str, object] | None = None,
        path: CircuitPath | None = None,
    ) -> DeviceStepInput:
        """The step against a snapshot with its device (or its first circuit's path) altered."""
        inv = self.store.snapshot(inp.snapshot)
        devices = [
            d.model_copy(update=device) if device and d.name == inp.device else d
            for d in inv.devices
        ]
        first = inp.circuits[0]
        circuits = [
            c.model_copy(update={"paths": [path if p.device == inp.device else p for p in c.paths]})
            if path is not None and c.id == first
            else c
            for c in inv.circuits
        ]
        changed = inv.model_copy(update={"devices": devices, "circuits": circuits})
        return inp.model_copy(update={"snapshot": self.store.save_snapshot(changed)})

    def read_back(self, platform: Platform, inp: DeviceStepInput) -> ReadBackInput:
        return ReadBackInput(
            incident_id=inp.incident_id,
            device=DEVICE_OF[platform],
            circuits=inp.circuits,
            snapshot=self.snapshot,
        )

    def restore(self, platform: Platform, **kw: object) -> DeviceStepInput:
        kw.setdefault("change_id", "restore-1")
        return self.step(platform, direction=Direction.RESTORE, **kw)  # type: ignore[arg-type]

    def with_settings(self, **update: object) -> NetworkActivities:
        """Activities over the same lab and store with other settings (e.g. a known_hosts)."""
        return NetworkActivities(self.store, self.settings.model_copy(update=update))


def decided(
    decision: Decision,
    *,
    change_id: str = "change-1",
    by: str = OPERATOR,
    incident: str = INCIDENT,
    timings: StepTimings = TIMINGS,
) -> ChangeStepInput:
    """A confirm or undo step carrying an operator's decision."""
    claim = StepClaim(kind="decision", decision=decision, by=by, reason="tested")
    return ChangeStepInput(incident_id=incident, change_id=change_id, claim=claim, timings=timings)


def timed_out(
    *,
    change_id: str = "change-1",
    let_device_revert: bool = False,
    keep: bool = False,
    timings: StepTimings = TIMINGS,
) -> ChangeStepInput:
    """A confirm (keep) or undo step because the window closed without a decision."""
    return ChangeStepInput(
        incident_id=INCIDENT,
        change_id=change_id,
        claim=StepClaim(kind="timeout", by="playbook", keep=keep),
        timings=timings,
        let_device_revert=let_device_revert,
    )


def with_areas(inv: Inventory) -> Inventory:
    """generate_inventory names area "lab" without listing it; the store's foreign key wants it."""
    have = {a.id for a in inv.areas}
    missing = sorted({c.area for c in inv.circuits} - have)
    return inv.model_copy(update={"areas": [*inv.areas, *(Area(id=a, name=a) for a in missing)]})


LabFactory = Callable[[Inventory], Awaitable[Lab]]


@pytest_asyncio.fixture
async def make_lab(tmp_path: Path) -> AsyncIterator[LabFactory]:
    """Start labs for chosen inventories; each gets its own store, all are stopped at the end."""
    numbers = itertools.count(1)
    async with AsyncExitStack() as stack:

        async def start(inv: Inventory) -> Lab:
            root = tmp_path / f"lab{next(numbers)}"
            root.mkdir()
            net = LabNetwork.from_inventory(inv, time_scale=TIME_SCALE)
            server = LabServer(net, root / "gear", username=USERNAME, password=PASSWORD)
            await server.start()
            stack.push_async_callback(server.stop)
            store = Store(f"sqlite:///{root / 'continuity.db'}")
            store.create_schema()
            served = with_areas(server.inventory())
            # Who may decide (the declarer too: so that a self-decision is refused as one).
            people = [Operator(id=i, name=i) for i in (OPERATOR, SECOND_OPERATOR, DECLARER)]
            served = served.model_copy(update={"operators": people})
            store.replace_inventory(served)
            snapshot = store.save_snapshot(served)
            stack.callback(store.close)
            settings = Settings(
                data_dir=root,
                device_credentials={"lab": DeviceCredential(username=USERNAME, password=PASSWORD)},
                known_hosts=server.known_hosts_path,
                ssh_connect_timeout_s=3,
                ssh_command_timeout_s=COMMAND_TIMEOUT_S,
            )
            activities = NetworkActivities(store, settings)
            stack.push_async_callback(activities.close)
            return Lab(net, server, store, settings, activities, root, snapshot)

        yield start


@pytest_asyncio.fixture
async def lab(make_lab: LabFactory) -> Lab:
    """r1 IOS-XE, r2 Junos, r3 VRP, r4 FRR; each with a static-route and a policy-route circuit."""
    return await make_lab(generate_inventory(4, policy_routes=True))


@pytest.fixture
def env() -> Iterator[ActivityEnvironment]:
    yield ActivityEnvironment()


def attempt(env: ActivityEnvironment, n: int) -> None:
    """What Temporal's retry of the same activity looks like to the activity."""
    env.info = dataclasses.replace(env.info, attempt=n)


def execution(env: ActivityEnvironment, activity_id: str) -> None:
    """A new execution of a step (the workflow scheduled it again): attempts count from 1."""
    env.info = dataclasses.replace(env.info, activity_id=activity_id, attempt=1)
