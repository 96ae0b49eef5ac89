"""Cisco IOS-XE: line-by-line config armed with `configure terminal revert timer`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from continuity.dialects.base import (
    IPV4,
    ApplyPlan,
    Dialect,
    Direction,
    add_route,
    ends,
    is_ipv4,
    prefix_of,
    stanzas,
)
from continuity.models import CircuitPath, Platform, RerouteMechanism, RouteChange
from continuity.validation import netmask, wildcard

_IFNAMES = {
    "gi": "gigabitethernet",
    "te": "tengigabitethernet",
    "fa": "fastethernet",
    "fo": "fortygigabitethernet",
    "hu": "hundredgige",
    "twe": "twentyfivegige",
    "eth": "ethernet",
    "po": "port-channel",
    "lo": "loopback",
    "tu": "tunnel",
    "vl": "vlan",
}


def _ifname(name: str) -> str:
    """Gi0/0/1 and GigabitEthernet0/0/1 are the same interface to IOS."""
    m = re.fullmatch(r"([A-Za-z-]+)(.*)", name)
    if not m:
        return name.lower()
    kind, rest = m.group(1).lower(), m.group(2)
    return _IFNAMES.get(kind, kind) + rest


class CiscoIosXe(Dialect):
    platform: ClassVar[Platform] = Platform.CISCO_IOSXE
    prompt = re.compile(r"[\w.\-@/:]{1,63}(?:\([\w.\-@/:+]{0,32}\))?[>#] ?")
    on_open = ("terminal length 0", "terminal width 512")
    error_markers = (
        "% Invalid input",
        "% Incomplete command",
        "% Ambiguous command",
        "% Unknown command",
        "Command authorization failed",
    )
    benign_markers = ("%No matching route to delete", "% No matching route to delete")
    interactive = (
        (re.compile(r"Destination filename \[[^\]]*\]\? ?$"), ""),
        (re.compile(r"\[confirm\] ?$"), ""),
    )
    native_auto_revert = True
    route_command = "show ip route static"
    config_command = "show running-config"
    pending_command = "show archive config rollback timer"
    confirm_commands = ("configure confirm",)
    persist_commands = ("write memory",)
    leave_config = ("end",)
    interface_pattern = re.compile(
        r"(?:GigabitEthernet|TenGigabitEthernet|FastEthernet|FortyGigabitEthernet|HundredGigE"
        r"|TwentyFiveGigE|Ethernet|Port-channel|Loopback|Tunnel|Vlan|Gi|Te|Fa|Fo|Hu|Twe|Eth|Po"
        r"|Lo|Tu|Vl)\d{1,4}(?:/\d{1,4}){0,3}(?:\.\d{1,5})?"
    )

    def revert_units(self, revert_s: float) -> int:
        return self._minutes(revert_s, low=1, high=120, platform="IOS-XE")

    def _render_change(
        self, circuit_id: str, path: CircuitPath, direction: Direction
    ) -> tuple[list[str], list[str]]:
        net, mask = netmask(path.prefix)
        new, old = ends(path, direction)
        if RerouteMechanism(path.mechanism) is RerouteMechanism.STATIC_ROUTE:
            return (
                [f"ip route {net} {mask} {new.address}"],
                [f"no ip route {net} {mask} {old.address}"],
            )
        name = self.object_name(circuit_id)
        assert path.source_prefix and path.ingress_interface  # checked by _checked
        src, wild = wildcard(path.source_prefix)
        attach = [
            f"ip access-list extended {name}",
            f"permit ip {src} {wild} any",
            "exit",
            f"route-map {name} permit 10",
            f"match ip address {name}",
            f"set ip next-hop {path.backup.address}",
            "exit",
            f"interface {path.ingress_interface}",
            f"ip policy route-map {name}",
            "exit",
        ]
        detach = [
            f"interface {path.ingress_interface}",
            f"no ip policy route-map {name}",
            "exit",
            f"no route-map {name}",
            f"no ip access-list extended {name}",
        ]
        # The primary path of a policy route is plain routing: rerouting only adds the policy.
        return (attach, []) if direction == Direction.REROUTE else ([], detach)

    def _plan(
        self, make: list[str], break_: list[str], *, revert_s: float | None, armed: bool
    ) -> ApplyPlan:
        arm: tuple[str, ...] = ()
        if revert_s is not None and not armed:
            arm = (f"configure terminal revert timer {self.revert_units(revert_s)}",)
        return ApplyPlan(
            make=tuple(make),
            break_=tuple(break_),
            arm=arm,
            commit=("end",),
            enter=("configure terminal",),
            arm_enters=True,
            make_before_break=True,
        )

    def render_rollback(self, changes: Sequence[RouteChange], direction: Direction) -> list[str]:
        for c in changes:
            self._checked(c)
        self._direction(direction)
        return ["configure revert now"]

    def parse_pending(self, output: str) -> bool:
        if "No Rollback Confirmed Change pending" in output:
            return False
        return bool(re.search(r"Time remaining|Timer value", output))

    def parse_routes(self, output: str) -> dict[str, set[str]]:
        routes: dict[str, set[str]] = {}
        current: str | None = None
        subnet_len: str | None = None
        for line in output.splitlines():
            sub = re.match(rf"^\s+({IPV4})/(\d+) is (?:variably )?subnetted", line)
            if sub:
                subnet_len = sub.group(2)
                continue
            head = re.match(rf"^S\S*\s+({IPV4})(?:/(\d+))?\s", line)
            if head:
                length = head.group(2) or subnet_len
                current = prefix_of(head.group(1), length) if length else None
            elif line[:1] not in (" ", "\t"):
                current = None
            add_route(routes, current, re.findall(rf"\bvia ({IPV4})", line))
        return routes

    def parse_config_routes(self, config: str) -> dict[str, set[str]]:
        routes: dict[str, set[str]] = {}
        for line in config.splitlines():
            tokens = line.split()
            if len(tokens) < 5 or tokens[:2] != ["ip", "route"] or tokens[2] == "vrf":
                continue
            hop = next((t for t in tokens[4:] if is_ipv4(t)), None)
            if hop:
                add_route(routes, prefix_of(tokens[2], tokens[3]), [hop])
        return routes

    def pbr_attached(self, change: RouteChange, config: str) -> bool:
        path = change.path
        name = self.object_name(change.circuit_id)
        blocks = stanzas(config)
        ingress = _ifname(path.ingress_interface or "")
        attached = any(
            header.startswith("interface ")
            and _ifname(header.split(None, 1)[1]) == ingress
            and f"ip policy route-map {name}" in body
            for header, body in blocks.items()
        )
        header = re.compile(rf"route-map {re.escape(name)} permit \d+")
        routemap = next((b for h, b in blocks.items() if header.fullmatch(h)), [])
        return attached and f"set ip next-hop {path.backup.address}" in routemap


__all__ = ["CiscoIosXe"]
