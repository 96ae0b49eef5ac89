"""The lab's VRPv8 router as an operator meets it: two-stage commit, commit trial, Y/N questions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from continuity.models import Platform
from lab.gear import Fault
from lab.gear.terminal import LabTerminal, SessionClosed
from tests.lab.conftest import GearLab, gear_lab

PRIMARY = "10.20.0.0/16  Static  60   0   RD  192.0.2.1  GE0/0/1"
BACKUP = "10.20.0.0/16  Static  60   0   RD  198.51.100.1  GE0/0/2"


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[GearLab]:
    async with gear_lab(tmp_path, Platform.HUAWEI_VRP) as lab:
        yield lab


async def routes(r1: LabTerminal) -> list[str]:
    output = await r1.send("display ip routing-table protocol static")
    return [line for line in output.splitlines() if line.startswith("10.20.0.0/16 ")]


async def stage_reroute(r1: LabTerminal) -> None:
    assert await r1.send("system-view") == (
        "Enter system view, return user view with return command."
    )
    assert r1.prompt == "[~r1]"
    assert await r1.send("ip route-static 10.20.0.0 16 198.51.100.1") == ""
    assert r1.prompt == "[*r1]"  # uncommitted changes
    assert await r1.send("undo ip route-static 10.20.0.0 16 192.0.2.1") == ""


async def test_vrp_login_shows_primary_route_active(lab: GearLab) -> None:
    async with await lab.login() as r1:
        assert r1.prompt == "<r1>"
        assert await routes(r1) == [PRIMARY]
        assert await r1.send("display configuration trial status") == "Trial status: none"


async def test_vrp_candidate_changes_nothing_until_committed(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        assert await routes(r1) == [PRIMARY]
    assert lab.r1.static_routes()["10.20.0.0/16"] == ["192.0.2.1"]


async def test_vrp_commit_trial_moves_route_and_keeps_star_prompt(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        assert await r1.send("commit trial 60") == (
            "Info: The system will revert to previous configuration if the trial configuration "
            "is not confirmed in 60 seconds."
        )
        assert r1.prompt == "[*r1]"  # a running trial keeps the star
        assert await routes(r1) == [BACKUP]
        status = await r1.send("display configuration trial status")
        assert status.startswith("Trial status: running, remaining ")
        assert await r1.send("return") == ""  # nothing uncommitted: no question
        assert r1.prompt == "<r1>"
    assert lab.r1.pending_revert()


async def test_vrp_unconfirmed_trial_reverts_after_its_seconds(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        await r1.send("commit trial 60")
        await lab.r1.wait_for_revert(within_s=5)  # 60 device seconds are one real second
        assert await routes(r1) == [PRIMARY]
        assert r1.prompt == "[~r1]"
        assert await r1.send("display configuration trial status") == "Trial status: none"


async def test_vrp_commit_confirms_the_trial(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        await r1.send("commit trial 60")
        assert await r1.send("commit") == ""
        assert r1.prompt == "[~r1]"
        assert not lab.r1.pending_revert()
        with pytest.raises(TimeoutError):
            await lab.r1.wait_for_revert(within_s=1.5)
        assert await routes(r1) == [BACKUP]


async def test_vrp_abort_trial_asks_then_reverts_at_once(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        await r1.send("commit trial 600")
        await r1.send("return")
        assert await r1.send("abort trial") == ""
        assert r1.prompt == "Warning: The system will abort the trial. Continue? [Y/N]:"
        assert await r1.send("Y") == "Info: Succeeded in aborting the trial configuration."
        assert r1.prompt == "<r1>"
        assert await routes(r1) == [PRIMARY]
    assert not lab.r1.pending_revert()


async def test_vrp_return_with_uncommitted_changes_asks_and_n_discards(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        assert await r1.send("return") == ""
        assert r1.prompt == (
            "Warning: Uncommitted configurations found. Are you sure to commit them before "
            "exiting? [Y(yes)/N(no)/C(cancel)]:"
        )
        assert await r1.send("N") == ""
        assert r1.prompt == "<r1>"
        assert await r1.send("system-view") != ""
        assert r1.prompt == "[~r1]"  # the candidate was thrown away
        assert await routes(r1) == [PRIMARY]


async def test_vrp_save_asks_then_persists_the_running_config(lab: GearLab) -> None:
    async with await lab.login() as r1:
        await stage_reroute(r1)
        await r1.send("commit")
        await r1.send("return")
        assert await r1.send("save") == ""
        assert r1.prompt == (
            "Warning: The current configuration will be written to the device. Continue? [Y/N]:"
        )
        assert await r1.send("Y") == "Info: Save the configuration successfully."
    assert "ip route-static 10.20.0.0 255.255.0.0 198.51.100.1" in lab.r1.saved_config()


async def test_vrp_error_markers_for_bad_lines(lab: GearLab) -> None:
    async with await lab.login() as r1:
        assert await r1.send("dispaly version") == (
            "    ^\nError: Unrecognized command found at '^' position."
        )
        await r1.send("system-view")
        assert await r1.send("undo ip route-static 10.99.0.0 16 192.0.2.1") == (
            "Error: The route does not exist."
        )
        assert r1.prompt == "[~r1]"


async def test_vrp_interface_shutdown_makes_its_routes_inactive_once_committed(
    lab: GearLab,
) -> None:
    async with await lab.login() as r1:
        await r1.send("system-view")
        assert await r1.send("interface GE0/0/1") == ""
        assert r1.prompt == "[~r1-GE0/0/1]"
        await r1.send("shutdown")
        assert r1.prompt == "[*r1-GE0/0/1]"
        assert await routes(r1) == [PRIMARY]
        await r1.send("commit")
        assert await routes(r1) == []
    assert not lab.r1.interfaces["GE0/0/1"].admin_up


async def test_vrp_traffic_policy_shows_and_can_be_removed(lab: GearLab) -> None:
    attach = [
        "system-view",
        "acl number 3001",
        "rule 5 permit ip source 10.5.0.0 0.0.255.255",
        "quit",
        "traffic classifier CT-r1-c2",
        "if-match acl 3001",
        "quit",
        "traffic behavior CT-r1-c2",
        "redirect ip-nexthop 198.51.100.1",
        "quit",
        "traffic policy CT-r1-c2",
        "classifier CT-r1-c2 behavior CT-r1-c2",
        "quit",
        "interface GE0/0/3",
        "traffic-policy CT-r1-c2 inbound",
        "quit",
        "commit",
    ]
    detach = [
        "interface GE0/0/3",
        "undo traffic-policy CT-r1-c2 inbound",
        "quit",
        "undo traffic policy CT-r1-c2",
        "undo traffic behavior CT-r1-c2",
        "undo traffic classifier CT-r1-c2",
        "undo acl number 3001",
        "commit",
    ]
    async with await lab.login() as r1:
        answers = await r1.type_ahead(attach)
        assert [a for a in answers[1:] if a] == []
        config = (await r1.send("display current-configuration")).splitlines()
        assert config[config.index("interface GE0/0/3") + 3] == " traffic-policy CT-r1-c2 inbound"
        assert config[config.index("traffic behavior CT-r1-c2") + 1] == (
            " redirect ip-nexthop 198.51.100.1"
        )
        assert " rule 5 permit ip source 10.5.0.0 0.0.255.255" in config
        assert [a for a in await r1.type_ahead(detach) if a] == []
        after = await r1.send("display current-configuration")
    assert "CT-r1-c2" not in after and "acl number 3001" not in after


async def test_vrp_cli_error_fault_rejects_route_lines(lab: GearLab) -> None:
    lab.net.set_fault("r1", Fault.CLI_ERROR, on="route-static")
    async with await lab.login() as r1:
        await r1.send("system-view")
        answer = await r1.send("ip route-static 10.20.0.0 16 198.51.100.1")
        assert answer.endswith("Error: Unrecognized command found at '^' position.")
        assert r1.prompt == "[~r1]"


async def test_vrp_session_limit_refuses_the_next_session(lab: GearLab) -> None:
    lab.net.set_fault("r1", Fault.SESSION_LIMIT, max_sessions=1)
    async with await lab.login():
        with pytest.raises(SessionClosed) as refused:
            await lab.login()
        assert refused.value.output.strip() == (
            "Error: The number of users has reached the upper limit."
        )
