"""SessionPool and SessionLimits against the simulated lab over real SSH on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from continuity.dialects import dialect_for
from continuity.errors import DeviceUnreachable, SessionLost
from continuity.models import Device
from continuity.settings import DeviceCredential
from continuity.ssh import CliSession, SessionLimits, SessionPool, Transcript, open_cli
from lab.gear import Fault, LabNetwork, LabServer
from lab.gear.network import generate_inventory

USERNAME, PASSWORD = "netops", "lab-secret"
COMMAND_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 3.0
# generate_inventory cycles IOS-XE, Junos, VRP, FRR: r4 is FRR, whose vtysh greets at login.
FRR = "r4"
FRR_GREETING = "Hello, this is FRRouting"
DEVICES = 6


class _Oops(Exception):
    pass


@dataclass
class PoolLab:
    net: LabNetwork
    server: LabServer
    credential: DeviceCredential
    pools: list[SessionPool] = field(default_factory=list)

    def device(self, name: str) -> Device:
        return self.server.inventory().device(name)

    def pool(self, *, idle_s: float = 60.0, max_idle: int = 16, **limits: Any) -> SessionPool:
        limits.setdefault("max_sessions", 10)
        pool = SessionPool(SessionLimits(**limits), idle_s=idle_s, max_idle=max_idle)
        self.pools.append(pool)
        return pool

    def use(
        self,
        pool: SessionPool,
        name: str,
        *,
        transcript: Transcript | None = None,
        device: Device | None = None,
    ) -> AbstractAsyncContextManager[CliSession]:
        device = device or self.device(name)
        return pool.session(
            device,
            credential=self.credential,
            known_hosts=self.server.known_hosts_path,
            dialect=dialect_for(device.platform),
            connect_timeout_s=CONNECT_TIMEOUT_S,
            command_timeout_s=COMMAND_TIMEOUT_S,
            transcript=transcript,
        )

    def sessions(self, name: str) -> set[object]:
        """The device's open vty sessions, as the lab sees them: one per SSH session of ours."""
        return set(self.net.devices[name].sessions)

    def only_session(self, name: str) -> object:
        (only,) = self.sessions(name)
        return only


@pytest_asyncio.fixture
async def lab(tmp_path: Path) -> AsyncIterator[PoolLab]:
    net = LabNetwork.from_inventory(generate_inventory(DEVICES))
    server = LabServer(net, tmp_path / "lab", username=USERNAME, password=PASSWORD)
    await server.start()
    lab = PoolLab(net, server, DeviceCredential(username=USERNAME, password=PASSWORD))
    try:
        yield lab
    finally:
        for pool in lab.pools:
            await pool.close()
        await server.stop()


async def eventually(check: Callable[[], bool], within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# --- reuse -------------------------------------------------------------------------------


async def test_pool_two_uses_share_one_ssh_session(lab: PoolLab) -> None:
    pool = lab.pool()
    async with lab.use(pool, FRR) as cli:
        first = lab.only_session(FRR)
        assert not (await cli.send("show ip route static")).failed
    assert lab.sessions(FRR) == {first} and pool.idle == 1  # kept open between uses

    async with lab.use(pool, FRR) as cli:
        assert lab.only_session(FRR) is first
        assert not (await cli.send("show ip route static")).failed


async def test_pool_use_ending_in_exception_closes_session_next_use_opens_new(
    lab: PoolLab,
) -> None:
    pool = lab.pool()
    with pytest.raises(_Oops):
        async with lab.use(pool, FRR) as cli:
            await cli.send("show ip route static")
            first = lab.only_session(FRR)
            raise _Oops
    assert pool.idle == 0
    assert await eventually(lambda: not lab.sessions(FRR))

    async with lab.use(pool, FRR) as cli:
        assert lab.only_session(FRR) is not first
        assert "reused" not in cli.transcript


async def test_pool_use_left_in_config_mode_not_reused(lab: PoolLab) -> None:
    pool = lab.pool()
    async with lab.use(pool, FRR) as cli:
        await cli.send("configure terminal")
        first = lab.only_session(FRR)
    assert await eventually(lambda: not lab.sessions(FRR))

    async with lab.use(pool, FRR) as cli:
        assert lab.only_session(FRR) is not first
        assert cli.dialect.is_prompt("r4# ") and not (await cli.send("show ip route")).failed


async def test_pool_session_dropped_by_device_restart_next_use_opens_new(lab: PoolLab) -> None:
    pool = lab.pool()
    async with lab.use(pool, FRR) as cli:
        await cli.send("show ip route static")
        first = lab.only_session(FRR)
    # Restart every listener on the same ports and keys: the devices drop all sessions.
    lab.net.inventory = lab.server.inventory()
    await lab.server.stop()
    await lab.server.start()
    await asyncio.sleep(0.3)  # the disconnect reaches the client

    record = Transcript()
    async with lab.use(pool, FRR, transcript=record) as cli:
        assert not (await cli.send("show ip route static")).failed
        assert lab.only_session(FRR) is not first
    assert "closed by the device; opening a new one" in record.text
    assert FRR_GREETING in record.text


async def test_pool_session_ended_by_device_mid_use_not_reused(lab: PoolLab) -> None:
    pool = lab.pool()
    async with lab.use(pool, FRR) as cli:
        with pytest.raises(SessionLost):
            await cli.send("exit")
    assert pool.idle == 0

    async with lab.use(pool, FRR) as cli:
        assert not (await cli.send("show ip route static")).failed


async def test_pool_unreachable_then_cleared_device_gets_fresh_session(lab: PoolLab) -> None:
    pool = lab.pool()
    with pytest.raises(_Oops):
        async with lab.use(pool, FRR):
            raise _Oops
    lab.net.set_fault(FRR, Fault.UNREACHABLE)
    with pytest.raises(DeviceUnreachable):
        async with lab.use(pool, FRR):
            pass
    lab.net.set_fault(FRR, None)

    async with lab.use(pool, FRR) as cli:
        assert not (await cli.send("show ip route static")).failed
        assert len(lab.sessions(FRR)) == 1


async def test_pool_other_host_key_source_opens_new_session_and_closes_old(lab: PoolLab) -> None:
    pool = lab.pool()
    async with lab.use(pool, FRR):
        first = lab.only_session(FRR)
    device = lab.device(FRR)
    port = f":{device.port} "
    line = next(x for x in lab.server.known_hosts_path.read_text().splitlines() if port in x)
    pinned = device.model_copy(update={"host_key": line.split(" ", 1)[1]})

    record = Transcript()
    async with lab.use(pool, FRR, device=pinned, transcript=record):
        assert await eventually(lambda: len(lab.sessions(FRR)) == 1)
        assert lab.only_session(FRR) is not first
    assert "opened with other settings" in record.text and "reused" not in record.text


# --- idle sessions -----------------------------------------------------------------------


async def test_pool_idle_session_closed_after_idle_s(lab: PoolLab) -> None:
    pool = lab.pool(idle_s=0.3)
    async with lab.use(pool, FRR):
        first = lab.only_session(FRR)
    assert lab.sessions(FRR) == {first}
    assert await eventually(lambda: not lab.sessions(FRR), within_s=2)
    assert pool.idle == 0

    async with lab.use(pool, FRR) as cli:
        assert lab.only_session(FRR) is not first
        assert FRR_GREETING in cli.transcript


async def test_pool_beyond_max_idle_closes_least_recently_used(lab: PoolLab) -> None:
    pool = lab.pool(max_idle=2)
    kept: dict[str, object] = {}
    for name in ("r1", "r2", "r3"):
        async with lab.use(pool, name):
            kept[name] = lab.only_session(name)
    assert await eventually(lambda: not lab.sessions("r1"))
    assert pool.idle == 2
    assert lab.sessions("r2") == {kept["r2"]} and lab.sessions("r3") == {kept["r3"]}

    async with lab.use(pool, "r2"):
        assert lab.only_session("r2") is kept["r2"]


async def test_pool_discard_closes_that_device_only(lab: PoolLab) -> None:
    pool = lab.pool()
    for name in ("r1", FRR):
        async with lab.use(pool, name):
            pass
    pool.discard(FRR)
    assert await eventually(lambda: not lab.sessions(FRR))
    assert len(lab.sessions("r1")) == 1 and pool.idle == 1


async def test_pool_close_closes_every_session_and_refuses_new_uses(lab: PoolLab) -> None:
    pool = lab.pool()
    for name in ("r1", "r2", FRR):
        async with lab.use(pool, name):
            pass
    await pool.close()
    assert await eventually(lambda: not any(lab.sessions(n) for n in ("r1", "r2", FRR)))
    with pytest.raises(SessionLost):
        async with lab.use(pool, FRR):
            pass


# --- limits ------------------------------------------------------------------------------


async def test_pool_two_concurrent_uses_of_one_device_run_one_after_the_other(
    lab: PoolLab,
) -> None:
    pool = lab.pool()
    spans: list[tuple[float, float]] = []
    seen: list[object] = []

    async def use() -> None:
        async with lab.use(pool, FRR) as cli:
            started = time.monotonic()
            seen.append(lab.only_session(FRR))
            await cli.send("show ip route static")
            await asyncio.sleep(0.1)
            spans.append((started, time.monotonic()))

    await asyncio.gather(use(), use())
    (a_start, a_end), (b_start, b_end) = sorted(spans)
    assert a_end <= b_start
    assert seen[0] is seen[1]  # the second waited for the first's session instead of a new one


async def test_pool_waiter_for_busy_device_holds_no_global_slot(lab: PoolLab) -> None:
    pool = lab.pool(max_sessions=2)
    release = asyncio.Event()

    async def hold(name: str) -> None:
        async with lab.use(pool, name):
            await release.wait()

    holder = asyncio.create_task(hold("r1"))
    assert await eventually(lambda: len(lab.sessions("r1")) == 1)
    waiter = asyncio.create_task(hold("r1"))  # waits for r1, not for a global slot
    await asyncio.sleep(0.05)
    try:
        async with asyncio.timeout(3):
            async with lab.use(pool, "r2") as cli:
                assert not (await cli.send(cli.dialect.route_command)).failed
        assert not holder.done() and not waiter.done()
    finally:
        release.set()
        await asyncio.gather(holder, waiter)


async def test_pool_concurrent_handshakes_capped(lab: PoolLab) -> None:
    delay_s = 0.1
    for name in lab.net.devices:
        lab.net.set_fault(name, Fault.SLOW, delay_s=delay_s)  # a slow login: setups overlap
    pool = lab.pool(max_handshakes=2)
    entered = 0
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            logging_in = sum(len(d.sessions) for d in lab.net.devices.values()) - entered
            peak = max(peak, logging_in)
            await asyncio.sleep(0.005)

    async def use(name: str) -> None:
        nonlocal entered
        async with lab.use(pool, name):
            entered += 1
            await done.wait()  # keep every session open, so the lab count only grows

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    users = [asyncio.create_task(use(n)) for n in lab.net.devices]
    assert await eventually(lambda: entered == DEVICES, within_s=10)
    elapsed = time.monotonic() - started
    done.set()
    await asyncio.gather(watcher, *users)

    assert peak == 2
    # Each login takes >= 2 slow answers (greeting + paging off): 3 waves of 2.
    assert elapsed >= 3 * 2 * delay_s * 0.9


async def test_pool_new_connections_rate_limited_when_set(lab: PoolLab) -> None:
    pool = lab.pool(new_connections_per_s=10)
    names = ["r1", "r2", "r3", FRR]
    started = time.monotonic()

    async def use(name: str) -> None:
        async with lab.use(pool, name):
            pass

    await asyncio.gather(*(use(n) for n in names))
    assert time.monotonic() - started >= (len(names) - 1) / 10 * 0.9

    started = time.monotonic()
    await asyncio.gather(*(use(n) for n in names))  # reused: no new connections, no pacing
    assert time.monotonic() - started < 0.2


async def test_session_limits_one_session_per_device_at_a_time() -> None:
    limits = SessionLimits(max_sessions=10, max_per_device=1)
    inside: dict[str, int] = {"r1": 0, "r2": 0}
    peak: dict[str, int] = {"r1": 0, "r2": 0}

    async def use(device: str) -> None:
        async with limits.slot(device):
            inside[device] += 1
            peak[device] = max(peak[device], inside[device])
            await asyncio.sleep(0.01)
            inside[device] -= 1

    await asyncio.gather(*(use(d) for d in ["r1", "r1", "r1", "r2", "r2"]))
    assert peak == {"r1": 1, "r2": 1}


async def test_session_limits_pace_new_connections() -> None:
    limits = SessionLimits(max_sessions=10, max_per_device=5, new_connections_per_s=20)
    started = time.monotonic()

    async def connect(device: str) -> None:
        async with limits.slot(device), limits.handshake():
            pass

    await asyncio.gather(*(connect(f"r{i}") for i in range(5)))
    assert time.monotonic() - started >= 4 / 20 * 0.9


async def test_session_limits_cap_concurrent_handshakes() -> None:
    limits = SessionLimits(max_sessions=50, max_handshakes=3)
    inside = peak = 0

    async def connect(device: str) -> None:
        nonlocal inside, peak
        async with limits.slot(device), limits.handshake():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(connect(f"r{i}") for i in range(20)))
    assert peak == 3


# --- transcripts -------------------------------------------------------------------------


async def test_pool_transcripts_per_use_hold_only_that_use_without_password(
    lab: PoolLab,
) -> None:
    pool = lab.pool()
    first, second = Transcript(), Transcript()  # no secrets given: the pool adds the password
    async with lab.use(pool, FRR, transcript=first) as cli:
        await cli.send("show ip route static")
        await cli.send(f"show {PASSWORD}")  # echoed back by the device
    async with lab.use(pool, FRR, transcript=second) as cli:
        await cli.send("show running-config")
        assert cli.sent == ["show running-config"]

    assert FRR_GREETING in first.text and "reused" not in first.text
    assert "show running-config" not in first.text
    assert "session reused (opened " in second.text
    assert FRR_GREETING not in second.text and "show ip route static" not in second.text
    assert "show running-config" in second.text
    for record in (first, second):
        assert PASSWORD not in record.text
    assert "show ********" in first.text


async def test_pool_handle_used_after_its_use_refused(lab: PoolLab) -> None:
    pool = lab.pool()
    async with lab.use(pool, FRR) as stale:
        pass
    async with lab.use(pool, FRR, transcript=Transcript()) as cli:
        with pytest.raises(SessionLost):
            await stale.send("show ip route static")
        assert "show ip route static" not in cli.transcript


async def test_open_cli_session_closed_on_exit(lab: PoolLab) -> None:
    device = lab.device(FRR)
    async with open_cli(
        device,
        credential=lab.credential,
        known_hosts=lab.server.known_hosts_path,
        dialect=dialect_for(device.platform),
        limits=SessionLimits(max_sessions=1),
        connect_timeout_s=CONNECT_TIMEOUT_S,
        command_timeout_s=COMMAND_TIMEOUT_S,
    ) as cli:
        assert not (await cli.send("show ip route static")).failed
        assert FRR_GREETING in cli.transcript
    assert await eventually(lambda: not lab.sessions(FRR))
