"""Strict patterns for every value that may reach a device CLI, a URL or a workflow id."""

from __future__ import annotations

import ipaddress
import re

from continuity.errors import ValidationFailed

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# Interface names across IOS-XE (GigabitEthernet0/0/1), Junos (ge-0/0/1.0), VRP (GE0/0/1,
# 10GE1/0/1) and Linux/FRR (eth0, veth-r1-r2): letters, digits and / . : - only.
INTERFACE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,31}(?:[-/.:][A-Za-z0-9]{1,16}){0,6}$")
VRF = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
# Characters no human-entered text may hold: C0 and C1 control codes (PostgreSQL refuses NUL
# outright, so one in a reason would fail the report write), line and paragraph separators,
# and the bidirectional overrides that make a report show something other than what it says.
_CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff"
# Names may end up in a device description: one line, no CLI metacharacters either.
_TEXT_FORBIDDEN = re.compile(rf"[{_CONTROLS}\t\n\r|;`$<>\\]")
# Prose (descriptions, reasons) never reaches a device: tabs and line ends are fine.
_PROSE_FORBIDDEN = re.compile(rf"[{_CONTROLS}]")


def check_ipv4_address(value: str) -> str:
    try:
        addr = ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError) as e:
        raise ValidationFailed(f"malformed IPv4 address {value!r}") from e
    if str(addr) != value:
        raise ValidationFailed(f"non-canonical IPv4 address {value!r}")
    return value


def check_ipv4_prefix(value: str) -> str:
    """A prefix like 10.20.0.0/16; host bits must be zero and the form canonical."""
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError) as e:
        raise ValidationFailed(f"malformed IPv4 prefix {value!r}") from e
    if str(net) != value:
        raise ValidationFailed(f"non-canonical IPv4 prefix {value!r}")
    return value


def check_interface(value: str) -> str:
    if not INTERFACE.fullmatch(value):
        raise ValidationFailed(f"malformed interface name {value!r}")
    return value


def check_vrf(value: str) -> str:
    if not VRF.fullmatch(value):
        raise ValidationFailed(f"malformed VRF name {value!r}")
    return value


def check_identifier(value: str) -> str:
    if not IDENTIFIER.fullmatch(value):
        raise ValidationFailed(f"malformed identifier {value!r}")
    return value


def check_text(
    value: str, *, max_len: int = 200, allow_empty: bool = False, prose: bool = False
) -> str:
    """Names refuse CLI metacharacters; prose (never sent to a device) only control codes."""
    if not value and not allow_empty:
        raise ValidationFailed("empty text")
    if len(value) > max_len:
        raise ValidationFailed(f"text longer than {max_len} characters")
    found = (_PROSE_FORBIDDEN if prose else _TEXT_FORBIDDEN).search(value)
    if found:
        char = found.group()
        what = "a shell character" if char.isprintable() else "a control character"
        raise ValidationFailed(
            f"text contains {what} (U+{ord(char):04X}) at position {found.start()}"
        )
    return value


def netmask(prefix: str) -> tuple[str, str]:
    """'10.1.0.0/16' -> ('10.1.0.0', '255.255.0.0'), for IOS-style CLIs."""
    net = ipaddress.IPv4Network(check_ipv4_prefix(prefix))
    return str(net.network_address), str(net.netmask)


def wildcard(prefix: str) -> tuple[str, str]:
    """'10.1.0.0/16' -> ('10.1.0.0', '0.0.255.255'), for IOS ACLs."""
    net = ipaddress.IPv4Network(check_ipv4_prefix(prefix))
    return str(net.network_address), str(net.hostmask)


__all__ = [
    "DEVICE_NAME",
    "E164",
    "IDENTIFIER",
    "INTERFACE",
    "VRF",
    "check_identifier",
    "check_interface",
    "check_ipv4_address",
    "check_ipv4_prefix",
    "check_text",
    "check_vrf",
    "netmask",
    "wildcard",
]
