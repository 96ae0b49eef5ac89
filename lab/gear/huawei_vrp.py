"""Huawei VRPv8 per docs/device-cli.md: two-stage commit, commit trial, Y/N questions."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

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

_UNRECOGNIZED = "Error: Unrecognized command found at '^' position."
_INCOMPLETE = "Error: Incomplete command found at '^' position."
_WRONG = "Error: Wrong parameter found at '^' position."
_RETURN_QUESTION = (
    "Warning: Uncommitted configurations found. Are you sure to commit them before exiting? "
    "[Y(yes)/N(no)/C(cancel)]:"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

Change = Callable[[StanzaConfig], object]  # what it returns is ignored


def _yes(reply: str) -> bool:
    return reply.lower() in ("y", "yes")


def _interface_policy(interface: str, direction: str, line: str | None) -> Change:
    """Attach (or with None, detach) the traffic policy of one direction."""

    def change(c: StanzaConfig) -> None:
        lines = [
            x
            for x in c.interface_lines.get(interface, [])
            if not (x.startswith("traffic-policy ") and x.endswith(" " + direction))
        ]
        c.interface_lines[interface] = lines + ([line] if line else [])

    return change


class HuaweiDevice(SimDevice[StanzaConfig]):
    platform = Platform.HUAWEI_VRP
    interface_template = "GE0/0/{}"

    def __init__(self, name: str, *, clock: DeviceClock) -> None:
        super().__init__(name, clock=clock)
        self._trial_from: StanzaConfig | None = None

    def new_config(self) -> StanzaConfig:
        return StanzaConfig()

    def open_cli(self, username: str) -> HuaweiCli:
        return HuaweiCli(self, username)

    def interface_key(self, name: str) -> str:
        key = name.replace(" ", "").lower()
        for long, short in (("gigabitethernet", "ge"), ("ethernet", "eth")):
            if key.startswith(long):
                return short + key[len(long) :]
        return key

    def commit(self, changes: list[Change], *, trial_seconds: int | None = None) -> None:
        new = self.running.copy()
        for change in changes:
            change(new)
        if trial_seconds is not None:
            if self._trial_from is None:
                self._trial_from = self.running.copy()
            self.arm_revert(
                device_seconds=trial_seconds, restore=self._end_trial, what="commit trial"
            )
        elif self.cancel_revert("commit"):
            self._trial_from = None
        self.running = new
        self.config_changed()

    def abort_trial(self) -> bool:
        if not self.cancel_revert("abort trial"):
            return False
        self._end_trial()
        self.config_changed()
        return True

    def _end_trial(self) -> None:
        if self._trial_from is not None:
            self.running = self._trial_from
            self._trial_from = None

    def render_config(self, config: StanzaConfig) -> str:
        lines = ["!Software Version V800R021C10SPC600", "#", f"sysname {self.hostname}", "#"]
        for kind in ("acl", "traffic classifier", "traffic behavior", "traffic policy"):
            for header, body in config.sections.items():
                if header.startswith(kind + " "):
                    lines += [header, *(f" {x}" for x in body), "#"]
        for name, iface in self.interfaces.items():
            lines.append(f"interface {name}")
            lines.append(" shutdown" if config.is_shutdown(name) else " undo shutdown")
            for i, addr in enumerate(iface.addresses):
                sub = " sub" if i else ""
                lines.append(f" ip address {addr.ip} {addr.netmask}{sub}")
            lines += [f" {x}" for x in config.interface_lines.get(name, [])]
            lines.append("#")
        for prefix, hops in config.static_routes().items():
            address, mask = netmask_of(prefix)
            lines += [f"ip route-static {address} {mask} {nh}" for nh in hops]
        lines += ["#", "return"]
        return "\n".join(lines)


class HuaweiCli(CliSession):
    busy_message = "Error: The number of users has reached the upper limit."
    device: HuaweiDevice

    def __init__(self, device: HuaweiDevice, username: str) -> None:
        super().__init__(device, username)
        self.view = "user"  # user, system, interface, acl, classifier, behavior, policy
        self.context = ""  # the interface or section header a sub-view edits
        self.label = ""  # what the sub-view adds to the prompt
        self.changes: list[Change] = []  # this session's uncommitted changes, in order

    def mode_prompt(self) -> str:
        host = self.device.hostname
        if self.view == "user":
            return f"<{host}>"
        mark = "*" if self.changes or self.device.pending_revert() else "~"
        label = f"-{self.label}" if self.label else ""
        return f"[{mark}{host}{label}]"

    @property
    def in_config_mode(self) -> bool:
        return self.view != "user"

    def candidate(self) -> StanzaConfig:
        config = self.device.running.copy()
        for change in self.changes:
            change(config)
        return config

    def _change(self, change: Change) -> list[str]:
        self.changes.append(change)
        return []

    def reject(self, line: str) -> list[str]:
        return [self.caret(line, 0), _UNRECOGNIZED]

    def _error(self, line: str, word: int, message: str = _UNRECOGNIZED) -> list[str]:
        return [self.caret(line, word), message]

    def execute(self, line: str) -> list[str]:
        command, pipes = split_pipe(line)
        w = command.split()
        if w[0] == "display":
            filtered = filter_lines(self._display(line, w), pipes)
            return filtered if filtered is not None else self._error(line, len(w))
        if self.view == "user":
            return self._user(line, w)
        out = self._view_command(line, w)
        return out if out is not None else self._error(line, 0)

    # --- user view ---

    def _user(self, line: str, w: list[str]) -> list[str]:
        if w == ["screen-length", "0", "temporary"]:
            return [
                "Info: The configuration takes effect on the current user terminal interface only."
            ]
        if w == ["system-view"]:
            self.view, self.label = "system", ""
            return ["Enter system view, return user view with return command."]
        if w == ["save"]:
            return self._save()
        if w == ["abort", "trial"]:
            return self._abort_trial()
        if w in (["quit"], ["exit"]):
            self.closed = True
            return []
        if w == ["return"]:
            return []
        return self._error(line, 0)

    def _save(self) -> list[str]:
        def answer(reply: str) -> list[str]:
            if _yes(reply):
                self.device.save()
                return ["Info: Save the configuration successfully."]
            return []

        self.ask(
            "Warning: The current configuration will be written to the device. Continue? [Y/N]:",
            answer,
        )
        return []

    # --- system view and sub-views ---

    def _view_command(self, line: str, w: list[str]) -> list[str] | None:
        if w == ["return"]:
            return self._leave_system()
        if w == ["quit"]:
            if self.view == "system":
                return self._leave_system()
            self.view, self.label, self.context = "system", "", ""
            return []
        if w[0] == "commit":
            return self._commit(line, w)
        if w == ["abort", "trial"]:
            return self._abort_trial()
        if w == ["save"]:
            return self._save()
        sub = {
            "interface": self._interface_line,
            "acl": self._acl_line,
            "classifier": self._classifier_line,
            "behavior": self._behavior_line,
            "policy": self._policy_line,
        }.get(self.view)
        if sub is not None:
            out = sub(line, w)
            if out is not None:
                return out
        return self._system_line(line, w)

    def _leave_system(self) -> list[str]:
        def to_user_view() -> list[str]:
            self.view, self.label, self.context = "user", "", ""
            return []

        if not self.changes:
            return to_user_view()

        def answer(reply: str) -> list[str]:
            if _yes(reply):
                self.device.commit(self.changes)
                self.changes = []
                return to_user_view()
            if reply.lower() in ("n", "no"):
                self.changes = []
                return to_user_view()
            return []

        self.ask(_RETURN_QUESTION, answer)
        return []

    def _commit(self, line: str, w: list[str]) -> list[str]:
        if w == ["commit"]:
            self.device.commit(self.changes)
            self.changes = []
            return []
        if w[:2] == ["commit", "trial"] and len(w) <= 3:
            seconds = 600
            if len(w) == 3:
                if not w[2].isdigit() or not 60 <= int(w[2]) <= 65535:
                    return self._error(line, 2, _WRONG)
                seconds = int(w[2])
            self.device.commit(self.changes, trial_seconds=seconds)
            self.changes = []
            return [
                "Info: The system will revert to previous configuration if the trial "
                f"configuration is not confirmed in {seconds} seconds."
            ]
        return self._error(line, 1)

    def _abort_trial(self) -> list[str]:
        def answer(reply: str) -> list[str]:
            if not _yes(reply):
                return []
            if not self.device.abort_trial():
                return ["Error: No trial configuration is running."]
            return ["Info: Succeeded in aborting the trial configuration."]

        self.ask("Warning: The system will abort the trial. Continue? [Y/N]:", answer)
        return []

    def _enter(self, view: str, label: str, context: str) -> list[str]:
        self.view, self.label, self.context = view, label, context
        return []

    def _system_line(self, line: str, w: list[str]) -> list[str] | None:
        undo = w[0] == "undo"
        body = w[1:] if undo else w
        n = 1 if undo else 0
        if not body:
            return self._error(line, 0, _INCOMPLETE)
        if body[:2] == ["ip", "route-static"]:
            return self._route(line, body[2:], n + 2, undo)
        if body[0] == "interface":
            if undo:
                return self._error(line, 0)
            if len(body) < 2:
                return self._error(line, 1, _INCOMPLETE)
            iface = self.device.find_interface("".join(body[1:]))
            if iface is None:
                return self._error(line, 1, _WRONG)
            return self._enter("interface", iface.name, iface.name)
        if body[0] == "acl":
            number = body[2] if body[1:2] == ["number"] else (body[1] if len(body) > 1 else "")
            if not number.isdigit() or not 2000 <= int(number) <= 3999:
                return self._error(line, n + 1, _WRONG if number else _INCOMPLETE)
            header = f"acl number {number}"
            if undo:
                return self._change(lambda c: c.remove_sections(lambda h: h == header))
            self._change(lambda c: c.sections.setdefault(header, []))
            kind = "adv" if int(number) >= 3000 else "basic"
            return self._enter("acl", f"acl-{kind}-{number}", header)
        if (
            body[0] == "traffic"
            and len(body) >= 2
            and body[1] in ("classifier", "behavior", "policy")
        ):
            return self._traffic(line, body, n, undo)
        return None

    def _route(self, line: str, args: list[str], at: int, undo: bool) -> list[str]:
        if len(args) < (2 if undo else 3):
            return self._error(line, at + len(args), _INCOMPLETE)
        if parse_ip(args[0]) is None:
            return self._error(line, at, _WRONG)
        length = int(args[1]) if args[1].isdigit() and int(args[1]) <= 32 else parse_mask(args[1])
        if length is None:
            return self._error(line, at + 1, _WRONG)
        prefix = network(args[0], length)
        if prefix is None:
            return ["Error: The destination address and mask do not match."]
        next_hop = args[2] if len(args) > 2 else None
        if next_hop is not None and parse_ip(next_hop) is None:
            return self._error(line, at + 2, _WRONG)
        extra = args[3:]
        if extra and not (len(extra) == 2 and extra[0] == "preference" and extra[1].isdigit()):
            return self._error(line, at + 3, _WRONG)
        if undo:
            hops = self.candidate().routes.get(prefix, [])
            if not hops or (next_hop is not None and next_hop not in hops):
                return ["Error: The route does not exist."]
            return self._change(lambda c: c.remove_route(prefix, next_hop))
        assert next_hop is not None
        return self._change(lambda c: c.add_route(prefix, next_hop))

    def _traffic(self, line: str, body: list[str], n: int, undo: bool) -> list[str]:
        kind = body[1]
        if len(body) < 3:
            return self._error(line, n + 2, _INCOMPLETE)
        name = body[2]
        if not _NAME.fullmatch(name):
            return self._error(line, n + 2, _WRONG)
        prefix = f"traffic {kind} {name}"

        def same(h: str) -> bool:
            return h == prefix or h.startswith(prefix + " ")

        if undo:
            return self._change(lambda c: c.remove_sections(same))
        header = prefix
        if kind == "classifier":
            operator = "or"
            if body[3:4] == ["operator"]:
                if body[4:5] not in (["or"], ["and"]):
                    return self._error(line, n + 4, _WRONG)
                operator = body[4]
            header = f"{prefix} operator {operator}"
        existing = next((h for h in self.candidate().sections if same(h)), None)
        if existing is not None and kind != "classifier":
            header = existing
        if existing != header:

            def create(c: StanzaConfig) -> None:
                body_lines = next((c.sections.pop(h) for h in list(c.sections) if same(h)), [])
                c.sections[header] = body_lines

            self._change(create)
        label = {"classifier": "classifier", "behavior": "behavior", "policy": "trafficpolicy"}[
            kind
        ]
        return self._enter(kind, f"{label}-{name}", header)

    def _body(self, line: str, *, key: str, replace: bool = True) -> list[str]:
        """Add `line` to the current section, replacing any line starting with `key`."""
        header = self.context

        def add(c: StanzaConfig) -> None:
            lines = c.section(header)
            if replace:
                lines[:] = [x for x in lines if not x.startswith(key)]
            if line not in lines:
                lines.append(line)

        return self._change(add)

    def _unbody(self, key: str) -> list[str]:
        header = self.context

        def remove(c: StanzaConfig) -> None:
            lines = c.section(header)
            lines[:] = [x for x in lines if not (x == key or x.startswith(key + " "))]

        return self._change(remove)

    def _interface_line(self, line: str, w: list[str]) -> list[str] | None:
        name = self.context
        if w == ["shutdown"]:
            return self._change(lambda c: c.shutdown.add(name))
        if w == ["undo", "shutdown"]:
            return self._change(lambda c: c.shutdown.discard(name))
        if w[0] == "traffic-policy":
            if len(w) != 3 or w[2] not in ("inbound", "outbound"):
                return self._error(line, min(len(w), 2), _INCOMPLETE if len(w) < 3 else _WRONG)
            return self._change(_interface_policy(name, w[2], " ".join(w)))
        if w[:2] == ["undo", "traffic-policy"]:
            if w[-1] not in ("inbound", "outbound"):
                return self._error(line, len(w) - 1, _INCOMPLETE)
            return self._change(_interface_policy(name, w[-1], None))
        if w[0] == "description" and len(w) > 1:
            return self._change(
                lambda c: c.add_interface_line(name, line, replace_prefix="description")
            )
        if w == ["undo", "description"]:
            return self._change(lambda c: c.remove_interface_lines(name, "description"))
        return None

    def _acl_line(self, line: str, w: list[str]) -> list[str] | None:
        if w[:2] == ["undo", "rule"] and len(w) == 3 and w[2].isdigit():
            return self._unbody(f"rule {w[2]}")
        if w[0] != "rule":
            return None
        rest = w[1:]
        current = self.candidate().section(self.context)
        if rest and rest[0].isdigit():
            number, rest = int(rest[0]), rest[1:]
        else:
            used = [int(x.split()[1]) for x in current]
            number = (max(used) // 5 + 1) * 5 if used else 5
        if not rest or rest[0] not in ("permit", "deny"):
            return self._error(line, len(w) - len(rest), _INCOMPLETE if not rest else _WRONG)
        if len(rest) < 2 or rest[1] not in ("ip", "tcp", "udp", "icmp"):
            return self._error(line, len(w) - len(rest) + 1, _INCOMPLETE)
        i = 2
        while i < len(rest):
            if rest[i] in ("source", "destination") and i + 1 < len(rest) and rest[i + 1] == "any":
                i += 2
            elif (
                rest[i] in ("source", "destination")
                and i + 2 < len(rest)
                and parse_ip(rest[i + 1])
                and (parse_wildcard(rest[i + 2]) is not None or rest[i + 2] == "0")
            ):
                i += 3
            else:
                return self._error(line, len(w) - len(rest) + i, _WRONG)
        return self._body(" ".join(["rule", str(number), *rest]), key=f"rule {number} ")

    def _classifier_line(self, line: str, w: list[str]) -> list[str] | None:
        if w[:2] == ["if-match", "acl"] and len(w) == 3:
            return self._body(" ".join(w), key="if-match acl", replace=False)
        if w[:3] == ["undo", "if-match", "acl"]:
            return self._unbody(" ".join(w[1:]))
        return None

    def _behavior_line(self, line: str, w: list[str]) -> list[str] | None:
        if w[:2] == ["redirect", "ip-nexthop"]:
            if len(w) < 3 or not all(parse_ip(x) for x in w[2:]):
                return self._error(line, 2, _INCOMPLETE if len(w) < 3 else _WRONG)
            return self._body(" ".join(w), key="redirect")
        if w[:3] == ["undo", "redirect", "ip-nexthop"]:
            return self._unbody("redirect ip-nexthop")
        if w in (["permit"], ["deny"]):
            return self._body(w[0], key="permit" if w[0] == "deny" else "deny")
        return None

    def _policy_line(self, line: str, w: list[str]) -> list[str] | None:
        if w[0] == "classifier" and len(w) >= 4 and w[2] == "behavior":
            extra = w[4:]
            if extra and not (len(extra) == 2 and extra[0] == "precedence" and extra[1].isdigit()):
                return self._error(line, 4, _WRONG)
            return self._body(" ".join(w), key=f"classifier {w[1]} ")
        if w[:2] == ["undo", "classifier"] and len(w) == 3:
            return self._unbody(f"classifier {w[2]}")
        return None

    # --- display ---

    def _display(self, line: str, w: list[str]) -> list[str]:
        dev = self.device
        if w == ["display", "current-configuration"]:
            return dev.running_config().split("\n")
        if w == ["display", "saved-configuration"]:
            return dev.saved_config().split("\n")
        if w == ["display", "configuration", "candidate"] and self.view != "user":
            return dev.render_config(self.candidate()).split("\n")
        if w == ["display", "configuration", "trial", "status"]:
            timer = dev.revert_timer()
            if timer is None:
                return ["Trial status: none"]
            return [f"Trial status: running, remaining {int(timer.remaining())} seconds"]
        if w == ["display", "ip", "routing-table", "protocol", "static"]:
            return self._routes()
        if w == ["display", "clock"]:
            return [f"{dev.clock.datetime():%Y-%m-%d %H:%M:%S}+00:00"]
        return self._error(line, 1)

    def _routes(self) -> list[str]:
        dev = self.device
        active = dev.active_routes()
        count = sum(len(h) for h in active.values())
        configured = sum(len(h) for h in dev.static_routes().values())
        out = [
            "Route Flags: R - relay, D - download to fib, T - to vpn-instance, "
            "B - black hole route",
            "-" * 78,
            "Public routing table : Static",
            f"         Destinations : {len(active)}        Routes : {count}"
            f"        Configured Routes : {configured}",
            "",
            "Static routing table status : <Active>",
            f"         Destinations : {len(active)}        Routes : {count}",
            "",
            "Destination/Mask    Proto   Pre  Cost        Flags NextHop         Interface",
            "",
        ]
        for prefix in sorted(active, key=ipaddress.IPv4Network):
            for nh in active[prefix]:
                iface = dev.interface_for(nh)
                out.append(f"{prefix}  Static  60   0   RD  {nh}  {iface.name if iface else '-'}")
        return out
