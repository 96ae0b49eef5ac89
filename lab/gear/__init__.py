"""The simulated network lab over real SSH: IOS-XE, Junos, VRPv8 and FRR per docs/device-cli.md."""

from lab.gear.base import CliSession, DeviceClock, Fault, Interface, SimDevice
from lab.gear.network import LabNetwork
from lab.gear.server import LabServer, serve
from lab.gear.terminal import LabTerminal

__all__ = [
    "CliSession",
    "DeviceClock",
    "Fault",
    "Interface",
    "LabNetwork",
    "LabServer",
    "LabTerminal",
    "SimDevice",
    "serve",
]
