"""Junos per docs/device-cli.md: candidate vs committed, exclusive lock, commit confirmed."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from continuity.models import Platform
from lab.gear.base import (
    CliSession,
    DeviceClock,
    DeviceConfig,
    SimDevice,
    filter_lines,
    is_ipv4_interface,
    parse_ip,
    parse_prefix,
    split_pipe,
)

Statement = tuple[str, ...]  # one `set` line split into its hierarchy levels

# Each statement form the lab understands, as hierarchy levels ("keyword {slot}" or "keyword").
_GRAMMAR: list[list[str]] = [
    ["system", "host-name {name}"],
    ["interfaces", "{ifd}", "disable"],
    ["interfaces", "{ifd}", "description {text}"],
    ["interfaces", "{ifd}", "unit {num}", "disable"],
    ["interfaces", "{ifd}", "unit {num}", "description {text}"],
    ["interfaces", "{ifd}", "unit {num}", "family inet", "address {ipnet}"],
    ["interfaces", "{ifd}", "unit {num}", "family inet", "filter", "input {name}"],
    ["interfaces", "{ifd}", "unit {num}", "family inet", "filter", "output {name}"],
    ["routing-options", "static", "route {prefix}", "next-hop {ip}"],
    ["routing-options", "static", "route {prefix}", "preference {num}"],
    ["routing-options", "interface-routes", "rib-group", "inet {name}"],
    ["routing-options", "rib-groups", "{name}", "import-rib {ribs}"],
    *(
        ["firewall", "family inet", "filter {name}", "term {name}", part, leaf]
        for part, leaf in (
            ("from", "source-address {prefix}"),
            ("from", "destination-address {prefix}"),
            ("then", "routing-instance {name}"),
            ("then", "accept"),
            ("then", "discard"),
            ("then", "count {name}"),
        )
    ),
    ["routing-instances", "{name}", "instance-type {itype}"],
    ["routing-instances", "{name}", "routing-options", "static", "route {prefix}", "next-hop {ip}"],
]
_MULTI = {"next-hop", "address", "source-address", "destination-address"}
_TOP_ORDER = ["system", "interfaces", "firewall", "routing-options", "routing-instances"]
_TOKEN = re.compile(r'"[^"]*"|\[[^\]]*\]|\S+')
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_IFD = re.compile(r"[a-z][a-z0-9]*(?:-\d+/\d+/\d+(?::\d+)?|\d+)")
_SLOTS: dict[str, Callable[[str], bool]] = {
    "name": lambda w: bool(_NAME.fullmatch(w)),
    "ifd": lambda w: bool(_IFD.fullmatch(w)),
    "num": lambda w: w.isdigit() and len(w) <= 5,
    "prefix": lambda w: parse_prefix(w) is not None,
    "ip": lambda w: parse_ip(w) is not None,
    "ipnet": is_ipv4_interface,
    "text": lambda w: bool(w),
    "itype": lambda w: w in ("forwarding", "virtual-router", "vrf", "no-forwarding"),
    "ribs": lambda w: w.startswith("[") or bool(_NAME.fullmatch(w)),
}
_LOCKED = "error: configuration database locked by: {}"


def _parse(words: list[str], *, partial: bool) -> tuple[Statement | None, int]:
    """Match words against the grammar: (statement or None, how far the best attempt got)."""
    best = 0
    for entry in _GRAMMAR:
        levels: list[str] = []
        i = 0
        ok = True
        for level in entry:
            if partial and i == len(words) and levels:
                break
            got = []
            for token in level.split():
                if i >= len(words):
                    ok = False
                    break
                word = words[i]
                if token.startswith("{"):
                    if not _SLOTS[token[1:-1]](word):
                        ok = False
                        break
                elif word != token:
                    ok = False
                    break
                got.append(word)
                i += 1
            best = max(best, i)
            if not ok:
                break
            levels.append(" ".join(got))
        if ok and i == len(words):
            return tuple(levels), best
    return None, best


@dataclass
class SetConfig(DeviceConfig):
    """A Junos configuration as its `set` statements (interface addresses are implied)."""

    statements: list[Statement] = field(default_factory=list)

    def static_routes(self) -> dict[str, list[str]]:
        routes: dict[str, list[str]] = {}
        for st in self.statements:
            if st[:2] == ("routing-options", "static") and st[3].startswith("next-hop "):
                routes.setdefault(st[2].split()[1], []).append(st[3].split()[1])
        return routes

    def is_shutdown(self, interface: str) -> bool:
        physical, _, unit = interface.partition(".")
        return ("interfaces", physical, "disable") in self.statements or (
            "interfaces",
            physical,
            f"unit {unit or '0'}",
            "disable",
        ) in self.statements

    def add_route(self, prefix: str, next_hop: str) -> None:
        self.set(("routing-options", "static", f"route {prefix}", f"next-hop {next_hop}"))

    def set(self, st: Statement) -> None:
        if st in self.statements:
            return
        keyword, _, value = st[-1].partition(" ")
        if value and keyword not in _MULTI:
            self.statements = [
                s
                for s in self.statements
                if not (s[:-1] == st[:-1] and s[-1].split()[0] == keyword)
            ]
        self.statements.append(st)

    def delete(self, prefix: Statement) -> bool:
        kept = [s for s in self.statements if s[: len(prefix)] != prefix]
        removed = len(kept) != len(self.statements)
        self.statements = kept
        return removed


def _top(st: Statement) -> int:
    return _TOP_ORDER.index(st[0]) if st[0] in _TOP_ORDER else len(_TOP_ORDER)


def _ordered(statements: list[Statement]) -> list[Statement]:
    return sorted(statements, key=_top)


def _tree(statements: list[Statement]) -> list[str]:
    """The curly-brace form of `show configuration`."""
    root: dict[str, dict | None] = {}
    for st in _ordered(statements):
        node = root
        for level in st[:-1]:
            child = node.setdefault(level, {})
            node = child if child is not None else {}
        node.setdefault(st[-1], None)
    lines: list[str] = []

    def emit(node: dict[str, dict | None], depth: int) -> None:
        pad = "    " * depth
        for name, child in node.items():
            if child is None:
                lines.append(f"{pad}{name};")
            else:
                lines.append(f"{pad}{name} {{")
                emit(child, depth + 1)
                lines.append(f"{pad}}}")

    emit(root, 0)
    return lines


@dataclass
class _Commit:
    at: float
    user: str
    via: str
    comment: str = ""


class JunosDevice(SimDevice[SetConfig]):
    platform = Platform.JUNIPER_JUNOS
    interface_template = "ge-0/0/{}.0"

    def __init__(self, name: str, *, clock: DeviceClock) -> None:
        super().__init__(name, clock=clock)
        self.candidate = SetConfig()  # the shared candidate database
        self.rollbacks: list[SetConfig] = []  # rollback 0 = the committed configuration
        self.commits: list[_Commit] = []
        self.lock: JunosCli | None = None  # the `configure exclusive` holder
        self._unconfirmed_from: SetConfig | None = None

    def new_config(self) -> SetConfig:
        return SetConfig()

    def open_cli(self, username: str) -> JunosCli:
        return JunosCli(self, username)

    def interface_key(self, name: str) -> str:
        return name.partition(".")[0]

    def on_built(self) -> None:
        super().on_built()
        self.candidate = self.running.copy()
        self.rollbacks = [self.running.copy()]
        self.commits = [_Commit(self.clock.now(), "root", "other")]

    def unit_name(self, name: str) -> str:
        return name if "." in name else f"{name}.0"

    def implied(self) -> list[Statement]:
        """What the inventory configured and the lab never changes: host name, addresses."""
        out: list[Statement] = [("system", f"host-name {self.hostname}")]
        for name, iface in self.interfaces.items():
            physical, _, unit = self.unit_name(name).partition(".")
            out += [
                ("interfaces", physical, f"unit {unit}", "family inet", f"address {a}")
                for a in iface.addresses
            ]
        return out

    def render_config(self, config: SetConfig) -> str:
        return "\n".join(_tree(self.implied() + config.statements))

    def display_set(self, config: SetConfig) -> list[str]:
        return ["set " + " ".join(st) for st in _ordered(self.implied() + config.statements)]

    def commit(
        self, new: SetConfig, *, user: str, confirm_minutes: int | None = None, comment: str = ""
    ) -> None:
        previous = self.running
        self.running = new.copy()
        self.rollbacks = [self.running.copy(), *self.rollbacks][:50]
        if confirm_minutes is not None:
            if self._unconfirmed_from is None:
                self._unconfirmed_from = previous.copy()
            self.arm_revert(
                device_seconds=confirm_minutes * 60,
                restore=self._roll_back_unconfirmed,
                what="commit confirmed",
            )
            comment = f"commit confirmed, rollback in {confirm_minutes}mins"
        elif self.cancel_revert("commit"):
            self._unconfirmed_from = None
        self.commits.insert(0, _Commit(self.clock.now(), user, "cli", comment))
        self.saved = self.running.copy()  # a Junos commit is persistent
        self.config_changed()

    def _roll_back_unconfirmed(self) -> None:
        if self._unconfirmed_from is None:
            return
        self.running = self._unconfirmed_from
        self._unconfirmed_from = None
        self.rollbacks = [self.running.copy(), *self.rollbacks][:50]
        self.commits.insert(0, _Commit(self.clock.now(), "root", "other"))
        self.candidate = self.running.copy()
        self.saved = self.running.copy()

    def release(self, session: JunosCli) -> None:
        if self.lock is session:
            self.lock = None


class JunosCli(CliSession):
    busy_message = "error: maximum number of sessions reached"
    device: JunosDevice

    def __init__(self, device: JunosDevice, username: str) -> None:
        super().__init__(device, username)
        self.mode = "op"
        self.kind = ""  # "exclusive", "private" or "" (shared)
        self._private: SetConfig | None = None
        self._private_base: SetConfig | None = None

    def greeting(self) -> str:
        return "--- JUNOS 21.4R3.15 built 2022-11-30 05:51:21 UTC\n"

    def mode_prompt(self) -> str:
        who = f"{self.username}@{self.device.hostname}"
        return f"\n{who}> " if self.mode == "op" else f"\n[edit]\n{who}# "

    @property
    def in_config_mode(self) -> bool:
        return self.mode == "config"

    @property
    def candidate(self) -> SetConfig:
        return self._private if self._private is not None else self.device.candidate

    def _locked_by_other(self) -> str | None:
        lock = self.device.lock
        return lock.username if lock is not None and lock is not self else None

    def _dirty(self) -> bool:
        if self._private is not None:
            return self._private.statements != (self._private_base or SetConfig()).statements
        return self.candidate.statements != self.device.running.statements

    def reject(self, line: str) -> list[str]:
        return [self.caret(line, 1), "syntax error."]

    def execute(self, line: str) -> list[str]:
        return self._op(line) if self.mode == "op" else self._config(line)

    # --- operational mode ---

    def _op(self, line: str) -> list[str]:
        command, pipes = split_pipe(line)
        w = command.split()
        if w[:2] == ["set", "cli"]:
            if w[2:3] == ["screen-length"] and len(w) == 4 and w[3].isdigit():
                return [f"Screen length set to {w[3]}"]
            if w[2:3] == ["screen-width"] and len(w) == 4 and w[3].isdigit():
                return [f"Screen width set to {w[3]}"]
            if w[2:] == ["complete-on-space", "off"]:
                return ["Disabling complete-on-space"]
            return [self.caret(line, 2), "syntax error."]
        if w[0] == "configure":
            return self._enter(line, w)
        if w[0] in ("exit", "quit", "logout") and len(w) == 1:
            self.closed = True
            return []
        if w[0] == "show":
            out = self._show(w, pipes)
            if out is not None:
                return out
        return [self.caret(line, 0), "unknown command."]

    def _enter(self, line: str, w: list[str]) -> list[str]:
        kind = w[1] if len(w) == 2 else ""
        if len(w) > 2 or kind not in ("", "exclusive", "private"):
            return [self.caret(line, 1), "syntax error."]
        owner = self._locked_by_other()
        if owner is not None and kind:
            return [_LOCKED.format(owner)]
        if (
            kind == "exclusive"
            and self.device.candidate.statements != self.device.running.statements
        ):
            # Someone left edits in the shared database: Junos will not lock it under them.
            return ["error: shared configuration database modified"]
        self.mode, self.kind = "config", kind
        out = ["Entering configuration mode"]
        if kind == "exclusive":
            self.device.lock = self
        elif kind == "private":
            self._private = self.device.running.copy()
            self._private_base = self.device.running.copy()
        elif owner is not None:
            out += ["Users currently editing the configuration:", f"  {owner} exclusive [edit]"]
        return out

    def _show(self, w: list[str], pipes: list[str]) -> list[str] | None:
        dev = self.device
        display_set = "display set" in pipes
        rest = [p for p in pipes if p != "display set"]
        out: list[str] | None = None
        if w == ["show", "configuration"]:
            out = (
                dev.display_set(dev.running)
                if display_set
                else dev.render_config(dev.running).split("\n")
            )
        elif display_set:
            return None
        elif w in (["show", "route", "protocol", "static"], ["show", "route", "static"]):
            out = self._routes()
        elif w == ["show", "system", "commit"]:
            out = [
                f"{i:<3} {self._stamp(c.at)} by {c.user} via {c.via}"
                + (f" {c.comment}" if c.comment else "")
                for i, c in enumerate(dev.commits)
            ]
        return None if out is None else filter_lines(out, rest)

    def _stamp(self, device_time: float) -> str:
        return f"{datetime.fromtimestamp(device_time, UTC):%Y-%m-%d %H:%M:%S} UTC"

    def _routes(self) -> list[str]:
        dev = self.device
        active = dev.active_routes()
        if not active:
            return []
        count = sum(len(h) for h in active.values())
        out = [
            "",
            f"inet.0: {len(active)} destinations, {count} routes "
            f"({len(active)} active, 0 holddown, 0 hidden)",
            "+ = Active Route, - = Last Active, * = Both",
            "",
        ]
        for prefix in sorted(active, key=ipaddress.IPv4Network):
            hops = active[prefix]
            out.append(f"{prefix:<19}*[Static/5] {dev.route_age(prefix, hops[0])}")
            for i, nh in enumerate(hops):
                iface = dev.interface_for(nh)
                via = dev.unit_name(iface.name) if iface else "?"
                mark = ">" if i == 0 else " "
                out.append(f"                    {mark}  to {nh} via {via}")
        return out

    # --- configuration mode ---

    def _config(self, line: str) -> list[str]:
        command, pipes = split_pipe(line)
        words = _TOKEN.findall(command)
        verb = words[0]
        if verb == "set" or verb == "delete":
            return self._edit(line, words)
        if verb == "show":
            return self._config_show(line, words, pipes)
        if verb == "commit":
            return self._commit(line, words)
        if verb == "rollback":
            return self._rollback(line, words)
        if verb == "run" and len(words) > 1:
            return self._op(line.split(None, 1)[1])
        if verb in ("exit", "quit") and (len(words) == 1 or words[1:] == ["configuration-mode"]):
            return self._leave()
        if verb in ("top", "up") and len(words) == 1:
            return []
        if verb == "status" and len(words) == 1:
            owner = self.device.lock
            return ["Users currently editing the configuration:"] + (
                [f"  {owner.username} exclusive [edit]"] if owner else []
            )
        return [self.caret(line, 0), "unknown command."]

    def _edit(self, line: str, words: list[str]) -> list[str]:
        owner = self._locked_by_other()
        if owner is not None and self._private is None:
            return [_LOCKED.format(owner)]
        statement, reached = _parse(words[1:], partial=words[0] == "delete")
        if statement is None:
            if words[0] == "delete" and words[1:2] and words[1] in _TOP_ORDER:
                return ["warning: statement not found"]
            return [self.caret(line, 1 + reached), "syntax error."]
        if words[0] == "set":
            self.candidate.set(statement)
            return []
        if not self.candidate.delete(statement):
            return ["warning: statement not found"]
        return []

    def _config_show(self, line: str, words: list[str], pipes: list[str]) -> list[str]:
        if len(words) != 1:
            return [self.caret(line, 1), "syntax error."]
        rest = [p for p in pipes if p not in ("compare", "display set")]
        if "compare" in pipes:
            out = self._compare()
        elif "display set" in pipes:
            out = self.device.display_set(self.candidate)
        else:
            out = self.device.render_config(self.candidate).split("\n")
        filtered = filter_lines(out, rest)
        return filtered if filtered is not None else [self.caret(line, 2), "syntax error."]

    def _compare(self) -> list[str]:
        before = self.device.running.statements
        after = self.candidate.statements
        groups: dict[str, list[str]] = {}
        changes = [("-", s) for s in before if s not in after] + [
            ("+", s) for s in after if s not in before
        ]
        for sign, st in sorted(changes, key=lambda c: _top(c[1])):
            header = "[edit " + " ".join(st[:-1]) + "]"
            groups.setdefault(header, []).append(f"{sign}    {st[-1]};")
        return [line for header, lines in groups.items() for line in (header, *lines)]

    def _commit(self, line: str, words: list[str]) -> list[str]:
        dev = self.device
        args = words[1:]
        comment = ""
        if "comment" in args:
            at = args.index("comment")
            comment = " ".join(args[at + 1 :]).strip('"')
            args = args[:at]
        if args == ["check"]:
            return ["configuration check succeeds"]
        owner = self._locked_by_other()
        if owner is not None and self._private is None:
            return [_LOCKED.format(owner)]
        minutes: int | None = None
        and_quit = False
        if args[:1] == ["confirmed"]:
            if len(args) > 2 or (len(args) == 2 and not args[1].isdigit()):
                return [self.caret(line, 2), "syntax error."]
            minutes = int(args[1]) if len(args) == 2 else 10
            if not 1 <= minutes <= 65535:
                return ["error: confirmed commit timeout must be between 1 and 65535 minutes"]
        elif args == ["and-quit"]:
            and_quit = True
        elif args:
            return [self.caret(line, 1), "syntax error."]
        new = self._merged()
        dev.commit(new, user=self.username, confirm_minutes=minutes, comment=comment)
        self._after_commit()
        out = []
        if minutes is not None:
            out += [
                "configuration check succeeds",
                f"commit confirmed will be automatically rolled back in {minutes} minutes "
                "unless confirmed",
            ]
        out.append("commit complete")
        if and_quit:
            out += self._leave()
        return out

    def _merged(self) -> SetConfig:
        """The configuration this session would commit (a private edit is merged as a diff)."""
        if self._private is None:
            return self.candidate.copy()
        base = self._private_base or SetConfig()
        merged = self.device.running.copy()
        for st in base.statements:
            if st not in self._private.statements:
                merged.delete(st)
        for st in self._private.statements:
            if st not in base.statements:
                merged.set(st)
        return merged

    def _after_commit(self) -> None:
        if self._private is not None:
            self._private = self.device.running.copy()
            self._private_base = self.device.running.copy()
        else:
            self.device.candidate = self.device.running.copy()

    def _rollback(self, line: str, words: list[str]) -> list[str]:
        if len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
            return [self.caret(line, 1), "syntax error."]
        n = int(words[1]) if len(words) == 2 else 0
        if n >= len(self.device.rollbacks):
            return [f"error: rollback {n} does not exist"]
        owner = self._locked_by_other()
        if owner is not None and self._private is None:
            return [_LOCKED.format(owner)]
        self.candidate.statements = list(self.device.rollbacks[n].statements)
        return ["load complete"]

    def _leave(self) -> list[str]:
        if self._dirty():

            def answer(reply: str) -> list[str]:
                if reply.lower() in ("", "y", "yes"):
                    return self._exit_config()
                return []

            self.ask("Exit with uncommitted changes? [yes,no] (yes) ", answer)
            return []
        return self._exit_config()

    def _exit_config(self) -> list[str]:
        self._discard()
        self.mode, self.kind = "op", ""
        return ["Exiting configuration mode"]

    def _discard(self) -> None:
        """Leaving exclusive or private mode throws the uncommitted changes away."""
        if self.kind == "exclusive":
            self.device.candidate = self.device.running.copy()
        self._private = self._private_base = None
        self.device.release(self)

    def close(self) -> None:
        if self.mode == "config":
            self._discard()
