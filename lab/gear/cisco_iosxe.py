"""Cisco IOS-XE as docs/device-cli.md describes it: live config, revert timer, configure confirm."""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar

from continuity.models import Platform
from lab.gear.base import (
    CliSession,
    DeviceClock,
    SimDevice,
    StanzaConfig,
    filter_lines,
    netmask_of,
    network,
    parse_ip,
    parse_mask,
    parse_wildcard,
    split_pipe,
)

_INVALID = "% Invalid input detected at '^' marker."
_INCOMPLETE = "% Incomplete command."
_NO_PENDING = "% No Rollback Confirmed Change pending"
_ENTER_CONFIG = "Enter configuration commands, one per line.  End with CNTL/Z."

# Longest names first where one abbreviation could mean two (Tw = TwoGigabitEthernet on XE).
_IFACE_TYPES = [
    "GigabitEthernet",
    "TenGigabitEthernet",
    "TwoGigabitEthernet",
    "TwentyFiveGigE",
    "FortyGigabitEthernet",
    "HundredGigE",
    "FastEthernet",
    "Ethernet",
    "Loopback",
    "Port-channel",
    "Tunnel",
    "Vlan",
]


def _interface_key(name: str) -> str:
    """'Gi0/0/1', 'gigabitethernet 0/0/1' and 'GigabitEthernet0/0/1' are the same port."""
    m = re.fullmatch(r"([A-Za-z-]+)\s*([0-9][0-9/.:]*)", name.strip())
    if not m:
        return name.lower()
    kind, number = m.group(1).lower(), m.group(2)
    for full in _IFACE_TYPES:
        if full.lower() == kind:
            return full.lower() + number
    for full in _IFACE_TYPES:
        if full.lower().startswith(kind):
            return full.lower() + number
    return kind + number


def _acl_address_ok(tokens: list[str]) -> bool:
    """'any' | 'host A' | 'A WILDCARD', twice (source, destination), then anything."""
    i = 0
    for _ in range(2):
        if i >= len(tokens):
            return False
        if tokens[i] == "any":
            i += 1
        elif tokens[i] == "host" and i + 1 < len(tokens) and parse_ip(tokens[i + 1]):
            i += 2
        elif (
            parse_ip(tokens[i])
            and i + 1 < len(tokens)
            and parse_wildcard(tokens[i + 1]) is not None
        ):
            i += 2
        else:
            return False
    return True


class IosXeDevice(SimDevice[StanzaConfig]):
    platform = Platform.CISCO_IOSXE
    interface_template = "GigabitEthernet0/0/{}"

    def __init__(self, name: str, *, clock: DeviceClock) -> None:
        super().__init__(name, clock=clock)
        self._snapshot: StanzaConfig | None = None  # the config a revert timer restores

    def new_config(self) -> StanzaConfig:
        return StanzaConfig()

    def open_cli(self, username: str) -> IosXeCli:
        return IosXeCli(self, username)

    def interface_key(self, name: str) -> str:
        return _interface_key(name)

    def arm_revert_timer(self, minutes: int) -> None:
        if self._snapshot is None:
            self._snapshot = self.running.copy()
        self.arm_revert(
            device_seconds=minutes * 60, restore=self._restore, what="Rollback Confirmed Change"
        )

    def confirm(self) -> bool:
        self._snapshot = None
        return self.cancel_revert("configure confirm")

    def revert_now(self) -> bool:
        if not self.cancel_revert("configure revert now"):
            return False
        self._restore()
        self.config_changed()
        return True

    def _restore(self) -> None:
        if self._snapshot is not None:
            self.running = self._snapshot
            self._snapshot = None

    def render_config(self, config: StanzaConfig) -> str:
        lines = ["!", "version 17.9", f"hostname {self.hostname}", "!"]
        for name, iface in self.interfaces.items():
            lines.append(f"interface {name}")
            for i, addr in enumerate(iface.addresses):
                suffix = " secondary" if i else ""
                lines.append(f" ip address {addr.ip} {addr.netmask}{suffix}")
            lines += [f" {x}" for x in config.interface_lines.get(name, [])]
            if config.is_shutdown(name):
                lines.append(" shutdown")
            lines.append("!")
        for prefix, hops in config.static_routes().items():
            address, mask = netmask_of(prefix)
            lines += [f"ip route {address} {mask} {nh}" for nh in hops]
        lines.append("!")
        for kind in ("ip access-list", "route-map"):
            for header, body in config.sections.items():
                if header.startswith(kind):
                    lines += [header, *(f" {x}" for x in body), "!"]
        lines.append("end")
        return "\n".join(lines)


class IosXeCli(CliSession):
    busy_message = "% All lines are busy"
    device: IosXeDevice

    _SUBMODES: ClassVar[set[str]] = {"config-if", "config-ext-nacl", "config-route-map"}

    def __init__(self, device: IosXeDevice, username: str) -> None:
        super().__init__(device, username)
        self.mode = "exec"
        self.context = ""  # the interface or section a sub-mode edits

    def mode_prompt(self) -> str:
        host = self.device.hostname
        return f"{host}#" if self.mode == "exec" else f"{host}({self.mode})#"

    @property
    def in_config_mode(self) -> bool:
        return self.mode != "exec"

    @property
    def config(self) -> StanzaConfig:
        return self.device.running

    def reject(self, line: str) -> list[str]:
        return self._invalid(line, 0)

    def _invalid(self, line: str, word: int) -> list[str]:
        return [self.caret(line, word), _INVALID, ""]

    def execute(self, line: str) -> list[str]:
        if line == "\x1a" or (self.mode != "exec" and line == "end"):
            self.mode = "exec"
            return []
        if self.mode == "exec":
            out = self._exec(line)
        else:
            out = self._config(line)
        if out is None:
            return self._invalid(line, 0)
        if self.mode != "exec":
            self.device.config_changed()
        return out

    # --- exec mode ---

    def _exec(self, line: str) -> list[str] | None:
        command, pipes = split_pipe(line)
        w = command.split()
        if w[0] == "terminal":
            if len(w) == 1:
                return [_INCOMPLETE, ""]
            if w[1] in ("length", "width") and len(w) == 3 and w[2].isdigit():
                return []
            if w[1] in ("no", "monitor"):
                return []
            return self._invalid(line, 1)
        if w == ["enable"]:
            return []
        if w[0] in ("exit", "logout", "quit") and len(w) == 1:
            self.closed = True
            return []
        if w[0] == "configure":
            return self._configure(line, w)
        if w[0] == "show":
            out = self._show(line, w)
            if out is None or not pipes:
                return out
            filtered = filter_lines(out, pipes)
            return filtered if filtered is not None else self._invalid(line, len(command.split()))
        if w in (["write", "memory"], ["write"], ["copy", "running-config", "startup-config"]):
            self.device.save()
            return ["Building configuration...", "[OK]"]
        return None

    def _configure(self, line: str, w: list[str]) -> list[str] | None:
        dev = self.device
        if w in (["configure", "terminal"], ["configure"]):
            self.mode = "config"
            return [_ENTER_CONFIG]
        if w[:4] == ["configure", "terminal", "revert", "timer"]:
            if len(w) == 4:
                return [_INCOMPLETE, ""]
            if len(w) != 5 or not w[4].isdigit() or not 1 <= int(w[4]) <= 120:
                return self._invalid(line, 4)
            dev.arm_revert_timer(int(w[4]))
            self.mode = "config"
            return [_ENTER_CONFIG]
        if w == ["configure", "confirm"]:
            return [] if dev.confirm() else [_NO_PENDING]
        if w == ["configure", "revert", "now"]:
            return ["Rollback Done"] if dev.revert_now() else [_NO_PENDING]
        if w[:3] == ["configure", "revert", "timer"] and len(w) == 4 and w[3].isdigit():
            timer = dev.revert_timer()
            if timer is None:
                return [_NO_PENDING]
            if not 1 <= int(w[3]) <= 120:
                return self._invalid(line, 3)
            timer.restart(int(w[3]) * 60)
            return []
        if w[:2] in (["configure", "terminal"], ["configure", "revert"]):
            return [_INCOMPLETE, ""]
        return self._invalid(line, 1)

    def _show(self, line: str, w: list[str]) -> list[str] | None:
        dev = self.device
        if w in (["show", "running-config"], ["show", "run"]):
            return self._config_listing(dev.running_config())
        if w in (["show", "startup-config"], ["show", "start"]):
            return self._config_listing(dev.saved_config())
        if w == ["show", "ip", "route", "static"]:
            return self._routes()
        if w == ["show", "archive", "config", "rollback", "timer"]:
            timer = dev.revert_timer()
            if timer is None:
                return ["No Rollback Confirmed Change pending"]
            return [
                "Timer type: Revert",
                f"Timer value: {round(timer.duration / 60)} min",
                f"Time remaining: {int(timer.remaining())} secs",
            ]
        if w == ["show", "clock"]:
            now = dev.clock.datetime()
            return [f"*{now:%H:%M:%S}.{now.microsecond // 1000:03d} UTC {now:%a %b %d %Y}"]
        if len(w) == 1:
            return [_INCOMPLETE, ""]
        return self._invalid(line, 1)

    def _config_listing(self, text: str) -> list[str]:
        body = text.split("\n")
        size = len(text) + len(body)
        return ["Building configuration...", "", f"Current configuration : {size} bytes", *body]

    def _routes(self) -> list[str]:
        out: list[str] = []
        active = self.device.active_routes()
        for prefix in sorted(active, key=ipaddress.IPv4Network):
            hops = active[prefix]
            out.append(f"S        {prefix} [1/0] via {hops[0]}")
            out += [f"                     [1/0] via {nh}" for nh in hops[1:]]
        return out

    # --- configuration modes ---

    def _config(self, line: str) -> list[str] | None:
        w = line.split()
        if w[0] == "do" and len(w) > 1:
            # An exec command from config mode; `do exit` does not log out.
            if w[1] in ("exit", "logout", "quit"):
                return self._invalid(line, 1)
            mode, self.mode = self.mode, "exec"
            out = self._exec(" ".join(w[1:]))
            if self.mode == "exec":
                self.mode = mode
            return out if out is not None else self._invalid(line, 1)
        if w == ["exit"]:
            self.mode = "config" if self.mode in self._SUBMODES else "exec"
            return []
        if self.mode in self._SUBMODES:
            handler = {
                "config-if": self._interface_line,
                "config-ext-nacl": self._acl_line,
                "config-route-map": self._route_map_line,
            }[self.mode]
            out = handler(line, w)
            if out is not None:
                return out
        # Like IOS, a global command typed in a sub-mode runs there and leaves the sub-mode.
        mode = self.mode
        out = self._global(line, w)
        if out is not None and self.mode == mode and mode in self._SUBMODES:
            self.mode = "config"
        return out

    def _global(self, line: str, w: list[str]) -> list[str] | None:
        cfg = self.config
        negate = w[0] == "no"
        body = w[1:] if negate else w
        n = 1 if negate else 0
        if body[:2] == ["ip", "route"]:
            return self._ip_route(line, body[2:], n + 2, negate)
        if body[:1] == ["interface"]:
            if negate:
                return self._invalid(line, 0)
            if len(body) < 2:
                return [_INCOMPLETE, ""]
            iface = self.device.find_interface("".join(body[1:]))
            if iface is None:
                return self._invalid(line, 1)
            self.mode, self.context = "config-if", iface.name
            return []
        if body[:3] == ["ip", "access-list", "extended"]:
            if len(body) != 4:
                return [_INCOMPLETE, ""] if len(body) < 4 else self._invalid(line, n + 4)
            header = f"ip access-list extended {body[3]}"
            if negate:
                cfg.sections.pop(header, None)
                return []
            cfg.section(header)
            self.mode, self.context = "config-ext-nacl", header
            return []
        if body[:1] == ["route-map"]:
            return self._route_map(line, body, n, negate)
        return None

    def _ip_route(self, line: str, args: list[str], at: int, negate: bool) -> list[str]:
        if len(args) < (2 if negate else 3):
            return [_INCOMPLETE, ""]
        if parse_ip(args[0]) is None:
            return self._invalid(line, at)
        length = parse_mask(args[1])
        if length is None:
            return self._invalid(line, at + 1)
        prefix = network(args[0], length)
        if prefix is None:
            return ["%Inconsistent address and mask"]
        next_hop = args[2] if len(args) > 2 else None
        if next_hop is not None and parse_ip(next_hop) is None:
            return self._invalid(line, at + 2)
        extra = args[3:]
        if extra and not (len(extra) == 1 and extra[0].isdigit() and 1 <= int(extra[0]) <= 255):
            return self._invalid(line, at + 3)
        if negate:
            if not self.config.remove_route(prefix, next_hop):
                return ["%No matching route to delete"]
            return []
        assert next_hop is not None
        self.config.add_route(prefix, next_hop)
        return []

    def _route_map(self, line: str, body: list[str], n: int, negate: bool) -> list[str]:
        cfg = self.config
        if len(body) < 2:
            return [_INCOMPLETE, ""]
        name = body[1]
        action = body[2] if len(body) > 2 else "permit"
        seq = body[3] if len(body) > 3 else "10"
        if action not in ("permit", "deny") or not seq.isdigit() or len(body) > 4:
            return self._invalid(line, n + 2)
        if negate:
            if len(body) == 2:
                cfg.remove_sections(lambda h: h.split()[:2] == ["route-map", name])
            else:
                cfg.remove_sections(
                    lambda h: h.split()[:2] == ["route-map", name] and h.split()[3] == seq
                )
            return []
        header = f"route-map {name} {action} {seq}"
        cfg.remove_sections(
            lambda h: h != header and h.split()[:2] == ["route-map", name] and h.split()[3] == seq
        )
        cfg.section(header)
        self.mode, self.context = "config-route-map", header
        return []

    def _interface_line(self, line: str, w: list[str]) -> list[str] | None:
        cfg, name = self.config, self.context
        if w == ["shutdown"]:
            cfg.shutdown.add(name)
            return []
        if w == ["no", "shutdown"]:
            cfg.shutdown.discard(name)
            return []
        if w[:3] == ["ip", "policy", "route-map"]:
            if len(w) != 4:
                return [_INCOMPLETE, ""] if len(w) < 4 else self._invalid(line, 4)
            cfg.add_interface_line(name, line, replace_prefix="ip policy route-map")
            return []
        if w[:4] == ["no", "ip", "policy", "route-map"]:
            cfg.remove_interface_lines(name, "ip policy route-map")
            return []
        if w[0] == "description" and len(w) > 1:
            cfg.add_interface_line(name, line, replace_prefix="description")
            return []
        if w == ["no", "description"]:
            cfg.remove_interface_lines(name, "description")
            return []
        return None

    def _acl_line(self, line: str, w: list[str]) -> list[str] | None:
        entries = self.config.section(self.context)
        negate = w[0] == "no"
        body = w[1:] if negate else w
        if negate and len(body) == 1 and body[0].isdigit():
            entries[:] = [e for e in entries if e.split()[0] != body[0]]
            return []
        entry = body[1:] if body and body[0].isdigit() else body
        if not entry or entry[0] not in ("permit", "deny", "remark"):
            return None
        if entry[0] != "remark":
            if len(entry) < 2 or entry[1] not in ("ip", "tcp", "udp", "icmp"):
                return (
                    [_INCOMPLETE, ""]
                    if len(entry) < 2
                    else self._invalid(line, len(w) - len(entry) + 1)
                )
            if not _acl_address_ok(entry[2:]):
                return (
                    [_INCOMPLETE, ""]
                    if len(entry) < 4
                    else self._invalid(line, len(w) - len(entry) + 2)
                )
        text = " ".join(body)
        if negate:
            entries[:] = [e for e in entries if e != text]
        elif text not in entries:
            entries.append(text)
        return []

    def _route_map_line(self, line: str, w: list[str]) -> list[str] | None:
        clauses = self.config.section(self.context)
        negate = w[0] == "no"
        body = w[1:] if negate else w
        if body[:3] == ["match", "ip", "address"]:
            key = "match ip address"
        elif body[:3] == ["set", "ip", "next-hop"]:
            if not negate and not all(parse_ip(x) for x in body[3:]):
                return self._invalid(line, 3)
            key = "set ip next-hop"
        elif body[:4] == ["set", "ip", "default", "next-hop"]:
            key = "set ip default next-hop"
        elif body[:1] == ["description"]:
            key = "description"
        else:
            return None
        if negate:
            clauses[:] = [c for c in clauses if not c.startswith(key)]
            return []
        if len(body) == len(key.split()):
            return [_INCOMPLETE, ""]
        clauses[:] = [c for c in clauses if not c.startswith(key)]
        clauses.append(" ".join(body))
        return []
