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
# Free text that ends up in a device description or report: printable, no CLI metacharacters.
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f|;`$<>\\]")
_PROSE_FORBIDDEN = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


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
    forbidden = _PROSE_FORBIDDEN if prose else _TEXT_FORBIDDEN
    if forbidden.search(value):
        raise ValidationFailed(f"text contains control or shell characters: {value[:40]!r}")
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
