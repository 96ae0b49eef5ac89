"""Juniper Junos: exclusive candidate, `commit check` then `commit confirmed N`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from continuity.dialects.base import IPV4, ApplyPlan, Dialect, Direction, add_route, ends
from continuity.models import CircuitPath, Platform, RerouteMechanism, RouteChange

_STATIC = re.compile(rf"^set routing-options static route ({IPV4}/\d+) next-hop ({IPV4})\s*$")


def _unit(interface: str) -> tuple[str, str]:
    """'ge-0/0/1.0' -> ('ge-0/0/1', '0'); a bare physical name means unit 0."""
    ifd, _, unit = interface.partition(".")
    return ifd, unit or "0"


class JuniperJunos(Dialect):
    platform: ClassVar[Platform] = Platform.JUNIPER_JUNOS
    static_config_line = _STATIC
    prompt = re.compile(r"[\w.\-]{1,63}@[\w.\-]{1,63}[>#] ?")
    on_open = ("set cli screen-length 0", "set cli screen-width 511")
    error_markers = ("syntax error", "error:", "unknown command")
    benign_markers = ("warning: statement not found",)
    # Someone holds the candidate, or left uncommitted edits in the shared one: wait, retry.
    busy_markers = (
        "configuration database locked",
        "database is locked",
        "configuration database modified",
    )
    interactive = (
        # Only reached after a failed edit: leaving discards the exclusive candidate.
        (re.compile(r"Exit with uncommitted changes\? \[yes,no\] \(yes\) ?$"), "yes"),
        (re.compile(r"Discard uncommitted changes\? \[yes,no\] \(yes\) ?$"), "yes"),
    )
    native_auto_revert = True
    route_command = "show route protocol static"
    config_command = "show configuration | display set"
    pending_command = "show system commit"
    # Confirmed commits are impossible in `configure private` (Junos XML API), hence exclusive.
    confirm_commands = ("configure exclusive", "commit", "exit configuration-mode")
    persist_commands = ()  # a Junos commit is already persistent
    leave_config = ("exit configuration-mode",)
    interface_pattern = re.compile(
        r"(?:(?:ge|xe|et|fe|so|gr|lt)-\d{1,2}/\d{1,2}/\d{1,3}(?::\d{1,2})?"
        r"|(?:ae|reth|lo|em|fxp|me)\d{1,3}|irb|vlan)(?:\.\d{1,5})?"
    )

    def revert_units(self, revert_s: float) -> int:
        return self._minutes(revert_s, low=1, high=65535, platform="Junos")

    def _render_change(
        self, circuit_id: str, path: CircuitPath, direction: Direction
    ) -> tuple[list[str], list[str]]:
        new, old = ends(path, direction)
        if RerouteMechanism(path.mechanism) is RerouteMechanism.STATIC_ROUTE:
            return (
                [f"set routing-options static route {path.prefix} next-hop {new.address}"],
                [f"delete routing-options static route {path.prefix} next-hop {old.address}"],
            )
        name = self.object_name(circuit_id)
        assert path.source_prefix and path.ingress_interface  # checked by _checked
        ifd, unit = _unit(path.ingress_interface)
        flt = f"firewall family inet filter {name}"
        attach = [
            f"set {flt} term prio from source-address {path.source_prefix}",
            f"set {flt} term prio then routing-instance {name}",
            f"set {flt} term default then accept",
            f"set routing-instances {name} instance-type forwarding",
            f"set routing-instances {name} routing-options static route 0.0.0.0/0"
            f" next-hop {path.backup.address}",
            f"set interfaces {ifd} unit {unit} family inet filter input {name}",
        ]
        detach = [
            f"delete interfaces {ifd} unit {unit} family inet filter input {name}",
            f"delete {flt}",
            f"delete routing-instances {name}",
        ]
        return (attach, []) if direction == Direction.REROUTE else ([], detach)

    def _plan(
        self, make: list[str], break_: list[str], *, revert_s: float | None, armed: bool
    ) -> ApplyPlan:
        # Re-issuing `commit confirmed` while one is pending restarts its timer, so a retry
        # may arm again whether or not one is running.
        if revert_s is None:
            arm: tuple[str, ...] = ()
            commit: tuple[str, ...] = ("commit", "exit configuration-mode")
        else:
            arm = ("commit check", f"commit confirmed {self.revert_units(revert_s)}")
            commit = ("exit configuration-mode",)
        return ApplyPlan(
            make=tuple(make),
            break_=tuple(break_),
            arm=arm,
            commit=commit,
            enter=("configure exclusive",),
        )

    def render_rollback(self, changes: Sequence[RouteChange], direction: Direction) -> list[str]:
        # Not `rollback 1` + `commit`: if the confirmed commit's timer fires between our check
        # and our command, Junos has already committed the old config and `rollback 1` is then
        # the *changed* one, which we would re-commit with no timer. The inverse lines under a
        # plain commit undo the change either way, and that commit ends the pending confirmation.
        return self.render_inverse(changes, direction)

    def parse_pending(self, output: str) -> bool:
        for line in output.splitlines():
            if re.match(r"^\s*0\s", line):
                return "rollback in" in line
        return False

    def parse_routes(self, output: str) -> dict[str, set[str]]:
        routes: dict[str, set[str]] = {}
        current: str | None = None
        for line in output.splitlines():
            head = re.match(rf"^({IPV4}/\d+)\s+[*+\-]?\s*\[Static", line)
            if head:
                current = head.group(1)
            elif line[:1] not in (" ", "\t"):
                current = None
            add_route(routes, current, re.findall(rf"\bto ({IPV4})", line))
        return routes

    def pbr_attached(self, change: RouteChange, config: str) -> bool:
        path = change.path
        name = self.object_name(change.circuit_id)
        ifd, unit = _unit(path.ingress_interface or "")
        lines = {line.strip() for line in config.splitlines()}
        return (
            f"set interfaces {ifd} unit {unit} family inet filter input {name}" in lines
            and f"set routing-instances {name} routing-options static route 0.0.0.0/0"
            f" next-hop {path.backup.address}"
            in lines
        )


__all__ = ["JuniperJunos"]
