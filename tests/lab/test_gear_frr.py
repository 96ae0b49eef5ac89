"""The lab's FRR router as met in vtysh: every line applies at once, nothing reverts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from continuity.models import Platform
from lab.gear import Fault
from lab.gear.terminal import LabTerminal, SessionClosed
from tests.lab.conftest import GearLab, gear_lab


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[GearLab]:
    async with gear_lab(tmp_path, Platform.FRR) as lab:
        yield lab


async def routes(r1: LabTerminal) -> list[str]:
    output = await r1.send("show ip route static")
    return [line for line in output.splitlines() if "10.20.0.0/16" in line]


async def test_frr_login_greets_and_shows_primary_route_selected(lab: GearLab) -> None:
    async with await lab.login() as r1:
        assert "Hello, this is FRRouting (version 8.4.4)." in r1.greeting
        assert r1.prompt == "r1#"
        [line] = await routes(r1)
        assert line.startswith("S>* 10.20.0.0/16 [1/0] via 192.0.2.1, eth1, weight 1, ")


async def test_frr_route_change_applies_immediately_without_a_timer(lab: GearLab) -> None:
    async with await lab.login() as r1:
        assert await r1.send("configure terminal") == ""
        assert r1.prompt == "r1(config)#"
        assert await r1.send("ip route 10.20.0.0/16 198.51.100.1") == ""
        # Both next hops forward (ECMP) until the old one is removed.
        assert lab.r1.active_routes()["10.20.0.0/16"] == ["192.0.2.1", "198.51.100.1"]
        assert await r1.send("no ip route 10.20.0.0/16 192.0.2.1") == ""
        assert await r1.send("end") == ""
        [line] = await routes(r1)
        assert line.startswith("S>* 10.20.0.0/16 [1/0] via 198.51.100.1, eth2, weight 1, ")
        assert (
            "ip route 10.20.0.0/16 198.51.100.1"
            in (await r1.send("show running-config")).splitlines()
        )
    assert not lab.r1.pending_revert()


async def test_frr_has_no_commit_or_revert(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await r1.send("configure terminal")
        assert await r1.send("commit confirmed 5") == "% Unknown command: commit confirmed 5"
        await r1.send("end")
        assert await r1.send("configure exclusive") == "% Unknown command: configure exclusive"


async def test_frr_removing_a_missing_route_is_refused_politely(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await r1.send("configure terminal")
        assert await r1.send("no ip route 10.99.0.0/16 192.0.2.1") == (
            "% Refusing to remove a non-existent route"
        )
        assert await r1.send("ip route 10.99.0.0/16") == (
            "% Command incomplete: ip route 10.99.0.0/16"
        )


async def test_frr_shutdown_shows_route_inactive(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await r1.type_ahead(["configure terminal", "interface eth1", "shutdown", "end"])
        assert await routes(r1) == ["S   10.20.0.0/16 [1/0] via 192.0.2.1 inactive"]
        await r1.type_ahead(["configure terminal", "interface eth1", "no shutdown", "end"])
        [line] = await routes(r1)
        assert line.startswith("S>* 10.20.0.0/16 [1/0] via 192.0.2.1, eth1")


async def test_frr_write_memory_saves_running_config(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await r1.type_ahead(["configure terminal", "ip route 10.20.0.0/16 198.51.100.1", "end"])
        assert await r1.send("write memory") == (
            "Building Configuration...\nIntegrated configuration saved to /etc/frr/frr.conf\n[OK]"
        )
    assert "ip route 10.20.0.0/16 198.51.100.1" in lab.r1.saved_config().splitlines()


async def test_frr_pbr_map_shows_and_can_be_removed(lab: GearLab) -> None:
    attach = [
        "configure terminal",
        "nexthop-group CT-r1-c2",
        "nexthop 198.51.100.1",
        "exit",
        "pbr-map CT-r1-c2 seq 10",
        "match src-ip 10.5.0.0/16",
        "set nexthop-group CT-r1-c2",
        "exit",
        "interface eth3",
        "pbr-policy CT-r1-c2",
        "end",
    ]
    detach = [
        "configure terminal",
        "interface eth3",
        "no pbr-policy CT-r1-c2",
        "exit",
        "no pbr-map CT-r1-c2",
        "no nexthop-group CT-r1-c2",
        "end",
    ]
    async with await lab.login() as r1:
        assert await r1.type_ahead(attach) == [""] * len(attach)
        config = (await r1.send("show running-config")).splitlines()
        assert config[config.index("interface eth3") + 1] == " pbr-policy CT-r1-c2"
        assert config[config.index("nexthop-group CT-r1-c2") + 1] == " nexthop 198.51.100.1"
        assert config[config.index("pbr-map CT-r1-c2 seq 10") + 1 :][:2] == [
            " match src-ip 10.5.0.0/16",
            " set nexthop-group CT-r1-c2",
        ]
        assert await r1.type_ahead(detach) == [""] * len(detach)
        assert "CT-r1-c2" not in await r1.send("show running-config")


async def test_frr_cli_error_fault_rejects_route_lines(lab: GearLab) -> None:
    lab.net.set_fault("r1", Fault.CLI_ERROR)
    async with await lab.login() as r1:
        await r1.send("configure terminal")
        assert await r1.send("ip route 10.20.0.0/16 198.51.100.1") == (
            "% Unknown command: ip route 10.20.0.0/16 198.51.100.1"
        )
    assert lab.r1.static_routes()["10.20.0.0/16"] == ["192.0.2.1"]


async def test_frr_session_limit_refuses_the_next_session(lab: GearLab) -> None:
    lab.net.set_fault("r1", Fault.SESSION_LIMIT, max_sessions=1)
    async with await lab.login():
        with pytest.raises(SessionClosed) as refused:
            await lab.login()
        assert refused.value.output.strip() == "% Too many sessions"
