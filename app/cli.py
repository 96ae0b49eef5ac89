"""The `continuity` command: demo, up, inventory, token, audit, lab, worker, api."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from continuity.errors import ContinuityError, ValidationFailed
from continuity.logs import configure_logging, log_format
from continuity.models import Role
from continuity.runtime import freeze_startup_heap, run_service
from continuity.settings import Settings
from continuity.validation import check_identifier, check_text

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from continuity.models import Inventory
    from continuity.store import Store

DEFAULT_DATA_DIR = Path("continuity-data")


@dataclass
class _Run:
    """One run of the command. Its settings are made once (env, then the config file); a
    command that used them names the data directory they resolve to when it ends well (stderr:
    stdout stays the command's output, and a failure stays one line)."""

    settings: Settings | None = None
    debug: bool = False
    data_dir_named: bool = False  # named already, at start (the API)


_RUN = _Run()


def _settings() -> Settings:
    if _RUN.settings is None:
        _RUN.settings = Settings()
    return _RUN.settings


def _data_dir_line(settings: Settings) -> str:
    return f"data directory: {settings.data_dir.resolve()} (store {settings.masked_database_url})"


class _Progress:
    """Long work's progress, a spinner on stderr drawn only when stderr is a terminal: what a
    script or a test captures stays the command's own output. Print nothing while it runs."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _Progress:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        # FORCE_COLOR makes rich take a pipe for a terminal; a spinner redrawn into a log is noise.
        if console.is_terminal and sys.stderr.isatty():
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
            )
            self._task = self._bar.add_task(self._what, total=None)
            self._bar.start()
        return self

    def step(self, what: str) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=what)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _counted(index: int, total: int) -> str:
    return f" ({index} of {total})" if total > 1 else ""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("continuity")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        print(f"continuity {_version()}")
        raise typer.Exit()


app = typer.Typer(
    name="continuity",
    help=(
        "Emergency communications continuity: priority circuits moved to backup paths and back, "
        "durably, every step recorded. New here: `continuity demo`, then "
        "docs/getting-started.md for your own network."
    ),
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_config = typer.Typer(help="the effective settings: show them, secrets masked")
_playbook = typer.Typer(help="the playbooks this deployment runs")
_inventory = typer.Typer(
    help="the devices, circuits, areas and people: validate, diff, load, export, history"
)
_token = typer.Typer(help="API principals: bearer tokens kept as hashes")
_audit = typer.Typer(help="what was done, by whom, offline: replay, export, bundle, verify, report")
_report = typer.Typer(help="reports upward: the period report of every incident")
_keys = typer.Typer(help="the deployment's signing key")
_lab = typer.Typer(help="the simulated lab: routers over real SSH on 127.0.0.1")
for _name, _group in (
    ("config", _config),
    ("playbook", _playbook),
    ("inventory", _inventory),
    ("token", _token),
    ("audit", _audit),
    ("report", _report),
    ("keys", _keys),
    ("lab", _lab),
):
    app.add_typer(_group, name=_name)

# Arguments and options that several commands share.
_InventoryFile = Annotated[Path, typer.Argument(help="an inventory JSON file", show_default=False)]
_PlaybookName = Annotated[str, typer.Argument(help="a playbook name, as `playbook list` shows it")]
_SAMPLE = "the Kon Tum sample"


def _or_sample(inventory: Path | None) -> Path:
    from app.stack import SAMPLE_INVENTORY  # not at import: it brings the whole stack

    return inventory or SAMPLE_INVENTORY


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="print the version and exit",
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="on an unexpected failure, print its traceback (otherwise: one line, exit 1)",
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="a TOML settings file (default: $CONTINUITY_CONFIG, ./continuity.toml, "
            "/etc/continuity/continuity.toml); CONTINUITY_* variables override it",
        ),
    ] = None,
) -> None:
    _RUN.debug = debug
    if config is not None:  # the settings this command makes read it
        os.environ["CONTINUITY_CONFIG"] = str(config)


@_config.command("show", help="print the settings every command uses, secrets masked")
def _config_show() -> int:
    from continuity.settings import config_file

    path = config_file()
    print(f"# config file: {path.resolve() if path else 'none'}", file=sys.stderr)
    print(json.dumps(effective_settings(_settings()), indent=2, ensure_ascii=False))
    return 0


def effective_settings(settings: Settings) -> dict[str, object]:
    """The settings as every command sees them, secrets masked, the data directory resolved."""
    shown = settings.model_dump(mode="json")  # SecretStr fields dump as "**********"
    shown["data_dir"] = str(settings.data_dir.resolve())
    shown["database_url"] = settings.masked_database_url
    shown["api_tokens"] = [  # the demo's; a deployment's are hashes in the store
        {"token": "*" * 10, "subject": who.subject, "role": who.role.value}
        for who in settings.api_tokens.values()
    ]
    return shown


@_playbook.command("list", help="every shipped playbook: name, version, hash")
def _playbook_list() -> int:
    from playbooks import CATALOGUE, DEFAULT_PLAYBOOK, get_playbook, versions

    for name in sorted(CATALOGUE):
        spec = CATALOGUE[name]()
        default = "  (default)" if name == DEFAULT_PLAYBOOK else ""
        print(f"{spec.name}  v{spec.version}  sha256 {spec.sha256()[:16]}…  {spec.title}{default}")
        for v in versions(name):
            if v != spec.version:
                old = get_playbook(name, v)
                print(f"  kept: v{v}  sha256 {old.sha256()[:16]}…  {old.title}")
    return 0


@_playbook.command("show", help="a playbook's steps as JSON, with its hash")
def _playbook_show(
    name: _PlaybookName,
    version: Annotated[
        int | None,
        typer.Option("--version", help="a kept older version (default: the current one)"),
    ] = None,
) -> int:
    from playbooks import get_playbook

    spec = get_playbook(name, version)
    print(json.dumps({"sha256": spec.sha256(), **spec.model_dump(mode="json")}, indent=2,
                     ensure_ascii=False))  # fmt: skip
    return 0


@_playbook.command(
    "freeze", help="keep a playbook's current version as JSON (after bumping its version)"
)
def _playbook_freeze(name: _PlaybookName) -> int:
    from playbooks import freeze

    print(f"kept as {freeze(name)}")
    return 0


@_playbook.command(
    "plan", help="the exact lines a playbook would send, per wave and device; touches nothing"
)
def _playbook_plan(
    name: Annotated[
        str, typer.Argument(help="a playbook name, or a JSON spec / Python module file")
    ],
    area: Annotated[str, typer.Option(help="the area an incident would be declared for")],
    kind: Annotated[str, typer.Option(help="the incident kind")] = "sabotage",
    also: Annotated[
        list[str] | None,
        typer.Option(
            metavar="AREA",
            help="a further commune or former unit covered by the same incident (repeat)",
        ),
    ] = None,
    route: Annotated[
        str | None,
        typer.Option(
            metavar="SEGMENT",
            help="the cut cable segment (the inventory's cable_routes), for a playbook that "
            "follows it",
        ),
    ] = None,
    inventory: Annotated[
        Path | None, typer.Option(help="an inventory file (default: the loaded inventory)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="the plan as JSON, with its hashes")
    ] = False,
) -> int:
    from continuity.inventory import read_inventory
    from continuity.models import IncidentKind
    from continuity.plan import plan_incident, render_plan
    from continuity.playbook import load_spec_file
    from playbooks import CATALOGUE, get_playbook

    named = name in CATALOGUE or not Path(name).exists()
    spec = get_playbook(name) if named else load_spec_file(Path(name))
    loaded = read_inventory(inventory).inventory if inventory else _app_store().inventory()
    try:
        incident_kind = IncidentKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in IncidentKind)
        raise ValidationFailed(f"unknown incident kind {kind!r}; known: {known}") from None
    plan = plan_incident(
        spec,
        loaded,
        area=area,
        kind=incident_kind,
        timings=Settings().timings,
        segment=route,
        also=also or [],
    )
    print(plan.model_dump_json(indent=2) if as_json else render_plan(plan))
    return 0


@_playbook.command("validate", help="check a playbook (a name, a .json spec or a .py module)")
def _playbook_validate(
    target: Annotated[
        str, typer.Argument(help="a playbook name, a JSON spec file or a Python module file")
    ],
) -> int:
    from continuity.playbook import load_spec_file
    from playbooks import CATALOGUE, get_playbook

    path = Path(target)
    named = target in CATALOGUE or (path.suffix not in (".json", ".py") and not path.exists())
    spec = get_playbook(target) if named else load_spec_file(path)
    steps = ", ".join(s.type for s in spec.steps)
    print(f"{target}: valid playbook {spec.name} v{spec.version}, sha256 {spec.sha256()}")
    print(f"  {len(spec.steps)} steps: {steps}")
    return 0


@app.command(
    "doctor",
    help="check Temporal, the database, every device's credential and host key, a worker on "
    "every queue, telephony and the public URL; exit 1 on any failure",
)
def _doctor() -> int:
    from app.doctor import run_doctor

    checks = asyncio.run(run_doctor(_settings()))
    for check in checks:
        print(check.line())
    return 1 if any(c.verdict == "FAIL" for c in checks) else 0


@app.command("demo", help="run the whole mission on the embedded stack and exit")
def _demo(
    data_dir: Annotated[
        Path, typer.Option(help="where the store, the lab's keys and the saved histories go")
    ] = DEFAULT_DATA_DIR / "demo",
    inventory: Annotated[
        Path | None,
        typer.Option(help="your network, simulated by the lab", show_default=_SAMPLE),
    ] = None,
    area: Annotated[
        str | None, typer.Option(help="the area to declare for (default: the busiest one)")
    ] = None,
) -> int:
    from app.demo import run_demo

    print(f"data directory: {data_dir.resolve()} (the demo's own)", flush=True)
    progress = _Progress("starting the embedded stack")

    def echo(line: str) -> None:
        progress.stop()  # the stack is up: the demo speaks for itself from here
        print(line)

    with progress:
        return asyncio.run(
            run_demo(
                data_dir.resolve(),
                inventory_file=_or_sample(inventory),
                area=area,
                echo=echo,
                on_stage=progress.step,
            )
        )


@app.command("up", help="start the embedded stack and stay up")
def _up(
    data_dir: Annotated[
        Path, typer.Option(help="where the store, Temporal's file and the lab's keys go")
    ] = DEFAULT_DATA_DIR / "up",
    inventory: Annotated[
        Path | None,
        typer.Option(
            help="your network, simulated by the lab and loaded into the store",
            show_default="the sample",
        ),
    ] = None,
    api_port: Annotated[int, typer.Option(help="API and console port on 127.0.0.1")] = 8000,
    temporal_port: Annotated[
        int, typer.Option(help="Temporal dev server port on 127.0.0.1")
    ] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port on 127.0.0.1")] = 8233,
) -> int:
    from app.stack import Stack
    from continuity.inventory import read_inventory

    inventory = _or_sample(inventory)
    read_inventory(inventory)  # a clear error now, not a traceback from the lab

    async def run() -> None:
        progress = _Progress("starting the embedded stack")
        stack = Stack(
            data_dir=data_dir.resolve(),
            inventory_file=inventory,
            api_port=api_port,
            temporal_port=temporal_port,
            ui_port=ui_port,
            on_stage=progress.step,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        started = False
        try:
            with progress:
                settings = await stack.start()
            started = True
            print(f"Data directory:    {data_dir.resolve()}", flush=True)
            print(f"API docs:          {stack.api_url}/docs", flush=True)
            print(f"Console:           {stack.api_url}/console/", flush=True)
            print(f"Temporal Web UI:   http://127.0.0.1:{ui_port}", flush=True)
            print(f"Temporal frontend: {settings.temporal_address}", flush=True)
            for role, token in stack.tokens.items():
                print(f"token {role.value:<13} {token}", flush=True)
            print("Ctrl-C stops everything.", flush=True)
            await stop.wait()
        finally:
            await stack.stop()
            if started:  # else the refusal (a busy port) is the last word, not "stopped."
                print("stopped.", flush=True)

    run_service(run())
    return 0


@_inventory.command("validate", help="check an inventory JSON file; change nothing")
def _inventory_validate(file: _InventoryFile) -> int:
    from continuity.inventory import read_inventory

    inv = read_inventory(file).inventory
    print(f"{file}: valid inventory: {_counts(inv)}")
    return 0


@_inventory.command("diff", help="what loading FILE would add, remove and change")
def _inventory_diff(file: _InventoryFile) -> int:
    from continuity.inventory import diff_inventories, read_inventory

    new = read_inventory(file).inventory
    for line in diff_inventories(_app_store().inventory(), new).lines():
        print(line)
    return 0


@_inventory.command("load", help="load an inventory JSON file into the store")
def _inventory_load(
    file: _InventoryFile,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="load even if it removes every device, circuit, area or person of a section",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="load even while incidents are active")
    ] = False,
    by: Annotated[
        str | None, typer.Option(help="who loads it, for the record (default: $USER)")
    ] = None,
) -> int:
    from continuity.inventory import diff_inventories, read_inventory
    from continuity.models import inventory_sha256

    with _Progress(f"reading {file} and the store's inventory"):
        loaded = read_inventory(file)
        store = _app_store()
        before = store.inventory()
        diff = diff_inventories(before, loaded.inventory)
    for line in diff.lines():
        print(line)
    wiped = diff.empties(before)
    if wiped and not replace:
        raise ValidationFailed(
            f"{file} would remove every entry of: {', '.join(wiped)}; nothing was loaded "
            "(--replace loads it anyway)"
        )
    active = store.active_incidents()
    if active and not force:
        raise ValidationFailed(
            f"incidents are active ({', '.join(active)}); nothing was loaded (--force loads "
            "it anyway: running incidents keep the inventory they started with)"
        )
    with _Progress(f"loading {file} into the store"):
        store.replace_inventory(loaded.inventory)
        store.record_inventory_load(
            loaded_by=by or getpass.getuser(),
            file_name=str(file.resolve()),
            file_sha256=loaded.sha256,
            inventory_sha256=inventory_sha256(loaded.inventory),
            summary=diff.summary(),
            forced=" ".join(f for f, on in (("--replace", wiped), ("--force", active)) if on),
        )
    print(f"loaded {_counts(loaded.inventory)} (file sha256 {loaded.sha256[:16]}…)")
    return 0


@_inventory.command("export", help="the store's inventory as JSON")
def _inventory_export(
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="write to this file (default: stdout)")
    ] = None,
) -> int:
    text = _app_store().inventory().model_dump_json(indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"inventory written to {out}", file=sys.stderr)
    return 0


@_inventory.command("history", help="every inventory load: when, who, which file")
def _inventory_history() -> int:
    for row in _app_store().inventory_loads():
        forced = f" [{row.forced}]" if row.forced else ""
        print(
            f"{row.loaded_at.isoformat(timespec='seconds')}  {row.loaded_by or '?'}  "
            f"{row.file_name}  sha256 {row.file_sha256[:16]}…  {row.summary}{forced}"
        )
    return 0


def _counts(inv: Inventory) -> str:
    return (
        f"{len(inv.areas)} areas, {len(inv.devices)} devices, {len(inv.circuits)} circuits, "
        f"{len(inv.duty_officers)} duty officers, {len(inv.operators)} operators"
    )


def _app_store() -> Store:
    from continuity.store import Store

    store = Store.for_settings(_settings())
    store.create_schema()
    return store


def _expiry(text: str | None) -> datetime | None:
    """'90d', '12h', '30m' from now, or an ISO 8601 time (UTC when it names no zone)."""
    if not text:
        return None
    units = {"d": 86400, "h": 3600, "m": 60}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) + timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            f"--expires {text!r}: give 90d, 12h, 30m or an ISO 8601 time"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@_token.command("create", help="make a token for a subject and role; shown only once")
def _token_create(
    subject: Annotated[str, typer.Option(help="an operator or duty officer id, a name")],
    role: Annotated[Role, typer.Option(help="what the token may do")],
    expires: Annotated[
        str | None,
        typer.Option(help="when it stops working: a duration (90d, 12h) or an ISO 8601 time"),
    ] = None,
    label: Annotated[str, typer.Option(help="what it is for, shown in `token list`")] = "",
) -> int:
    row, token = _app_store().create_token(
        subject=check_identifier(subject),
        role=role,
        expires_at=_expiry(expires),
        label=check_text(label, allow_empty=True),
        created_by=getpass.getuser(),
    )
    expires_at = row.expires_at.isoformat() if row.expires_at else "never"
    print(f"{row.id}  {row.subject}  {row.role}  expires {expires_at}", file=sys.stderr)
    print("the token (shown once; the store keeps only its hash):", file=sys.stderr)
    print(token)
    return 0


@_token.command("list", help="every token: id, subject, role, state")
def _token_list() -> int:
    now = datetime.now(UTC)
    for row in _app_store().tokens():
        if row.revoked_at is not None:
            state = f"revoked {row.revoked_at.isoformat()}"
        elif row.expires_at is not None and row.expires_at <= now:
            state = f"expired {row.expires_at.isoformat()}"
        else:
            state = f"active, expires {row.expires_at.isoformat() if row.expires_at else 'never'}"
        print(f"{row.id}  {row.subject:<24} {row.role:<13} {state}  {row.label}".rstrip())
    return 0


@_token.command("revoke", help="stop a token working at once")
def _token_revoke(
    token_id: Annotated[str, typer.Argument(help="its id as `token list` shows it (tok-…)")],
) -> int:
    row = _app_store().revoke_token(token_id)
    print(f"{row.id} ({row.subject}, {row.role}) revoked at {row.revoked_at.isoformat()}")  # type: ignore[union-attr]
    return 0


@_audit.command("replay", help="replay saved histories offline against this code")
def _audit_replay(
    files: Annotated[
        list[Path], typer.Argument(metavar="FILE", help="history JSON files (Temporal's format)")
    ],
) -> int:
    from app.audit import load_history, replay

    async def run() -> int:
        failed = 0
        for index, path in enumerate(files, 1):
            with _Progress(f"replaying {path}{_counted(index, len(files))}"):
                outcome = await replay(load_history(path))
            if outcome.ok:
                print(f"replay OK ({outcome.workflow_id})")
            else:
                failed += 1
                print(f"replay FAILED ({outcome.workflow_id}): {outcome.failure}")
        return 1 if failed else 0

    return asyncio.run(run())


@_audit.command("export", help="export a workflow history from the Temporal server")
def _audit_export(
    workflow_id: Annotated[
        str, typer.Argument(help="the incident id (its workflow id) or a child's id")
    ],
    out: Annotated[Path, typer.Option(help="the JSON file to write")],
) -> int:
    from app.audit import export_history
    from continuity.temporal import connect_temporal

    async def run() -> Path:
        client = await connect_temporal(Settings())
        return await export_history(client, workflow_id, out)

    print(f"history written to {asyncio.run(run())}")
    return 0


@_audit.command("bundle", help="write a closed incident's whole record into a signed directory")
def _audit_bundle(
    incident_id: Annotated[str, typer.Argument(help="the incident id")],
    out: Annotated[Path, typer.Option("-o", "--out", help="a new or empty directory")],
) -> int:
    from app.bundle import make_bundle
    from continuity.signing import fingerprint, load_private_key
    from continuity.store import Store
    from continuity.temporal import connect_temporal

    settings = _settings()
    key = load_private_key(settings.signing_key_path)

    async def run() -> Path:
        client = await connect_temporal(settings)
        return await make_bundle(client, Store.for_settings(settings), incident_id, out, key)

    with _Progress(f"bundling {incident_id}: histories, transcripts, reports, signature"):
        written = asyncio.run(run())
    print(
        f"bundle of {incident_id} written to {written}, signed by {fingerprint(key.public_key())}"
    )
    return 0


@_audit.command("verify", help="check a bundle offline (signature, hashes, replay, transcripts)")
def _audit_verify(
    paths: Annotated[
        list[Path], typer.Argument(metavar="FILE|DIR", help="bundle directories or histories")
    ],
    key: Annotated[
        list[Path] | None,
        typer.Option(
            help="a trusted public key (PEM); repeat for old keys. Default: the signing key's .pub"
        ),
    ] = None,
) -> int:
    from app.audit import load_history
    from app.bundle import verify_bundle, verify_history
    from continuity.signing import load_public_key

    for path in paths:
        if not path.exists():
            raise ValidationFailed(f"{path}: no such file or directory")
    keys = list(key or [])
    if not keys:
        own = _settings().signing_key_path.with_name(_settings().signing_key_path.name + ".pub")
        if not own.exists():
            raise ValidationFailed(
                "no trusted public key: pass --key FILE (the deployment's signing-key .pub)"
            )
        keys = [own]
    trusted = [load_public_key(k) for k in keys]
    failed = 0
    for index, path in enumerate(paths, 1):
        history = path.is_file()  # one history: its replay and its signed actions, no transcripts
        with _Progress(f"verifying {path}{_counted(index, len(paths))}: replaying its histories"):
            if history:
                report = asyncio.run(verify_history(load_history(path), trusted))
            else:
                report = asyncio.run(verify_bundle(path, trusted))
        if history:
            what = (
                f"{report.attestations} signed actions, {report.rendered} lines sent re-rendered "
                "from its playbook (no transcripts or records: a history)"
            )
        else:
            what = (
                f"{report.files} files, {report.histories} histories replayed, "
                f"{report.attestations} signed actions, {report.transcripts} transcript "
                f"references, {report.commands} commands (each in a transcript and re-rendered "
                f"from the playbook) and {report.reports} reports checked"
            )
        if report.ok:
            signer = f", signed by {report.key}" if report.key else ""
            print(f"verified: {report.incident_id}{signer}; {what}")
            continue
        failed += 1
        print(f"NOT VERIFIED: {path} ({len(report.problems)} problems)")
        for p in report.problems:
            print(f"- {p}")
    return 1 if failed else 0


@_audit.command(
    "report", help="render an incident's timeline or 2c dossier from its history alone (offline)"
)
def _audit_report(
    path: Annotated[
        Path, typer.Argument(metavar="FILE|DIR", help="an incident's history JSON, or its bundle")
    ],
    form: Annotated[
        Literal["dossier_2c", "timeline"], typer.Option(help="which report")
    ] = "dossier_2c",
    lang: Annotated[Literal["vi", "en"], typer.Option(help="language")] = "vi",
    output_format: Annotated[
        Literal["markdown", "html"], typer.Option("--format", help="Markdown or HTML")
    ] = "markdown",
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="write it here (default: standard output)")
    ] = None,
) -> int:
    from app.audit import load_history
    from continuity.report import render_html
    from workflows.history_facts import history_facts

    if path.is_dir():  # a bundle: its incident's own history
        from continuity.bundles import MANIFEST

        try:
            incident_id = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["incident_id"]
        except (OSError, ValueError, KeyError) as e:
            raise ValidationFailed(f"{path}: not a readable bundle ({e})") from None
        path = path / "histories" / f"{incident_id}.json"
    elif not path.exists():
        raise ValidationFailed(f"{path}: no such file or directory")
    facts = asyncio.run(history_facts(load_history(path)))
    text = facts.render(form, lang)
    if output_format == "html":
        text = render_html(text, title=f"{facts.input.incident.id} {form}", lang=lang)
    if out:
        out.write_text(text, encoding="utf-8")
        print(f"{form} ({lang}) of {facts.input.incident.id} written to {out}")
    else:
        print(text, end="")
    return 0


@_report.command(
    "period", help="every archived incident of a period, for the DIC's periodic report"
)
def _report_period(
    start: Annotated[str, typer.Option("--from", help="first day (ISO 8601, UTC+7)")],
    end: Annotated[str, typer.Option("--to", help="the day after the last (ISO 8601)")],
    archive: Annotated[
        Path | None,
        typer.Option(help="the bundles' directory (default: CONTINUITY_ARCHIVE_DIR)"),
    ] = None,
    lang: Annotated[Literal["vi", "en", "both"], typer.Option(help="language")] = "both",
) -> int:
    from continuity.period import period_report, render_period

    archive = archive or _settings().archive_dir
    if archive is None:
        raise ValidationFailed(
            "no archive: pass --archive DIR or set CONTINUITY_ARCHIVE_DIR (the report is read "
            "from the archived bundles, not the live database)"
        )
    try:
        first, after = (datetime.fromisoformat(v) for v in (start, end))
    except ValueError as e:
        raise ValidationFailed(f"--from/--to: {e} (ISO 8601, e.g. 2026-11-01)") from None
    zone = timezone(timedelta(hours=7))  # a date alone is a Vietnamese calendar day
    first, after = (d if d.tzinfo else d.replace(tzinfo=zone) for d in (first, after))
    if after <= first:
        raise ValidationFailed("--to must be after --from")
    report = period_report(archive, first, after)
    langs = ["vi", "en"] if lang == "both" else [lang]
    print("\n".join(render_period(report, one) for one in langs), end="")
    return 0


@_keys.command("generate", help="make a new Ed25519 key pair for signing bundles")
def _keys_generate(
    out: Annotated[
        Path | None,
        typer.Option(help="the private key file (default: CONTINUITY_SIGNING_KEY)"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing key pair")] = False,
) -> int:
    from continuity.signing import generate_key_pair

    settings = _settings()
    pair = generate_key_pair(out or settings.signing_key_path, overwrite=force)
    print(f"private key {pair.private_path} (keep it on the worker and API hosts only)")
    print(f"public key  {pair.public_path} (give it to auditors; keep old ones after rotation)")
    print(f"fingerprint {pair.fingerprint}")
    return 0


@_lab.command("serve", help="serve simulated devices over SSH until Ctrl-C")
def _lab_serve(
    inventory: Annotated[
        Path | None, typer.Option(help="the devices to simulate", show_default=_SAMPLE)
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="where the host keys and the served inventory go")
    ] = DEFAULT_DATA_DIR / "lab",
    time_scale: Annotated[
        float, typer.Option(help="device clocks run this much faster (commit-confirm timers)")
    ] = 1.0,
) -> int:
    from lab.gear.server import serve

    inventory = _or_sample(inventory)
    data_dir = data_dir.resolve()
    logging.getLogger("lab").setLevel(logging.INFO)
    print(
        f"serving the devices of {inventory} over SSH on 127.0.0.1 (user netops, "
        f"password lab-secret); actual ports in {data_dir / 'inventory.json'}, host keys in "
        f"{data_dir / 'known_hosts'}. Ctrl-C stops.",
        flush=True,
    )
    try:
        asyncio.run(serve(inventory, data_dir, time_scale=time_scale))
    except KeyboardInterrupt:
        pass
    return 0


@app.command("worker", help="run the Temporal worker")
def _worker(
    sites: Annotated[
        str | None,
        typer.Option(
            help="comma-separated sites whose device activities this worker runs (a worker "
            "next to that gear); default: every site of the inventory",
        ),
    ] = None,
    sites_only: Annotated[
        bool,
        typer.Option(
            "--sites-only",
            help="run only device activities (no workflows, store or telephony): a site worker",
        ),
    ] = False,
) -> int:
    import worker

    chosen = [x for x in sites.split(",") if x] if sites is not None else None
    worker.main(chosen, central=not sites_only)
    return 0


async def _reachable(settings: Settings) -> None:
    from continuity.settings import check_startup
    from continuity.temporal import connect_temporal

    check_startup(settings)  # the API too: its webhooks check Twilio's signatures
    await connect_temporal(settings)


@app.command("api", help="run the HTTP API")
def _api() -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings()
    # Refuse here (TLS settings, Temporal down): inside uvicorn's lifespan the same error
    # would come out as a traceback.
    asyncio.run(_reachable(settings))
    print(_data_dir_line(settings), file=sys.stderr, flush=True)
    _RUN.data_dir_named = True
    # JSON logs: uvicorn's loggers go through ours instead of its own text handlers.
    log_config = None if log_format() == "json" else uvicorn.config.LOGGING_CONFIG
    app = create_app(settings)
    freeze_startup_heap()  # this process is the API's alone
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=log_config,
    )
    return 0


def _usage_error(e: typer.TyperException) -> str:
    """Click's usage block and hint, as the one line every other refusal is."""
    ctx = getattr(e, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"error: {' '.join(e.format_message().split())}{where}"


def run(argv: list[str] | None = None) -> int:
    """Run one command in this process and return its exit status: a mistake or a refusal is
    one stderr line and 2, an unexpected failure one line and 1 (its traceback with --debug)."""
    global _RUN
    _RUN = _Run()
    try:
        result = typer.main.get_command(app).main(
            args=sys.argv[1:] if argv is None else argv,
            prog_name="continuity",
            standalone_mode=False,  # every exit status and message is decided here
        )
        code = result if isinstance(result, int) else 0
    except typer.TyperException as e:  # the command line itself: unknown, missing, malformed
        print(_usage_error(e), file=sys.stderr)
        code = 2
    except ContinuityError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # noqa: BLE001 - the one place a command's surprise becomes a line
        if _RUN.debug:
            traceback.print_exc()
        else:
            print(
                f"error: {type(e).__name__}: {e} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        code = 1
    if code == 0 and _RUN.settings is not None and not _RUN.data_dir_named:
        print(_data_dir_line(_RUN.settings), file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> None:
    configure_logging("WARNING")
    code = run(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal core runtime can crash at interpreter exit; nothing is left to flush here.
    os._exit(code)


if __name__ == "__main__":
    main()
