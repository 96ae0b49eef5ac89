"""The dialect contract: what one platform's CLI is told and how its answers are read (pure)."""

from __future__ import annotations

import ipaddress
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from continuity.errors import ValidationFailed
from continuity.messages import PathState, StepTimings, Timings
from continuity.models import (
    CircuitPath,
    Direction,
    NextHop,
    Platform,
    RerouteMechanism,
    RouteChange,
)
from continuity.validation import (
    check_identifier,
    check_interface,
    check_ipv4_address,
    check_ipv4_prefix,
)

DIRECTIONS: tuple[Direction, ...] = tuple(Direction)

# Names we create on devices (route-maps, filters, traffic policies) carry the circuit id.
# Stricter than an Identifier: '.' is not safe in every vendor's object names.
_OBJECT_NAME = re.compile(r"CT-[A-Za-z0-9_-]{1,40}")
IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


def revert_window_s(timings: Timings) -> float:
    """Real seconds a device must keep a change unconfirmed before its own timer may undo it."""
    return StepTimings.of(timings).revert_window_s


@dataclass(frozen=True)
class ApplyPlan:
    """The parts of one apply; `commands()` is the order the device receives them in."""

    make: tuple[str, ...]  # the new path (added before anything is removed)
    break_: tuple[str, ...]  # the old path's removal
    arm: tuple[str, ...]  # the device-side auto-revert; empty where there is none
    commit: tuple[str, ...]  # make the edits take effect (candidate platforms) and leave config
    enter: tuple[str, ...] = ()  # into configuration mode
    # IOS-XE: `configure terminal revert timer N` both arms and enters, so it replaces `enter`
    # in the first phase; elsewhere the arm (commit confirmed / commit trial) follows the edits.
    arm_enters: bool = False
    # Line-by-line platforms: leave config after `make`, wait until the new path is active,
    # then come back for `break_`, so a failure in between never leaves the circuit unrouted.
    make_before_break: bool = False

    @property
    def empty(self) -> bool:
        return not (self.make or self.break_)

    def phases(self) -> list[list[str]]:
        """The command batches; the caller waits for the new path between two batches."""
        if self.empty:
            return []
        head = list(self.arm) if (self.arm_enters and self.arm) else list(self.enter)
        tail = list(self.commit) if self.arm_enters else [*self.arm, *self.commit]
        if self.make_before_break and self.make and self.break_:
            return [
                [*head, *self.make, *tail],
                [*self.enter, *self.break_, *self.commit],
            ]
        return [[*head, *self.make, *self.break_, *tail]]

    def commands(self) -> list[str]:
        return [c for phase in self.phases() for c in phase]


@dataclass(frozen=True)
class DeviceView:
    """What a device shows about static routes and our policy objects."""

    active: dict[str, set[str]] = field(default_factory=dict)  # prefix -> next hops forwarding
    configured: dict[str, set[str]] = field(default_factory=dict)  # prefix -> configured next hops
    config: str = ""  # the running configuration (PBR state is read from it)


class Dialect(ABC):
    """One platform: prompts, paging, quirks, and the rendering/parsing of route changes."""

    platform: ClassVar[Platform]
    # The last (unterminated) line of output that means "the device waits for a command".
    prompt: ClassVar[re.Pattern[str]]
    on_open: ClassVar[tuple[str, ...]] = ()
    error_markers: ClassVar[tuple[str, ...]] = ()
    # Answers that look like errors but mean "already so" (removing what is not there).
    benign_markers: ClassVar[tuple[str, ...]] = ()
    # An error that means someone else holds the configuration: retry later, not a bad command.
    busy_markers: ClassVar[tuple[str, ...]] = ()
    # Text a device prints instead of a prompt when it has no free session (matched only
    # when no prompt follows, so a banner mentioning limits is harmless).
    session_limit_markers: ClassVar[tuple[str, ...]] = (
        "lines are busy",
        "session limit",
        "sessions has reached",
        "maximum number of sessions",
        "too many sessions",
        "too many vty",
        "reached the upper limit",
    )
    # (question at the end of the output, what we type) — Y/N and similar.
    interactive: ClassVar[tuple[tuple[re.Pattern[str], str], ...]] = ()
    native_auto_revert: ClassVar[bool] = True
    route_command: ClassVar[str]
    config_command: ClassVar[str]
    pending_command: ClassVar[str | None] = None
    confirm_commands: ClassVar[tuple[str, ...]] = ()
    persist_commands: ClassVar[tuple[str, ...]] = ()
    # Sent (results ignored) after a failed edit so the session is back in operational mode.
    leave_config: ClassVar[tuple[str, ...]] = ()
    interface_pattern: ClassVar[re.Pattern[str]]

    # --- session ----------------------------------------------------------------------

    def clean(self, text: str) -> str:
        """Device output as plain text: no ANSI sequences, no carriage returns."""
        text = _ANSI.sub("", text.replace(" \x1b[1D", ""))
        text = text.replace("\r\n", "\n").replace("\r", "")
        return text.replace("\x08", "").replace("\x07", "")

    def is_prompt(self, last_line: str) -> bool:
        return self.prompt.fullmatch(last_line) is not None

    def answer_for(self, last_line: str) -> str | None:
        for question, answer in self.interactive:
            if question.search(last_line):
                return answer
        return None

    def is_failure(self, output: str) -> bool:
        for line in output.splitlines():
            if any(m in line for m in self.benign_markers):
                continue
            if any(m in line for m in self.error_markers):
                return True
        return False

    def is_busy(self, output: str) -> bool:
        return any(m in output for m in self.busy_markers)

    def is_session_limit(self, output: str) -> bool:
        low = output.lower()
        return any(m.lower() in low for m in self.session_limit_markers)

    # --- validation -------------------------------------------------------------------

    def check_interface(self, value: str) -> str:
        check_interface(value)
        if not self.interface_pattern.fullmatch(value):
            raise ValidationFailed(f"not a {self.platform.value} interface name: {value!r}")
        return value

    def object_name(self, circuit_id: str) -> str:
        name = f"CT-{check_identifier(circuit_id)}"
        if not _OBJECT_NAME.fullmatch(name):
            raise ValidationFailed(f"circuit id {circuit_id!r} cannot name a device policy object")
        return name

    def _checked(self, change: RouteChange) -> CircuitPath:
        """Re-validate everything that reaches the CLI; models may have been built unchecked."""
        if not isinstance(change, RouteChange) or not isinstance(change.path, CircuitPath):
            raise ValidationFailed("a change must be a RouteChange with a CircuitPath")
        check_identifier(change.circuit_id)
        p = change.path
        check_ipv4_prefix(p.prefix)
        check_ipv4_address(p.primary.address)
        check_ipv4_address(p.backup.address)
        if p.primary.address == p.backup.address:
            raise ValidationFailed("primary and backup next hops must differ")
        mechanism = RerouteMechanism(p.mechanism)
        if mechanism is RerouteMechanism.SOURCE_PBR:
            if not (p.source_prefix and p.ingress_interface):
                raise ValidationFailed("source_pbr needs source_prefix and ingress_interface")
            check_ipv4_prefix(p.source_prefix)
            self.check_interface(p.ingress_interface)
            self.object_name(change.circuit_id)
        return p

    @staticmethod
    def _direction(direction: str) -> Direction:
        try:
            return Direction(direction)
        except ValueError:
            raise ValidationFailed(
                f"direction must be reroute or restore, not {direction!r}"
            ) from None

    # --- timers -----------------------------------------------------------------------

    @abstractmethod
    def revert_units(self, revert_s: float) -> int | None:
        """The device's timer value for `revert_s` device seconds (its unit); None: no timer."""

    def armed_revert_s(self, revert_s: float) -> float | None:
        """Device seconds the timer really runs once `revert_s` is rounded to the device's unit."""
        units = self.revert_units(revert_s)
        return None if units is None else float(units * self._revert_unit_s)

    _revert_unit_s: ClassVar[int] = 60

    @staticmethod
    def _minutes(revert_s: float, *, low: int, high: int, platform: str) -> int:
        if not math.isfinite(revert_s) or revert_s <= 0:
            raise ValidationFailed(f"revert window must be positive, got {revert_s!r}")
        # Rounded UP: a shorter device timer could undo the change while an operator confirms.
        minutes = max(low, math.ceil(revert_s / 60 - 1e-9))
        if minutes > high:
            raise ValidationFailed(
                f"{platform} revert timer tops out at {high} min, asked {minutes}"
            )
        return minutes

    # --- rendering --------------------------------------------------------------------

    def render_apply(
        self,
        changes: Sequence[RouteChange],
        *,
        direction: Direction,
        revert_s: float | None,
        present: Sequence[PathState] | None = None,
        armed: bool = False,
    ) -> ApplyPlan:
        """The plan moving `changes` in `direction`; `revert_s` device seconds (None: no timer).

        `present` (what the device's configuration already holds, from `parse_config_state`)
        drops what is already in place, so a retry sends only what is missing; `armed` says
        a device revert is already pending (a retry must not arm a second one where the
        platform cannot extend it).
        """
        direction = self._direction(direction)
        paths = [(c, self._checked(c)) for c in changes]
        self._check_batch([c for c, _ in paths])
        by_id = {s.circuit_id: s for s in (present or [])}
        make: list[str] = []
        break_: list[str] = []
        for change, path in paths:
            state = by_id.get(change.circuit_id)
            new_there, old_there = False, True
            if state is not None:
                new_there, old_there = (
                    (state.backup_present, state.primary_present)
                    if direction == Direction.REROUTE
                    else (state.primary_present, state.backup_present)
                )
            m, b = self._render_change(change.circuit_id, path, direction)
            if not new_there:
                make += m
            if old_there:
                break_ += b
        return self._plan(make, break_, revert_s=revert_s, armed=armed)

    def render_inverse(
        self,
        changes: Sequence[RouteChange],
        direction: Direction,
        *,
        present: Sequence[PathState] | None = None,
    ) -> list[str]:
        """The lines that undo a `direction` change by hand, committed plainly (no timer)."""
        back = (
            Direction.RESTORE
            if self._direction(direction) is Direction.REROUTE
            else Direction.REROUTE
        )
        plan = self.render_apply(changes, direction=back, revert_s=None, present=present)
        return plan.commands()

    def render_confirm(self) -> list[str]:
        """Accept a pending change and persist it."""
        return [*self.confirm_commands, *self.persist_commands]

    @abstractmethod
    def render_rollback(self, changes: Sequence[RouteChange], direction: Direction) -> list[str]:
        """Undo a pending (unconfirmed) change now."""

    @abstractmethod
    def _render_change(
        self, circuit_id: str, path: CircuitPath, direction: Direction
    ) -> tuple[list[str], list[str]]:
        """(make, break) lines for one circuit, values already validated."""

    @abstractmethod
    def _plan(
        self, make: list[str], break_: list[str], *, revert_s: float | None, armed: bool
    ) -> ApplyPlan: ...

    def _check_batch(self, changes: Sequence[RouteChange]) -> None:
        """Consistency over one batch: one policy object per circuit (platforms add more)."""
        pbr = [
            c.circuit_id
            for c in changes
            if RerouteMechanism(c.path.mechanism) is RerouteMechanism.SOURCE_PBR
        ]
        if len(set(pbr)) != len(pbr):
            raise ValidationFailed("two policy routes for one circuit in one change")

    # --- state ------------------------------------------------------------------------

    def state_commands(self) -> list[str]:
        cmds = [self.route_command, self.config_command]
        return cmds + ([self.pending_command] if self.pending_command else [])

    def view(self, outputs: Mapping[str, str]) -> DeviceView:
        config = outputs.get(self.config_command, "")
        return DeviceView(
            active=self.parse_routes(outputs.get(self.route_command, "")),
            configured=self.parse_config_routes(config),
            config=config,
        )

    def parse_state(
        self, outputs: Mapping[str, str], changes: Sequence[RouteChange]
    ) -> list[PathState]:
        """Which next hop forwards for each change (policy routes: attached or not)."""
        v = self.view(outputs)
        return [self._state(c, v.active, v.config) for c in changes]

    def parse_config_state(
        self, outputs: Mapping[str, str], changes: Sequence[RouteChange]
    ) -> list[PathState]:
        """Which next hop is configured for each change, active or not (a cut link keeps its
        route in the configuration, and a reroute must still remove it)."""
        v = self.view(outputs)
        return [self._state(c, v.configured, v.config) for c in changes]

    def _state(self, change: RouteChange, routes: dict[str, set[str]], config: str) -> PathState:
        p = change.path
        if RerouteMechanism(p.mechanism) is RerouteMechanism.SOURCE_PBR:
            attached = self.pbr_attached(change, config)
            return PathState(
                circuit_id=change.circuit_id, primary_present=not attached, backup_present=attached
            )
        hops = routes.get(p.prefix, set())
        return PathState(
            circuit_id=change.circuit_id,
            primary_present=p.primary.address in hops,
            backup_present=p.backup.address in hops,
        )

    def parse_pending(self, output: str) -> bool:
        """True when an unconfirmed change with a running revert timer is on the device."""
        return False

    @abstractmethod
    def parse_routes(self, output: str) -> dict[str, set[str]]:
        """Active static routes: prefix -> next hops."""

    # One configured static route per line, groups (prefix, next hop); dialects whose config
    # lines are not that simple override parse_config_routes instead.
    static_config_line: ClassVar[re.Pattern[str] | None] = None

    def parse_config_routes(self, config: str) -> dict[str, set[str]]:
        """Configured static routes: prefix -> next hops."""
        if self.static_config_line is None:
            raise NotImplementedError(f"{type(self).__name__} must parse its config routes")
        routes: dict[str, set[str]] = {}
        for line in config.splitlines():
            m = self.static_config_line.match(line.strip())
            if m:
                add_route(routes, m.group(1), [m.group(2)])
        return routes

    @abstractmethod
    def pbr_attached(self, change: RouteChange, config: str) -> bool:
        """Our policy for this circuit is attached to its ingress and points at the backup."""


# --- helpers shared by the platform modules ------------------------------------------------


def prefix_of(address: str, mask_or_len: str) -> str | None:
    """'10.20.0.0' + '255.255.0.0' or '16' -> '10.20.0.0/16'; None if not a network."""
    try:
        return str(ipaddress.IPv4Network(f"{address}/{mask_or_len}", strict=True))
    except ValueError:
        return None


def is_ipv4(token: str) -> bool:
    try:
        ipaddress.IPv4Address(token)
    except ValueError:
        return False
    return True


def stanzas(config: str) -> dict[str, list[str]]:
    """Indented configuration (IOS, VRP, FRR) as header line -> body lines, stripped."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in config.splitlines():
        if not raw.strip() or raw.strip() in ("!", "#"):
            continue
        if raw[:1].isspace():
            if current is not None:
                current.append(raw.strip())
            continue
        current = out.setdefault(raw.strip(), [])
    return out


def ends(path: CircuitPath, direction: Direction) -> tuple[NextHop, NextHop]:
    """(new, old) next hop of a move: reroute goes to the backup, restore back to the primary."""
    if direction == Direction.REROUTE:
        return path.backup, path.primary
    return path.primary, path.backup


def add_route(table: dict[str, set[str]], prefix: str | None, hops: Iterable[str]) -> None:
    if prefix is None:
        return
    table.setdefault(prefix, set()).update(hops)


__all__ = [
    "ApplyPlan",
    "DIRECTIONS",
    "DeviceView",
    "Dialect",
    "Direction",
    "revert_window_s",
]
