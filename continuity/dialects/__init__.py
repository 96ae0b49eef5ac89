"""Per-platform device dialects and the registry that picks one for a device."""

from __future__ import annotations

from continuity.dialects.base import ApplyPlan, DeviceView, Dialect, Direction, revert_window_s
from continuity.dialects.cisco_iosxe import CiscoIosXe
from continuity.dialects.frr import Frr
from continuity.dialects.huawei_vrp import HuaweiVrp
from continuity.dialects.juniper_junos import JuniperJunos
from continuity.errors import ValidationFailed
from continuity.messages import Timings
from continuity.models import Platform

_REGISTRY: dict[Platform, Dialect] = {
    d.platform: d for d in (CiscoIosXe(), JuniperJunos(), HuaweiVrp(), Frr())
}


def dialect_for(platform: Platform | str) -> Dialect:
    """The dialect of a platform; the only place a platform name selects behaviour."""
    try:
        return _REGISTRY[Platform(platform)]
    except (ValueError, KeyError) as e:
        raise ValidationFailed(f"no dialect for platform {platform!r}") from e


def check_timings(platforms: set[Platform], timings: Timings) -> None:
    """Refuse, before anything runs, a confirmation window some device's timer cannot hold."""
    revert_s = revert_window_s(timings) * timings.device_time_scale
    for platform in sorted(platforms):
        dialect_for(platform).revert_units(revert_s)


__all__ = [
    "ApplyPlan",
    "CiscoIosXe",
    "DeviceView",
    "Dialect",
    "Direction",
    "Frr",
    "HuaweiVrp",
    "JuniperJunos",
    "check_timings",
    "dialect_for",
    "revert_window_s",
]
