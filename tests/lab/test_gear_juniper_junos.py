"""The lab's Junos router as an operator meets it: candidate, exclusive lock, commit confirmed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from continuity.models import Platform
from lab.gear import Fault
from lab.gear.terminal import LabTerminal, SessionClosed
from tests.lab.conftest import GearLab, gear_lab

SET_BACKUP = "set routing-options static route 10.20.0.0/16 next-hop 198.51.100.1"
DELETE_PRIMARY = "delete routing-options static route 10.20.0.0/16 next-hop 192.0.2.1"


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[GearLab]:
    async with gear_lab(tmp_path, Platform.JUNIPER_JUNOS) as lab:
        yield lab


def route_lines(output: str, prefix: str = "10.20.0.0/16") -> list[str]:
    """What `show route` prints for one prefix: its protocol column, then its next hops."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(prefix + " "):
            hops = []
            for x in lines[i + 1 :]:
                if not x.startswith(" "):
                    break
                hops.append(x.strip())
            return [line.split()[1], *hops]
    return []


async def stage_reroute(r1: LabTerminal) -> None:
    assert await r1.send("configure exclusive") == "Entering configuration mode"
    assert r1.prompt == "netops@r1# "
    assert await r1.send(SET_BACKUP) == ""
    assert await r1.send(DELETE_PRIMARY) == ""


async def test_junos_login_shows_primary_route_active(lab: GearLab) -> None:
    async with await lab.login() as r1:
        assert r1.prompt == "netops@r1> "
        routes = await r1.send("show route protocol static | no-more")
        assert route_lines(routes) == ["*[Static/5]", ">  to 192.0.2.1 via ge-0/0/1.0"]


async def test_junos_candidate_changes_nothing_until_committed(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        assert await r1.send("show | compare") == (
            "[edit routing-options static route 10.20.0.0/16]\n"
            "-    next-hop 192.0.2.1;\n"
            "+    next-hop 198.51.100.1;"
        )
        routes = await r1.send("run show route protocol static")
        assert route_lines(routes) == ["*[Static/5]", ">  to 192.0.2.1 via ge-0/0/1.0"]
        assert await r1.send("commit check") == "configuration check succeeds"
    assert lab.r1.static_routes()["10.20.0.0/16"] == ["192.0.2.1"]


async def test_junos_commit_confirmed_moves_route_and_shows_pending(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        assert await r1.send("commit confirmed 1") == (
            "configuration check succeeds\n"
            "commit confirmed will be automatically rolled back in 1 minutes unless confirmed\n"
            "commit complete"
        )
        assert await r1.send("exit configuration-mode") == "Exiting configuration mode"
        routes = await r1.send("show route protocol static")
        assert route_lines(routes) == ["*[Static/5]", ">  to 198.51.100.1 via ge-0/0/2.0"]
        latest = (await r1.send("show system commit")).splitlines()[0]
        assert latest.startswith("0   ")
        assert latest.endswith("by netops via cli commit confirmed, rollback in 1mins")
    assert lab.r1.pending_revert()


async def test_junos_unconfirmed_commit_rolls_back_after_its_minutes(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        await r1.send("commit confirmed 1")
        await r1.send("exit configuration-mode")
        await lab.r1.wait_for_revert(within_s=5)
        routes = await r1.send("show route protocol static")
        assert route_lines(routes) == ["*[Static/5]", ">  to 192.0.2.1 via ge-0/0/1.0"]
        latest = (await r1.send("show system commit")).splitlines()[0]
        assert "rollback in" not in latest
    assert lab.r1.static_routes()["10.20.0.0/16"] == ["192.0.2.1"]


async def test_junos_plain_commit_confirms_and_keeps_backup(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        await r1.send("commit confirmed 1")
        await r1.send("exit configuration-mode")
        await r1.send("configure exclusive")
        assert await r1.send("commit") == "commit complete"
        await r1.send("exit configuration-mode")
        assert not lab.r1.pending_revert()
        with pytest.raises(TimeoutError):
            await lab.r1.wait_for_revert(within_s=1.5)
        routes = await r1.send("show route protocol static")
        assert route_lines(routes) == ["*[Static/5]", ">  to 198.51.100.1 via ge-0/0/2.0"]
    assert "next-hop 198.51.100.1;" in lab.r1.saved_config()  # a Junos commit is persistent


async def test_junos_rollback_1_then_commit_undoes_the_change(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        await r1.send("commit confirmed 5")
        assert await r1.send("rollback 1") == "load complete"
        assert await r1.send("commit") == "commit complete"
        await r1.send("exit configuration-mode")
        routes = await r1.send("show route protocol static")
        assert route_lines(routes) == ["*[Static/5]", ">  to 192.0.2.1 via ge-0/0/1.0"]
    assert not lab.r1.pending_revert()


async def test_junos_second_exclusive_session_is_refused_until_the_first_leaves(
    lab: GearLab,
) -> None:
    async with await lab.login() as first, await lab.login() as second:
        await stage_reroute(first)
        assert await second.send("configure exclusive") == (
            "error: configuration database locked by: netops"
        )
        assert second.prompt == "netops@r1> "
        assert await first.send("exit") == ""
        assert first.prompt == "Exit with uncommitted changes? [yes,no] (yes) "
        assert await first.send("yes") == "Exiting configuration mode"
        assert await second.send("configure exclusive") == "Entering configuration mode"
        assert await second.send("show | compare") == ""  # the first one's edits were discarded


async def test_junos_exclusive_is_refused_over_stray_shared_edits(lab: GearLab) -> None:
    async with await lab.login() as r1:
        assert await r1.send("configure") == "Entering configuration mode"
        await r1.send(SET_BACKUP)
        assert await r1.send("exit") == ""
        assert await r1.send("yes") == "Exiting configuration mode"  # edits stay shared
        assert await r1.send("configure exclusive") == (
            "error: shared configuration database modified"
        )
        await r1.send("configure")
        await r1.send("rollback 0")
        await r1.send("exit")
        assert await r1.send("configure exclusive") == "Entering configuration mode"


async def test_junos_dropped_session_releases_the_lock(lab: GearLab) -> None:
    first = await lab.login()
    await stage_reroute(first)
    await first.close()
    async with await lab.login() as second:
        assert await second.send("configure exclusive") == "Entering configuration mode"
        assert await second.send("show | compare") == ""


async def test_junos_error_markers_for_bad_lines(lab: GearLab) -> None:
    async with await lab.login() as r1:
        assert (await r1.send("show rout")).endswith("unknown command.")
        await r1.send("configure exclusive")
        assert (
            await r1.send("set routing-options static route 10.20.0.0/16 nexthop 1.2.3.4")
        ).endswith("syntax error.")
        assert (
            await r1.send("delete routing-options static route 10.99.0.0/16 next-hop 192.0.2.1")
            == "warning: statement not found"
        )


async def test_junos_disabled_interface_makes_its_routes_inactive(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await r1.send("configure exclusive")
        await r1.send("set interfaces ge-0/0/1 disable")
        await r1.send("commit")
        await r1.send("exit")
        assert route_lines(await r1.send("show route protocol static")) == []
    assert not lab.r1.interfaces["ge-0/0/1.0"].admin_up


async def test_junos_filter_based_forwarding_shows_and_can_be_removed(lab: GearLab) -> None:
    attach = [
        "set firewall family inet filter CT-r1-c2 term prio from source-address 10.5.0.0/16",
        "set firewall family inet filter CT-r1-c2 term prio then routing-instance CT-r1-c2",
        "set firewall family inet filter CT-r1-c2 term default then accept",
        "set routing-instances CT-r1-c2 instance-type forwarding",
        "set routing-instances CT-r1-c2 routing-options static route 0.0.0.0/0"
        " next-hop 198.51.100.1",
        "set interfaces ge-0/0/3 unit 0 family inet filter input CT-r1-c2",
    ]
    detach = [
        "delete interfaces ge-0/0/3 unit 0 family inet filter input CT-r1-c2",
        "delete firewall family inet filter CT-r1-c2",
        "delete routing-instances CT-r1-c2",
    ]
    async with await lab.login() as r1:
        await r1.send("configure exclusive")
        assert await r1.type_ahead(attach) == [""] * len(attach)
        assert await r1.send("commit") == "commit complete"
        await r1.send("exit")
        config = (await r1.send("show configuration | display set")).splitlines()
        assert set(attach) <= set(config)
        await r1.send("configure exclusive")
        assert await r1.type_ahead(detach) == [""] * len(detach)
        await r1.send("commit and-quit")
        config = (await r1.send("show configuration | display set")).splitlines()
    assert not [line for line in config if "CT-r1-c2" in line]


async def test_junos_cli_error_fault_rejects_route_statements(lab: GearLab) -> None:
    lab.net.set_fault("r1", Fault.CLI_ERROR)
    async with await lab.login() as r1:
        await r1.send("configure exclusive")
        assert (await r1.send(SET_BACKUP)).endswith("syntax error.")
        assert await r1.send("show | compare") == ""


async def test_junos_session_limit_refuses_the_next_session(lab: GearLab) -> None:
    lab.net.set_fault("r1", Fault.SESSION_LIMIT, max_sessions=1)
    async with await lab.login():
        with pytest.raises(SessionClosed) as refused:
            await lab.login()
        assert refused.value.output.strip() == "error: maximum number of sessions reached"
