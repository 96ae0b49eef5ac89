"""LabServer: one real SSH listener per simulated device on 127.0.0.1, faults and all."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path

import asyncssh

from continuity.models import Inventory
from lab.gear.base import CliSession, Fault, SimDevice
from lab.gear.network import LabNetwork

log = logging.getLogger(__name__)

# Ports below this (the inventory's default 22 included) are never taken by the lab: it picks one.
_LOWEST_FIXED_PORT = 1024
_READ_CHUNK = 4096


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, ready before any coroutine runs, so a reopened device accepts at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _load_or_create_key(path: Path) -> asyncssh.SSHKey:
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    tmp = path.with_suffix(".tmp")
    key.write_private_key(tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key


def _public_line(key: asyncssh.SSHKey) -> str:
    """'ssh-ed25519 AAAA...' without a comment."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


class _Gate(asyncssh.SSHServer):
    """Authentication for one device: the lab user by password or by an allowed public key."""

    def __init__(self, endpoint: _Endpoint) -> None:
        self._endpoint = endpoint
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._endpoint.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._endpoint.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        lab = self._endpoint.lab
        return self._allowed(username) and hmac.compare_digest(
            password.encode(), lab.password.encode()
        )

    def public_key_auth_supported(self) -> bool:
        return bool(self._endpoint.lab.client_keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return self._allowed(username) and key.public_data in self._endpoint.lab.client_keys

    def _allowed(self, username: str) -> bool:
        return (
            not self._endpoint.device.has_fault(Fault.AUTH_FAILURE)
            and username == self._endpoint.lab.username
        )


class _Terminal:
    """One interactive session: buffered line input, echo, answers, prompts, and the faults."""

    def __init__(self, process: asyncssh.SSHServerProcess, device: SimDevice, cli: CliSession):
        self._process = process
        self._device = device
        self._cli = cli
        self._pending = ""
        self._last_cr = False
        self._hung = False

    def _write(self, text: str) -> bool:
        """False once the client is gone (it may drop while a SLOW answer is pending)."""
        try:
            self._process.stdout.write(text.replace("\r\n", "\n").replace("\n", "\r\n"))
        except (BrokenPipeError, OSError, asyncssh.Error):
            return False
        return True

    async def _slow(self) -> None:
        if self._device.has_fault(Fault.SLOW):
            await asyncio.sleep(float(self._device.fault_params.get("delay_s", 0.5)))

    def _hangs_on(self, line: str) -> bool:
        if not self._device.has_fault(Fault.HANG) or not line.strip():
            return False
        pattern = self._device.fault_params.get("on")
        if pattern is None:
            return self._cli.in_config_mode and self._cli.prompt() == self._cli.mode_prompt()
        return re.search(str(pattern), line) is not None

    def _answer(self, line: str) -> str:
        try:
            out = self._cli.handle(line)
        except Exception:  # a lab bug must not look like a dead device
            log.exception("lab CLI failed on %r", line)
            out = self._cli.reject(line.strip() or "?")
        text = "".join(f"{x}\n" for x in out)
        return text if self._cli.closed else text + self._cli.prompt()

    async def run(self) -> None:
        process = self._process
        if process.command is not None:
            await self._slow()
            self._write(self._answer(process.command))
            self._exit()
            return
        await self._slow()
        if not self._write(self._cli.greeting() + self._cli.prompt()):
            return
        while not self._cli.closed:
            try:
                data = await process.stdin.read(_READ_CHUNK)
            except (asyncssh.TerminalSizeChanged, asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            except (asyncssh.Error, OSError):
                break
            if not data:
                break
            for line in self._lines(data):
                if self._hung:
                    continue
                # Every line that reached the device, for tests that hold the record against it.
                self._device.received.append(line)
                if not self._write(line + "\n"):  # the echo, as a terminal shows it at once
                    return
                if self._hangs_on(line):
                    self._hung = True
                    self._device.record(f"CLI hung on {line!r}")
                    continue
                await self._slow()
                if not self._write(self._answer(line)) or self._cli.closed:
                    break
        self._exit()

    def _exit(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError, asyncssh.Error):
            self._process.exit(0)

    def _lines(self, data: str) -> list[str]:
        """Complete lines so far; CR, LF and CRLF all end a line, even split across reads."""
        if self._last_cr and data.startswith("\n"):
            data = data[1:]
        self._last_cr = data.endswith("\r")
        data = data.replace("\r\n", "\n").replace("\r", "\n")
        lines = (self._pending + _edit(data)).split("\n")
        self._pending = lines.pop()
        return lines


def _edit(data: str) -> str:
    """Apply backspaces and drop other control characters, as a line discipline would."""
    out: list[str] = []
    for ch in data:
        if ch in ("\x7f", "\x08"):
            if out and out[-1] != "\n":
                out.pop()
        elif ch == "\n" or ch == "\x1a" or ch >= " " or ch == "\t":
            out.append(" " if ch == "\t" else ch)
    return "".join(out)


class _Endpoint:
    """One device's listener: opened, closed (UNREACHABLE) and re-keyed (HOST_KEY_CHANGE) live."""

    def __init__(self, lab: LabServer, device: SimDevice, host_key: asyncssh.SSHKey) -> None:
        self.lab = lab
        self.device = device
        self.host_key = host_key
        self.presented_key = host_key
        self.port = 0
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._opening: asyncio.Task[None] | None = None
        self._opening_sock: socket.socket | None = None

    @property
    def listening(self) -> bool:
        return self._acceptor is not None or self._opening is not None

    async def start(self, port: int) -> None:
        try:
            sock = _bind(self.lab.host, port)
        except OSError as e:
            if port == 0:
                raise
            # Another lab (a demo beside the tests) holds the port: clients read the real one
            # from LabServer.inventory() and known_hosts, so a free port serves them as well.
            log.warning("%s: port %d unavailable (%s); using a free one", self.device.name, port, e)
            sock = _bind(self.lab.host, 0)
        self.port = sock.getsockname()[1]
        self._opening_sock = sock
        await self._listen(sock)

    async def _listen(self, sock: socket.socket) -> None:
        try:
            self._acceptor = await asyncssh.listen(
                sock=sock,
                server_factory=lambda: _Gate(self),
                server_host_keys=[self.presented_key],
                process_factory=self._session,
                line_editor=False,
                encoding="utf-8",
                errors="replace",  # a stray byte is a typo, not a reason to drop the session
            )
        finally:
            # A cancelled opening must not clear the state of the one that replaced it.
            if self._opening_sock is sock:
                self._opening_sock = None
            if self._opening is asyncio.current_task():
                self._opening = None

    def close_listener(self) -> None:
        """Stop accepting: new connections are refused; sessions already open stay."""
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        if self._opening_sock is not None:
            self._opening_sock.close()
            self._opening_sock = None
        if self._acceptor is not None:
            self._acceptor.close()
            self._acceptor = None

    def reopen(self) -> None:
        """Listen again on the same port; the socket accepts at once, SSH follows on the loop."""
        if self.listening:
            return
        sock = _bind(self.lab.host, self.port)
        self._opening_sock = sock
        self._opening = asyncio.get_running_loop().create_task(self._listen(sock))

    def present(self, key: asyncssh.SSHKey) -> None:
        self.presented_key = key
        if self._acceptor is not None:
            self._acceptor.update(server_host_keys=[key])

    async def stop(self) -> None:
        opening = self._opening
        self.close_listener()
        if opening is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await opening
        for conn in list(self.connections):
            conn.close()
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    async def _session(self, process: asyncssh.SSHServerProcess) -> None:
        device = self.device
        cli = device.open_cli(process.get_extra_info("username") or self.lab.username)
        limit = int(device.fault_params.get("max_sessions", 1))
        if device.has_fault(Fault.SESSION_LIMIT) and len(device.sessions) >= limit:
            device.record("session refused: all lines busy")
            with contextlib.suppress(BrokenPipeError, OSError, asyncssh.Error):
                process.stdout.write(cli.busy_message + "\r\n")
                process.exit(1)
            return
        device.sessions.add(cli)
        try:
            await _Terminal(process, device, cli).run()
        finally:
            device.sessions.discard(cli)
            cli.close()


class LabServer:
    """Serves every device of a LabNetwork over SSH on `host` (127.0.0.1 only, by design)."""

    def __init__(
        self,
        net: LabNetwork,
        data_dir: Path,
        *,
        username: str = "netops",
        password: str = "lab-secret",
        client_public_keys: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        if host != "127.0.0.1" and not host.startswith("127."):
            raise ValueError("the lab listens on loopback only")
        self.net = net
        self.data_dir = Path(data_dir)
        self.username = username
        self.password = password
        self.host = host
        self.client_keys = {asyncssh.import_public_key(k).public_data for k in client_public_keys}
        self._endpoints: dict[str, _Endpoint] = {}
        self._started = False

    @property
    def known_hosts_path(self) -> Path:
        return self.data_dir / "known_hosts"

    @property
    def host_keys_dir(self) -> Path:
        return self.data_dir / "host_keys"

    async def start(self) -> None:
        """Open one listener per device and write known_hosts for all of them."""
        if self._started:
            return
        self.host_keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        wanted = {d.name: d.port for d in self.net.inventory.devices}
        for name, device in self.net.devices.items():
            key = _load_or_create_key(self.host_keys_dir / f"{name}.key")
            self._endpoints[name] = _Endpoint(self, device, key)
        try:
            await asyncio.gather(
                *(
                    ep.start(port if (port := wanted.get(name, 0)) >= _LOWEST_FIXED_PORT else 0)
                    for name, ep in self._endpoints.items()
                )
            )
        except BaseException:
            await self._stop_endpoints()
            raise
        self._write_known_hosts()
        self.net.add_fault_listener(self._on_fault)
        for name, device in self.net.devices.items():
            if device.fault is not None:
                self._on_fault(name, device.fault, None)
        self._started = True
        log.info("lab serving %d devices on %s", len(self._endpoints), self.host)

    async def stop(self) -> None:
        self.net.remove_fault_listener(self._on_fault)
        await self._stop_endpoints()
        self._started = False

    async def _stop_endpoints(self) -> None:
        await asyncio.gather(*(ep.stop() for ep in self._endpoints.values()))
        self._endpoints.clear()

    def port(self, device: str) -> int:
        return self._endpoints[device].port

    def inventory(self) -> Inventory:
        """The inventory as clients must use it: this host and the ports actually listened on."""
        inv = self.net.inventory
        devices = [
            d.model_copy(update={"host": self.host, "port": self._endpoints[d.name].port})
            if d.name in self._endpoints
            else d
            for d in inv.devices
        ]
        return inv.model_copy(update={"devices": devices})

    def _write_known_hosts(self) -> None:
        lines = [
            f"[{self.host}]:{ep.port} {_public_line(ep.host_key)}\n"
            for ep in self._endpoints.values()
        ]
        tmp = self.known_hosts_path.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.replace(tmp, self.known_hosts_path)

    def _on_fault(self, device: str, fault: Fault | None, previous: Fault | None) -> None:
        ep = self._endpoints.get(device)
        if ep is None:
            return
        if fault is Fault.UNREACHABLE:
            # A dead router or a cut management link: new connections refused, open ones gone.
            ep.close_listener()
            for conn in list(ep.connections):
                conn.close()
        elif previous is Fault.UNREACHABLE:
            ep.reopen()
        if fault is Fault.HOST_KEY_CHANGE:
            ep.present(asyncssh.generate_private_key("ssh-ed25519"))
        elif previous is Fault.HOST_KEY_CHANGE:
            ep.present(ep.host_key)


async def serve(
    inventory_path: Path,
    data_dir: Path,
    *,
    time_scale: float = 1.0,
    username: str = "netops",
    password: str = "lab-secret",
) -> None:
    """Serve the inventory's devices until cancelled; data_dir/inventory.json gets the ports."""
    text = await asyncio.to_thread(Path(inventory_path).read_text)
    inventory = Inventory.model_validate_json(text)
    net = LabNetwork.from_inventory(inventory, time_scale=time_scale)
    server = LabServer(net, Path(data_dir), username=username, password=password)
    await server.start()
    try:
        served = Path(data_dir) / "inventory.json"
        tmp = served.with_suffix(".tmp")
        tmp.write_text(server.inventory().model_dump_json(indent=2))
        os.replace(tmp, served)
        log.info("lab inventory with ports: %s; known hosts: %s", served, server.known_hosts_path)
        await asyncio.Event().wait()
    finally:
        await server.stop()


__all__ = ["LabServer", "serve"]
