"""FRRouting vtysh: every line applies at once and nothing reverts by itself."""

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
    stanzas,
)
from continuity.models import CircuitPath, Platform, RerouteMechanism, RouteChange

_HEAD = re.compile(rf"^S([>*=]*)\s+({IPV4}/\d+)\s+\[\d+/\d+\]\s+via ({IPV4})(.*)$")
_MORE = re.compile(rf"^\s+([>*=]*)\s+via ({IPV4})(.*)$")
_STATIC = re.compile(rf"^ip route ({IPV4}/\d+) ({IPV4})(?:\s|$)")


class Frr(Dialect):
    platform: ClassVar[Platform] = Platform.FRR
    static_config_line = _STATIC
    prompt = re.compile(r"[\w.\-@/:]{1,63}(?:\([\w.\-@/:+]{0,32}\))?# ?")
    on_open = ("terminal length 0",)
    error_markers = (
        "% Unknown command",
        "% Invalid input",
        "% Command incomplete",
        "% Ambiguous command",
    )
    benign_markers = ("% Refusing to remove a non-existent route",)
    native_auto_revert = False  # vtysh 8.4 has no commit/confirm: the orchestrator reverts
    route_command = "show ip route static"
    config_command = "show running-config"
    pending_command = None
    confirm_commands = ()
    persist_commands = ("write memory",)
    leave_config = ("end",)
    # Linux interface names: at most 15 characters (IFNAMSIZ), no slashes.
    interface_pattern = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")

    def revert_units(self, revert_s: float) -> None:
        return None

    def _render_change(
        self, circuit_id: str, path: CircuitPath, direction: Direction
    ) -> tuple[list[str], list[str]]:
        new, old = ends(path, direction)
        if RerouteMechanism(path.mechanism) is RerouteMechanism.STATIC_ROUTE:
            return (
                [f"ip route {path.prefix} {new.address}"],
                [f"no ip route {path.prefix} {old.address}"],
            )
        name = self.object_name(circuit_id)
        assert path.source_prefix and path.ingress_interface  # checked by _checked
        attach = [
            f"nexthop-group {name}",
            f"nexthop {path.backup.address}",
            "exit",
            f"pbr-map {name} seq 10",
            f"match src-ip {path.source_prefix}",
            f"set nexthop-group {name}",
            "exit",
            f"interface {path.ingress_interface}",
            f"pbr-policy {name}",
            "exit",
        ]
        detach = [
            f"interface {path.ingress_interface}",
            f"no pbr-policy {name}",
            "exit",
            f"no pbr-map {name}",
            f"no nexthop-group {name}",
        ]
        return (attach, []) if direction == Direction.REROUTE else ([], detach)

    def _plan(
        self, make: list[str], break_: list[str], *, revert_s: float | None, armed: bool
    ) -> ApplyPlan:
        return ApplyPlan(
            make=tuple(make),
            break_=tuple(break_),
            arm=(),
            commit=("end",),
            enter=("configure terminal",),
            make_before_break=True,
        )

    def render_rollback(self, changes: Sequence[RouteChange], direction: Direction) -> list[str]:
        # Nothing on the device to abort: the rollback is the inverse of the change.
        return self.render_inverse(changes, direction)

    def parse_routes(self, output: str) -> dict[str, set[str]]:
        routes: dict[str, set[str]] = {}
        current: str | None = None
        for line in output.splitlines():
            head = _HEAD.match(line)
            if head:
                current = head.group(2)
                if "*" in head.group(1) and "inactive" not in head.group(4):
                    add_route(routes, current, [head.group(3)])
                continue
            more = _MORE.match(line)
            if more and current:
                if "*" in more.group(1) and "inactive" not in more.group(3):
                    add_route(routes, current, [more.group(2)])
                continue
            current = None
        return routes

    def pbr_attached(self, change: RouteChange, config: str) -> bool:
        path = change.path
        name = self.object_name(change.circuit_id)
        blocks = stanzas(config)
        attached = f"pbr-policy {name}" in blocks.get(f"interface {path.ingress_interface}", [])
        hop = f"nexthop {path.backup.address}" in blocks.get(f"nexthop-group {name}", [])
        return attached and hop


__all__ = ["Frr"]
