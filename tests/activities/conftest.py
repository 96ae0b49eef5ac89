"""Fixtures for the network activities: a fresh simulated lab over real SSH per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from activities.network import NetworkActivities
from continuity.messages import DeviceSessionInput, Timings
from continuity.models import Device, Platform, RerouteMechanism, RouteChange
from continuity.settings import DeviceCredential, Settings
from continuity.store import Store
from lab.gear import LabNetwork, LabServer
from lab.gear.network import generate_inventory

# Device clocks run 60x: a one-minute IOS-XE / Junos timer (and VRP's 60 s minimum) takes 1 s.
TIME_SCALE = 60.0
# revert_window_s = 0.3 + 0.5 + 0.2 = 1 s real = 60 device seconds: the shortest timer each
# platform accepts.
TIMINGS = Timings(
    confirm_window_s=0.3,
    verify_timeout_s=0.5,
    revert_margin_s=0.2,
    heartbeat_timeout_s=2,
    device_time_scale=TIME_SCALE,
)
COMMAND_TIMEOUT_S = 1.5
USERNAME, PASSWORD = "netops", "lab-secret"
# generate_inventory gives r1..r4 the platforms in this order.
DEVICE_OF = {
    Platform.CISCO_IOSXE: "r1",
    Platform.JUNIPER_JUNOS: "r2",
    Platform.HUAWEI_VRP: "r3",
    Platform.FRR: "r4",
}


@dataclass
class Lab:
    net: LabNetwork
    server: LabServer
    store: Store
    settings: Settings
    activities: NetworkActivities
    tmp: Path

    def device(self, platform: Platform) -> Device:
        return self.server.inventory().device(DEVICE_OF[platform])

    def changes(self, platform: Platform, *, pbr: bool = False) -> list[RouteChange]:
        name = DEVICE_OF[platform]
        want = RerouteMechanism.SOURCE_PBR if pbr else RerouteMechanism.STATIC_ROUTE
        return [
            RouteChange(circuit_id=c.id, path=p)
            for c in self.net.inventory.circuits
            for p in c.paths
            if p.device == name and p.mechanism is want
        ]

    def session(
        self,
        platform: Platform,
        *,
        pbr: bool = False,
        direction: str = "reroute",
        change_id: str = "change-1",
    ) -> DeviceSessionInput:
        return DeviceSessionInput(
            incident_id="inc-1",
            change_id=change_id,
            device=self.device(platform),
            direction=direction,  # type: ignore[arg-type]
            changes=self.changes(platform, pbr=pbr),
            timings=TIMINGS,
        )

    def with_settings(self, **update: object) -> NetworkActivities:
        """Activities over the same lab and store with other settings (e.g. a known_hosts)."""
        return NetworkActivities(self.store, self.settings.model_copy(update=update))


@pytest_asyncio.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    inv = generate_inventory(4, policy_routes=True)
    net = LabNetwork.from_inventory(inv, time_scale=TIME_SCALE)
    server = LabServer(net, tmp_path / "lab", username=USERNAME, password=PASSWORD)
    await server.start()
    store = Store(f"sqlite:///{tmp_path / 'continuity.db'}")
    store.create_schema()
    settings = Settings(
        data_dir=tmp_path,
        device_credentials={"lab": DeviceCredential(username=USERNAME, password=PASSWORD)},
        known_hosts=server.known_hosts_path,
        ssh_connect_timeout_s=3,
        ssh_command_timeout_s=COMMAND_TIMEOUT_S,
    )
    try:
        yield Lab(net, server, store, settings, NetworkActivities(store, settings), tmp_path)
    finally:
        await server.stop()
        store.close()


@pytest.fixture
def env() -> Iterator[ActivityEnvironment]:
    yield ActivityEnvironment()
