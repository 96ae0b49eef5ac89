"""LabNetwork: an inventory's simulated devices, their links and the faults injected into them."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from itertools import cycle
from typing import Any

from continuity.models import (
    Area,
    Circuit,
    CircuitPath,
    Device,
    Inventory,
    NextHop,
    Platform,
    PriorityClass,
    RerouteMechanism,
)
from lab.gear.base import DeviceClock, Fault, Interface, SimDevice, local_address_for
from lab.gear.cisco_iosxe import IosXeDevice
from lab.gear.frr import FrrDevice
from lab.gear.huawei_vrp import HuaweiDevice
from lab.gear.juniper_junos import JunosDevice

_PLATFORMS: dict[Platform, type[SimDevice]] = {
    Platform.CISCO_IOSXE: IosXeDevice,
    Platform.JUNIPER_JUNOS: JunosDevice,
    Platform.HUAWEI_VRP: HuaweiDevice,
    Platform.FRR: FrrDevice,
}

# Called with (device name, new fault, previous fault) whenever a fault is set or cleared.
FaultListener = Callable[[str, Fault | None, Fault | None], None]


class LabNetwork:
    """Every device of an inventory, in the NORMAL state: each circuit on its primary next hop."""

    def __init__(self, inventory: Inventory, devices: dict[str, SimDevice], clock: DeviceClock):
        self.inventory = inventory
        self.devices = devices
        self.clock = clock
        self._listeners: list[FaultListener] = []

    @classmethod
    def from_inventory(cls, inv: Inventory, *, time_scale: float = 1.0) -> LabNetwork:
        clock = DeviceClock(time_scale)
        devices: dict[str, SimDevice] = {
            d.name: _PLATFORMS[d.platform](d.name, clock=clock) for d in inv.devices
        }
        for circuit in inv.circuits:
            for path in circuit.paths:
                dev = devices[path.device]
                _connect(dev, path.primary)
                _connect(dev, path.backup)
                if path.ingress_interface and path.source_prefix:
                    # The interface facing the priority users: the first host of their prefix.
                    users = ipaddress.IPv4Network(path.source_prefix)
                    first = next(users.hosts(), users.network_address)
                    if dev.find_interface(path.ingress_interface) is None:
                        dev.add_interface(
                            path.ingress_interface,
                            ipaddress.IPv4Interface(f"{first}/{users.prefixlen}"),
                        )
                dev.running.add_route(path.prefix, path.primary.address)
        for dev in devices.values():
            dev.on_built()
        return cls(inv, devices, clock)

    @property
    def time_scale(self) -> float:
        return self.clock.time_scale

    def device(self, name: str) -> SimDevice:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"no device {name!r} in the lab") from None

    def cut_link(self, device: str, interface: str) -> None:
        """Sabotage: the link behind `interface` goes dark; routes over it become inactive."""
        dev = self.device(device)
        iface = self._interface(dev, interface)
        iface.link_cut = True
        dev.record(f"link on {iface.name} cut")

    def restore_link(self, device: str, interface: str) -> None:
        dev = self.device(device)
        iface = self._interface(dev, interface)
        iface.link_cut = False
        dev.record(f"link on {iface.name} restored")

    def set_fault(self, device: str, fault: Fault | None, **params: Any) -> None:
        """Inject (or with None, clear) a fault; see `Fault` for what each one does."""
        dev = self.device(device)
        previous = dev.fault
        dev.fault = Fault(fault) if fault is not None else None
        dev.fault_params = dict(params)
        dev.record(f"fault {dev.fault or 'cleared'} {params or ''}".rstrip())
        for listener in list(self._listeners):
            listener(device, dev.fault, previous)

    def add_fault_listener(self, listener: FaultListener) -> None:
        self._listeners.append(listener)

    def remove_fault_listener(self, listener: FaultListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    @staticmethod
    def _interface(dev: SimDevice, name: str) -> Interface:
        iface = dev.interfaces.get(name) or dev.find_interface(name)
        if iface is None:
            raise KeyError(f"{dev.name} has no interface {name!r}")
        return iface


def _connect(dev: SimDevice, hop: NextHop) -> None:
    """Give `dev` an interface on the subnet of `hop` (named as the inventory says, if it does)."""
    existing = dev.interface_for(hop.address)
    if hop.interface is None:
        if existing is None:
            dev.add_interface(dev.next_interface_name(), local_address_for(hop.address))
        return
    named = dev.find_interface(hop.interface)
    if named is not None and named.connects(hop.address):
        return
    dev.add_interface(named.name if named else hop.interface, local_address_for(hop.address))


# Where generated policy-routed circuits enter: the third port of each platform.
_INGRESS = {
    Platform.CISCO_IOSXE: "GigabitEthernet0/0/3",
    Platform.JUNIPER_JUNOS: "ge-0/0/3.0",
    Platform.HUAWEI_VRP: "GE0/0/3",
    Platform.FRR: "eth3",
}


def generate_inventory(
    count: int,
    *,
    platforms: Sequence[Platform] = tuple(Platform),
    circuits_per_device: int = 1,
    policy_routes: bool = False,
    port: int = 22,
) -> Inventory:
    """Devices r1..rN (platforms in turn), each with circuits on docs/device-cli.md's addresses.

    Circuit j of a device routes 10.(20+j).0.0/16 via 192.0.2.1 (port 1), backup 198.51.100.1
    (port 2); with `policy_routes`, one more circuit policy-routes 10.5.0.0/16 entering on port 3.
    Ports below 1024 (the default 22) make the lab pick free ones.
    """
    if not 1 <= circuits_per_device <= 200:
        raise ValueError("circuits_per_device must be 1..200")
    classes = cycle(PriorityClass)
    devices: list[Device] = []
    circuits: list[Circuit] = []
    primary, backup = NextHop(address="192.0.2.1"), NextHop(address="198.51.100.1")
    for k, platform in zip(range(count), cycle(platforms)):
        name = f"r{k + 1}"
        devices.append(
            Device(name=name, platform=platform, host="127.0.0.1", port=port, credential="lab")
        )
        paths = [
            CircuitPath(device=name, prefix=f"10.{20 + j}.0.0/16", primary=primary, backup=backup)
            for j in range(circuits_per_device)
        ]
        if policy_routes:
            paths.append(
                CircuitPath(
                    device=name,
                    prefix=f"10.{20 + circuits_per_device}.0.0/16",
                    primary=primary,
                    backup=backup,
                    mechanism=RerouteMechanism.SOURCE_PBR,
                    source_prefix="10.5.0.0/16",
                    ingress_interface=_INGRESS[platform],
                )
            )
        for j, path in enumerate(paths):
            circuits.append(
                Circuit(
                    id=f"{name}-c{j + 1}",
                    name=f"Lab circuit {j + 1} of {name}",
                    owner="Lab",
                    priority_class=next(classes),
                    restoration_level=1 + j % 5,
                    area="lab",
                    paths=[path],
                )
            )
    return Inventory(
        province="Lab", areas=[Area(id="lab", name="Lab")], devices=devices, circuits=circuits
    )


__all__ = ["FaultListener", "LabNetwork", "generate_inventory"]
