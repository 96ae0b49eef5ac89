"""The floor: the apply + verify as a careful engineer scripts it by hand on raw asyncssh."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncssh
from workload import (
    ARM_REVERT,
    COMMAND_TIMEOUT_S,
    CONFIRM,
    CONNECT_TIMEOUT_S,
    READ_STATE,
    ROUTE_POLL_INTERVAL_S,
    ROUTE_POLL_TIMEOUT_S,
    SAVE,
    SHOW_ROUTES,
    USERNAME,
    BenchDeviceError,
    DeviceTarget,
    backups_forward,
    check_output,
    device_targets,
    only_backups,
)

from continuity.models import Inventory

_FIRST_PROMPT = re.compile(r"(?:^|\n)([\w.-]+)[>#]$")
_READ_SIZE = 65536


class _Shell:
    """One PTY session; `send` types a line and returns what came back up to the next prompt."""

    def __init__(
        self,
        target: DeviceTarget,
        conn: asyncssh.SSHClientConnection,
        proc: asyncssh.SSHClientProcess,
    ) -> None:
        self._target = target
        self._conn = conn
        self._proc = proc
        self._prompt = _FIRST_PROMPT
        self._buffer = ""

    @classmethod
    async def open(
        cls, target: DeviceTarget, known_hosts: Path, password: str, username: str
    ) -> Self:
        try:
            conn = await asyncssh.connect(
                target.host,
                target.port,
                username=username,
                password=password,
                known_hosts=str(known_hosts),
                client_keys=None,
                agent_path=None,
                config=None,
                connect_timeout=CONNECT_TIMEOUT_S,
            )
        except (OSError, asyncssh.Error) as e:
            raise BenchDeviceError(target.name, "connect", repr(e)) from e
        try:
            proc = await conn.create_process(term_type="vt100", term_size=(511, 24))
            shell = cls(target, conn, proc)
            # The hostname from the first prompt: then config prompts match as well.
            _, prompt = await shell._read_to_prompt("login")
            shell._prompt = re.compile(rf"(?:^|\n){re.escape(prompt[1])}(?:\([\w-]+\))?#$")
        except BaseException:
            conn.close()
            raise
        return shell

    async def send(self, line: str) -> str:
        self._proc.stdin.write(line + "\n")
        text, _ = await self._read_to_prompt(line)
        # The device echoes the line first; the answer is what follows it.
        return check_output(self._target, line, text.partition("\n")[2])

    async def _read_to_prompt(self, step: str) -> tuple[str, re.Match[str]]:
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                while not (m := self._prompt.search(self._buffer)):
                    chunk = await self._proc.stdout.read(_READ_SIZE)
                    if not chunk:
                        raise BenchDeviceError(self._target.name, step, "session closed")
                    self._buffer += chunk.replace("\r\n", "\n")
        except TimeoutError:
            raise BenchDeviceError(self._target.name, step, "no prompt") from None
        except (OSError, asyncssh.Error) as e:
            raise BenchDeviceError(self._target.name, step, repr(e)) from e
        text, self._buffer = self._buffer[: m.start()], self._buffer[m.end() :]
        return text, m

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._conn.close()
        await self._conn.wait_closed()


async def _apply_verify(
    target: DeviceTarget, known_hosts: Path, password: str, username: str
) -> None:
    async with await _Shell.open(target, known_hosts, password, username) as sh:
        await sh.send("terminal length 0")
        for command in READ_STATE:
            await sh.send(command)

        await sh.send(ARM_REVERT)
        for swap in target.swaps:
            await sh.send(swap.add_backup())
        await sh.send("end")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROUTE_POLL_TIMEOUT_S
        while not backups_forward(target, await sh.send(SHOW_ROUTES)):
            if loop.time() > deadline:
                raise BenchDeviceError(target.name, "make", "backups never became active")
            await asyncio.sleep(ROUTE_POLL_INTERVAL_S)

        await sh.send("configure terminal")
        for swap in target.swaps:
            await sh.send(swap.remove_primary())
        await sh.send("end")

        routes = await sh.send(SHOW_ROUTES)
        if not only_backups(target, routes):
            raise BenchDeviceError(target.name, "verify", f"not on backup only: {routes!r}")
        if answer := await sh.send(CONFIRM):
            raise BenchDeviceError(target.name, CONFIRM, answer)
        if "[OK]" not in await sh.send(SAVE):
            raise BenchDeviceError(target.name, SAVE, "no [OK]")


async def run(
    inventory: Inventory,
    known_hosts: Path,
    password: str,
    *,
    concurrency: int,
    username: str = USERNAME,
) -> float:
    """Wall seconds for every device's apply + verify, at most `concurrency` at a time."""
    targets = device_targets(inventory)
    gate = asyncio.Semaphore(concurrency)

    async def one(target: DeviceTarget) -> None:
        async with gate:
            await _apply_verify(target, known_hosts, password, username)

    start = time.perf_counter()
    results = await asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
    elapsed = time.perf_counter() - start
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return elapsed
