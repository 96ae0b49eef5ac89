"""The lab in its own process group, so its CPU is not the benchmark's: start, reset, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self, TypeAlias

from workload import (
    CONFIRM,
    SAVE,
    SHOW_ROUTES,
    USERNAME,
    BenchDeviceError,
    DeviceTarget,
    check_output,
    device_targets,
    only_backups,
    only_primaries,
)

from continuity.models import Inventory
from lab.gear.terminal import LabTerminal

LAB_PASSWORD = "lab-secret"  # what `continuity lab serve` accepts
REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
RESET_CONCURRENCY = 50
RESET_COMMAND_TIMEOUT_S = 30.0
# Device time runs at wall speed by default: the contenders' 5-minute revert timer is then
# 300 real seconds, far longer than any round, so no device reverts under a slow contender.
DEFAULT_TIME_SCALE = 1.0

_DeviceJob: TypeAlias = Callable[[LabTerminal, DeviceTarget], Awaitable[None]]


class LabProcessError(Exception):
    """The lab process did not come up, or died."""


class LabProcess:
    """`python -m app.cli lab serve` for one inventory; `inventory` then has the real ports."""

    def __init__(self, inventory: Inventory, *, time_scale: float = DEFAULT_TIME_SCALE) -> None:
        self._wanted = inventory
        self._time_scale = time_scale
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log: Path | None = None
        self._served: Inventory | None = None
        self._known_hosts: Path | None = None
        self.password = LAB_PASSWORD

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise LabProcessError("the lab is not running")
        return self._proc.pid

    @property
    def inventory(self) -> Inventory:
        if self._served is None:
            raise LabProcessError("the lab is not running")
        return self._served

    @property
    def known_hosts(self) -> Path:
        if self._known_hosts is None:
            raise LabProcessError("the lab is not running")
        return self._known_hosts

    async def start(self, *, timeout_s: float = START_TIMEOUT_S) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="continuity-bench-lab-")
        root = Path(self._tmp.name)
        wanted, data_dir = root / "wanted.json", root / "lab"
        wanted.write_text(self._wanted.model_dump_json(indent=2))
        self._log = root / "lab.log"
        with self._log.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app.cli",
                "lab",
                "serve",
                "--inventory",
                str(wanted),
                "--data-dir",
                str(data_dir),
                "--time-scale",
                str(self._time_scale),
                cwd=REPO_ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        try:
            await self._wait_listening(self._proc, data_dir / "inventory.json", timeout_s)
        except BaseException:
            await self.stop()
            raise
        # serve() writes known_hosts before it renames inventory.json into place.
        self._known_hosts = data_dir / "known_hosts"

    async def _wait_listening(
        self, proc: asyncio.subprocess.Process, served: Path, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(served.exists):
            if proc.returncode is not None:
                raise LabProcessError(f"the lab exited with {proc.returncode}: {self._tail()}")
            if time.monotonic() > deadline:
                raise LabProcessError(f"the lab did not listen within {timeout_s:.0f} s")
            await asyncio.sleep(0.05)
        self._served = Inventory.model_validate_json(await asyncio.to_thread(served.read_text))

    async def stop(self) -> None:
        """SIGINT the process group (the lab closes its listeners), SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        self._served = self._known_hosts = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def cpu_seconds(self) -> float | None:
        """User + system CPU the lab process has used so far (Linux), None elsewhere."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        except (OSError, LabProcessError):
            return None
        # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def reset_to_primary(self, *, concurrency: int = RESET_CONCURRENCY) -> None:
        """Every circuit back on its primary next hop, confirmed and saved (untimed)."""
        await self._each_device(_reset_device, concurrency)

    async def check_on_backup(self, *, concurrency: int = RESET_CONCURRENCY) -> None:
        """Raise unless every circuit forwards via its backup only: a contender's run counts."""
        await self._each_device(_check_backup, concurrency)

    async def _each_device(self, job: _DeviceJob, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(target: DeviceTarget) -> None:
            async with gate:
                term = await LabTerminal.open(
                    target.port,
                    host=target.host,
                    known_hosts=self.known_hosts,
                    username=USERNAME,
                    password=self.password,
                    wait_s=RESET_COMMAND_TIMEOUT_S,
                )
                async with term:
                    await job(term, target)

        results = await asyncio.gather(
            *(one(t) for t in device_targets(self.inventory)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    def _tail(self) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(errors="replace")[-2000:]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _send(term: LabTerminal, target: DeviceTarget, line: str) -> str:
    return check_output(target, line, await term.send(line, wait_s=RESET_COMMAND_TIMEOUT_S))


async def _reset_device(term: LabTerminal, target: DeviceTarget) -> None:
    await _send(term, target, "terminal length 0")
    # A pending revert from an interrupted run would restore its snapshot later: drop it first.
    await _send(term, target, CONFIRM)
    await _send(term, target, "configure terminal")
    for swap in target.swaps:
        await _send(term, target, swap.add_primary())
        await _send(term, target, swap.remove_backup())
    await _send(term, target, "end")
    await _send(term, target, SAVE)
    routes = await _send(term, target, SHOW_ROUTES)
    if not only_primaries(target, routes):
        raise BenchDeviceError(target.name, "reset", f"not on primary: {routes!r}")


async def _check_backup(term: LabTerminal, target: DeviceTarget) -> None:
    routes = await _send(term, target, SHOW_ROUTES)
    if not only_backups(target, routes):
        raise BenchDeviceError(target.name, "check", f"not on backup only: {routes!r}")
    timer = await _send(term, target, "show archive config rollback timer")
    if "No Rollback Confirmed Change pending" not in timer:
        raise BenchDeviceError(target.name, "check", f"change left unconfirmed: {timer!r}")
