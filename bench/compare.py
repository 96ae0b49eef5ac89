"""Floor, peer and continuity doing the same apply + verify on the same lab, in alternating rounds.

    python bench/compare.py [--sizes 20 200] [--rounds 3] [--contenders floor nornir continuity]

Per size, one lab process (bench/lab_process.py) serves N generated IOS-XE devices with two
circuits each. Every round runs each contender once, in registry order (floor, nornir,
continuity, floor, nornir, ...); before each run every device is put back on its primary next
hop and after it every device is checked to be on its backups with the change confirmed
(both untimed). The table gives per size and contender the median, min and max seconds and the
ratio of the median to the floor's median of the same run: machines are noisy, compare ratios.
bench/workload.py defines the apply + verify itself.

Contender interface
-------------------
A contender is an entry of CONTENDERS, an async callable called once per round as

    await run(inventory, known_hosts, password, concurrency=N)

- inventory: continuity.models.Inventory as the lab serves it (127.0.0.1, real ports); the
  same object for every round of a size, a new one (new ports) for the next size;
- known_hosts: Path of the lab's known_hosts (host keys must be checked against it);
- password: the lab user's password (user workload.USERNAME);
- concurrency: how many devices it may work on at once (--concurrency, default the size).

It returns the wall seconds of the whole apply + verify (float), or a dict of figures with

    "seconds"          required: the wall time compared with the floor, from the first device
                       touched to the last change confirmed and saved
    "restore_s"        time until every circuit forwards via its backup
    "confirmed_s"      time until every change is confirmed
    "history_events"   events in the workflow histories of the run (total)
    "history_bytes"    size of those histories
    "decision_p50_ms"  workflow task (decision) latency, median
    "decision_p99_ms"  workflow task (decision) latency, 99th percentile
    "worker_rss_mib"   peak resident memory of the worker

all optional but "seconds"; each figure present becomes a column (median over the rounds),
known names first, any other numeric key after them. It raises to mark the round failed:
the contender is then skipped for the rest of that size. Long-lived machinery (a Temporal
server, a worker) is the contender's to start on its first call, outside its timed span.

A contender module may also define `async def settle() -> dict`, awaited (untimed) after each
round's check: a contender whose run leaves work open winds it down there (continuity stands its
incident down, so the devices go back to primary through it), and the numbers it returns join
that round's figures. If it raises, the round fails.

The continuity contender plugs in as bench/contender_continuity.py defining that `run` (and
`settle`, and optionally `async def aclose() -> None`, awaited once after the last size). Until
that file exists "continuity" is skipped with a note. "cpu s" is this process's user + system
CPU during the run (all threads; not a worker in another process); "lab cpu s" is the lab
process's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import platform
import resource
import signal
import statistics
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import floor_asyncssh
import peer_nornir
from lab_process import LabProcess

from continuity.models import Platform
from lab.gear.network import generate_inventory

Contender = Callable[..., Awaitable[float | dict[str, Any]]]
Settler = Callable[[], Awaitable[dict[str, Any]]]

CONTENDERS: dict[str, Contender] = {
    "floor": floor_asyncssh.run,
    "nornir": peer_nornir.run,
}
# Registered when their module exists in bench/: name -> module defining `run` (and `aclose`).
OPTIONAL_CONTENDERS = {"continuity": "contender_continuity"}
FLOOR = "floor"
KNOWN_FIGURES = (
    "restore_s",
    "confirmed_s",
    "history_events",
    "history_bytes",
    "decision_p50_ms",
    "decision_p99_ms",
    "worker_rss_mib",
)
CIRCUITS_PER_DEVICE = 2
DEFAULT_SIZES = (20, 200)
DEFAULT_ROUNDS = 3

# The targets for continuity (here, never in tests); judged at every size continuity ran,
# the issue sets them for TARGET_SIZE devices.
CONTINUITY = "continuity"
PEER = "nornir"
TARGET_SIZE = 200
RESTORE_MAX_X_FLOOR = 3.0
CONFIRMED_MAX_X_RESTORE = 2.0
PARENT_HISTORY_MAX_BYTES = 1_000_000
DECISION_P99_MAX_MS = 250.0
# Temporal's own thresholds, reported beside the targets: continue-as-new is suggested past
# ~4,100 events or 4 MiB; the run is terminated at 51,200 events or 50 MiB.
SUGGEST_CAN_EVENTS = 4_100
SUGGEST_CAN_BYTES = 4 * 2**20
HISTORY_LIMIT_EVENTS = 51_200
HISTORY_LIMIT_BYTES = 50 * 2**20


@dataclass
class _Samples:
    seconds: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    lab_cpu_s: list[float] = field(default_factory=list)
    figures: dict[str, list[float]] = field(default_factory=dict)
    failure: str | None = None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _numbers(out: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in out.items()
        if k != "seconds" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def _figures(out: float | dict[str, Any]) -> tuple[float, dict[str, float]]:
    if isinstance(out, dict):
        if "seconds" not in out:
            raise ValueError("a contender's figures must include 'seconds'")
        return float(out["seconds"]), _numbers(out)
    return float(out), {}


@dataclass
class _Lineup:
    contenders: dict[str, Contender] = field(default_factory=dict)
    settlers: dict[str, Settler] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _resolve(names: list[str]) -> _Lineup:
    """The contenders asked for that exist, and a note for each optional one that does not."""
    lineup = _Lineup()
    for name in names:
        if name in CONTENDERS:
            lineup.contenders[name] = CONTENDERS[name]
        elif name in OPTIONAL_CONTENDERS:
            module_name = OPTIONAL_CONTENDERS[name]
            if importlib.util.find_spec(module_name) is None:
                lineup.skipped.append(
                    f"{name}: skipped, not registered (no bench/{module_name}.py defining "
                    "`async def run(...)`; interface in bench/compare.py)"
                )
                continue
            module = importlib.import_module(module_name)  # its import errors are real errors
            lineup.contenders[name] = module.run
            if hasattr(module, "settle"):
                lineup.settlers[name] = module.settle
            if hasattr(module, "aclose"):
                lineup.closers.append(module.aclose)
        else:
            known = [*CONTENDERS, *OPTIONAL_CONTENDERS]
            raise SystemExit(f"unknown contender {name!r}; known: {', '.join(known)}")
    return lineup


async def _one_size(
    size: int, rounds: int, lineup: _Lineup, concurrency: int
) -> dict[str, _Samples]:
    inventory = generate_inventory(
        size, platforms=[Platform.CISCO_IOSXE], circuits_per_device=CIRCUITS_PER_DEVICE
    )
    samples = {name: _Samples() for name in lineup.contenders}
    async with LabProcess(inventory) as lab:
        for r in range(1, rounds + 1):
            for name, run in lineup.contenders.items():
                s = samples[name]
                if s.failure is not None:
                    continue
                await lab.reset_to_primary()
                cpu0, lab0 = _cpu_seconds(), lab.cpu_seconds()
                try:
                    out = await run(
                        lab.inventory, lab.known_hosts, lab.password, concurrency=concurrency
                    )
                    cpu1, lab1 = _cpu_seconds(), lab.cpu_seconds()
                    seconds, extra = _figures(out)
                    await lab.check_on_backup()
                    if name in lineup.settlers:
                        extra.update(_numbers(await lineup.settlers[name]()))
                except Exception as e:  # one contender failing must not hide the others
                    s.failure = f"round {r}: {type(e).__name__}: {e}"
                    print(f"size {size} {name}: FAILED {s.failure}", file=sys.stderr, flush=True)
                    continue
                s.seconds.append(seconds)
                s.cpu_s.append(cpu1 - cpu0)
                if lab0 is not None and lab1 is not None:
                    s.lab_cpu_s.append(lab1 - lab0)
                for key, value in extra.items():
                    s.figures.setdefault(key, []).append(value)
                print(
                    f"size {size} round {r}/{rounds} {name}: {seconds:.3f} s",
                    file=sys.stderr,
                    flush=True,
                )
    return samples


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(results: dict[int, dict[str, _Samples]], concurrency: int | None) -> str:
    extra_keys = sorted(
        {k for by_name in results.values() for s in by_name.values() for k in s.figures},
        key=lambda k: (KNOWN_FIGURES.index(k) if k in KNOWN_FIGURES else len(KNOWN_FIGURES), k),
    )
    header = [
        "size",
        "contender",
        "concurrency",
        "rounds",
        "median s",
        "min s",
        "max s",
        "x floor",
        "cpu s",
        "lab cpu s",
        *extra_keys,
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for size, by_name in results.items():
        floor = _median(by_name[FLOOR].seconds) if FLOOR in by_name else None
        for name, s in by_name.items():
            med = _median(s.seconds)
            ratio = med / floor if med is not None and floor else None
            rows.append(
                [
                    str(size),
                    name,
                    str(concurrency or size),
                    str(len(s.seconds)),
                    _fmt(med),
                    _fmt(min(s.seconds) if s.seconds else None),
                    _fmt(max(s.seconds) if s.seconds else None),
                    _fmt(ratio, 2),
                    _fmt(_median(s.cpu_s), 2),
                    _fmt(_median(s.lab_cpu_s), 2),
                    *(_fmt(_median(s.figures.get(k, [])), 2) for k in extra_keys),
                ]
            )
            if s.failure:
                notes.append(f"size {size} {name} failed in {s.failure}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    return "\n".join(out + notes)


def _median_of(s: _Samples, key: str) -> float | None:
    return _median(s.figures.get(key, []))


def _worst(s: _Samples, key: str) -> float | None:
    values = s.figures.get(key, [])
    return max(values) if values else None


def _verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else "PASS" if ok else "MISS"


def _targets(results: dict[int, dict[str, _Samples]]) -> list[str]:
    """Each target of the issue with the measured value (medians over the rounds, except where
    any single round counts), PASS or MISS."""
    lines: list[str] = []
    for size, by_name in results.items():
        c = by_name.get(CONTINUITY)
        if c is None or not c.seconds:
            continue

        floor = _median(by_name[FLOOR].seconds) if FLOOR in by_name else None
        peer = _median(by_name[PEER].seconds) if PEER in by_name else None
        restore = _median_of(c, "restore_s") or _median(c.seconds)
        confirmed = _median_of(c, "confirmed_s")
        p99 = _median_of(c, "decision_p99_ms")
        # Temporal's own measure of a history (what its 50 MiB limit and its continue-as-new
        # hint count); the JSON export is larger (payloads in base64) and is reported below.
        parent = _worst(c, "parent_server_bytes")
        head = f"size {size}{'' if size == TARGET_SIZE else ' [set for 200]'}"
        rows: list[tuple[bool | None, str]] = []
        if restore is not None and floor:
            rows.append(
                (
                    restore <= RESTORE_MAX_X_FLOOR * floor,
                    f"time to restore <= {RESTORE_MAX_X_FLOOR:g} x floor: {restore:.2f} s = "
                    f"{restore / floor:.2f} x floor ({floor:.2f} s)",
                )
            )
        else:
            rows.append((None, "time to restore <= 3 x floor: no floor in this run"))
        if restore is not None and peer:
            rows.append(
                (
                    restore < peer,
                    f"time to restore < nornir: {restore:.2f} s vs {peer:.2f} s",
                )
            )
        if restore and confirmed is not None:
            rows.append(
                (
                    confirmed <= CONFIRMED_MAX_X_RESTORE * restore,
                    f"time to confirmed <= {CONFIRMED_MAX_X_RESTORE:g} x time to restore: "
                    f"{confirmed:.2f} s = {confirmed / restore:.2f} x",
                )
            )
        if parent is not None:
            rows.append(
                (
                    parent <= PARENT_HISTORY_MAX_BYTES,
                    f"parent history <= 1 MB: {parent:,.0f} B by the server's count (largest "
                    f"round; {_worst(c, 'parent_bytes') or 0:,.0f} B as JSON), "
                    f"{_worst(c, 'parent_events') or 0:,.0f} events",
                )
            )
        if p99 is not None:
            rows.append(
                (
                    p99 <= DECISION_P99_MAX_MS,
                    f"decision p99 <= {DECISION_P99_MAX_MS:g} ms: {p99:.0f} ms (p50 "
                    f"{_median_of(c, 'decision_p50_ms') or 0:.0f} ms; up to "
                    f"{_worst(c, 'decisions_peak') or 0:.0f} decisions in flight)",
                )
            )
        conflicts = _worst(c, "decisions_409")
        if conflicts is not None:
            rows.append(
                (
                    conflicts == 0,
                    f"no overload reaches an operator as 409: {conflicts:.0f} x 409 in the "
                    f"worst round; other non-200: {_worst(c, 'decisions_non200') or 0:.0f}; 503 "
                    f"(retried after Retry-After): {_worst(c, 'decisions_503') or 0:.0f}",
                )
            )
        lines += [f"{_verdict(ok)}  {head}: {text}" for ok, text in rows]
        events, size_b = _worst(c, "history_events"), _worst(c, "history_bytes")
        if events is not None and size_b is not None:
            server = _worst(c, "parent_server_bytes") or 0
            suggested = bool(_worst(c, "can_suggested"))
            lines.append(
                f"info  {head}: histories {events:,.0f} events, {size_b:,.0f} B as JSON "
                f"(parent {_worst(c, 'parent_events') or 0:,.0f} events, {server:,.0f} B by the "
                f"server's count); Temporal limits {HISTORY_LIMIT_EVENTS:,} events / "
                f"{HISTORY_LIMIT_BYTES // 2**20} MiB; continue-as-new suggested: "
                f"{'yes' if suggested else 'no'} (past ~{SUGGEST_CAN_EVENTS:,} events or "
                f"{SUGGEST_CAN_BYTES // 2**20} MiB)"
            )
    return lines


def _versions() -> str:
    found = []
    for dist in ("asyncssh", "netmiko", "paramiko", "nornir", "nornir-netmiko"):
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def _machine() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return (
        f"CPUs: {os.cpu_count()} (usable {usable}); Python {platform.python_version()} "
        f"({platform.python_implementation()}) on {platform.system()} {platform.machine()}\n"
        f"{_versions()}"
    )


async def _main(args: argparse.Namespace) -> int:
    # Nornir logs every failed host's traceback; a failed round is reported once, below.
    logging.getLogger("nornir").addHandler(logging.NullHandler())
    # A terminated bench still runs its finally blocks, so no worker or lab outlives it.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    lineup = _resolve(args.contenders)
    for note in lineup.skipped:
        print(f"note: {note}", file=sys.stderr, flush=True)
    if not lineup.contenders:
        raise SystemExit("no contender to run")
    results: dict[int, dict[str, _Samples]] = {}
    try:
        for size in args.sizes:
            results[size] = await _one_size(size, args.rounds, lineup, args.concurrency or size)
    finally:
        for close in lineup.closers:
            await close()
    print(_machine())
    print(
        f"apply + verify per IOS-XE device ({CIRCUITS_PER_DEVICE} circuits), {args.rounds} "
        f"alternating rounds; nornir threads = min(concurrency, {peer_nornir.MAX_WORKERS})"
    )
    print(_table(results, args.concurrency))
    targets = _targets(results)
    if targets:
        print("\ntargets (the issue's):")
        print("\n".join(targets))
    for note in lineup.skipped:
        print(f"note: {note}")
    failed = any(s.failure for by_name in results.values() for s in by_name.values())
    return 1 if failed else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    p.add_argument(
        "--contenders",
        nargs="+",
        default=[*CONTENDERS, *OPTIONAL_CONTENDERS],
        help="which to run, in this order each round",
    )
    p.add_argument(
        "--concurrency", type=int, default=None, help="devices at once (default: the size)"
    )
    args = p.parse_args()
    if args.rounds < 1 or any(n < 1 for n in args.sizes):
        p.error("sizes and rounds must be positive")
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()
