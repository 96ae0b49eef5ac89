"""FRRouting vtysh as docs/device-cli.md describes it: every line applies at once, no revert."""

from __future__ import annotations

import ipaddress
import re

from continuity.models import Platform
from lab.gear.base import (
    CliSession,
    SimDevice,
    StanzaConfig,
    filter_lines,
    parse_ip,
    parse_mask,
    split_pipe,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.@-]{0,15}")
_CODES = [
    "Codes: K - kernel route, C - connected, S - static, R - RIP,",
    "       O - OSPF, I - IS-IS, B - BGP, E - EIGRP, N - NHRP,",
    "       T - Table, v - VNC, V - VNC-Direct, A - Babel, F - PBR,",
    "       f - OpenFabric,",
    "       > - selected route, * - FIB route, q - queued, r - rejected, b - backup",
    "       t - trapped, o - offload failure",
    "",
]


def _prefix(text: str) -> str | None:
    """FRR masks host bits silently: '10.20.0.1/16' is 10.20.0.0/16."""
    try:
        return str(ipaddress.IPv4Network(text, strict=False)) if "/" in text else None
    except ValueError:
        return None


class FrrDevice(SimDevice[StanzaConfig]):
    platform = Platform.FRR
    interface_template = "eth{}"

    def new_config(self) -> StanzaConfig:
        return StanzaConfig()

    def open_cli(self, username: str) -> FrrCli:
        return FrrCli(self, username)

    def render_config(self, config: StanzaConfig) -> str:
        lines = [
            "frr version 8.4.4",
            "frr defaults traditional",
            f"hostname {self.hostname}",
            "no ipv6 forwarding",
            "service integrated-vtysh-config",
            "!",
        ]
        for prefix, hops in config.static_routes().items():
            lines += [f"ip route {prefix} {nh}" for nh in hops]
        lines.append("!")
        names = list(self.interfaces) + [
            n
            for n in (*config.interface_lines, *sorted(config.shutdown))
            if n not in self.interfaces
        ]
        for name in dict.fromkeys(names):
            body = [f" {x}" for x in config.interface_lines.get(name, [])]
            if config.is_shutdown(name):
                body.append(" shutdown")
            if body:
                lines += [f"interface {name}", *body, "exit", "!"]
        for kind in ("nexthop-group", "pbr-map"):
            for header, body_lines in config.sections.items():
                if header.startswith(kind + " "):
                    lines += [header, *(f" {x}" for x in body_lines), "exit", "!"]
        lines.append("end")
        return "\n".join(lines)


class FrrCli(CliSession):
    busy_message = "% Too many sessions"
    device: FrrDevice

    _SUBMODES = ("config-if", "config-pbr-map", "config-nh-group")

    def __init__(self, device: FrrDevice, username: str) -> None:
        super().__init__(device, username)
        self.mode = "exec"
        self.context = ""

    def greeting(self) -> str:
        return (
            "\nHello, this is FRRouting (version 8.4.4).\n"
            "Copyright 1996-2005 Kunihiro Ishiguro, et al.\n\n"
        )

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
        return [f"% Unknown command: {line}"]

    def _incomplete(self, line: str) -> list[str]:
        return [f"% Command incomplete: {line}"]

    def execute(self, line: str) -> list[str]:
        if self.mode == "exec":
            out = self._exec(line)
        else:
            out = self._config(line)
            self.device.config_changed()
        return out if out is not None else self.reject(line)

    # --- enable node ---

    def _exec(self, line: str) -> list[str] | None:
        command, pipes = split_pipe(line)
        out = self._exec_command(line, command.split())
        if out is None or not pipes or not command.startswith("show"):
            return out
        return filter_lines(out, pipes)

    def _exec_command(self, line: str, w: list[str]) -> list[str] | None:
        if w[0] == "terminal" and len(w) == 3 and w[1] in ("length", "width") and w[2].isdigit():
            return []
        if w in (["configure", "terminal"], ["configure"]):
            self.mode = "config"
            return []
        if w[0] in ("exit", "quit", "logout") and len(w) == 1:
            self.closed = True
            return []
        if w in (["end"], ["enable"]):
            return []
        if w in (["show", "running-config"], ["show", "run"]):
            return [
                "Building configuration...",
                "",
                "Current configuration:",
                "!",
                *self.device.running_config().split("\n"),
            ]
        if w in (["show", "ip", "route", "static"], ["show", "ip", "route"]):
            return self._routes()
        if w in (
            ["write", "memory"],
            ["write"],
            ["write", "file"],
            ["copy", "running-config", "startup-config"],
        ):
            self.device.save()
            return [
                "Building Configuration...",
                "Integrated configuration saved to /etc/frr/frr.conf",
                "[OK]",
            ]
        if w[:1] in (["show"], ["write"], ["configure"], ["terminal"]) and len(w) == 1:
            return self._incomplete(line)
        return None

    def _routes(self) -> list[str]:
        dev = self.device
        out = list(_CODES)
        routes = dev.static_routes()
        for prefix in sorted(routes, key=ipaddress.IPv4Network):
            hops = routes[prefix]
            up = [nh for nh in hops if dev.next_hop_usable(nh)]
            down = [nh for nh in hops if nh not in up]
            lead = f"S>* {prefix} [1/0] " if up else f"S   {prefix} [1/0] "
            pad = " " * len(lead)
            first = True
            for nh in up:
                iface = dev.interface_for(nh)
                name = iface.name if iface else "?"
                via = f"via {nh}, {name}, weight 1, {dev.route_age(prefix, nh)}"
                out.append((lead if first else "  *" + pad[3:]) + via)
                first = False
            for nh in down:
                out.append((lead if first else pad) + f"via {nh} inactive")
                first = False
        return out

    # --- config nodes ---

    def _config(self, line: str) -> list[str] | None:
        w = line.split()
        if w == ["end"]:
            self.mode = "exec"
            return []
        if w in (["exit"], ["quit"]):
            self.mode = "config" if self.mode in self._SUBMODES else "exec"
            return []
        if w[0] == "do" and len(w) > 1 and w[1] not in ("exit", "quit"):
            mode, self.mode = self.mode, "exec"
            out = self._exec(" ".join(w[1:]))
            if self.mode == "exec":
                self.mode = mode
            return out
        if self.mode in self._SUBMODES:
            handler = {
                "config-if": self._interface_line,
                "config-pbr-map": self._pbr_map_line,
                "config-nh-group": self._nexthop_group_line,
            }[self.mode]
            out = handler(line, w)
            if out is not None:
                return out
        # vtysh tries the parent node for a command the sub-node does not know.
        mode = self.mode
        out = self._global(line, w)
        if out is not None and self.mode == mode and mode in self._SUBMODES:
            self.mode = "config"
        return out

    def _global(self, line: str, w: list[str]) -> list[str] | None:
        cfg = self.config
        negate = w[0] == "no"
        body = w[1:] if negate else w
        if body[:2] == ["ip", "route"]:
            return self._ip_route(line, body[2:], negate)
        if body[:1] == ["interface"]:
            if len(body) != 2:
                return self._incomplete(line) if len(body) < 2 else None
            if not _IFNAME.fullmatch(body[1]):
                return None
            if negate:
                cfg.interface_lines.pop(body[1], None)
                cfg.shutdown.discard(body[1])
                return []
            self.mode, self.context = "config-if", body[1]
            return []
        if body[:1] == ["nexthop-group"]:
            if len(body) != 2 or not _NAME.fullmatch(body[1]):
                return self._incomplete(line) if len(body) < 2 else None
            header = f"nexthop-group {body[1]}"
            if negate:
                cfg.sections.pop(header, None)
                return []
            cfg.section(header)
            self.mode, self.context = "config-nh-group", header
            return []
        if body[:1] == ["pbr-map"]:
            if len(body) < 2 or not _NAME.fullmatch(body[1]):
                return self._incomplete(line) if len(body) < 2 else None
            name = body[1]
            if negate and len(body) == 2:
                cfg.remove_sections(lambda h: h.split()[:2] == ["pbr-map", name])
                return []
            if len(body) != 4 or body[2] != "seq" or not body[3].isdigit():
                return self._incomplete(line) if len(body) < 4 else None
            header = f"pbr-map {name} seq {body[3]}"
            if negate:
                cfg.sections.pop(header, None)
                return []
            cfg.section(header)
            self.mode, self.context = "config-pbr-map", header
            return []
        return None

    def _ip_route(self, line: str, args: list[str], negate: bool) -> list[str] | None:
        if args and "/" not in args[0] and len(args) >= 2 and parse_mask(args[1]) is not None:
            address = args[0]
            args = [f"{address}/{parse_mask(args[1])}", *args[2:]]
        if len(args) < 2:
            return self._incomplete(line)
        prefix = _prefix(args[0])
        if prefix is None or parse_ip(args[1]) is None:
            return None
        extra = args[2:]
        if extra and not (len(extra) == 1 and extra[0].isdigit() and 1 <= int(extra[0]) <= 255):
            return None
        if negate:
            if not self.config.remove_route(prefix, args[1]):
                return ["% Refusing to remove a non-existent route"]
            return []
        self.config.add_route(prefix, args[1])
        return []

    def _interface_line(self, line: str, w: list[str]) -> list[str] | None:
        cfg, name = self.config, self.context
        if w == ["shutdown"]:
            cfg.shutdown.add(name)
            return []
        if w == ["no", "shutdown"]:
            cfg.shutdown.discard(name)
            return []
        if w[0] == "pbr-policy":
            if len(w) != 2 or not _NAME.fullmatch(w[1]):
                return self._incomplete(line) if len(w) < 2 else None
            cfg.add_interface_line(name, line, replace_prefix="pbr-policy")
            return []
        if w[:2] == ["no", "pbr-policy"]:
            cfg.remove_interface_lines(name, "pbr-policy")
            return []
        if w[0] == "description" and len(w) > 1:
            cfg.add_interface_line(name, line, replace_prefix="description")
            return []
        if w == ["no", "description"]:
            cfg.remove_interface_lines(name, "description")
            return []
        return None

    def _nexthop_group_line(self, line: str, w: list[str]) -> list[str] | None:
        entries = self.config.section(self.context)
        negate = w[0] == "no"
        body = w[1:] if negate else w
        if body[:1] != ["nexthop"]:
            return None
        if len(body) < 2:
            return self._incomplete(line)
        if parse_ip(body[1]) is None or len(body) > 3:
            return None
        text = " ".join(body)
        if negate:
            entries[:] = [e for e in entries if e != text and e.split()[:2] != body[:2]]
        elif text not in entries:
            entries.append(text)
        return []

    def _pbr_map_line(self, line: str, w: list[str]) -> list[str] | None:
        clauses = self.config.section(self.context)
        negate = w[0] == "no"
        body = w[1:] if negate else w
        if body[:2] in (["match", "src-ip"], ["match", "dst-ip"]):
            key = " ".join(body[:2])
            if not negate and (len(body) != 3 or _prefix(body[2]) is None):
                return self._incomplete(line) if len(body) < 3 else None
        elif body[:2] == ["set", "nexthop-group"]:
            key = "set nexthop"
            if not negate and (len(body) != 3 or not _NAME.fullmatch(body[2])):
                return self._incomplete(line) if len(body) < 3 else None
        elif body[:2] == ["set", "nexthop"]:
            key = "set nexthop"
            if not negate and (len(body) < 3 or parse_ip(body[2]) is None):
                return self._incomplete(line) if len(body) < 3 else None
        else:
            return None
        clauses[:] = [c for c in clauses if not c.startswith(key)]
        if not negate:
            clauses.append(
                " ".join(
                    body[:2] + [str(_prefix(body[2]) or body[2])] if body[0] == "match" else body
                )
            )
        return []
