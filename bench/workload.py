"""The per-device apply + verify every contender performs: its commands, checks and limits."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from continuity.models import Inventory, Platform

USERNAME = "netops"
REVERT_MINUTES = 5
# Arms the device-side auto-revert and enters config mode in one command.
ARM_REVERT = f"configure terminal revert timer {REVERT_MINUTES}"
READ_STATE = ("show ip route static", "show running-config", "show archive config rollback timer")
SHOW_ROUTES = "show ip route static"
CONFIRM = "configure confirm"
SAVE = "write memory"

# How long one command may take to answer, and how the make-before-break poll paces itself.
COMMAND_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0
ROUTE_POLL_INTERVAL_S = 0.1
ROUTE_POLL_TIMEOUT_S = 30.0

# docs/device-cli.md, cisco_iosxe; "%No matching route to delete" is deliberately absent.
ERROR_MARKERS = (
    "% Invalid input",
    "% Incomplete command",
    "% Ambiguous command",
    "% Unknown command",
    "Command authorization failed",
)

_ROUTE_LINE = re.compile(
    r"^S\S*\s+(?P<prefix>\d+\.\d+\.\d+\.\d+/\d+)\s+\[[\d/]+\]\s+via\s+(?P<nh>\S+)"
)
_ECMP_LINE = re.compile(r"^\s+\[[\d/]+\]\s+via\s+(?P<nh>\S+)")


class BenchDeviceError(Exception):
    """A device did not end up where the apply + verify says: the run is not a valid sample."""

    def __init__(self, device: str, step: str, detail: str) -> None:
        super().__init__(f"{device}: {step}: {detail}")
        self.device = device
        self.step = step


@dataclass(frozen=True)
class RouteSwap:
    """One circuit's static route, moved from its primary to its backup next hop."""

    prefix: str
    primary: str
    backup: str

    @property
    def _address_mask(self) -> str:
        net = ipaddress.IPv4Network(self.prefix)
        return f"{net.network_address} {net.netmask}"

    def add_backup(self) -> str:
        return f"ip route {self._address_mask} {self.backup}"

    def remove_primary(self) -> str:
        return f"no ip route {self._address_mask} {self.primary}"

    def add_primary(self) -> str:
        return f"ip route {self._address_mask} {self.primary}"

    def remove_backup(self) -> str:
        return f"no ip route {self._address_mask} {self.backup}"


@dataclass(frozen=True)
class DeviceTarget:
    name: str
    host: str
    port: int
    swaps: tuple[RouteSwap, ...]


def device_targets(inventory: Inventory) -> list[DeviceTarget]:
    """Every IOS-XE device of a served inventory with the routes its circuits move."""
    swaps: dict[str, list[RouteSwap]] = {}
    for circuit in inventory.circuits:
        for path in circuit.paths:
            swaps.setdefault(path.device, []).append(
                RouteSwap(path.prefix, path.primary.address, path.backup.address)
            )
    targets = []
    for device in inventory.devices:
        if device.platform is not Platform.CISCO_IOSXE:
            raise ValueError(f"{device.name} is {device.platform}; the bench drives IOS-XE only")
        targets.append(
            DeviceTarget(device.name, device.host, device.port, tuple(swaps.get(device.name, ())))
        )
    return targets


def static_routes(show_output: str) -> dict[str, set[str]]:
    """`show ip route static` as prefix -> next hops (an ECMP route has several)."""
    routes: dict[str, set[str]] = {}
    prefix: str | None = None
    for line in show_output.splitlines():
        if m := _ROUTE_LINE.match(line):
            prefix = m["prefix"]
            routes.setdefault(prefix, set()).add(m["nh"])
        elif (m := _ECMP_LINE.match(line)) and prefix is not None:
            routes[prefix].add(m["nh"])
    return routes


def backups_forward(target: DeviceTarget, show_output: str) -> bool:
    """Make before break: every prefix already forwards via its backup (the primary may stay)."""
    routes = static_routes(show_output)
    return all(s.backup in routes.get(s.prefix, ()) for s in target.swaps)


def only_backups(target: DeviceTarget, show_output: str) -> bool:
    routes = static_routes(show_output)
    return all(routes.get(s.prefix) == {s.backup} for s in target.swaps)


def only_primaries(target: DeviceTarget, show_output: str) -> bool:
    routes = static_routes(show_output)
    return all(routes.get(s.prefix) == {s.primary} for s in target.swaps)


def check_output(target: DeviceTarget, command: str, output: str) -> str:
    """The output, or BenchDeviceError if the device flagged the command."""
    for marker in ERROR_MARKERS:
        if marker in output:
            raise BenchDeviceError(target.name, command, output.strip())
    return output
