"""Continuity as a NOC runs it: declared through the API, every change confirmed by an operator.

One incident per round, through the real HTTP API: the duty officer's POST /incidents names the
bench playbook (bench/continuity_api.py: every circuit of area "lab" in one wave, no calls); an
operator tool polls GET /incidents/{id}/changes (the store, no workflow involved; sending back
the list's ETag, so an unchanged list is a 304, as the console does) and POSTs a confirmation
for each change the moment it awaits one, all concurrently. Timed from the
declaration's 201:

- restore_s (= seconds): every reroute change verified on backup (awaiting_confirmation, or
  already confirmed);
- confirmed_s: every change confirmed (on the device: `configure confirm`, saved).

Untimed, in `settle()` after compare.py checked the devices: the duty officer stands the
incident down through the API, the incident closes (every device back on primary, read back),
and its histories are measured (parent, and parent + DutyCall children).

Machinery, started on the first call and kept: a Temporal dev server (SQLite file, 10 ms timer
grid), the store (a fresh database on the PostgreSQL at 127.0.0.1:5432 when one answers: with 200
devices at once it restored in 12.9 s where a SQLite file took 17.0 s, medians of 3; else a
SQLite file; BENCH_CONTINUITY_STORE=sqlite|postgresql chooses), the Twilio sandbox in a thread
(the stand-down SMS goes there), `python worker.py` and the API (bench/continuity_api.py), each
in its own process group, configured by CONTINUITY_* variables and stopped by PID. The API runs
in its own process, as `continuity api` does in production: in this process it would share one
event loop and one GIL with the operator client that loads it, and its latency would be partly
the client's.

Every round starts with the worker's SSH pool empty, as an incident finds it after a quiet
spell: sessions pooled by the previous round are left to expire (ssh_idle_s, 60 s by default)
before the declaration, untimed. The operator client's decision connections are then opened,
untimed, as operators' consoles hold theirs (they poll every 1.5 s, inside uvicorn's 5 s
keep-alive): 50 connections opened at once in the burst took up to 350 ms each to set up, a
cost a console with its connection open does not pay (BENCH_CONTINUITY_WARM_CONNECTIONS=0:
cold, as before). BENCH_CONTINUITY_PROFILE=DIR writes each incident's histories there and
prints activity latencies from their timestamps; with BENCH_CONTINUITY_PYSPY=1 also
`py-spy record` of the worker and the API over the timed part. Workflows and store activities
run in one worker process and device activities in another, as a deployment with site workers
does (`continuity worker --sites-only`); BENCH_CONTINUITY_SPLIT_WORKER=0 runs them in one.

Knobs for trying other arrangements (each tried on 2 cores, none better than the default):
BENCH_CONTINUITY_SITE_WORKERS=N device-worker processes, BENCH_CONTINUITY_WORKER_NICE and
BENCH_CONTINUITY_API_NICE (CPU priority), BENCH_CONTINUITY_STORE_THREADS (the API's: 8, the
default since it beat 32; 4 was no better), BENCH_CONTINUITY_WORKER_STORE_THREADS (the
workers': 6 and 24 measured the same). BENCH_CONTINUITY_KEEP_STORE=1 keeps the PostgreSQL
database (its name printed) to read the transcripts afterwards.
With BENCH_CONTINUITY_PROFILE the workers' `step …` log lines are summed up per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from continuity_api import PLAYBOOK
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from workload import USERNAME

from app.stack import TemporalDevServer, free_port
from continuity.errors import ContinuityError
from continuity.messages import Timings
from continuity.models import Area, DutyOfficer, Inventory, Operator
from continuity.signing import generate_key_pair
from continuity.store import Store
from lab.telephony import TelephonySandbox

REPO_ROOT = Path(__file__).resolve().parent.parent
AREA = "lab"
OPERATOR = "op-bench"
DUTY_OFFICER = "do-bench"
TASK_QUEUE = "bench"
CREDENTIAL = "lab"  # what lab.gear.network.generate_inventory names on every device
# A window long enough for the round: at least 300 s, more for big labs (at 1000 devices the
# decisions took longer than 300 s to get through). The device's timer adds verify + margin.
CONFIRM_WINDOW_MIN_S = 300.0
CONFIRM_WINDOW_PER_DEVICE_S = 1.5
DEVICE_TIME_SCALE = 1.0  # bench/lab_process.py runs device clocks at wall speed
MAX_PARALLEL_DEVICES = 256  # the ceiling Timings allows
# Worker SSH limits that do not bind at the sizes the bench runs (handshakes: up to 256).
SSH_MAX_SESSIONS = 1024
SSH_MAX_HANDSHAKES = 256
SSH_POOL_SIZE = 1024
# The site worker's CPU priority below the API's (os.nice): BENCH_CONTINUITY_WORKER_NICE.
WORKER_NICE = int(os.environ.get("BENCH_CONTINUITY_WORKER_NICE", "0"))
# Processes serving the device queues (a site can run several): BENCH_CONTINUITY_SITE_WORKERS.
SITE_WORKERS = max(1, int(os.environ.get("BENCH_CONTINUITY_SITE_WORKERS", "1")))
# The API's (negative: above everything else; needs root): BENCH_CONTINUITY_API_NICE.
API_NICE = int(os.environ.get("BENCH_CONTINUITY_API_NICE", "0"))
SSH_IDLE_S = 60.0  # the production default, stated so the cold-pool wait knows it

# The operator tool: how often it re-reads the changes list, and how long it gives a request.
POLL_INTERVAL_S = 0.05
# A decision request is waited for, however slow: its latency is the figure, not a failure.
HTTP_TIMEOUT_S = 3600.0
HTTP_CONNECTIONS = 1024
HTTP_KEEPALIVE_S = 1.0
DECISION_KEEPALIVE_S = 4.0  # warm through a round's burst, still below uvicorn's 5 s
# Decision connections opened before each declaration, as operators' consoles hold theirs
# (they poll every 1.5 s, inside uvicorn's 5 s keep-alive): more than a burst has in flight.
WARM_DECISION_CONNECTIONS = int(os.environ.get("BENCH_CONTINUITY_WARM_CONNECTIONS", "128"))
# Consoles open on the incident through the round, each reading its status as the console
# does (GET /incidents/{id} every CONSOLE_POLL_S, sending back the ETag it holds).
CONSOLES = int(os.environ.get("BENCH_CONTINUITY_CONSOLES", "0"))
CONSOLE_POLL_S = 1.5  # api/static/console.js POLL_MS
MAX_RESENDS = 50  # decisions sent again after a dropped connection, in a round
DEFAULT_RETRY_AFTER_S = 2.0

START_TIMEOUT_S = 60.0
TEMPORAL_START_TRIES = 3
STOP_TIMEOUT_S = 15.0
COLD_POOL_TIMEOUT_S = SSH_IDLE_S + 30.0
STAND_DOWN_TIMEOUT_S = 900.0
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

_VERIFIED = {"awaiting_confirmation", "confirmed"}
_ON_THE_WAY = {"pending", "applying", *_VERIFIED}


class ContinuityBenchError(Exception):
    """The machinery did not come up, or a round did not end as it must."""


# --- processes of our own -----------------------------------------------------------------


class _Child:
    """A process in its own process group with its log file; stopped by its PID, group and all."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log: Path, *, nice: int = 0
    ) -> None:
        self.name = name
        self._argv = argv
        self._nice = nice
        self._env = env
        self.log = log
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv,
                cwd=REPO_ROOT,
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                # Set before exec: every thread the process makes inherits it.
                preexec_fn=(lambda: os.nice(self._nice)) if self._nice else None,
            )

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ContinuityBenchError(f"{self.name} is not running")
        return self._proc.pid

    def check(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            code = self._proc.returncode if self._proc else None
            raise ContinuityBenchError(f"{self.name} exited ({code}): {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.pid)

    def peak_rss_mib(self) -> float:
        """VmHWM: the resident set's high-water mark over the process's life."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise ContinuityBenchError(f"no VmHWM for {self.name}")

    async def stop(self) -> None:
        """SIGINT the group (a clean shutdown), SIGKILL it if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def confirm_window_s(devices: int) -> float:
    return max(CONFIRM_WINDOW_MIN_S, CONFIRM_WINDOW_PER_DEVICE_S * devices)


def _default_store() -> str:
    """PostgreSQL when one answers on 127.0.0.1:5432 (measured faster under 200 concurrent
    devices: concurrent writers, where SQLite has one), else a SQLite file."""
    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as c:
            c.execute(text("select 1"))
    except SQLAlchemyError:
        return "sqlite"
    finally:
        engine.dispose()
    return "postgresql"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line (or retitled process name) contains `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def _cpu_total(pids: list[int]) -> float:
    """CPU seconds of these processes; one that has exited since counts no more."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += _cpu_seconds(pid)
    return total


def _pids_with_argument(arg: str) -> list[int]:
    """Processes whose command line has `arg` (only read, never signalled)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if arg.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


def _tcp_peers(pid: int) -> list[int]:
    """Remote ports of the established TCP connections `pid` holds (Linux /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "01" and cols[9] in inodes:  # 01: ESTABLISHED
                    ports.append(int(cols[2].rpartition(":")[2], 16))
    return ports


# --- the machinery --------------------------------------------------------------------------


@dataclass
class _Round:
    incident_id: str
    devices: int
    started: float  # perf_counter at the declaration's 201
    cpu0: dict[str, float]


@dataclass
class _Consoles:
    ms: list[float] = field(default_factory=list)
    unchanged: int = 0
    largest: int = 0


@dataclass
class _Operator:
    """The fast operator tool: every decision's latency and every answer that was not a 200."""

    latencies_ms: list[float] = field(default_factory=list)
    # Per answered decision, the API's Server-Timing parts (claim, signal) in ms.
    server_ms: dict[str, list[float]] = field(default_factory=dict)
    # How late this process's own event loop woke from a 10 ms sleep (ms): how much of the
    # decisions' `client` part is the bench's client rather than the API.
    loop_lag_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retried_503: int = 0
    transport_errors: int = 0
    undelivered: int = 0
    in_flight: int = 0
    in_flight_max: int = 0


class _Continuity:
    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="continuity-bench-")
        self.root = Path(self._tmp.name)
        self.known_hosts = self.root / "known_hosts"
        self.store_kind = os.environ.get("BENCH_CONTINUITY_STORE") or _default_store()
        self.profile_dir = (
            Path(os.environ["BENCH_CONTINUITY_PROFILE"])
            if os.environ.get("BENCH_CONTINUITY_PROFILE")
            else None
        )
        self.db_url = ""
        self._pg_db: str | None = None
        self.temporal: TemporalDevServer | None = None
        self.client: Client | None = None
        self._temporal_pids: list[int] = []
        self.sandbox: TelephonySandbox | None = None
        self.worker: _Child | None = None  # device activities (and, unless split, the rest)
        # More processes serving the same device queues (BENCH_CONTINUITY_SITE_WORKERS=N).
        self.more_workers: list[_Child] = []
        self.central: _Child | None = None  # BENCH_CONTINUITY_SPLIT_WORKER: workflows apart
        # As deployed: workflows apart from device work (BENCH_CONTINUITY_SPLIT_WORKER=0: one).
        self.split_worker = os.environ.get("BENCH_CONTINUITY_SPLIT_WORKER", "1") != "0"
        self.api: _Child | None = None
        self.api_url = ""
        self._api_timings: Timings | None = None
        self._password: str | None = None
        self._inventory: Inventory | None = None
        self._tokens = {"officer": secrets.token_urlsafe(16), "operator": secrets.token_urlsafe(16)}
        self._twilio = ("AC" + secrets.token_hex(16), secrets.token_hex(16))
        self.http: httpx.AsyncClient | None = None
        # The operator's decisions: aiohttp, whose pool does not queue a burst of 200 requests
        # behind itself as httpx's did (p99 1 s waiting for a pooled connection, by its trace).
        self.decisions: aiohttp.ClientSession | None = None
        self.open_round: _Round | None = None
        self.rounds = 0

    # --- start and stop ----------------------------------------------------------------

    async def start(self) -> None:
        self.db_url = self._create_database()
        # As production runs: the API signs every declaration, decision and order with this
        # key, and the worker and the incident check them (data/signing.key, shared by both).
        generate_key_pair(self.root / "data" / "signing.key")
        print(f"continuity: store {self.store_kind}, data in {self.root}", file=sys.stderr)
        for attempt in range(1, TEMPORAL_START_TRIES + 1):
            # start-dev also binds ports next to the frontend's; with a big lab listening, one
            # of them can be taken: try another frontend port.
            self.temporal = TemporalDevServer(
                self.root / "temporal.db", free_port(), fast_timers=True
            )
            try:
                self.client = await self.temporal.start()
                break
            except ContinuityError as e:
                log = (self.root / "temporal.log").read_text(errors="replace")[-1500:]
                print(f"continuity: Temporal start {attempt} failed: {e}\n{log}", file=sys.stderr)
                await self.temporal.stop()
                if attempt == TEMPORAL_START_TRIES:
                    raise
        self._temporal_pids = _pids_with_argument(str(self.root / "temporal.db"))
        sandbox = TelephonySandbox(account_sid=self._twilio[0], auth_token=self._twilio[1])
        await sandbox.start()
        self.sandbox = sandbox
        self.api_url = f"http://127.0.0.1:{free_port()}"
        self.decisions = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=HTTP_CONNECTIONS, keepalive_timeout=DECISION_KEEPALIVE_S
            ),
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
            trace_configs=[_decision_trace()],
        )
        self.http = httpx.AsyncClient(
            base_url=self.api_url,
            timeout=HTTP_TIMEOUT_S,
            limits=httpx.Limits(
                max_connections=HTTP_CONNECTIONS,
                max_keepalive_connections=HTTP_CONNECTIONS,
                # Below uvicorn's 5 s keep-alive: a request never races the server's close.
                keepalive_expiry=HTTP_KEEPALIVE_S,
            ),
        )

    def _create_database(self) -> str:
        if self.store_kind == "sqlite":
            return f"sqlite:///{self.root / 'continuity.db'}"
        if self.store_kind != "postgresql":
            raise ContinuityBenchError("BENCH_CONTINUITY_STORE is sqlite or postgresql")
        name = f"continuity_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        self._pg_db = name
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    async def close(self) -> None:
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            for log in self.root.glob("*.log"):
                (self.profile_dir / log.name).write_bytes(log.read_bytes())
        for child in (self.api, self.worker, self.central, *self.more_workers):
            if child is not None:
                await child.stop()
        self.api = self.worker = self.central = None
        self.more_workers = []
        if self.http is not None:
            await self.http.aclose()
        if self.decisions is not None:
            await self.decisions.close()
        if self.sandbox is not None:
            await self.sandbox.stop()
        if self.temporal is not None:
            await self.temporal.stop()
        if self._pg_db is not None:
            self._print_store_load()
            if os.environ.get("BENCH_CONTINUITY_KEEP_STORE") == "1":
                print(f"continuity: store kept: {self.db_url}", flush=True)
                self._pg_db = None
        if self._pg_db is not None:
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as c:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{self._pg_db}" WITH (FORCE)'))
            finally:
                admin.dispose()
        self._tmp.cleanup()

    def _print_store_load(self) -> None:
        """What the run asked of PostgreSQL: commits, and rows written per table."""
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as c:
                commits = c.execute(
                    text("SELECT xact_commit FROM pg_stat_database WHERE datname = :d"),
                    {"d": self._pg_db},
                ).scalar()
                rows = c.execute(
                    text(
                        "SELECT relname, n_tup_ins, n_tup_upd FROM pg_stat_user_tables"
                        " WHERE n_tup_ins + n_tup_upd > 0 ORDER BY n_tup_ins + n_tup_upd DESC"
                    )
                ).all()
        finally:
            engine.dispose()
        tables = ", ".join(f"{r[0]} +{r[1]}/~{r[2]}" for r in rows)
        print(
            f"continuity: store load: {commits} commits; rows +ins/~upd: {tables}", file=sys.stderr
        )

    def _env(self, timings: Timings) -> dict[str, str]:
        assert self.temporal is not None and self.sandbox is not None
        settings = {
            "DATA_DIR": str(self.root / "data"),
            "DATABASE_URL": self.db_url,
            "TEMPORAL_ADDRESS": self.temporal.address,
            "TASK_QUEUE": TASK_QUEUE,
            "TIMINGS": timings.model_dump_json(),
            "API_HOST": "127.0.0.1",
            "API_PORT": self.api_url.rpartition(":")[2],
            "API_TOKENS": json.dumps(
                {
                    self._tokens["officer"]: {"subject": DUTY_OFFICER, "role": "duty_officer"},
                    self._tokens["operator"]: {"subject": OPERATOR, "role": "operator"},
                }
            ),
            "DEVICE_CREDENTIALS": json.dumps(
                {CREDENTIAL: {"username": USERNAME, "password": self._password}}
            ),
            "KNOWN_HOSTS": str(self.known_hosts),
            "SSH_MAX_SESSIONS": str(SSH_MAX_SESSIONS),
            "SSH_MAX_HANDSHAKES": str(SSH_MAX_HANDSHAKES),
            "SSH_POOL_SIZE": str(SSH_POOL_SIZE),
            "SSH_IDLE_S": str(SSH_IDLE_S),
            "TWILIO_ACCOUNT_SID": self._twilio[0],
            "TWILIO_AUTH_TOKEN": self._twilio[1],
            "TWILIO_API_BASE": self.sandbox.base_url,
            "PUBLIC_BASE_URL": self.api_url,
        }
        if os.environ.get("BENCH_CONTINUITY_STORE_THREADS"):  # the API's, to try others
            settings["STORE_THREADS"] = os.environ["BENCH_CONTINUITY_STORE_THREADS"]
        if os.environ.get("BENCH_CONTINUITY_WORKER_STORE_THREADS"):
            settings["WORKER_STORE_THREADS"] = os.environ["BENCH_CONTINUITY_WORKER_STORE_THREADS"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
        env.update({f"CONTINUITY_{k}": v for k, v in settings.items()})
        return env

    # --- per size: inventory, worker, API ------------------------------------------------

    async def prepare(
        self, inventory: Inventory, known_hosts: Path, password: str, concurrency: int
    ) -> None:
        """The store holds this lab's inventory, and the worker and API run for it."""
        timings = Timings(
            confirm_window_s=confirm_window_s(len(inventory.devices)),
            device_time_scale=DEVICE_TIME_SCALE,
            max_parallel_devices=max(1, min(concurrency, MAX_PARALLEL_DEVICES)),
        )
        if inventory is not self._inventory:
            # A new lab (next size): its ports and host keys. The worker reads known_hosts at
            # each connection, so it keeps running; its store sees the new inventory version.
            await asyncio.to_thread(self._load_inventory, inventory, known_hosts)
            self._inventory = inventory
        if password != self._password:
            self._password = password
            await self._restart_worker(timings)
            self._api_timings = None
        if timings != self._api_timings:  # the API hands its settings' timings to incidents
            await self._restart_api(timings)
            self._api_timings = timings

    def _load_inventory(self, served: Inventory, known_hosts: Path) -> None:
        self.known_hosts.write_bytes(known_hosts.read_bytes())
        inv = served.model_copy(
            update={
                "areas": [Area(id=AREA, name="Lab")],
                "operators": [Operator(id=OPERATOR, name="Bench operator")],
                "duty_officers": [
                    DutyOfficer(
                        id=DUTY_OFFICER,
                        name="Bench officer",
                        phone="+84905100299",
                        escalation_order=1,
                    )
                ],
            }
        )
        store = Store(self.db_url)
        try:
            store.create_schema()
            store.replace_inventory(Inventory.model_validate(inv.model_dump()))
        finally:
            store.close()

    async def _restart_worker(self, timings: Timings) -> None:
        for old in (self.worker, self.central, *self.more_workers):
            if old is not None:
                await old.stop()
        self.central = None
        if self.split_worker:
            # Workflows and store activities in one process, device activities in another
            # (worker.main's `sites` / `central`, as a site worker is deployed).
            self.central = _Child(
                "central",
                [sys.executable, "-c", "import worker; worker.main(sites=[])"],
                self._env(timings),
                self.root / "central.log",
            )
            argv = [sys.executable, "-c", "import worker; worker.main(central=False)"]
        else:
            argv = [sys.executable, "worker.py"]
        self.worker = _Child(
            "worker", argv, self._env(timings), self.root / "worker.log", nice=WORKER_NICE
        )
        self.more_workers = [
            _Child(f"worker-{n}", argv, self._env(timings), self.root / f"worker-{n}.log")
            for n in range(2, SITE_WORKERS + 1)
        ]
        for child in (self.worker, self.central, *self.more_workers):
            if child is not None:
                await child.start()
                await self._until(lambda c=child: "worker polling" in c.tail(), child)

    async def _restart_api(self, timings: Timings) -> None:
        if self.api is not None:
            await self.api.stop()
        self.api = _Child(
            "api",
            [sys.executable, str(REPO_ROOT / "bench" / "continuity_api.py")],
            self._env(timings),
            self.root / "api.log",
            nice=API_NICE,
        )
        await self.api.start()
        assert self.http is not None
        http = self.http

        async def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                r = await http.get("/healthz")
                return r.status_code == 200 and r.json().get("status") == "ok"
            return False

        deadline = time.monotonic() + START_TIMEOUT_S
        while not await healthy():
            self.api.check()
            if time.monotonic() > deadline:
                raise ContinuityBenchError(f"the API did not come up: {self.api.tail()}")
            await asyncio.sleep(0.1)

    @staticmethod
    async def _until(ready: Any, child: _Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            child.check()
            if time.monotonic() > deadline:
                raise ContinuityBenchError(f"{child.name} did not come up: {child.tail()}")
            await asyncio.sleep(0.1)

    async def cold_pool(self) -> None:
        """Wait until the worker holds no SSH session to the lab (pooled ones expire)."""
        assert self.worker is not None and self._inventory is not None
        lab_ports = {d.port for d in self._inventory.devices}
        deadline = time.monotonic() + COLD_POOL_TIMEOUT_S
        workers = [self.worker, *self.more_workers]
        while any(p in lab_ports for w in workers for p in _tcp_peers(w.pid)):
            for w in workers:
                w.check()
            if time.monotonic() > deadline:
                raise ContinuityBenchError("the worker's pooled SSH sessions did not expire")
            await asyncio.sleep(0.5)

    def cpu(self) -> dict[str, float]:
        assert self.worker is not None and self.api is not None
        out = {
            "worker": sum(w.cpu_seconds() for w in (self.worker, *self.more_workers)),
            "api": self.api.cpu_seconds(),
        }
        if self.central is not None:
            out["central"] = self.central.cpu_seconds()
        with contextlib.suppress(OSError):
            out["temporal"] = sum(_cpu_seconds(p) for p in self._temporal_pids)
        if self._pg_db is not None:
            # The backends serving this run's database (a backend's title names it).
            out["postgres"] = _cpu_total(_pids_mentioning(self._pg_db))
        return out

    def _auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens[who]}"}

    # --- one round -------------------------------------------------------------------------

    async def declare(self) -> _Round:
        assert self.http is not None and self._inventory is not None
        self.rounds += 1
        size = len(self._inventory.devices)
        incident_id = f"INC-bench-{size}-{self.rounds}-{uuid.uuid4().hex[:6]}"
        await self._warm_decisions(WARM_DECISION_CONNECTIONS)
        cpu0 = self.cpu()
        r = await self.http.post(
            "/incidents",
            json={
                "id": incident_id,
                "kind": "sabotage",
                "area": AREA,
                "description": "bench: every circuit to backup",
                "playbook": PLAYBOOK,
            },
            headers=self._auth("officer"),
        )
        started = time.perf_counter()
        if r.status_code != 201:
            raise ContinuityBenchError(f"declaration answered {r.status_code}: {r.text}")
        rnd = _Round(incident_id, len(self._inventory.devices), started, cpu0)
        self.open_round = rnd
        return rnd

    async def _warm_decisions(self, n: int) -> None:
        """Open `n` keep-alive connections for the decisions (n requests at once), untimed."""
        assert self.decisions is not None
        session = self.decisions

        async def ping() -> None:
            async with session.get(f"{self.api_url}/healthz", trace_request_ctx={}) as r:
                await r.read()
                if r.status != 200:
                    raise ContinuityBenchError(f"GET /healthz answered {r.status}")

        await asyncio.gather(*(ping() for _ in range(n)))

    async def operate(self, rnd: _Round, timeout_s: float) -> dict[str, float]:
        """Poll the changes, confirm each the moment it awaits; until every one is confirmed."""
        assert self.http is not None
        http = self.http
        op = _Operator()
        fired: dict[str, asyncio.Task[None]] = {}
        ticker = asyncio.create_task(_watch_loop_lag(op.loop_lag_ms))
        screens = _Consoles()
        consoles = [
            asyncio.create_task(self._console(rnd.incident_id, screens)) for _ in range(CONSOLES)
        ]
        api_lag0 = await self._api_loop_lag()
        restore_s: float | None = None
        deadline = rnd.started + timeout_s
        path = f"/incidents/{rnd.incident_id}/changes"
        polls: list[float] = []
        unchanged = 0
        etag: str | None = None
        changes: list[dict[str, Any]] = []
        while True:
            t0 = time.perf_counter()
            # As a console does: the list it holds is sent back by its ETag, 304 while unchanged.
            headers = self._auth("operator") | ({"If-None-Match": etag} if etag else {})
            r = await http.get(path, headers=headers)
            seen = time.perf_counter()
            polls.append(seen - t0)
            if r.status_code == 304:
                unchanged += 1
            elif r.status_code == 200:
                etag = r.headers.get("ETag")
                changes = [c for c in r.json() if c["direction"] == "reroute"]
            else:
                raise ContinuityBenchError(f"GET {path} answered {r.status_code}: {r.text}")
            for c in changes:
                if (
                    c["state"] == "awaiting_confirmation"
                    and c["decision"] is None
                    and c["change_id"] not in fired
                ):
                    fired[c["change_id"]] = asyncio.create_task(
                        self._decide(op, rnd.incident_id, c["change_id"])
                    )
            stray = [c for c in changes if c["state"] not in _ON_THE_WAY]
            if stray:
                c = stray[0]
                raise ContinuityBenchError(
                    f"{len(stray)} changes went astray, e.g. {c['change_id']}: "
                    f"{c['state']}: {c['detail']}"
                )
            for task in fired.values():
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            complete = len(changes) == rnd.devices
            if restore_s is None and complete and all(c["state"] in _VERIFIED for c in changes):
                restore_s = seen - rnd.started
            if complete and all(c["state"] == "confirmed" for c in changes):
                confirmed_s = seen - rnd.started
                break
            if seen > deadline:
                states = Counter(c["state"] for c in changes)
                raise ContinuityBenchError(
                    f"not all confirmed within {timeout_s:.0f} s: {len(changes)} changes, "
                    f"{dict(states)}; decisions {dict(op.statuses)}"
                )
            await asyncio.sleep(POLL_INTERVAL_S)
        await asyncio.gather(*fired.values())
        ticker.cancel()
        for c in consoles:
            c.cancel()
        await asyncio.gather(*consoles, return_exceptions=True)
        assert restore_s is not None
        cpu1 = self.cpu()
        lat = sorted(op.latencies_ms)
        wrong = sum(n for status, n in op.statuses.items() if status not in (200, 503))
        out: dict[str, float] = {
            "seconds": restore_s,
            "restore_s": restore_s,
            "confirmed_s": confirmed_s,
            "decision_p50_ms": statistics.median(lat),
            "decision_p99_ms": _percentile(lat, 0.99),
            "decisions_peak": op.in_flight_max,  # decision requests in flight at once, at most
            "decisions_non200": wrong,  # neither 200 nor 503
            "decisions_409": op.statuses.get(409, 0),
            "decisions_503": op.retried_503,
            "decisions_no_answer": op.transport_errors,  # connection dropped; sent again
        }
        for who, used in cpu1.items():
            out[f"{who}_cpu_s"] = used - rnd.cpu0.get(who, 0.0)
        # The API's own loop, by its histogram's buckets over the round (a bucket's bound).
        api_lag = {le: n - api_lag0.get(le, 0.0) for le, n in (await self._api_loop_lag()).items()}
        for q in (0.5, 0.99):
            bound = _bucket_quantile(api_lag, q)
            if bound is not None:
                out[f"api_loop_lag_p{round(q * 100)}_ms"] = bound * 1000
        if op.loop_lag_ms:
            lag = sorted(op.loop_lag_ms)
            out["client_loop_lag_p50_ms"] = statistics.median(lag)
            out["client_loop_lag_p99_ms"] = _percentile(lag, 0.99)
        if screens.ms:
            ms = sorted(screens.ms)
            out["console_reads"] = len(ms)
            out["console_304"] = screens.unchanged
            out["console_read_p50_ms"] = statistics.median(ms)
            out["console_read_p99_ms"] = _percentile(ms, 0.99)
            out["console_body_kb"] = screens.largest / 1024
        for name, ms in sorted(op.server_ms.items()):
            ms.sort()
            out[f"decision_{name}_p50_ms"] = statistics.median(ms)
            out[f"decision_{name}_p99_ms"] = _percentile(ms, 0.99)
        print(
            f"continuity {rnd.incident_id}: decisions {sum(op.statuses.values())} "
            f"{dict(op.statuses)}, max {lat[-1]:.0f} ms, undelivered {op.undelivered}; "
            f"{len(polls)} polls of the changes ({unchanged} answered 304), p50 "
            f"{statistics.median(polls) * 1000:.0f} ms",
            file=sys.stderr,
            flush=True,
        )
        return out

    async def _console(self, incident_id: str, screens: _Consoles) -> None:
        """One console's incident view: its status read every CONSOLE_POLL_S, by its ETag."""
        assert self.http is not None
        etag: str | None = None
        while True:
            headers = self._auth("operator") | ({"If-None-Match": etag} if etag else {})
            t0 = time.perf_counter()
            r = await self.http.get(f"/incidents/{incident_id}", headers=headers)
            screens.ms.append((time.perf_counter() - t0) * 1000)
            if r.status_code == 304:
                screens.unchanged += 1
            elif r.status_code == 200:
                etag = r.headers.get("ETag")
                if len(r.content) > screens.largest and self.profile_dir is not None:
                    self.profile_dir.mkdir(parents=True, exist_ok=True)
                    (self.profile_dir / f"status-{incident_id}.json").write_bytes(r.content)
                screens.largest = max(screens.largest, len(r.content))
            else:
                raise ContinuityBenchError(f"GET /incidents/{incident_id} answered {r.status_code}")
            await asyncio.sleep(CONSOLE_POLL_S)

    async def _api_loop_lag(self) -> dict[float, float]:
        """The API's event-loop lag histogram: upper bound (s) -> ticks at most that late."""
        assert self.http is not None
        r = await self.http.get("/metrics")
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                if sample.name == "continuity_api_event_loop_lag_seconds_bucket":
                    buckets[float(sample.labels["le"])] = sample.value
        return buckets

    async def _decide(self, op: _Operator, incident_id: str, change_id: str) -> None:
        assert self.decisions is not None
        url = f"{self.api_url}/incidents/{incident_id}/changes/{change_id}/decision"
        op.in_flight += 1
        op.in_flight_max = max(op.in_flight_max, op.in_flight)
        try:
            resent = False
            while True:
                marks: dict[str, float] = {}
                t0 = time.perf_counter()
                try:
                    async with self.decisions.post(
                        url,
                        json={"decision": "confirm"},
                        headers=self._auth("operator"),
                        trace_request_ctx=marks,
                    ) as r:
                        status, headers, body = r.status, r.headers, await r.text()
                except aiohttp.ClientError as e:
                    # No answer (the connection dropped): send again, as an operator would.
                    op.transport_errors += 1
                    if op.transport_errors > MAX_RESENDS:
                        raise
                    print(f"continuity: {change_id}: {e!r}; sending again", file=sys.stderr)
                    resent = True
                    continue
                took_ms = (time.perf_counter() - t0) * 1000
                op.latencies_ms.append(took_ms)
                # Two Server-Timing fields (the route's, the app's): every one, joined.
                parts = _server_timing(", ".join(headers.getall("Server-Timing", [])))
                if "app" in parts:
                    # Outside the app: the client's own loop, the connection, uvicorn's parsing;
                    # inside it but outside the route's parts: its dependencies (the token
                    # check), waits for the API's event loop.
                    parts["client"] = took_ms - parts["app"]
                    parts["app"] -= parts.get("claim", 0.0) + parts.get("signal", 0.0)
                    parts.update(_client_parts(t0, marks))
                    for name, ms in parts.items():
                        op.server_ms.setdefault(name, []).append(ms)
                if resent and status == 409 and OPERATOR in body:
                    # Ours, decided by the attempt whose answer was lost.
                    op.statuses[200] += 1
                    return
                op.statuses[status] += 1
                if status == 503:
                    # Overload, as the API promises it: wait as told, then send again.
                    op.retried_503 += 1
                    wait = float(headers.get("Retry-After", DEFAULT_RETRY_AFTER_S))
                    await asyncio.sleep(wait)
                    continue
                if status == 200 and not json.loads(body).get("delivered", True):
                    op.undelivered += 1
                return
        finally:
            op.in_flight -= 1

    async def settle(self) -> dict[str, float]:
        """Stand the open incident down through the API, wait until it closes, read histories."""
        rnd, self.open_round = self.open_round, None
        if rnd is None:
            return {}
        assert self.http is not None and self.client is not None and self.worker is not None
        t0 = time.perf_counter()
        r = await self.http.post(
            f"/incidents/{rnd.incident_id}/stand-down",
            json={"reason": "bench round over"},
            headers=self._auth("officer"),
        )
        if r.status_code != 202:
            raise ContinuityBenchError(f"stand-down answered {r.status_code}: {r.text}")
        handle = self.client.get_workflow_handle(rnd.incident_id)
        result = await asyncio.wait_for(handle.result(), STAND_DOWN_TIMEOUT_S)
        stand_down_s = time.perf_counter() - t0
        if result.get("phase") != "closed":
            raise ContinuityBenchError(f"{rnd.incident_id} ended {result.get('phase')}")
        off = {c: s for c, s in result.get("circuits", {}).items() if s != "on_primary"}
        if off:
            raise ContinuityBenchError(f"{rnd.incident_id} closed with circuits off primary: {off}")
        parent = await handle.fetch_history()
        histories = [parent]
        for child_id in _children(parent):
            histories.append(await self.client.get_workflow_handle(child_id).fetch_history())
        sizes = [len(h.to_json()) for h in histories]
        if self.profile_dir is not None:
            self._profile(rnd, histories)
        server_bytes, suggested = _task_started_figures(parent)
        print(
            f"continuity {rnd.incident_id}: closed {stand_down_s:.1f} s after the stand-down; "
            f"{len(histories) - 1} child histories; parent {len(parent.events)} events, "
            f"{sizes[0]} B as JSON, {server_bytes:.0f} B by the server's count, continue-as-new "
            f"{'suggested' if suggested else 'not suggested'}",
            file=sys.stderr,
            flush=True,
        )
        return {
            "history_events": sum(len(h.events) for h in histories),
            "history_bytes": sum(sizes),
            "parent_events": len(parent.events),
            "parent_bytes": sizes[0],
            "parent_server_bytes": server_bytes,
            "can_suggested": float(suggested),
            "worker_rss_mib": sum(w.peak_rss_mib() for w in (self.worker, *self.more_workers))
            + (self.central.peak_rss_mib() if self.central is not None else 0.0),
        }

    async def abandon(self) -> None:
        """A round that failed left its incident open: end it before the next one joins it."""
        rnd, self.open_round = self.open_round, None
        if rnd is None or self.client is None:
            return
        handle = self.client.get_workflow_handle(rnd.incident_id)
        with contextlib.suppress(Exception):
            await handle.signal("stand_down", {"by": DUTY_OFFICER, "reason": "bench round failed"})
            await asyncio.wait_for(handle.result(), STAND_DOWN_TIMEOUT_S)
            return
        with contextlib.suppress(Exception):
            await handle.terminate("bench round failed and did not stand down")

    @contextlib.asynccontextmanager
    async def sampled(self, label: str) -> AsyncIterator[None]:
        """With BENCH_CONTINUITY_PROFILE=DIR and BENCH_CONTINUITY_PYSPY=1 (py-spy installed):
        the worker and the API sampled by `py-spy record` (collapsed stacks) for the block."""
        spy = Path(sys.executable).with_name("py-spy")
        if self.profile_dir is None or not os.environ.get("BENCH_CONTINUITY_PYSPY"):
            yield
            return
        if not spy.exists():
            raise ContinuityBenchError(f"BENCH_CONTINUITY_PYSPY is set but {spy} is missing")
        assert self.worker is not None and self.api is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        spies = []
        for child in (self.worker, self.api):
            out = self.profile_dir / f"{child.name}-{label}.txt"
            spies.append(
                _Child(
                    f"py-spy {child.name}",
                    [
                        str(spy),
                        "record",
                        "--pid",
                        str(child.pid),
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--rate",
                        "100",
                        # BENCH_CONTINUITY_PYSPY=--gil: only the thread holding the GIL.
                        *[a for a in os.environ["BENCH_CONTINUITY_PYSPY"].split() if a != "1"],
                        "-o",
                        str(out),
                    ],
                    dict(os.environ),
                    self.profile_dir / f"py-spy-{child.name}.log",
                )
            )
        for s in spies:
            await s.start()
        await asyncio.sleep(1.0)  # py-spy attaches before the timed part begins
        try:
            yield
        finally:
            for s in spies:
                await s.stop()

    def _profile(self, rnd: _Round, histories: list[WorkflowHistory]) -> None:
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        for h in histories:
            (self.profile_dir / f"{h.workflow_id}.json").write_text(h.to_json())
        for phase, lines in activity_latencies(histories[0]).items():
            for line in lines:
                print(f"{rnd.incident_id} {phase}: {line}", file=sys.stderr, flush=True)
        workers = [w for w in (self.worker, *self.more_workers) if w is not None]
        for line in _step_times(rnd.incident_id, [w.log for w in workers]):
            print(f"{rnd.incident_id} {line}", file=sys.stderr, flush=True)


_STEP_LINE = re.compile(
    r"step (\w+) (\S+) on \S+: ([\d.]+) ms; in sessions ([\d.]+) ms "
    r"\(opening them ([\d.]+) ms\); outside them ([\d.]+) ms; begun (-?[\d.]+) ms"
)


def _step_times(incident_id: str, logs: list[Path]) -> list[str]:
    """Per device step, from the workers' `step …` log lines: where its time went (ms)."""
    parts: dict[str, dict[str, list[float]]] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            m = _STEP_LINE.search(line)
            if m is None or incident_id not in m.group(2):
                continue
            step = parts.setdefault(m.group(1), {})
            for name, value in zip(
                ("total", "sessions", "opening", "outside", "begun late"),
                m.groups()[2:],
                strict=True,
            ):
                step.setdefault(name, []).append(float(value))
    out = []
    for step, figures in sorted(parts.items()):
        cells = []
        for name, values in figures.items():
            values.sort()
            cells.append(
                f"{name} p50 {statistics.median(values):.0f} p99 {_percentile(values, 0.99):.0f}"
            )
        out.append(f"step {step} n={len(figures['total'])}: " + "; ".join(cells) + " ms")
    return out


async def _watch_loop_lag(lags: list[float], tick_s: float = 0.01) -> None:
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(tick_s)
        lags.append((time.perf_counter() - t0 - tick_s) * 1000)


def _server_timing(header: str) -> dict[str, float]:
    """`claim;dur=1.2, signal;dur=3.4` → {"claim": 1.2, "signal": 3.4} (RFC-less, as sent)."""
    parts: dict[str, float] = {}
    for metric in filter(None, (m.strip() for m in header.split(","))):
        name, _, params = metric.partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                parts[name.strip()] = float(value)
    return parts


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


def _client_parts(t0: float, marks: dict[str, float]) -> dict[str, float]:
    """A decision's client side by aiohttp's trace (ms): waiting for a free connection,
    opening a new one, and from the request's headers sent to the answer's (the server)."""
    out: dict[str, float] = {}
    if "queued" in marks and "dequeued" in marks:
        out["pool"] = (marks["dequeued"] - marks["queued"]) * 1000
    if "connecting" in marks and "connected" in marks:
        out["connect"] = (marks["connected"] - marks["connecting"]) * 1000
    if "sent" in marks and "answered" in marks:
        out["wait"] = (marks["answered"] - marks["sent"]) * 1000
    return out


def _decision_trace() -> aiohttp.TraceConfig:
    """Marks each phase of a decision request in its trace_request_ctx (a dict)."""
    trace = aiohttp.TraceConfig()

    def mark(name: str) -> Any:
        async def on(_session: Any, ctx: Any, _params: Any) -> None:
            ctx.trace_request_ctx.setdefault(name, time.perf_counter())

        return on

    trace.on_connection_queued_start.append(mark("queued"))
    trace.on_connection_queued_end.append(mark("dequeued"))
    trace.on_connection_create_start.append(mark("connecting"))
    trace.on_connection_create_end.append(mark("connected"))
    trace.on_request_headers_sent.append(mark("sent"))
    trace.on_request_end.append(mark("answered"))
    return trace


def _bucket_quantile(cumulative: dict[float, float], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile q (None: no observations)."""
    total = cumulative.get(float("inf"), 0.0)
    if total <= 0:
        return None
    bound = next(le for le in sorted(cumulative) if cumulative[le] >= q * total)
    return bound if bound != float("inf") else max(b for b in cumulative if b != float("inf"))


def _children(history: WorkflowHistory) -> list[str]:
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]


def _task_started_figures(history: WorkflowHistory) -> tuple[float, bool]:
    """The server's own history size at the last workflow task, and whether it ever suggested
    continue-as-new (it does past ~4,100 events or 4 MiB)."""
    size, suggested = 0, False
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            a = e.workflow_task_started_event_attributes
            size = max(size, a.history_size_bytes)
            suggested = suggested or a.suggest_continue_as_new
    return float(size), suggested


def activity_latencies(history: WorkflowHistory) -> dict[str, list[str]]:
    """Per phase (before and after the stand-down signal), per activity type and for workflow
    tasks: schedule-to-start and start-to-close from the history's timestamps, in ms."""
    scheduled: dict[int, tuple[str, float]] = {}
    started: dict[int, float] = {}
    phases: dict[str, tuple[dict[str, list[float]], dict[str, list[float]]]] = {}
    phase = "incident"
    waits, runs = phases.setdefault(phase, ({}, {}))
    wft_sched: float | None = None
    wft_start: float | None = None
    for e in history.events:
        at = e.event_time.ToDatetime().timestamp()
        t = e.event_type
        if (
            t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and e.workflow_execution_signaled_event_attributes.signal_name == "stand_down"
        ):
            phase = "stand-down"
            waits, runs = phases.setdefault(phase, ({}, {}))
        if t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[e.event_id] = (name, at)
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            sid = e.activity_task_started_event_attributes.scheduled_event_id
            name, s_at = scheduled[sid]
            waits.setdefault(name, []).append(at - s_at)
            started[sid] = at
        elif t in (
            EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        ):
            attrs = (
                e.activity_task_completed_event_attributes
                if t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                else e.activity_task_failed_event_attributes
                if t == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
                else e.activity_task_timed_out_event_attributes
            )
            sid = attrs.scheduled_event_id
            if sid in started:
                runs.setdefault(scheduled[sid][0], []).append(at - started[sid])
        elif t == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            wft_sched = at
        elif t == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            if wft_sched is not None:
                waits.setdefault("(workflow task)", []).append(at - wft_sched)
            wft_start = at
        elif t == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and wft_start is not None:
            runs.setdefault("(workflow task)", []).append(at - wft_start)

    def fmt(xs: list[float]) -> str:
        ms = sorted(x * 1000 for x in xs)
        return (
            f"p50 {statistics.median(ms):.0f} p99 {_percentile(ms, 0.99):.0f} max {ms[-1]:.0f} ms"
        )

    return {
        name: [
            f"{n:<24} n={len(r.get(n, w.get(n, [])))}: schedule-to-start "
            f"{fmt(w[n]) if n in w else '-'}; start-to-close {fmt(r[n]) if n in r else '-'}"
            for n in sorted(set(w) | set(r))
        ]
        for name, (w, r) in phases.items()
    }


_machinery: _Continuity | None = None


async def run(
    inventory: Inventory, known_hosts: Path, password: str, *, concurrency: int
) -> dict[str, float]:
    """One incident over every device of the lab; see the module docstring for the figures."""
    global _machinery
    if _machinery is None:
        machinery = _Continuity()
        try:
            await machinery.start()
        except BaseException:
            await machinery.close()
            raise
        _machinery = machinery
    m = _machinery
    await m.abandon()
    await m.prepare(inventory, known_hosts, password, concurrency)
    await m.cold_pool()
    async with m.sampled(f"{len(inventory.devices)}-{m.rounds + 1}"):
        rnd = await m.declare()
        # Generous: a contender that is slow must be measured, not cut off.
        return await m.operate(rnd, timeout_s=confirm_window_s(len(inventory.devices)) + 120)


async def settle() -> dict[str, float]:
    """After compare.py checked the devices: stand down, wait for the close, measure histories."""
    if _machinery is None:
        return {}
    return await _machinery.settle()


async def aclose() -> None:
    global _machinery
    machinery, _machinery = _machinery, None
    if machinery is not None:
        await machinery.close()
