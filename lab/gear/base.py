"""The device model simulated platforms share: interfaces, routes, clock, timers, faults, CLI."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, ClassVar, Generic, Self, TypeVar

from continuity.models import Platform


class Fault(StrEnum):
    """What can go wrong with a device, as an operator would meet it from the outside."""

    UNREACHABLE = "unreachable"  # the listener is closed: connections are refused
    AUTH_FAILURE = "auth_failure"  # every authentication attempt fails
    HOST_KEY_CHANGE = "host_key_change"  # the device presents a key nobody pinned
    HANG = "hang"  # the CLI stops answering after a matching line
    CLI_ERROR = "cli_error"  # matching config lines get the platform's error marker
    SLOW = "slow"  # every answer is delayed
    SESSION_LIMIT = "session_limit"  # all vty lines are busy


class DeviceClock:
    """Device time: starts at the wall clock, runs `time_scale` device seconds per real second."""

    def __init__(self, time_scale: float = 1.0, *, start: datetime | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self._wall0 = (start or datetime.now(UTC)).timestamp()
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self._wall0 + (time.monotonic() - self._mono0) * self.time_scale

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    def real_seconds(self, device_seconds: float) -> float:
        return device_seconds / self.time_scale


class DeviceTimer:
    """A one-shot timer counted in device time that really fires on the running event loop."""

    def __init__(
        self, clock: DeviceClock, device_seconds: float, action: Callable[[], None]
    ) -> None:
        self.clock = clock
        self.duration = device_seconds
        self.deadline = clock.now() + device_seconds
        self.active = True
        self._action = action
        self._handle = asyncio.get_running_loop().call_later(
            clock.real_seconds(device_seconds), self._fire
        )

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock.now())

    def restart(self, device_seconds: float) -> None:
        self._handle.cancel()
        self.duration = device_seconds
        self.deadline = self.clock.now() + device_seconds
        self.active = True
        self._handle = asyncio.get_running_loop().call_later(
            self.clock.real_seconds(device_seconds), self._fire
        )

    def cancel(self) -> None:
        self._handle.cancel()
        self.active = False

    def _fire(self) -> None:
        if self.active:
            self.active = False
            self._action()


# --- addresses -----------------------------------------------------------------------------


def parse_ip(text: str) -> IPv4Address | None:
    try:
        addr = IPv4Address(text)
    except ValueError:
        return None
    return addr if str(addr) == text else None


def parse_mask(text: str) -> int | None:
    """A dotted netmask ('255.255.0.0') as a prefix length, or None if not contiguous."""
    addr = parse_ip(text)
    if addr is None:
        return None
    bits = int(addr)
    length = bin(bits).count("1")
    return length if bits == (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF else None


def parse_wildcard(text: str) -> int | None:
    """An ACL wildcard ('0.0.255.255') as a prefix length, or None if not contiguous."""
    addr = parse_ip(text)
    if addr is None:
        return None
    return parse_mask(str(IPv4Address(0xFFFFFFFF ^ int(addr))))


def network(address: str, length: int) -> str | None:
    """'10.20.0.0', 16 -> '10.20.0.0/16'; None when host bits are set or the input is malformed."""
    try:
        return str(IPv4Network(f"{address}/{length}", strict=True))
    except ValueError:
        return None


def parse_prefix(text: str) -> str | None:
    """'10.20.0.0/16' in canonical form, or None."""
    try:
        net = IPv4Network(text, strict=True)
    except ValueError:
        return None
    return str(net) if str(net) == text else None


def netmask_of(prefix: str) -> tuple[str, str]:
    net = IPv4Network(prefix)
    return str(net.network_address), str(net.netmask)


def local_address_for(next_hop: str) -> IPv4Interface:
    """Our side of the link to `next_hop`: the other host of its /30, else a /24 neighbour."""
    nh = IPv4Address(next_hop)
    net30 = IPv4Network(f"{nh}/30", strict=False)
    hosts = list(net30.hosts())
    if nh in hosts:
        other = hosts[1] if nh == hosts[0] else hosts[0]
        return IPv4Interface(f"{other}/30")
    net24 = IPv4Network(f"{nh}/24", strict=False)
    for candidate in (nh + 1, nh - 1, nh + 2, nh - 2):
        if candidate in net24 and candidate not in (net24.network_address, net24.broadcast_address):
            return IPv4Interface(f"{candidate}/24")
    raise ValueError(f"no local address next to {next_hop}")


# --- configuration --------------------------------------------------------------------------


class DeviceConfig(ABC):
    """What `show running-config` is made of; platforms keep it in their own shape."""

    def copy(self) -> Self:
        return copy.deepcopy(self)

    @abstractmethod
    def static_routes(self) -> dict[str, list[str]]: ...

    @abstractmethod
    def is_shutdown(self, interface: str) -> bool: ...

    @abstractmethod
    def add_route(self, prefix: str, next_hop: str) -> None: ...


@dataclass
class StanzaConfig(DeviceConfig):
    """The line-oriented config of IOS-XE, VRP and FRR.

    `sections` holds the PBR objects (ACLs, route-maps, traffic classifiers/behaviors/policies,
    pbr-maps, nexthop-groups) keyed by their header line, each with its body lines in order.
    `interface_lines` holds per-interface lines other than shutdown (policies, descriptions).
    """

    routes: dict[str, list[str]] = field(default_factory=dict)
    shutdown: set[str] = field(default_factory=set)
    interface_lines: dict[str, list[str]] = field(default_factory=dict)
    sections: dict[str, list[str]] = field(default_factory=dict)

    def static_routes(self) -> dict[str, list[str]]:
        return {p: list(nhs) for p, nhs in self.routes.items() if nhs}

    def is_shutdown(self, interface: str) -> bool:
        return interface in self.shutdown

    def add_route(self, prefix: str, next_hop: str) -> None:
        hops = self.routes.setdefault(prefix, [])
        if next_hop not in hops:
            hops.append(next_hop)

    def remove_route(self, prefix: str, next_hop: str | None = None) -> bool:
        """Remove one next hop (or the whole prefix); False when there was nothing to remove."""
        hops = self.routes.get(prefix)
        if not hops:
            return False
        if next_hop is None:
            del self.routes[prefix]
            return True
        if next_hop not in hops:
            return False
        hops.remove(next_hop)
        if not hops:
            del self.routes[prefix]
        return True

    def add_interface_line(self, interface: str, line: str, *, replace_prefix: str = "") -> None:
        lines = self.interface_lines.setdefault(interface, [])
        if replace_prefix:
            lines[:] = [x for x in lines if not x.startswith(replace_prefix)]
        if line not in lines:
            lines.append(line)

    def remove_interface_lines(self, interface: str, prefix: str) -> bool:
        lines = self.interface_lines.get(interface, [])
        kept = [x for x in lines if not (x == prefix or x.startswith(prefix + " "))]
        removed = len(kept) != len(lines)
        if lines:
            self.interface_lines[interface] = kept
        return removed

    def section(self, header: str) -> list[str]:
        return self.sections.setdefault(header, [])

    def remove_sections(self, match: Callable[[str], bool]) -> bool:
        doomed = [h for h in self.sections if match(h)]
        for h in doomed:
            del self.sections[h]
        return bool(doomed)


# --- interfaces and devices ----------------------------------------------------------------


class Interface:
    """A port: addresses, a link sabotage can cut, and admin state read from the running config."""

    def __init__(self, device: SimDevice[Any], name: str, address: IPv4Interface) -> None:
        self._device = device
        self.name = name
        self.addresses: list[IPv4Interface] = [address]
        self.link_cut = False

    @property
    def address(self) -> str:
        return str(self.addresses[0])

    @property
    def admin_up(self) -> bool:
        return not self._device.running.is_shutdown(self.name)

    @property
    def up(self) -> bool:
        return self.admin_up and not self.link_cut

    def connects(self, next_hop: str) -> bool:
        nh = IPv4Address(next_hop)
        return any(nh in a.network and nh != a.ip for a in self.addresses)

    def __repr__(self) -> str:
        state = "up" if self.up else ("cut" if self.link_cut else "admin-down")
        return f"<Interface {self.name} {self.address} {state}>"


ConfigT = TypeVar("ConfigT", bound=DeviceConfig)


class SimDevice(ABC, Generic[ConfigT]):
    """One simulated router; subclasses bring the platform's config shape and CLI."""

    platform: ClassVar[Platform]
    # Interface names generated when the inventory names none: index -> name.
    interface_template: ClassVar[str]

    def __init__(self, name: str, *, clock: DeviceClock) -> None:
        self.name = name
        self.hostname = name
        self.clock = clock
        self.interfaces: dict[str, Interface] = {}
        self.running: ConfigT = self.new_config()  # running (IOS, FRR) or committed (Junos, VRP)
        self.saved: ConfigT = self.running.copy()  # what survives a reload
        self.fault: Fault | None = None
        self.fault_params: dict[str, Any] = {}
        self.sessions: set[CliSession] = set()
        self.log: list[str] = []
        self.received: list[str] = []  # every line typed into any session, in order
        self._revert: DeviceTimer | None = None
        self._revert_done: asyncio.Event | None = None
        self._route_since: dict[tuple[str, str], float] = {}

    # --- platform hooks ---

    @abstractmethod
    def new_config(self) -> ConfigT: ...

    @abstractmethod
    def open_cli(self, username: str) -> CliSession: ...

    @abstractmethod
    def render_config(self, config: ConfigT) -> str: ...

    def interface_key(self, name: str) -> str:
        """How the CLI compares interface names (abbreviations, case)."""
        return name

    def on_built(self) -> None:
        """Called once the inventory has given the device its interfaces and routes."""
        self.saved = self.running.copy()
        self.config_changed()

    # --- building ---

    def add_interface(self, name: str, address: IPv4Interface) -> Interface:
        existing = self.interfaces.get(name)
        if existing is not None:
            if not any(address.ip in a.network for a in existing.addresses):
                existing.addresses.append(address)
            return existing
        iface = Interface(self, name, address)
        self.interfaces[name] = iface
        return iface

    def next_interface_name(self) -> str:
        used = {self.interface_key(n) for n in self.interfaces}
        index = 1
        while self.interface_key(self.interface_template.format(index)) in used:
            index += 1
        return self.interface_template.format(index)

    # --- looking things up ---

    def find_interface(self, typed: str) -> Interface | None:
        key = self.interface_key(typed)
        for name, iface in self.interfaces.items():
            if self.interface_key(name) == key:
                return iface
        return None

    def interface_for(self, next_hop: str) -> Interface | None:
        for iface in self.interfaces.values():
            if iface.connects(next_hop):
                return iface
        return None

    def next_hop_usable(self, next_hop: str) -> bool:
        return any(i.up and i.connects(next_hop) for i in self.interfaces.values())

    # --- public state ---

    def static_routes(self) -> dict[str, list[str]]:
        """The committed/running static routes: prefix -> next hops."""
        return self.running.static_routes()

    def active_routes(self) -> dict[str, list[str]]:
        """Only the next hops that resolve over an admin-up interface whose link is not cut."""
        active: dict[str, list[str]] = {}
        for prefix, hops in self.running.static_routes().items():
            usable = [nh for nh in hops if self.next_hop_usable(nh)]
            if usable:
                active[prefix] = usable
        return active

    def running_config(self) -> str:
        return self.render_config(self.running)

    def saved_config(self) -> str:
        return self.render_config(self.saved)

    def save(self) -> None:
        self.saved = self.running.copy()
        self.record("configuration saved")

    def record(self, message: str) -> None:
        self.log.append(f"{self.clock.datetime():%Y-%m-%d %H:%M:%S} {message}")

    def config_changed(self) -> None:
        """Restart the age of every route whose next hops changed (what `show route` prints)."""
        now = self.clock.now()
        current = {(p, nh) for p, hops in self.running.static_routes().items() for nh in hops}
        self._route_since = {k: self._route_since.get(k, now) for k in current}

    def route_age(self, prefix: str, next_hop: str) -> str:
        since = self._route_since.get((prefix, next_hop), self.clock.now())
        seconds = int(max(0.0, self.clock.now() - since))
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    # --- device-side auto-revert ---

    def arm_revert(self, *, device_seconds: float, restore: Callable[[], None], what: str) -> None:
        """Arm (or re-arm) the device's auto-revert; `restore` runs when it fires."""

        def fire() -> None:
            self._revert = None
            restore()
            self.config_changed()
            self.record(f"{what} was not confirmed: configuration reverted")
            if self._revert_done is not None:
                self._revert_done.set()

        if self._revert is not None:
            self._revert.cancel()
        else:
            self._revert_done = asyncio.Event()
        self._revert = DeviceTimer(self.clock, device_seconds, fire)
        self.record(f"{what}: revert armed for {device_seconds:.0f} s")

    def cancel_revert(self, reason: str) -> bool:
        if self._revert is None:
            return False
        self._revert.cancel()
        self._revert = None
        self.record(f"revert cancelled: {reason}")
        return True

    def revert_timer(self) -> DeviceTimer | None:
        return self._revert

    def pending_revert(self) -> bool:
        """A revert timer, confirmed commit or commit trial is armed."""
        return self._revert is not None

    async def wait_for_revert(self, *, within_s: float) -> None:
        """Wait until the most recently armed auto-revert fires; TimeoutError if it does not."""
        if self._revert_done is None:
            self._revert_done = asyncio.Event()
        await asyncio.wait_for(self._revert_done.wait(), within_s)

    # --- faults ---

    def has_fault(self, fault: Fault) -> bool:
        return self.fault is fault

    def fault_pattern(self, default: str) -> re.Pattern[str]:
        return re.compile(str(self.fault_params.get("on", default)))


# --- the CLI -------------------------------------------------------------------------------


class CliSession(ABC):
    """One vty: a line in, the answer lines out, then `prompt()`; questions are prompts too."""

    # What a device says when every vty is taken (Fault.SESSION_LIMIT).
    busy_message: ClassVar[str]

    def __init__(self, device: SimDevice[Any], username: str) -> None:
        self.device = device
        self.username = username
        self.closed = False
        self._answer: Callable[[str], list[str]] | None = None
        self._question = ""

    def greeting(self) -> str:
        """Text shown once after login, before the first prompt."""
        return ""

    def prompt(self) -> str:
        return self._question if self._answer is not None else self.mode_prompt()

    @abstractmethod
    def mode_prompt(self) -> str: ...

    @property
    @abstractmethod
    def in_config_mode(self) -> bool: ...

    def ask(self, question: str, on_answer: Callable[[str], list[str]]) -> None:
        self._question = question
        self._answer = on_answer

    def handle(self, line: str) -> list[str]:
        if self._answer is not None:
            on_answer, self._answer = self._answer, None
            return on_answer(line.strip())
        line = line.strip()
        if not line:
            return []
        if (
            self.in_config_mode
            and self.device.has_fault(Fault.CLI_ERROR)
            and self.device.fault_pattern("route").search(line)
        ):
            return self.reject(line)
        return self.execute(line)

    @abstractmethod
    def execute(self, line: str) -> list[str]: ...

    @abstractmethod
    def reject(self, line: str) -> list[str]:
        """The platform's answer to a line it does not accept."""

    def caret(self, line: str, word: int = 0) -> str:
        """A '^' under the offending word, as the device draws it below the echoed line."""
        prompt_width = len(self.mode_prompt().rsplit("\n", 1)[-1])
        starts = [m.start() for m in re.finditer(r"\S+", line)]
        offset = starts[word] if word < len(starts) else len(line)
        return " " * (prompt_width + offset) + "^"

    def close(self) -> None:  # noqa: B027 - a hook most platforms do not need
        """The session ended (logout or dropped connection)."""


def split_pipe(line: str) -> tuple[str, list[str]]:
    """'show route | no-more' -> ('show route', ['no-more'])."""
    parts = [p.strip() for p in line.split("|")]
    return parts[0], [p for p in parts[1:] if p]


def filter_lines(lines: list[str], pipes: list[str]) -> list[str] | None:
    """Output pipes: include/exclude/begin (IOS, FRR, VRP), match/except/no-more (Junos).

    None when a pipe is not one of these, so the caller answers with its error marker.
    """
    for pipe in pipes:
        verb, _, arg = pipe.partition(" ")
        arg = arg.strip()
        if verb == "no-more" and not arg:
            continue
        if not arg:
            return None
        try:
            pattern = re.compile(arg)
        except re.error:
            pattern = re.compile(re.escape(arg))
        if verb in ("include", "inc", "i", "match"):
            lines = [x for x in lines if pattern.search(x)]
        elif verb in ("exclude", "exc", "e", "except"):
            lines = [x for x in lines if not pattern.search(x)]
        elif verb in ("begin", "b"):
            start = next((i for i, x in enumerate(lines) if pattern.search(x)), len(lines))
            lines = lines[start:]
        else:
            return None
    return lines


def is_ipv4_interface(text: str) -> bool:
    try:
        ipaddress.IPv4Interface(text)
    except ValueError:
        return False
    return "/" in text


__all__ = [
    "CliSession",
    "DeviceClock",
    "DeviceConfig",
    "DeviceTimer",
    "Fault",
    "Interface",
    "SimDevice",
    "StanzaConfig",
    "local_address_for",
    "netmask_of",
    "network",
    "parse_ip",
    "parse_mask",
    "parse_prefix",
    "parse_wildcard",
    "filter_lines",
    "split_pipe",
]
