"""The lab's SSH server as clients meet it: listeners, host keys, logins and injected faults."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from continuity.models import Inventory
from lab.gear import Fault, LabNetwork, LabServer, serve
from lab.gear.network import generate_inventory
from lab.gear.terminal import LabTerminal, NoPrompt

PRIMARY_ROUTE = "S        10.20.0.0/16 [1/0] via 192.0.2.1"


class Lab:
    """Four routers, r1..r4: IOS-XE, Junos, VRP and FRR."""

    def __init__(self, net: LabNetwork, server: LabServer) -> None:
        self.net = net
        self.server = server

    def port(self, device: str) -> int:
        return self.server.inventory().device(device).port

    async def login(self, device: str = "r1", **kwargs: object) -> LabTerminal:
        return await LabTerminal.open(
            self.port(device),
            known_hosts=self.server.known_hosts_path,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    net = LabNetwork.from_inventory(generate_inventory(4), time_scale=60)
    server = LabServer(net, tmp_path)
    await server.start()
    try:
        yield Lab(net, server)
    finally:
        await server.stop()


def known_keys(server: LabServer) -> dict[str, str]:
    """device -> the host key known_hosts pins for it."""
    by_port = {d.port: d.name for d in server.inventory().devices}
    keys = {}
    for line in server.known_hosts_path.read_text().splitlines():
        host, algorithm, key = line.split()
        assert host.startswith("[127.0.0.1]:") and algorithm == "ssh-ed25519"
        keys[by_port[int(host.rsplit(":", 1)[1])]] = key
    return keys


async def test_server_known_hosts_pins_every_device_on_its_port(lab: Lab) -> None:
    inventory = lab.server.inventory()
    assert sorted(known_keys(lab.server)) == ["r1", "r2", "r3", "r4"]
    assert len({d.port for d in inventory.devices}) == 4
    assert {d.host for d in inventory.devices} == {"127.0.0.1"}
    async with await lab.login("r4") as r4:
        assert r4.prompt == "r4#"


async def test_server_host_keys_survive_a_restart_with_the_same_data_dir(tmp_path: Path) -> None:
    inventory = generate_inventory(2)
    first = LabServer(LabNetwork.from_inventory(inventory), tmp_path)
    await first.start()
    before = known_keys(first)
    await first.stop()
    second = LabServer(LabNetwork.from_inventory(inventory), tmp_path)
    await second.start()
    try:
        assert known_keys(second) == before
        port = second.inventory().device("r1").port
        async with await LabTerminal.open(port, known_hosts=second.known_hosts_path) as r1:
            assert r1.prompt == "r1#"
    finally:
        await second.stop()


async def test_server_refuses_an_unknown_user_and_a_wrong_password(lab: Lab) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await lab.login(username="admin")
    with pytest.raises(asyncssh.PermissionDenied):
        await lab.login(password="guess")


async def test_server_accepts_an_allowed_public_key_only(tmp_path: Path) -> None:
    allowed = asyncssh.generate_private_key("ssh-ed25519")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    net = LabNetwork.from_inventory(generate_inventory(1))
    server = LabServer(net, tmp_path, client_public_keys=[allowed.export_public_key().decode()])
    await server.start()
    try:
        port = server.inventory().device("r1").port
        async with await LabTerminal.open(
            port, known_hosts=server.known_hosts_path, password=None, client_keys=[allowed]
        ) as r1:
            assert await r1.send("show ip route static") == PRIMARY_ROUTE
        with pytest.raises(asyncssh.PermissionDenied):
            await LabTerminal.open(
                port, known_hosts=server.known_hosts_path, password=None, client_keys=[stranger]
            )
    finally:
        await server.stop()


async def test_server_unreachable_device_refuses_connections_until_cleared(lab: Lab) -> None:
    lab.net.set_fault("r2", Fault.UNREACHABLE)
    with pytest.raises(ConnectionRefusedError):
        await lab.login("r2")
    async with await lab.login("r1") as r1:  # the others still answer
        assert r1.prompt == "r1#"
    lab.net.set_fault("r2", None)
    async with await lab.login("r2") as r2:  # same port, same key, at once
        assert r2.prompt == "netops@r2> "


async def test_server_unreachable_toggled_quickly_ends_in_the_last_state(lab: Lab) -> None:
    for fault in (Fault.UNREACHABLE, None, Fault.UNREACHABLE, None, Fault.UNREACHABLE):
        lab.net.set_fault("r4", fault)
    with pytest.raises(ConnectionRefusedError):
        await lab.login("r4")
    lab.net.set_fault("r4", None)
    async with await lab.login("r4") as r4:
        assert r4.prompt == "r4#"


async def test_server_auth_failure_fault_refuses_the_right_password(lab: Lab) -> None:
    lab.net.set_fault("r3", Fault.AUTH_FAILURE)
    with pytest.raises(asyncssh.PermissionDenied):
        await lab.login("r3")
    lab.net.set_fault("r3", None)
    async with await lab.login("r3") as r3:
        assert r3.prompt == "<r3>"


async def test_server_host_key_change_is_caught_by_known_hosts(lab: Lab) -> None:
    lab.net.set_fault("r1", Fault.HOST_KEY_CHANGE)
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await lab.login("r1")
    lab.net.set_fault("r1", None)
    async with await lab.login("r1") as r1:
        assert r1.prompt == "r1#"


async def test_server_hang_fault_goes_silent_after_a_config_line(lab: Lab) -> None:
    lab.net.set_fault("r1", Fault.HANG)
    async with await lab.login("r1") as r1:
        assert await r1.send("show ip route static") == PRIMARY_ROUTE
        await r1.send("configure terminal")
        with pytest.raises(NoPrompt) as hung:
            await r1.send("ip route 10.20.0.0 255.255.0.0 198.51.100.1", wait_s=0.5)
        assert hung.value.output == "ip route 10.20.0.0 255.255.0.0 198.51.100.1\n"  # echo only
        with pytest.raises(NoPrompt):
            await r1.send("end", wait_s=0.3)
    assert lab.net.devices["r1"].static_routes()["10.20.0.0/16"] == ["192.0.2.1"]


async def test_server_hang_fault_on_a_pattern_hangs_on_that_line(lab: Lab) -> None:
    lab.net.set_fault("r4", Fault.HANG, on=r"^write")
    async with await lab.login("r4") as r4:
        await r4.send("terminal length 0")
        with pytest.raises(NoPrompt):
            await r4.send("write memory", wait_s=0.5)


async def test_server_slow_fault_delays_every_answer(lab: Lab) -> None:
    lab.net.set_fault("r1", Fault.SLOW, delay_s=0.5)
    loop = asyncio.get_running_loop()
    async with await lab.login("r1") as r1:
        started = loop.time()
        assert await r1.send("show ip route static") == PRIMARY_ROUTE
        assert loop.time() - started >= 0.5
        lab.net.set_fault("r1", None)
        started = loop.time()
        await r1.send("show ip route static")
        assert loop.time() - started < 0.5


async def test_server_lines_split_across_packets_and_crlf_are_one_line_each(lab: Lab) -> None:
    async with await lab.login("r1") as r1:
        r1.write("show ip ro")
        r1.write("ute static\r")
        assert await r1.read_answer() == PRIMARY_ROUTE
        r1.write("\nterminal length 0\r\n")  # the LF completes the CR: no empty line
        assert await r1.read_answer() == ""
        assert r1.prompt == "r1#"


async def test_server_answers_typed_ahead_lines_in_order(lab: Lab) -> None:
    async with await lab.login("r2") as r2:
        answers = await r2.type_ahead(
            ["set cli screen-length 0", "set cli screen-width 511", "show system commit"]
        )
        assert answers[:2] == ["Screen length set to 0", "Screen width set to 511"]
        assert answers[2].startswith("0   ")


async def test_server_runs_a_single_command_exec_request(lab: Lab) -> None:
    async with asyncssh.connect(
        "127.0.0.1",
        lab.port("r1"),
        username="netops",
        password="lab-secret",
        known_hosts=str(lab.server.known_hosts_path),
        client_keys=None,
        agent_path=None,
        config=None,
    ) as conn:
        result = await conn.run("show ip route static")
    assert str(result.stdout).splitlines()[0] == PRIMARY_ROUTE


async def test_server_uses_the_inventory_port_or_a_free_one_when_taken(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        wanted = probe.getsockname()[1]
    inventory = generate_inventory(1, port=wanted)
    server = LabServer(LabNetwork.from_inventory(inventory), tmp_path)
    await server.start()
    try:
        assert server.inventory().device("r1").port == wanted
    finally:
        await server.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", wanted))
        squatter.listen()
        server = LabServer(LabNetwork.from_inventory(inventory), tmp_path)
        await server.start()
        try:
            port = server.inventory().device("r1").port
            assert port != wanted
            async with await LabTerminal.open(port, known_hosts=server.known_hosts_path) as r1:
                assert r1.prompt == "r1#"
        finally:
            await server.stop()


async def test_server_serves_200_devices_from_one_process(tmp_path: Path) -> None:
    net = LabNetwork.from_inventory(generate_inventory(200, circuits_per_device=2))
    server = LabServer(net, tmp_path)
    await server.start()
    try:
        inventory = server.inventory()
        assert len({d.port for d in inventory.devices}) == 200
        assert len(known_keys(server)) == 200

        async def routes_of(name: str) -> str:
            device = inventory.device(name)
            async with await LabTerminal.open(
                device.port, known_hosts=server.known_hosts_path
            ) as term:
                if device.platform == "huawei_vrp":
                    return await term.send("display ip routing-table protocol static")
                if device.platform == "juniper_junos":
                    return await term.send("show route protocol static")
                return await term.send("show ip route static")

        sample = [f"r{i}" for i in range(1, 201, 12)]
        outputs = await asyncio.gather(*(routes_of(name) for name in sample))
        assert all("10.21.0.0/16" in out and "192.0.2.1" in out for out in outputs)
    finally:
        await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await LabTerminal.open(inventory.device("r1").port, known_hosts=server.known_hosts_path)


async def test_serve_runs_until_cancelled(tmp_path: Path) -> None:
    inventory_path = tmp_path / "inventory.json"
    inventory_path.write_text(generate_inventory(2).model_dump_json())
    data_dir = tmp_path / "lab"
    task = asyncio.create_task(serve(inventory_path, data_dir, time_scale=60))
    served = data_dir / "inventory.json"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not served.exists():  # serve() writes it once every listener is up
        assert not task.done(), task
        assert loop.time() < deadline, "lab did not come up"
        await asyncio.sleep(0.02)
    port = Inventory.model_validate_json(served.read_text()).device("r2").port
    async with await LabTerminal.open(port, known_hosts=data_dir / "known_hosts") as r2:
        assert r2.prompt == "netops@r2> "
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with pytest.raises(ConnectionRefusedError):
        await LabTerminal.open(port, known_hosts=data_dir / "known_hosts")


def test_server_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LabServer(LabNetwork.from_inventory(generate_inventory(1)), tmp_path, host="0.0.0.0")
