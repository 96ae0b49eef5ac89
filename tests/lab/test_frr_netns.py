"""The FRR netns lab: real routers, real sshd with vtysh, real forwarding between namespaces."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh
import pytest

from lab.frr_netns import CIRCUIT_ID, HOSTS, ROUTERS, FrrLab, frr_lab_available

pytestmark = pytest.mark.netns

_PROMPT = re.compile(r"(?:^|\n)([A-Za-z0-9_.-]+)(?:\([\w-]+\))?# ?$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_READ_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def _frr_usable() -> None:
    reason = frr_lab_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture
async def lab(_frr_usable: None, tmp_path: Path) -> AsyncIterator[FrrLab]:
    async with FrrLab(tmp_path) as running:
        yield running


class _Vty:
    """A vtysh session over real SSH, driven by prompts as the orchestrator's dialect does."""

    def __init__(self, process: asyncssh.SSHClientProcess[str]) -> None:
        self._process = process
        self.banner = ""

    async def read_prompt(self) -> str:
        buffer = ""
        while not _PROMPT.search(_ANSI.sub("", buffer).replace("\r", "")):
            chunk = await asyncio.wait_for(self._process.stdout.read(4096), _READ_TIMEOUT_S)
            if not chunk:
                raise AssertionError(f"session closed before a prompt; got {buffer!r}")
            buffer += chunk
        return _ANSI.sub("", buffer).replace("\r", "")

    async def send(self, line: str) -> str:
        self._process.stdin.write(line + "\n")
        return await self.read_prompt()


@asynccontextmanager
async def _vtysh_over_ssh(lab: FrrLab, router: str, **auth: object) -> AsyncIterator[_Vty]:
    device = lab.inventory.device(router)
    if not auth:
        assert lab.credential.password is not None
        auth = {"password": lab.credential.password.get_secret_value(), "client_keys": None}
    async with asyncssh.connect(
        device.host,
        port=device.port,
        known_hosts=str(lab.known_hosts_path),
        username=lab.credential.username,
        agent_path=None,
        connect_timeout=10,
        **auth,
    ) as conn:
        process = await conn.create_process(term_type="vt100", term_size=(200, 50))
        vty = _Vty(process)
        vty.banner = await vty.read_prompt()
        yield vty
        process.stdin.write("exit\n")


def _wait_for_route(lab: FrrLab, router: str, prefix: str, next_hop: str) -> None:
    """Route changes land asynchronously: poll the router's RIB with a deadline."""
    deadline = time.monotonic() + 5
    pattern = re.compile(rf"^S>\* {re.escape(prefix)} .*via {re.escape(next_hop)},", re.M)
    while not pattern.search(output := lab.vtysh(router, "show ip route static")):
        if time.monotonic() > deadline:
            raise AssertionError(f"{router}: {prefix} never went via {next_hop}:\n{output}")
        time.sleep(0.05)


async def test_frr_lab_start_host_a_reaches_host_b_over_primary_link(lab: FrrLab) -> None:
    host_b = lab.host_address("host-b")

    assert lab.ping("host-a", host_b)
    assert lab.via("host-a", host_b) == ["r1", "r2"]
    for router in ROUTERS:
        assert f"hostname {router}\n" in lab.vtysh(router, "show running-config")


async def test_frr_lab_inventory_describes_the_running_routers(lab: FrrLab) -> None:
    inventory = lab.inventory
    (circuit,) = inventory.circuits
    paths = {p.device: p for p in circuit.paths}

    assert circuit.id == CIRCUIT_ID and circuit.restoration_level == 1
    assert sorted(d.name for d in inventory.devices) == list(ROUTERS)
    for router, path in paths.items():
        assert f"ip route {path.prefix} {path.primary.address}\n" in lab.saved_config(router)
        assert path.backup.address != path.primary.address
    for device in inventory.devices:
        assert device.host in lab.known_hosts_path.read_text()


async def test_frr_lab_ssh_login_lands_at_router_prompt_with_password_or_key(
    lab: FrrLab,
) -> None:
    for router in ROUTERS:
        async with _vtysh_over_ssh(lab, router) as vty:
            assert vty.banner.rstrip().endswith(f"{router}#")
            assert "Failed" not in vty.banner
    key = {"client_keys": [str(lab.client_key_path)], "password": None}
    async with _vtysh_over_ssh(lab, "r3", **key) as vty:
        assert "hostname r3" in await vty.send("show running-config")


async def test_frr_lab_unknown_host_key_is_refused(lab: FrrLab, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    assert lab.credential.password is not None

    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await asyncssh.connect(
            lab.inventory.device("r1").host,
            known_hosts=str(empty),
            username=lab.credential.username,
            password=lab.credential.password.get_secret_value(),
            client_keys=None,
            agent_path=None,
        )


async def test_frr_lab_primary_cut_then_reroute_over_ssh_restores_traffic_via_r3(
    lab: FrrLab,
) -> None:
    host_b = lab.host_address("host-b")
    (circuit,) = lab.inventory.circuits
    assert lab.ping("host-a", host_b)

    lab.cut_link("r1", "r2")
    assert not lab.ping("host-a", host_b, count=1, timeout_s=1)

    for path in circuit.paths:
        async with _vtysh_over_ssh(lab, path.device) as vty:
            answers = [
                await vty.send("configure terminal"),
                await vty.send(f"ip route {path.prefix} {path.backup.address}"),
                await vty.send(f"no ip route {path.prefix} {path.primary.address}"),
                await vty.send("end"),
            ]
            saved = await vty.send("write memory")
        assert not [a for a in answers if "%" in a], answers
        assert "[OK]" in saved
        _wait_for_route(lab, path.device, path.prefix, path.backup.address)

    assert lab.ping("host-a", host_b)
    assert lab.via("host-a", host_b) == ["r1", "r3", "r2"]
    for path in circuit.paths:
        config = lab.saved_config(path.device)
        assert f"ip route {path.prefix} {path.backup.address}\n" in config
        assert f"ip route {path.prefix} {path.primary.address}\n" not in config


async def test_frr_lab_stop_leaves_no_namespaces_links_or_processes(
    _frr_usable: None, tmp_path: Path
) -> None:
    lab = FrrLab(tmp_path)
    async with lab:
        namespaces = [lab.netns(node) for node in (*ROUTERS, *HOSTS)]
        pids = [int(p) for ns in namespaces for p in _ip("netns", "pids", ns).split()]
        assert len(pids) >= 3 * 5  # per router: anchor, watchfrr, zebra, staticd, sshd
    await lab.__aexit__(None, None, None)  # a second teardown is harmless

    assert lab.tag not in _ip("netns", "list")
    assert lab.tag not in _ip("-br", "link")
    assert [pid for pid in pids if _running(pid)] == []


async def test_frr_lab_start_failure_cleans_up_what_was_built(
    _frr_usable: None, tmp_path: Path
) -> None:
    lab = FrrLab(tmp_path)
    # A file where r2's folder must go fails the build after namespaces and links exist.
    (tmp_path / lab.tag).mkdir()
    (tmp_path / lab.tag / "r2").write_text("in the way")

    with pytest.raises(FileExistsError):
        await lab.__aenter__()

    assert lab.tag not in _ip("netns", "list")
    assert lab.tag not in _ip("-br", "link")


def _running(pid: int) -> bool:
    """Zombies do not count: the daemons' adopter (pid 1 here) reaps them, not the lab."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout
