"""Huawei VRP v8 in two-stage mode: candidate, `commit trial S`, `commit` / `abort trial`."""

from __future__ import annotations

import re
import zlib
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
from continuity.errors import ValidationFailed
from continuity.models import CircuitPath, Platform, RerouteMechanism, RouteChange
from continuity.validation import wildcard

_ROUTE = re.compile(rf"^\s*(?:({IPV4}/\d+)\s+)?Static\s+\d+\s+\d+\s+(\S+)\s+({IPV4})\b")


def acl_number(circuit_id: str) -> int:
    """A stable advanced-ACL number (3000-3999) for a circuit; the lab's VRP has no named ACLs.

    A clash between two circuits of one batch is refused in `_check_batch`.
    """
    return 3000 + zlib.crc32(circuit_id.encode()) % 1000


class HuaweiVrp(Dialect):
    platform: ClassVar[Platform] = Platform.HUAWEI_VRP
    prompt = re.compile(r"(?:HRP_[AMS])?(?:<[\w.\-@/:()]{1,48}>|\[[~*]?[\w.\-@/:()]{1,64}\]) ?")
    on_open = ("screen-length 0 temporary",)
    error_markers = ("Error:",)
    benign_markers = ("Error: The route does not exist",)
    busy_markers = ("locked by", "Another user is committing")
    interactive = (
        # VRPv8 on leaving with a candidate: N discards it (only after a failed edit).
        (re.compile(r"\[Y\(yes\)/N\(no\)/C\(cancel\)\]: ?$"), "N"),
        # `save` and `abort trial` ask to continue.
        (re.compile(r"Continue\? ?\[Y/N\]: ?$"), "Y"),
    )
    native_auto_revert = True
    route_command = "display ip routing-table protocol static"
    config_command = "display current-configuration"
    pending_command = "display configuration trial status"
    confirm_commands = ("system-view", "commit", "return")
    persist_commands = ("save",)
    leave_config = ("return",)
    interface_pattern = re.compile(
        r"(?:GE|GigabitEthernet|XGigabitEthernet|10GE|25GE|40GE|100GE|Ethernet|Eth-Trunk"
        r"|LoopBack|Vlanif|MEth)\d{1,4}(?:/\d{1,4}){0,3}(?:\.\d{1,5})?"
    )
    _revert_unit_s = 1

    def revert_units(self, revert_s: float) -> int:
        if not revert_s > 0:
            raise ValidationFailed(f"revert window must be positive, got {revert_s!r}")
        seconds = max(60, int(-(-revert_s // 1)))  # rounded up: never shorter than asked
        if seconds > 65535:
            raise ValidationFailed(f"VRP commit trial tops out at 65535 s, asked {seconds}")
        return seconds

    def _render_change(
        self, circuit_id: str, path: CircuitPath, direction: Direction
    ) -> tuple[list[str], list[str]]:
        new, old = ends(path, direction)
        net, length = path.prefix.split("/")
        if RerouteMechanism(path.mechanism) is RerouteMechanism.STATIC_ROUTE:
            return (
                [f"ip route-static {net} {length} {new.address}"],
                [f"undo ip route-static {net} {length} {old.address}"],
            )
        name = self.object_name(circuit_id)
        assert path.source_prefix and path.ingress_interface  # checked by _checked
        acl = acl_number(circuit_id)
        src, wild = wildcard(path.source_prefix)
        attach = [
            f"acl number {acl}",
            f"rule 5 permit ip source {src} {wild}",
            "quit",
            f"traffic classifier {name}",
            f"if-match acl {acl}",
            "quit",
            f"traffic behavior {name}",
            f"redirect ip-nexthop {path.backup.address}",
            "quit",
            f"traffic policy {name}",
            f"classifier {name} behavior {name}",
            "quit",
            f"interface {path.ingress_interface}",
            f"traffic-policy {name} inbound",
            "quit",
        ]
        detach = [
            f"interface {path.ingress_interface}",
            f"undo traffic-policy {name} inbound",
            "quit",
            f"undo traffic policy {name}",
            f"undo traffic behavior {name}",
            f"undo traffic classifier {name}",
            f"undo acl number {acl}",
        ]
        return (attach, []) if direction == Direction.REROUTE else ([], detach)

    def _plan(
        self, make: list[str], break_: list[str], *, revert_s: float | None, armed: bool
    ) -> ApplyPlan:
        if revert_s is None:
            arm: tuple[str, ...] = ()
            commit: tuple[str, ...] = ("commit", "return")
        else:
            arm = (f"commit trial {self.revert_units(revert_s)}",)
            commit = ("return",)
        return ApplyPlan(
            make=tuple(make),
            break_=tuple(break_),
            arm=arm,
            commit=commit,
            enter=("system-view",),
        )

    def render_rollback(self, changes: Sequence[RouteChange], direction: Direction) -> list[str]:
        for c in changes:
            self._checked(c)
        self._direction(direction)
        return ["abort trial"]

    def parse_pending(self, output: str) -> bool:
        return re.search(r"Trial status\s*:\s*running", output, re.IGNORECASE) is not None

    def parse_routes(self, output: str) -> dict[str, set[str]]:
        routes: dict[str, set[str]] = {}
        current: str | None = None
        for line in output.splitlines():
            if "<Inactive>" in line:
                break  # real VRP lists inactive routes in a second section
            m = _ROUTE.match(line)
            if not m:
                continue
            current = m.group(1) or current
            if "D" in m.group(2):  # D: downloaded to the FIB
                add_route(routes, current, [m.group(3)])
        return routes

    def parse_config_routes(self, config: str) -> dict[str, set[str]]:
        routes: dict[str, set[str]] = {}
        for line in config.splitlines():
            tokens = line.split()
            if len(tokens) < 4 or tokens[0] != "ip" or tokens[1] != "route-static":
                continue
            if tokens[2] == "vpn-instance":
                continue
            hop = next((t for t in tokens[4:] if is_ipv4(t)), None)
            if hop:  # the mask is a length (10.20.0.0 16) or dotted (10.20.0.0 255.255.0.0)
                add_route(routes, prefix_of(tokens[2], tokens[3]), [hop])
        return routes

    def pbr_attached(self, change: RouteChange, config: str) -> bool:
        path = change.path
        name = self.object_name(change.circuit_id)
        blocks = stanzas(config)
        attached = f"traffic-policy {name} inbound" in blocks.get(
            f"interface {path.ingress_interface}", []
        )
        redirect = f"redirect ip-nexthop {path.backup.address}" in blocks.get(
            f"traffic behavior {name}", []
        )
        return attached and redirect

    def _check_batch(self, changes: Sequence[RouteChange]) -> None:
        super()._check_batch(changes)
        numbers: dict[int, str] = {}
        for c in changes:
            if RerouteMechanism(c.path.mechanism) is not RerouteMechanism.SOURCE_PBR:
                continue
            n = acl_number(c.circuit_id)
            if numbers.setdefault(n, c.circuit_id) != c.circuit_id:
                raise ValidationFailed(
                    f"circuits {numbers[n]} and {c.circuit_id} map to the same ACL {n}"
                )


__all__ = ["HuaweiVrp", "acl_number"]
