"""LabTerminal: an operator's interactive SSH session, read up to each prompt like a human does."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncssh

# Every prompt docs/device-cli.md names, plus its Y/N questions.
_PROMPT_BODY = (
    r"[\w.-]+(?:\([\w-]+\))?#"  # IOS-XE, FRR
    r"|[\w.-]+@[\w.-]+[>#] "  # Junos
    r"|<[\w.-]+>|\[[~*][\w./-]+\]"  # VRP
    r"|[^\n]*(?:\[Y/N\]:|\[Y\(yes\)/N\(no\)/C\(cancel\)\]:|\[yes,no\] \(yes\) )"  # questions
)
PROMPT = re.compile(rf"(?:^|\n)(?:{_PROMPT_BODY})$")


def _prompt_before(line: str) -> re.Pattern[str]:
    """A prompt followed by the echo of `line` (typed ahead, so the device echoed it late)."""
    return re.compile(rf"(?:^|\n)(?:{_PROMPT_BODY})(?={re.escape(line)}\n)")


class SessionClosed(ConnectionError):
    """The device ended the session; `output` is what it said first."""

    def __init__(self, output: str) -> None:
        super().__init__(output.strip() or "session closed by the device")
        self.output = output


class NoPrompt(TimeoutError):
    """The device stopped answering; `output` is what it printed before going quiet."""

    def __init__(self, output: str) -> None:
        super().__init__(f"no prompt; last output {output[-200:]!r}")
        self.output = output


def _answer(text: str) -> str:
    """Drop the echoed line, and the `[edit]` banner Junos prints above its prompt."""
    answer = text.partition("\n")[2]
    if answer.endswith("\n[edit]"):
        answer = answer[: -len("\n[edit]")]
    return answer.rstrip("\n")


class LabTerminal:
    """A PTY session: `await term.send("show ip route static")` returns what the device printed."""

    def __init__(self, conn: asyncssh.SSHClientConnection, process: asyncssh.SSHClientProcess):
        self.conn = conn
        self.process = process
        self.greeting = ""
        self.prompt = ""
        self._buffer = ""

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        known_hosts: Path | str | None,
        username: str = "netops",
        password: str | None = "lab-secret",
        client_keys: list[asyncssh.SSHKey] | None = None,
        host: str = "127.0.0.1",
        wait_s: float = 5.0,
    ) -> Self:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                host,
                port,
                username=username,
                password=password,
                client_keys=client_keys,
                known_hosts=str(known_hosts) if known_hosts is not None else None,
                agent_path=None,
                config=None,
            ),
            wait_s,
        )
        try:
            process = await conn.create_process(
                term_type="vt100", term_size=(200, 48), encoding="utf-8"
            )
            term = cls(conn, process)
            term.greeting = await term._read_prompt(wait_s)
        except BaseException:
            conn.close()
            raise
        return term

    async def send(self, line: str, *, wait_s: float = 5.0) -> str:
        """Type one line; return the answer without the echo and the prompt."""
        self.process.stdin.write(line + "\n")
        return _answer(await self._read_prompt(wait_s))

    def write(self, raw: str) -> None:
        """Bytes as typed, line endings and all (for testing how the device splits lines)."""
        self.process.stdin.write(raw)

    async def read_answer(self, *, wait_s: float = 5.0) -> str:
        """The answer to a line sent with `write`, up to the next prompt."""
        return _answer(await self._read_prompt(wait_s))

    async def type_ahead(self, lines: list[str], *, wait_s: float = 5.0) -> list[str]:
        """Send several lines in one write, as a paste does; one answer per line."""
        self.process.stdin.write("".join(f"{x}\n" for x in lines))
        answers = []
        for i in range(len(lines)):
            after = _prompt_before(lines[i + 1]) if i + 1 < len(lines) else PROMPT
            answers.append(_answer(await self._read_prompt(wait_s, after)))
        return answers

    async def _read_prompt(self, wait_s: float, prompt: re.Pattern[str] = PROMPT) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            match = prompt.search(self._buffer)
            if match:
                text, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
                self.prompt = match.group().lstrip("\n")
                return text
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NoPrompt(self._buffer)
            try:
                chunk = await asyncio.wait_for(self.process.stdout.read(4096), remaining)
            except TimeoutError:
                raise NoPrompt(self._buffer) from None
            if not chunk:
                raise SessionClosed(self._buffer)
            self._buffer += chunk.replace("\r\n", "\n")

    async def close(self) -> None:
        self.conn.close()
        await self.conn.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = ["PROMPT", "LabTerminal", "NoPrompt", "SessionClosed"]
