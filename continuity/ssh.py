"""The SSH transport: moves lines to a device CLI and reads its answers up to the prompt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh

from continuity.dialects.base import Dialect
from continuity.errors import (
    AuthenticationFailed,
    DeviceUnreachable,
    HostKeyRejected,
    SessionLimit,
    SessionLost,
    ValidationFailed,
)
from continuity.models import Device
from continuity.settings import DeviceCredential, Settings

# Wide enough that no device wraps a command or a route line.
TERM_TYPE = "vt100"
TERM_SIZE = (511, 24)
_READ_CHUNK = 65536
_CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CommandResult:
    """One line sent and what came back before the next prompt (echo and prompt removed)."""

    command: str
    output: str
    failed: bool  # an error marker of the dialect is in the output
    elapsed_s: float


class SessionLimits:
    """Caps on our own SSH sessions: in total, per device, and new handshakes per second."""

    def __init__(
        self, *, max_sessions: int, max_per_device: int = 1, new_connections_per_s: float
    ) -> None:
        if max_sessions < 1 or max_per_device < 1 or new_connections_per_s <= 0:
            raise ValidationFailed("session limits must be positive")
        self._global = asyncio.Semaphore(max_sessions)
        self._max_per_device = max_per_device
        self._per_device: dict[str, asyncio.Semaphore] = {}
        self._interval = 1.0 / new_connections_per_s
        self._next_start = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionLimits:
        return cls(
            max_sessions=settings.ssh_max_sessions,
            max_per_device=settings.ssh_max_sessions_per_device,
            new_connections_per_s=settings.ssh_new_connections_per_s,
        )

    @asynccontextmanager
    async def slot(self, device: str) -> AsyncIterator[None]:
        # The device's own slot first: waiting for a busy device must not hold a global slot.
        per_device = self._per_device.setdefault(device, asyncio.Semaphore(self._max_per_device))
        async with per_device, self._global:
            await self._pace()
            yield

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next_start)
        self._next_start = start + self._interval  # reserved before waiting: no lock needed
        if start > now:
            await asyncio.sleep(start - now)


class Transcript:
    """Everything a session received (which echoes what was sent), secrets scrubbed."""

    def __init__(self, *, secrets: Sequence[str] = ()) -> None:
        self._parts: list[str] = []
        self._secrets = [s for s in secrets if s]
        self.commands: list[str] = []

    def received(self, text: str) -> None:
        self._parts.append(text)

    def sent(self, line: str) -> None:
        self.commands.append(line)

    def note(self, text: str) -> None:
        sep = "" if not self._parts or self._parts[-1].endswith("\n") else "\n"
        self._parts.append(f"{sep}[continuity] {text}\n")

    @property
    def text(self) -> str:
        out = "".join(self._parts)
        for s in self._secrets:
            out = out.replace(s, "********")
        return out


class CliSession:
    """One interactive CLI over SSH, driven by prompts; what to send is the caller's business."""

    def __init__(
        self,
        *,
        device: Device,
        dialect: Dialect,
        process: asyncssh.SSHClientProcess[str],
        command_timeout_s: float,
        transcript: Transcript,
    ) -> None:
        self.device = device
        self.dialect = dialect
        self._proc = process
        self._timeout = command_timeout_s
        self._transcript = transcript
        self.banner = ""

    @property
    def transcript(self) -> str:
        return self._transcript.text

    @property
    def sent(self) -> list[str]:
        return list(self._transcript.commands)

    async def send(self, line: str) -> CommandResult:
        """Send one line and read until the prompt comes back, answering Y/N questions."""
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in line):
            raise ValidationFailed(f"refusing to send a line with control characters: {line!r}")
        started = time.monotonic()
        self._transcript.sent(line)
        self._write(line + "\n")
        text = await self._read_until_prompt(what=repr(line))
        output = _strip_echo(text, line)
        return CommandResult(
            command=line,
            output=output,
            failed=self.dialect.is_failure(output),
            elapsed_s=time.monotonic() - started,
        )

    async def _open(self) -> None:
        self.banner = await self._read_until_prompt(what="the login prompt", opening=True)
        for line in self.dialect.on_open:
            # Paging commands differ between releases; a refusal is recorded, not fatal.
            await self.send(line)

    def _write(self, data: str) -> None:
        try:
            self._proc.stdin.write(data)
        except (asyncssh.Error, OSError, BrokenPipeError) as e:
            raise SessionLost(f"{self.device.name}: session lost while sending: {e}") from e

    async def _read_until_prompt(self, *, what: str, opening: bool = False) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        raw = ""
        answered_at = -1
        recorded = 0
        try:
            while True:
                text = self.dialect.clean(raw)
                last_nl = text.rfind("\n")
                tail = text[last_nl + 1 :]
                if tail and last_nl + 1 > answered_at:
                    answer = self.dialect.answer_for(tail)
                    if answer is not None:
                        answered_at = len(text)
                        self._transcript.received(text[recorded:])
                        recorded = len(text)
                        self._write(answer + "\n")
                        continue
                if tail and self.dialect.is_prompt(tail):
                    self._transcript.received(text[recorded:])
                    return text
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(self._proc.stdout.read(_READ_CHUNK), remaining)
                if not chunk:
                    self._transcript.received(text[recorded:])
                    if opening:  # a device out of vty lines closes right after login
                        raise SessionLimit(
                            f"{self.device.name}: session closed at login: {text.strip()[-200:]!r}"
                        )
                    raise SessionLost(
                        f"{self.device.name}: session closed by the device while waiting for {what}"
                    )
                raw += chunk
        except TimeoutError as e:
            text = self.dialect.clean(raw)
            self._transcript.received(text[recorded:])
            self._transcript.note(f"no prompt within {self._timeout:g}s after {what}")
            if opening and self.dialect.is_session_limit(text):
                raise SessionLimit(f"{self.device.name}: {text.strip()[-200:]!r}") from e
            raise SessionLost(
                f"{self.device.name}: no prompt within {self._timeout:g}s after {what}"
            ) from e
        except (asyncssh.Error, OSError) as e:
            self._transcript.received(self.dialect.clean(raw)[recorded:])
            self._transcript.note(f"session lost: {e}")
            raise SessionLost(f"{self.device.name}: session lost: {e}") from e

    async def _close(self) -> None:
        try:
            self._proc.stdin.write_eof()
        except (asyncssh.Error, OSError):
            pass
        self._proc.close()


def _strip_echo(text: str, line: str) -> str:
    lines = text.split("\n")
    if lines and lines[0].strip().endswith(line.strip()):
        lines = lines[1:]
    return "\n".join(lines[:-1]).strip("\n")  # the last line is the prompt


def _known_hosts(device: Device, path: Path) -> Any:
    if device.host_key:
        host = device.host if device.port == 22 else f"[{device.host}]:{device.port}"
        try:
            return asyncssh.import_known_hosts(f"{host} {device.host_key}\n")
        except (ValueError, asyncssh.Error) as e:
            raise HostKeyRejected(f"{device.name}: the pinned host key is malformed") from e
    if not path.is_file():
        raise HostKeyRejected(f"{device.name}: no known_hosts file at {path}; keys must be pinned")
    return str(path)


async def _connect(
    device: Device, credential: DeviceCredential, known_hosts: Path, connect_timeout_s: float
) -> asyncssh.SSHClientConnection:
    password = credential.password.get_secret_value() if credential.password else None
    keys = [str(credential.private_key_path)] if credential.private_key_path else []
    if password is None and not keys:
        raise AuthenticationFailed(f"{device.name}: credential has neither password nor key")
    where = f"{device.name} ({device.host}:{device.port})"
    try:
        return await asyncio.wait_for(
            asyncssh.connect(
                device.host,
                device.port,
                username=credential.username,
                password=password,
                client_keys=keys,
                known_hosts=_known_hosts(device, known_hosts),
                agent_path=None,
                config=None,  # no ~/.ssh/config: what we connect to is what the inventory says
                connect_timeout=connect_timeout_s,
            ),
            timeout=connect_timeout_s + 1.0,
        )
    except asyncssh.HostKeyNotVerifiable as e:
        raise HostKeyRejected(f"{where}: host key not trusted ({e.reason})") from e
    except asyncssh.PermissionDenied as e:
        raise AuthenticationFailed(f"{where}: authentication refused") from e
    except asyncssh.DisconnectError as e:
        if e.code == asyncssh.DISC_TOO_MANY_CONNECTIONS:
            raise SessionLimit(f"{where}: {e.reason}") from e
        raise DeviceUnreachable(f"{where}: disconnected during login: {e.reason}") from e
    except (TimeoutError, OSError, asyncssh.Error) as e:
        raise DeviceUnreachable(f"{where}: {type(e).__name__}: {e}".rstrip(": ")) from e


@asynccontextmanager
async def open_cli(
    device: Device,
    *,
    credential: DeviceCredential,
    known_hosts: Path,
    dialect: Dialect,
    limits: SessionLimits,
    connect_timeout_s: float,
    command_timeout_s: float,
    transcript: Transcript | None = None,
) -> AsyncIterator[CliSession]:
    """A logged-in CLI session at the operational prompt, paging off; closed on exit.

    Pass a `transcript` to keep what the device said even when opening fails.
    """
    secrets = [credential.password.get_secret_value()] if credential.password else []
    record = transcript if transcript is not None else Transcript(secrets=secrets)
    async with limits.slot(device.name):
        record.note(
            f"{datetime.now(UTC).isoformat(timespec='seconds')} {device.name} "
            f"({dialect.platform.value}) {device.host}:{device.port} as {credential.username}"
        )
        conn = await _connect(device, credential, known_hosts, connect_timeout_s)
        try:
            try:
                process = await asyncio.wait_for(
                    conn.create_process(
                        term_type=TERM_TYPE, term_size=TERM_SIZE, encoding="utf-8", errors="replace"
                    ),
                    timeout=connect_timeout_s,
                )
            except asyncssh.ChannelOpenError as e:
                raise SessionLimit(f"{device.name}: no session channel: {e.reason}") from e
            except (TimeoutError, asyncssh.Error, OSError) as e:
                raise SessionLost(f"{device.name}: could not start the CLI: {e}") from e
            cli = CliSession(
                device=device,
                dialect=dialect,
                process=process,
                command_timeout_s=command_timeout_s,
                transcript=record,
            )
            try:
                await cli._open()
                yield cli
            finally:
                await cli._close()
        finally:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), _CLOSE_TIMEOUT_S)
            except (TimeoutError, asyncssh.Error, OSError):
                pass


__all__ = ["CliSession", "CommandResult", "SessionLimits", "Transcript", "open_cli"]
