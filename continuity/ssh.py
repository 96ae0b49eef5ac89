"""The SSH transport: logged-in device CLI sessions, pooled per worker, driven by prompts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
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
from continuity.models import Device, Platform
from continuity.settings import DeviceCredential, Settings

# Wide enough that no device wraps a command or a route line.
TERM_TYPE = "vt100"
TERM_SIZE = (511, 24)
_READ_CHUNK = 65536
_CLOSE_TIMEOUT_S = 2.0
# A pooled session sits idle for up to `idle_s`; keepalives find a peer that vanished without
# a FIN (a rebooted device) in interval x count, instead of at the next command.
_KEEPALIVE_S = 15.0
_KEEPALIVE_COUNT_MAX = 3


@dataclass(frozen=True)
class CommandResult:
    """One line sent and what came back before the next prompt (echo and prompt removed)."""

    command: str
    output: str
    failed: bool  # an error marker of the dialect is in the output
    elapsed_s: float


class SessionLimits:
    """Caps on our own SSH work: sessions in use, uses per device, connection setups in flight.

    `slot(device)` is held for the whole use of a session; `handshake()` only while a new
    connection is set up (TCP, key exchange, authentication, PTY, login prompt, paging off).
    """

    def __init__(
        self,
        *,
        max_sessions: int,
        max_per_device: int = 1,
        max_handshakes: int = 16,
        new_connections_per_s: float | None = None,
    ) -> None:
        if max_sessions < 1 or max_per_device < 1 or max_handshakes < 1:
            raise ValidationFailed("session limits must be positive")
        if new_connections_per_s is not None and new_connections_per_s <= 0:
            raise ValidationFailed("new_connections_per_s must be positive (or None: no rate)")
        self.max_sessions = max_sessions
        self.max_per_device = max_per_device
        self.max_handshakes = max_handshakes
        self.new_connections_per_s = new_connections_per_s
        self._global = asyncio.Semaphore(max_sessions)
        self._handshakes = asyncio.Semaphore(max_handshakes)
        self._per_device: dict[str, asyncio.Semaphore] = {}
        self._interval = 1.0 / new_connections_per_s if new_connections_per_s else 0.0
        self._next_start = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionLimits:
        return cls(
            max_sessions=settings.ssh_max_sessions,
            max_per_device=settings.ssh_max_sessions_per_device,
            max_handshakes=settings.ssh_max_handshakes,
            new_connections_per_s=settings.ssh_new_connections_per_s,
        )

    @asynccontextmanager
    async def slot(self, device: str) -> AsyncIterator[None]:
        # The device's own slot first: waiting for a busy device must not hold a global slot.
        per_device = self._per_device.setdefault(device, asyncio.Semaphore(self.max_per_device))
        async with per_device, self._global:
            yield

    @asynccontextmanager
    async def handshake(self) -> AsyncIterator[None]:
        """One connection setup; taken inside a `slot`, so a setup is also a session in use."""
        async with self._handshakes:
            await self._pace()
            yield

    async def _pace(self) -> None:
        if not self._interval:
            return
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

    def redact(self, secrets: Sequence[str]) -> None:
        """Scrub these too (the transport adds the credential's password to every transcript)."""
        self._secrets.extend(s for s in secrets if s and s not in self._secrets)

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


_Key = tuple[str, str, int, str, str, Platform]


def _reuse_key(
    device: Device, credential: DeviceCredential, known_hosts: Path, dialect: Dialect
) -> _Key:
    """What a session was opened for; a use that differs in any of it gets a new session."""
    host_keys = f"pinned:{device.host_key}" if device.host_key else f"file:{known_hosts}"
    return (
        device.name,
        device.host,
        device.port,
        credential.username,
        host_keys,
        dialect.platform,
    )


class _Line:
    """One logged-in SSH session (connection + interactive channel); it outlives single uses."""

    def __init__(
        self,
        *,
        key: _Key,
        device: Device,
        dialect: Dialect,
        conn: asyncssh.SSHClientConnection,
        process: asyncssh.SSHClientProcess[str],
    ) -> None:
        self.key = key
        self.device = device
        self.dialect = dialect
        self.conn = conn
        self.proc = process
        self.opened_at = datetime.now(UTC)
        self.idle_since = 0.0  # loop time it was last returned to the pool
        self.banner = ""
        self.home_prompt = ""  # the prompt after login: where a returned session must be
        self.prompt = ""  # the last prompt seen
        self.eof = False
        self.broken = False  # lost track of the prompt: never handed out again
        self.doomed = False  # discarded while in use: closed when the use ends

    def alive(self) -> bool:
        """What is known locally, without a round trip to the device."""
        proc = self.proc
        return not (
            self.eof
            or self.broken
            or self.conn.is_closed()
            or proc.is_closing()
            or proc.exit_status is not None
            or proc.exit_signal is not None
            or proc.stdout.at_eof()
        )

    async def drain(self) -> str:
        """Output that arrived while idle, read without waiting (and so without a round trip)."""
        text = ""
        while True:
            reading = asyncio.ensure_future(self.proc.stdout.read(_READ_CHUNK))
            await asyncio.sleep(0)  # lets the read take what is buffered, if anything
            if not reading.done():
                reading.cancel()  # asyncssh keeps unread data buffered when a read is cancelled
                with contextlib.suppress(asyncio.CancelledError, asyncssh.Error, OSError):
                    await reading
                return text
            try:
                chunk = reading.result()
            except (asyncssh.Error, OSError):
                self.eof = True
                return text
            if not chunk:
                self.eof = True
                return text
            text += chunk

    def close(self) -> None:
        """Start closing; returns at once (the connection finishes closing on the loop)."""
        with contextlib.suppress(asyncssh.Error, OSError):
            self.proc.stdin.write_eof()
        with contextlib.suppress(asyncssh.Error, OSError):
            self.proc.close()
        self.conn.close()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
            await asyncio.wait_for(self.conn.wait_closed(), _CLOSE_TIMEOUT_S)


class CliSession:
    """One use of a logged-in CLI, driven by prompts; what to send is the caller's business.

    The SSH session underneath may serve many uses one after another (`SessionPool`); each use
    has its own handle, transcript and command timeout, and a handle is dead once its use ends.
    """

    def __init__(self, *, line: _Line, command_timeout_s: float, transcript: Transcript) -> None:
        self.device = line.device
        self.dialect = line.dialect
        self._line: _Line | None = line
        self._timeout = command_timeout_s
        self._transcript = transcript

    @property
    def banner(self) -> str:
        """What the device printed at login (also on a reused session: the original login)."""
        return self._line.banner if self._line is not None else ""

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

    def _attached(self) -> _Line:
        if self._line is None:
            raise SessionLost(f"{self.device.name}: this session handle's use has ended")
        return self._line

    def _detach(self) -> None:
        self._line = None

    async def _login(self) -> None:
        line = self._attached()
        line.banner = await self._read_until_prompt(what="the login prompt", opening=True)
        for command in self.dialect.on_open:
            # Paging commands differ between releases; a refusal is recorded, not fatal.
            await self.send(command)
        line.home_prompt = line.prompt

    def _write(self, data: str) -> None:
        line = self._attached()
        try:
            line.proc.stdin.write(data)
        except (asyncssh.Error, OSError, BrokenPipeError) as e:
            line.broken = True
            raise SessionLost(f"{self.device.name}: session lost while sending: {e}") from e

    async def _read_until_prompt(self, *, what: str, opening: bool = False) -> str:
        line = self._attached()
        try:
            return await self._read(line, what=what, opening=opening)
        except BaseException:
            line.broken = True  # mid-answer or gone: the next reader would see our leftovers
            raise

    async def _read(self, line: _Line, *, what: str, opening: bool) -> str:
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
                    line.prompt = tail
                    return text
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that lands as the read completes, and a stand-down must stop the session.
                async with asyncio.timeout(remaining):
                    chunk = await line.proc.stdout.read(_READ_CHUNK)
                if not chunk:
                    line.eof = True
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
    try:
        stat = path.stat()
    except OSError:
        raise HostKeyRejected(
            f"{device.name}: no known_hosts file at {path}; keys must be pinned"
        ) from None
    # Parsed once per file version, not per connection: with hundreds of devices the file is
    # hundreds of keys, and each connection would parse them all again.
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _KNOWN_HOSTS.get(path)
    if cached is None or cached[0] != stamp:
        try:
            cached = (stamp, asyncssh.read_known_hosts(str(path)))
        except (OSError, ValueError, asyncssh.Error) as e:
            raise HostKeyRejected(f"{device.name}: cannot read known_hosts {path}: {e}") from e
        _KNOWN_HOSTS[path] = cached
    return cached[1]


def host_key_problem(device: Device, known_hosts: Path) -> str | None:
    """Why connecting to `device` would refuse its host key before a byte is sent, or None."""
    try:
        keys = _known_hosts(device, known_hosts)
    except HostKeyRejected as e:
        return str(e)
    trusted = keys.match(device.host, device.host, device.port)[0]
    if trusted:
        return None
    entry = device.host if device.port == 22 else f"[{device.host}]:{device.port}"
    return f"{device.name}: no host key for {entry} in {known_hosts} (ssh-keyscan it, or pin it)"


# AES-GCM first: with AES-NI it costs a fraction of chacha20-poly1305 per packet, and hundreds
# of sessions at once are CPU-bound here. The rest of asyncssh's defaults follow, for old gear.
_CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
]

# known_hosts path -> ((mtime_ns, size), parsed keys)
_KNOWN_HOSTS: dict[Path, tuple[tuple[int, int], Any]] = {}


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
                keepalive_interval=_KEEPALIVE_S,
                keepalive_count_max=_KEEPALIVE_COUNT_MAX,
                encryption_algs=_CIPHERS,
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


async def _open_line(
    device: Device,
    *,
    key: _Key,
    credential: DeviceCredential,
    known_hosts: Path,
    dialect: Dialect,
    connect_timeout_s: float,
    command_timeout_s: float,
    transcript: Transcript,
) -> CliSession:
    """A new session, logged in at the operational prompt with paging off."""
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
    except BaseException:
        conn.close()
        raise
    line = _Line(key=key, device=device, dialect=dialect, conn=conn, process=process)
    cli = CliSession(line=line, command_timeout_s=command_timeout_s, transcript=transcript)
    try:
        await cli._login()
    except BaseException:
        await line.aclose()
        raise
    return cli


class SessionPool:
    """Logged-in CLI sessions kept between uses, one worker's worth, within `SessionLimits`.

    A session counts against the limits only while in use. Idle sessions are closed after
    `idle_s`, and beyond `max_idle` the least recently used go first.
    """

    def __init__(self, limits: SessionLimits, *, idle_s: float, max_idle: int) -> None:
        if idle_s < 0 or max_idle < 0:
            raise ValidationFailed("idle_s and max_idle must not be negative")
        self._limits = limits
        self._idle_s = idle_s
        self._max_idle = max_idle
        self._idle: OrderedDict[_Line, None] = OrderedDict()  # least recently used first
        self._busy: set[_Line] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPool:
        return cls(
            SessionLimits.from_settings(settings),
            idle_s=settings.ssh_idle_s,
            max_idle=settings.ssh_pool_size,
        )

    @property
    def idle(self) -> int:
        """How many sessions wait for their next use."""
        return len(self._idle)

    @asynccontextmanager
    async def session(
        self,
        device: Device,
        *,
        credential: DeviceCredential,
        known_hosts: Path,
        dialect: Dialect,
        connect_timeout_s: float,
        command_timeout_s: float,
        transcript: Transcript | None = None,
    ) -> AsyncIterator[CliSession]:
        """Exclusive use of `device`'s logged-in CLI (operational prompt, paging off).

        Reuses the idle session opened for the same device, address, user and host-key source,
        or opens one. What happens in this use goes to `transcript` (pass one to keep what the
        device said even when opening fails). A use that raises closes the session; one that
        ends normally at the login prompt returns it to the pool.

        A reused session is checked locally (connection, channel, EOF), not by a round trip:
        a session the device dropped a moment ago can still fail its first `send` with
        SessionLost. That error is retryable and the session is closed, so the retry opens
        a new one.
        """
        if self._closed:
            raise SessionLost(f"{device.name}: the session pool is closed")
        secrets = [credential.password.get_secret_value()] if credential.password else []
        record = transcript if transcript is not None else Transcript(secrets=secrets)
        record.redact(secrets)
        key = _reuse_key(device, credential, known_hosts, dialect)
        async with self._limits.slot(device.name):
            record.note(
                f"{datetime.now(UTC).isoformat(timespec='seconds')} {device.name} "
                f"({dialect.platform.value}) {device.host}:{device.port} as {credential.username}"
            )
            cli = await self._reuse(key, command_timeout_s, record)
            if cli is None:
                async with self._limits.handshake():
                    cli = await _open_line(
                        device,
                        key=key,
                        credential=credential,
                        known_hosts=known_hosts,
                        dialect=dialect,
                        connect_timeout_s=connect_timeout_s,
                        command_timeout_s=command_timeout_s,
                        transcript=record,
                    )
            line = cli._attached()
            self._busy.add(line)
            ended_normally = False
            try:
                yield cli
                ended_normally = True
            finally:
                cli._detach()
                self._busy.discard(line)
                await self._release(line, keep=ended_normally)

    def discard(self, device_name: str) -> None:
        """Close `device_name`'s sessions: idle ones now, one in use when its use ends."""
        for line in [x for x in self._idle if x.device.name == device_name]:
            del self._idle[line]
            self._close_soon(line)
        for line in self._busy:
            if line.device.name == device_name:
                line.doomed = True

    async def close(self) -> None:
        """Close every session, those in use included (their uses fail with SessionLost)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        lines = [*self._idle, *self._busy]
        self._idle.clear()
        await asyncio.gather(*(line.aclose() for line in lines))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _reuse(
        self, key: _Key, command_timeout_s: float, record: Transcript
    ) -> CliSession | None:
        now = asyncio.get_running_loop().time()
        mine = [x for x in self._idle if x.key[0] == key[0]]
        for line in reversed(mine):  # the most recently used first
            if line not in self._idle:  # taken by a concurrent use while we awaited
                continue
            del self._idle[line]
            if line.key != key:
                record.note("the pooled session was opened with other settings; closing it")
                await line.aclose()
                continue
            if now - line.idle_since >= self._idle_s:
                await line.aclose()
                continue
            idle_output = await line.drain()
            if idle_output:
                record.note("output while the session was idle:")
                record.received(line.dialect.clean(idle_output))
            if not line.alive():
                record.note("the pooled session was closed by the device; opening a new one")
                await line.aclose()
                continue
            stamp = line.opened_at.isoformat(timespec="seconds")
            record.note(f"session reused (opened {stamp})")
            return CliSession(line=line, command_timeout_s=command_timeout_s, transcript=record)
        return None

    async def _release(self, line: _Line, *, keep: bool) -> None:
        if (
            not keep
            or self._closed
            or self._max_idle == 0
            or line.doomed
            or line.prompt != line.home_prompt  # left in config mode or a question
            or not line.alive()
        ):
            await line.aclose()
            return
        line.idle_since = asyncio.get_running_loop().time()
        self._idle[line] = None
        while len(self._idle) > self._max_idle:
            oldest, _ = self._idle.popitem(last=False)
            self._close_soon(oldest)
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap())

    async def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._idle:
                oldest = next(iter(self._idle))  # returned first, so idle the longest
                wait = oldest.idle_since + self._idle_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                del self._idle[oldest]
                self._close_soon(oldest)
        finally:
            if self._reaper is asyncio.current_task():
                self._reaper = None

    def _close_soon(self, line: _Line) -> None:
        # Not awaited: eviction and the reaper run outside that device's slot.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # discard() called outside the loop: close without waiting
            line.close()
            return
        task = loop.create_task(line.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


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
    """A new logged-in CLI session at the operational prompt, paging off; closed on exit.

    Pass a `transcript` to keep what the device said even when opening fails.
    """
    pool = SessionPool(limits, idle_s=0.0, max_idle=0)  # keeps nothing: one session, one use
    try:
        async with pool.session(
            device,
            credential=credential,
            known_hosts=known_hosts,
            dialect=dialect,
            connect_timeout_s=connect_timeout_s,
            command_timeout_s=command_timeout_s,
            transcript=transcript,
        ) as cli:
            yield cli
    finally:
        await pool.close()


__all__ = [
    "CliSession",
    "host_key_problem",
    "CommandResult",
    "SessionLimits",
    "SessionPool",
    "Transcript",
    "open_cli",
]
