"""The lab's IOS-XE router as an operator meets it over SSH: live config, revert timer, confirm."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from continuity.models import Platform
from lab.gear import Fault
from lab.gear.terminal import LabTerminal, SessionClosed
from tests.lab.conftest import GearLab, gear_lab

ENTER_CONFIG = "Enter configuration commands, one per line.  End with CNTL/Z."

ROUTES_NORMAL = (
    "S        10.20.0.0/16 [1/0] via 192.0.2.1\nS        10.21.0.0/16 [1/0] via 192.0.2.1"
)
ROUTES_REROUTED = (
    "S        10.20.0.0/16 [1/0] via 198.51.100.1\nS        10.21.0.0/16 [1/0] via 192.0.2.1"
)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[GearLab]:
    async with gear_lab(tmp_path, Platform.CISCO_IOSXE) as lab:
        yield lab


async def reroute_under_timer(r1: LabTerminal, minutes: int = 1) -> None:
    assert await r1.send(f"configure terminal revert timer {minutes}") == ENTER_CONFIG
    assert r1.prompt == "r1(config)#"
    assert await r1.send("ip route 10.20.0.0 255.255.0.0 198.51.100.1") == ""
    assert await r1.send("no ip route 10.20.0.0 255.255.0.0 192.0.2.1") == ""
    assert await r1.send("end") == ""
    assert r1.prompt == "r1#"


async def test_iosxe_login_shows_primary_routes_active(lab: GearLab) -> None:
    async with await lab.login() as r1:
        assert r1.prompt == "r1#"
        assert await r1.send("show ip route static") == ROUTES_NORMAL
        assert await r1.send("show archive config rollback timer") == (
            "No Rollback Confirmed Change pending"
        )


async def test_iosxe_reroute_under_revert_timer_moves_route_to_backup(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await reroute_under_timer(r1)
        assert await r1.send("show ip route static") == ROUTES_REROUTED
        timer = (await r1.send("show archive config rollback timer")).splitlines()
        assert timer[:2] == ["Timer type: Revert", "Timer value: 1 min"]
        assert timer[2].startswith("Time remaining: ") and timer[2].endswith(" secs")
    assert lab.r1.pending_revert()
    assert lab.r1.static_routes()["10.20.0.0/16"] == ["198.51.100.1"]


async def test_iosxe_revert_timer_expiry_restores_primary_route(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await reroute_under_timer(r1)
        await lab.r1.wait_for_revert(within_s=5)  # one device minute is one real second
        assert await r1.send("show ip route static") == ROUTES_NORMAL
        assert await r1.send("show archive config rollback timer") == (
            "No Rollback Confirmed Change pending"
        )
    assert not lab.r1.pending_revert()


async def test_iosxe_configure_confirm_keeps_backup_route_past_the_timer(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await reroute_under_timer(r1)
        assert await r1.send("configure confirm") == ""
        assert not lab.r1.pending_revert()
        with pytest.raises(TimeoutError):
            await lab.r1.wait_for_revert(within_s=1.5)  # past the minute the timer had
        assert await r1.send("show ip route static") == ROUTES_REROUTED
        assert await r1.send("configure confirm") == "% No Rollback Confirmed Change pending"


async def test_iosxe_configure_revert_now_restores_primary_at_once(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await reroute_under_timer(r1, minutes=120)
        assert await r1.send("configure revert now") == "Rollback Done"
        assert await r1.send("show ip route static") == ROUTES_NORMAL
        assert await r1.send("configure revert now") == "% No Rollback Confirmed Change pending"
    assert not lab.r1.pending_revert()


async def test_iosxe_write_memory_saves_running_config(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await reroute_under_timer(r1)
        await r1.send("configure confirm")
        assert await r1.send("write memory") == "Building configuration...\n[OK]"
        startup = await r1.send("show startup-config")
    assert "ip route 10.20.0.0 255.255.0.0 198.51.100.1" in lab.r1.saved_config().splitlines()
    assert "ip route 10.20.0.0 255.255.0.0 198.51.100.1" in startup.splitlines()


async def test_iosxe_error_markers_for_bad_lines(lab: GearLab) -> None:
    async with await lab.login() as r1:
        assert await r1.send("shwo ip route") == "   ^\n% Invalid input detected at '^' marker."
        await r1.send("configure terminal")
        assert await r1.send("ip route 10.20.0.0 255.255.0.0") == "% Incomplete command."
        assert await r1.send("no ip route 10.99.0.0 255.255.0.0 192.0.2.1") == (
            "%No matching route to delete"
        )
        await r1.send("end")
        assert "% Invalid input" in await r1.send("configure terminal revert timer 121")
        assert await r1.send("configure confirm") == "% No Rollback Confirmed Change pending"


async def test_iosxe_interface_shutdown_makes_its_routes_inactive(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await r1.send("configure terminal")
        assert await r1.send("interface Gi0/0/1") == ""  # abbreviations work, as on IOS
        assert r1.prompt == "r1(config-if)#"
        await r1.send("shutdown")
        await r1.send("end")
        assert await r1.send("show ip route static") == ""
        assert " shutdown" in (await r1.send("show running-config")).splitlines()
    assert not lab.r1.interfaces["GigabitEthernet0/0/1"].admin_up
    assert lab.r1.active_routes() == {}
    assert lab.r1.static_routes()["10.20.0.0/16"] == ["192.0.2.1"]


async def test_iosxe_cut_link_drops_routes_until_restored(lab: GearLab) -> None:
    async with await lab.login() as r1:
        lab.net.cut_link("r1", "GigabitEthernet0/0/1")
        assert await r1.send("show ip route static") == ""
        lab.net.restore_link("r1", "GigabitEthernet0/0/1")
        assert await r1.send("show ip route static") == ROUTES_NORMAL


async def test_iosxe_policy_route_objects_show_and_can_be_removed(lab: GearLab) -> None:
    attach = [
        "configure terminal",
        "ip access-list extended CT-r1-c2",
        "permit ip 10.5.0.0 0.0.255.255 any",
        "exit",
        "route-map CT-r1-c2 permit 10",
        "match ip address CT-r1-c2",
        "set ip next-hop 198.51.100.1",
        "exit",
        "interface GigabitEthernet0/0/3",
        "ip policy route-map CT-r1-c2",
        "end",
    ]
    detach = [
        "configure terminal",
        "interface GigabitEthernet0/0/3",
        "no ip policy route-map CT-r1-c2",
        "exit",
        "no route-map CT-r1-c2",
        "no ip access-list extended CT-r1-c2",
        "end",
    ]
    async with await lab.login() as r1:
        assert await r1.type_ahead(attach) == [ENTER_CONFIG] + [""] * (len(attach) - 1)
        config = (await r1.send("show running-config")).splitlines()
        assert " ip policy route-map CT-r1-c2" in config
        assert config[config.index("route-map CT-r1-c2 permit 10") + 2] == (
            " set ip next-hop 198.51.100.1"
        )
        assert " permit ip 10.5.0.0 0.0.255.255 any" in config
        assert await r1.type_ahead(detach) == [ENTER_CONFIG] + [""] * (len(detach) - 1)
        after = await r1.send("show running-config")
    assert "CT-r1-c2" not in after
    assert "CT-r1-c2" not in lab.r1.running_config()


async def test_iosxe_cli_error_fault_rejects_route_lines(lab: GearLab) -> None:
    lab.net.set_fault("r1", Fault.CLI_ERROR)
    async with await lab.login() as r1:
        await r1.send("configure terminal")
        answer = await r1.send("ip route 10.20.0.0 255.255.0.0 198.51.100.1")
        assert "% Invalid input detected at '^' marker." in answer
        assert await r1.send("interface GigabitEthernet0/0/2") == ""  # other lines still work
        await r1.send("end")
        assert await r1.send("show ip route static") == ROUTES_NORMAL


async def test_iosxe_session_limit_refuses_the_next_session(lab: GearLab) -> None:
    lab.net.set_fault("r1", Fault.SESSION_LIMIT, max_sessions=1)
    async with await lab.login() as first:
        with pytest.raises(SessionClosed) as refused:
            await lab.login()
        assert refused.value.output.strip() == "% All lines are busy"
        assert await first.send("show ip route static") == ROUTES_NORMAL
