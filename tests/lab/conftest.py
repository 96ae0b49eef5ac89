"""A one-router lab per test for the platform simulators, logged in as an operator would be."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from continuity.models import Platform
from lab.gear import LabNetwork, LabServer, SimDevice
from lab.gear.network import generate_inventory
from lab.gear.terminal import LabTerminal

TIME_SCALE = 60.0  # one device minute (or VRP's 60-second trial) passes in one real second

# What each platform answers to the paging-off commands an operator types first.
_ON_OPEN: dict[Platform, list[tuple[str, str]]] = {
    Platform.CISCO_IOSXE: [("terminal length 0", "")],
    Platform.JUNIPER_JUNOS: [
        ("set cli screen-length 0", "Screen length set to 0"),
        ("set cli screen-width 511", "Screen width set to 511"),
    ],
    Platform.HUAWEI_VRP: [
        (
            "screen-length 0 temporary",
            "Info: The configuration takes effect on the current user terminal interface only.",
        )
    ],
    Platform.FRR: [("terminal length 0", "")],
}


class GearLab:
    def __init__(self, net: LabNetwork, server: LabServer, platform: Platform) -> None:
        self.net = net
        self.server = server
        self.platform = platform

    @property
    def r1(self) -> SimDevice:
        return self.net.devices["r1"]

    async def login(self) -> LabTerminal:
        port = self.server.inventory().device("r1").port
        term = await LabTerminal.open(port, known_hosts=self.server.known_hosts_path)
        for command, answer in _ON_OPEN[self.platform]:
            assert await term.send(command) == answer
        return term


@asynccontextmanager
async def gear_lab(tmp_path: Path, platform: Platform) -> AsyncIterator[GearLab]:
    inventory = generate_inventory(1, platforms=[platform], policy_routes=True)
    net = LabNetwork.from_inventory(inventory, time_scale=TIME_SCALE)
    server = LabServer(net, tmp_path)
    await server.start()
    try:
        yield GearLab(net, server, platform)
    finally:
        await server.stop()
