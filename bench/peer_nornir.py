"""The peer: the same apply + verify with Nornir 3 and nornir_netmiko, as an engineer scripts it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nornir.core import Nornir
from nornir.core.exceptions import NornirSubTaskError
from nornir.core.inventory import (
    ConnectionOptions,
    Defaults,
    Groups,
    Host,
    Hosts,
)
from nornir.core.inventory import (
    Inventory as NornirInventory,
)
from nornir.core.plugins.connections import ConnectionPluginRegister
from nornir.core.task import Result, Task
from nornir.plugins.runners import ThreadedRunner
from nornir_netmiko.tasks import netmiko_save_config, netmiko_send_command, netmiko_send_config
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

# Threads, not coroutines: past ~100 paramiko sessions per process an engineer would shard.
MAX_WORKERS = 100


def _nornir(
    targets: list[DeviceTarget], known_hosts: Path, password: str, username: str, workers: int
) -> Nornir:
    ConnectionPluginRegister.auto_register()
    netmiko = ConnectionOptions(
        extras={
            # Host keys checked against the lab's known_hosts, nothing else trusted.
            "ssh_strict": True,
            "system_host_keys": False,
            "alt_host_keys": True,
            "alt_key_file": str(known_hosts),
            "use_keys": False,
            "allow_agent": False,
            "conn_timeout": CONNECT_TIMEOUT_S,
            "fast_cli": True,
        }
    )
    defaults = Defaults(
        username=username,
        password=password,
        platform="cisco_xe",
        connection_options={"netmiko": netmiko},
    )
    hosts = Hosts(
        {
            t.name: Host(
                name=t.name,
                hostname=t.host,
                port=t.port,
                data={"target": t},
                defaults=defaults,
            )
            for t in targets
        }
    )
    return Nornir(
        inventory=NornirInventory(hosts=hosts, groups=Groups(), defaults=defaults),
        runner=ThreadedRunner(num_workers=workers),
    )


def _show(task: Task, target: DeviceTarget, command: str) -> str:
    out = task.run(
        task=netmiko_send_command, command_string=command, read_timeout=COMMAND_TIMEOUT_S
    ).result
    return check_output(target, command, out)


def _configure(task: Task, target: DeviceTarget, lines: list[str], **kwargs: object) -> None:
    out = task.run(
        task=netmiko_send_config, config_commands=lines, read_timeout=COMMAND_TIMEOUT_S, **kwargs
    ).result
    check_output(target, "configure", out)


def _apply_verify(task: Task) -> Result:
    target: DeviceTarget = task.host.data["target"]
    try:
        # Login, `terminal length 0` (and width) are netmiko's session preparation.
        for command in READ_STATE:
            _show(task, target, command)

        _configure(
            task, target, [s.add_backup() for s in target.swaps], config_mode_command=ARM_REVERT
        )
        deadline = time.monotonic() + ROUTE_POLL_TIMEOUT_S
        while not backups_forward(target, _show(task, target, SHOW_ROUTES)):
            if time.monotonic() > deadline:
                raise BenchDeviceError(target.name, "make", "backups never became active")
            time.sleep(ROUTE_POLL_INTERVAL_S)

        _configure(task, target, [s.remove_primary() for s in target.swaps])

        routes = _show(task, target, SHOW_ROUTES)
        if not only_backups(target, routes):
            raise BenchDeviceError(target.name, "verify", f"not on backup only: {routes!r}")
        if answer := _show(task, target, CONFIRM):
            raise BenchDeviceError(target.name, CONFIRM, answer)
        # netmiko's default `write mem` is an abbreviation; say the command in full.
        saved = task.run(task=netmiko_save_config, cmd=SAVE).result
        if "[OK]" not in saved:
            raise BenchDeviceError(target.name, SAVE, "no [OK]")
    finally:
        if "netmiko" in task.host.connections:
            task.host.close_connection("netmiko")
    return Result(host=task.host, result="backup", changed=True)


def _run_sync(
    inventory: Inventory, known_hosts: Path, password: str, username: str, workers: int
) -> float:
    nr = _nornir(device_targets(inventory), known_hosts, password, username, workers)
    start = time.perf_counter()
    result = nr.run(task=_apply_verify, raise_on_error=False)
    elapsed = time.perf_counter() - start
    for name, multi in result.items():
        if multi.failed:
            # The parent task fails with NornirSubTaskError; the cause sits in a subtask.
            failed = [r for r in multi if r.failed]
            cause = next(
                (r for r in failed if not isinstance(r.exception, NornirSubTaskError)), failed[0]
            )
            if isinstance(cause.exception, BenchDeviceError):
                raise cause.exception
            raise BenchDeviceError(name, cause.name or "nornir", repr(cause.exception))
    return elapsed


async def run(
    inventory: Inventory,
    known_hosts: Path,
    password: str,
    *,
    concurrency: int,
    username: str = USERNAME,
) -> float:
    """Wall seconds of `nr.run` with min(concurrency, MAX_WORKERS) threads."""
    workers = max(1, min(concurrency, MAX_WORKERS))
    return await asyncio.to_thread(_run_sync, inventory, known_hosts, password, username, workers)
