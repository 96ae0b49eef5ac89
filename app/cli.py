"""The `continuity` command: demo, up, inventory, token, audit, lab, worker, api."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import signal
import sys
import traceback
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from continuity.errors import ContinuityError, ValidationFailed
from continuity.logs import configure_logging, log_format
from continuity.models import Role
from continuity.settings import Settings
from continuity.validation import check_identifier, check_text

if TYPE_CHECKING:
    from continuity.models import Inventory
    from continuity.store import Store

DEFAULT_DATA_DIR = Path("continuity-data")

# The settings of this command, made once (env, then the config file); a command that used
# them names the data directory they resolve to when it ends well (stderr: stdout stays the
# command's output, and a failure stays one line).
_SETTINGS: list[Settings] = []


def _settings() -> Settings:
    if not _SETTINGS:
        _SETTINGS.append(Settings())
    return _SETTINGS[0]


def _data_dir_line(settings: Settings) -> str:
    return f"data directory: {settings.data_dir.resolve()} (store {settings.masked_database_url})"


def _demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    print(f"data directory: {args.data_dir.resolve()} (the demo's own)", flush=True)
    return asyncio.run(
        run_demo(args.data_dir.resolve(), inventory_file=args.inventory, area=args.area)
    )


def _up(args: argparse.Namespace) -> int:
    from app.stack import Stack
    from continuity.inventory import read_inventory

    read_inventory(args.inventory)  # a clear error now, not a traceback from the lab

    async def run() -> None:
        stack = Stack(
            data_dir=args.data_dir.resolve(),
            inventory_file=args.inventory,
            api_port=args.api_port,
            temporal_port=args.temporal_port,
            ui_port=args.ui_port,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            settings = await stack.start()
            print(f"Data directory:    {args.data_dir.resolve()}", flush=True)
            print(f"API docs:          {stack.api_url}/docs", flush=True)
            print(f"Console:           {stack.api_url}/console/", flush=True)
            print(f"Temporal Web UI:   http://127.0.0.1:{args.ui_port}", flush=True)
            print(f"Temporal frontend: {settings.temporal_address}", flush=True)
            for role, token in stack.tokens.items():
                print(f"token {role.value:<13} {token}", flush=True)
            print("Ctrl-C stops everything.", flush=True)
            await stop.wait()
        finally:
            await stack.stop()
            print("stopped.", flush=True)

    asyncio.run(run())
    return 0


def _inventory_validate(args: argparse.Namespace) -> int:
    from continuity.inventory import read_inventory

    inv = read_inventory(args.file).inventory
    print(f"{args.file}: valid inventory: {_counts(inv)}")
    return 0


def _inventory_diff(args: argparse.Namespace) -> int:
    from continuity.inventory import diff_inventories, read_inventory

    new = read_inventory(args.file).inventory
    for line in diff_inventories(_app_store().inventory(), new).lines():
        print(line)
    return 0


def _inventory_load(args: argparse.Namespace) -> int:
    from continuity.inventory import diff_inventories, read_inventory
    from continuity.models import inventory_sha256

    loaded = read_inventory(args.file)
    store = _app_store()
    before = store.inventory()
    diff = diff_inventories(before, loaded.inventory)
    for line in diff.lines():
        print(line)
    wiped = diff.empties(before)
    if wiped and not args.replace:
        raise ValidationFailed(
            f"{args.file} would remove every entry of: {', '.join(wiped)}; nothing was loaded "
            "(--replace loads it anyway)"
        )
    active = store.active_incidents()
    if active and not args.force:
        raise ValidationFailed(
            f"incidents are active ({', '.join(active)}); nothing was loaded (--force loads "
            "it anyway: running incidents keep the inventory they started with)"
        )
    store.replace_inventory(loaded.inventory)
    store.record_inventory_load(
        loaded_by=args.by or getpass.getuser(),
        file_name=str(args.file.resolve()),
        file_sha256=loaded.sha256,
        inventory_sha256=inventory_sha256(loaded.inventory),
        summary=diff.summary(),
        forced=" ".join(f for f, on in (("--replace", wiped), ("--force", active)) if on),
    )
    print(f"loaded {_counts(loaded.inventory)} (file sha256 {loaded.sha256[:16]}…)")
    return 0


def _inventory_export(args: argparse.Namespace) -> int:
    text = _app_store().inventory().model_dump_json(indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"inventory written to {args.out}", file=sys.stderr)
    return 0


def _inventory_history(_args: argparse.Namespace) -> int:
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


def _token_create(args: argparse.Namespace) -> int:
    row, token = _app_store().create_token(
        subject=check_identifier(args.subject),
        role=Role(args.role),
        expires_at=_expiry(args.expires),
        label=check_text(args.label, allow_empty=True),
        created_by=getpass.getuser(),
    )
    expires = row.expires_at.isoformat() if row.expires_at else "never"
    print(f"{row.id}  {row.subject}  {row.role}  expires {expires}", file=sys.stderr)
    print("the token (shown once; the store keeps only its hash):", file=sys.stderr)
    print(token)
    return 0


def _token_list(_args: argparse.Namespace) -> int:
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


def _token_revoke(args: argparse.Namespace) -> int:
    row = _app_store().revoke_token(args.token_id)
    print(f"{row.id} ({row.subject}, {row.role}) revoked at {row.revoked_at.isoformat()}")  # type: ignore[union-attr]
    return 0


def _audit_replay(args: argparse.Namespace) -> int:
    from app.audit import load_history, replay

    async def run() -> int:
        failed = 0
        for path in args.files:
            outcome = await replay(load_history(path))
            if outcome.ok:
                print(f"replay OK ({outcome.workflow_id})")
            else:
                failed += 1
                print(f"replay FAILED ({outcome.workflow_id}): {outcome.failure}")
        return 1 if failed else 0

    return asyncio.run(run())


def _audit_export(args: argparse.Namespace) -> int:
    from app.audit import export_history
    from continuity.temporal import connect_temporal

    async def run() -> Path:
        client = await connect_temporal(Settings())
        return await export_history(client, args.workflow_id, args.out)

    print(f"history written to {asyncio.run(run())}")
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    from continuity.signing import generate_key_pair

    settings = _settings()
    pair = generate_key_pair(args.out or settings.signing_key_path, overwrite=args.force)
    print(f"private key {pair.private_path} (keep it on the worker and API hosts only)")
    print(f"public key  {pair.public_path} (give it to auditors; keep old ones after rotation)")
    print(f"fingerprint {pair.fingerprint}")
    return 0


def _audit_bundle(args: argparse.Namespace) -> int:
    from app.bundle import make_bundle
    from continuity.signing import fingerprint, load_private_key
    from continuity.store import Store
    from continuity.temporal import connect_temporal

    settings = _settings()
    key = load_private_key(settings.signing_key_path)

    async def run() -> Path:
        client = await connect_temporal(settings)
        return await make_bundle(
            client, Store.for_settings(settings), args.incident_id, args.out, key
        )

    out = asyncio.run(run())
    print(
        f"bundle of {args.incident_id} written to {out}, signed by {fingerprint(key.public_key())}"
    )
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from app.audit import load_history
    from app.bundle import verify_bundle, verify_history
    from continuity.signing import load_public_key

    for path in args.paths:
        if not path.exists():
            raise ValidationFailed(f"{path}: no such file or directory")
    keys = list(args.key)
    if not keys:
        own = _settings().signing_key_path.with_name(_settings().signing_key_path.name + ".pub")
        if not own.exists():
            raise ValidationFailed(
                "no trusted public key: pass --key FILE (the deployment's signing-key .pub)"
            )
        keys = [own]
    trusted = [load_public_key(k) for k in keys]
    failed = 0
    for path in args.paths:
        if path.is_file():  # one history: its replay and its signed actions, no transcripts
            report = asyncio.run(verify_history(load_history(path), trusted))
            what = (
                f"{report.attestations} signed actions, {report.rendered} lines sent re-rendered "
                "from its playbook (no transcripts or records: a history)"
            )
        else:
            report = asyncio.run(verify_bundle(path, trusted))
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


def _audit_report(args: argparse.Namespace) -> int:
    from app.audit import load_history
    from continuity.report import render_html
    from workflows.history_facts import history_facts

    path: Path = args.path
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
    text = facts.render(args.form, args.lang)
    if args.format == "html":
        text = render_html(text, title=f"{facts.input.incident.id} {args.form}", lang=args.lang)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"{args.form} ({args.lang}) of {facts.input.incident.id} written to {args.out}")
    else:
        print(text, end="")
    return 0


def _report_period(args: argparse.Namespace) -> int:
    from continuity.period import period_report, render_period

    archive = args.archive or _settings().archive_dir
    if archive is None:
        raise ValidationFailed(
            "no archive: pass --archive DIR or set CONTINUITY_ARCHIVE_DIR (the report is read "
            "from the archived bundles, not the live database)"
        )
    try:
        start, end = (datetime.fromisoformat(v) for v in (args.start, args.end))
    except ValueError as e:
        raise ValidationFailed(f"--from/--to: {e} (ISO 8601, e.g. 2026-11-01)") from None
    zone = timezone(timedelta(hours=7))  # a date alone is a Vietnamese calendar day
    start, end = (d if d.tzinfo else d.replace(tzinfo=zone) for d in (start, end))
    if end <= start:
        raise ValidationFailed("--to must be after --from")
    report = period_report(archive, start, end)
    langs = ["vi", "en"] if args.lang == "both" else [args.lang]
    print("\n".join(render_period(report, lang) for lang in langs), end="")
    return 0


def _lab_serve(args: argparse.Namespace) -> int:
    from lab.gear.server import serve

    data_dir = args.data_dir.resolve()
    logging.getLogger("lab").setLevel(logging.INFO)
    print(
        f"serving the devices of {args.inventory} over SSH on 127.0.0.1 (user netops, "
        f"password lab-secret); actual ports in {data_dir / 'inventory.json'}, host keys in "
        f"{data_dir / 'known_hosts'}. Ctrl-C stops.",
        flush=True,
    )
    try:
        asyncio.run(serve(args.inventory, data_dir, time_scale=args.time_scale))
    except KeyboardInterrupt:
        pass
    return 0


def _worker(args: argparse.Namespace) -> int:
    import worker

    sites = [x for x in args.sites.split(",") if x] if args.sites is not None else None
    worker.main(sites, central=not args.sites_only)
    return 0


async def _reachable(settings: Settings) -> None:
    from continuity.settings import check_startup
    from continuity.temporal import connect_temporal

    check_startup(settings)  # the API too: its webhooks check Twilio's signatures
    await connect_temporal(settings)


def _api(_: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings()
    # Refuse here (TLS settings, Temporal down): inside uvicorn's lifespan the same error
    # would come out as a traceback.
    asyncio.run(_reachable(settings))
    print(_data_dir_line(settings), file=sys.stderr, flush=True)
    # JSON logs: uvicorn's loggers go through ours instead of its own text handlers.
    log_config = None if log_format() == "json" else uvicorn.config.LOGGING_CONFIG
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=log_config,
    )
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("continuity")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _playbook_list(_args: argparse.Namespace) -> int:
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


def _playbook_show(args: argparse.Namespace) -> int:
    from playbooks import get_playbook

    spec = get_playbook(args.name, args.version)
    print(json.dumps({"sha256": spec.sha256(), **spec.model_dump(mode="json")}, indent=2,
                     ensure_ascii=False))  # fmt: skip
    return 0


def _playbook_freeze(args: argparse.Namespace) -> int:
    from playbooks import freeze

    print(f"kept as {freeze(args.name)}")
    return 0


def _playbook_plan(args: argparse.Namespace) -> int:
    from continuity.inventory import read_inventory
    from continuity.models import IncidentKind
    from continuity.plan import plan_incident, render_plan
    from continuity.playbook import load_spec_file
    from playbooks import CATALOGUE, get_playbook

    named = args.name in CATALOGUE or not Path(args.name).exists()
    spec = get_playbook(args.name) if named else load_spec_file(Path(args.name))
    inventory = (
        read_inventory(args.inventory).inventory if args.inventory else _app_store().inventory()
    )
    try:
        kind = IncidentKind(args.kind)
    except ValueError:
        known = ", ".join(k.value for k in IncidentKind)
        raise ValidationFailed(f"unknown incident kind {args.kind!r}; known: {known}") from None
    plan = plan_incident(
        spec,
        inventory,
        area=args.area,
        kind=kind,
        timings=Settings().timings,
        segment=args.route,
        also=args.also,
    )
    print(plan.model_dump_json(indent=2) if args.json else render_plan(plan))
    return 0


def _playbook_validate(args: argparse.Namespace) -> int:
    from continuity.playbook import load_spec_file
    from playbooks import CATALOGUE, get_playbook

    target = args.target
    path = Path(target)
    named = target in CATALOGUE or (path.suffix not in (".json", ".py") and not path.exists())
    spec = get_playbook(target) if named else load_spec_file(path)
    steps = ", ".join(s.type for s in spec.steps)
    print(f"{target}: valid playbook {spec.name} v{spec.version}, sha256 {spec.sha256()}")
    print(f"  {len(spec.steps)} steps: {steps}")
    return 0


def _doctor(_args: argparse.Namespace) -> int:
    from app.doctor import run_doctor

    checks = asyncio.run(run_doctor(_settings()))
    for check in checks:
        print(check.line())
    return 1 if any(c.verdict == "FAIL" for c in checks) else 0


def _config_show(_args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    from app.stack import SAMPLE_INVENTORY

    p = argparse.ArgumentParser(prog="continuity", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument(
        "--debug",
        action="store_true",
        help="on an unexpected failure, print its traceback (otherwise: one line, exit 1)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a TOML settings file (default: $CONTINUITY_CONFIG, ./continuity.toml, "
        "/etc/continuity/continuity.toml); CONTINUITY_* variables override it",
    )
    sub = p.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser("config", help="the effective settings").add_subparsers(
        dest="sub", required=True
    )
    cfg.add_parser(
        "show", help="print the settings every command uses, secrets masked"
    ).set_defaults(fn=_config_show)
    pb = sub.add_parser("playbook", help="the playbooks this deployment runs").add_subparsers(
        dest="sub", required=True
    )
    pb.add_parser("list", help="every shipped playbook: name, version, hash").set_defaults(
        fn=_playbook_list
    )
    show = pb.add_parser("show", help="a playbook's steps as JSON, with its hash")
    show.add_argument("name", help="a playbook name, as `playbook list` shows it")
    show.add_argument("--version", type=int, help="a kept older version (default: the current one)")
    show.set_defaults(fn=_playbook_show)
    fz = pb.add_parser(
        "freeze", help="keep a playbook's current version as JSON (after bumping its version)"
    )
    fz.add_argument("name", help="a playbook name, as `playbook list` shows it")
    fz.set_defaults(fn=_playbook_freeze)
    pp = pb.add_parser(
        "plan", help="the exact lines a playbook would send, per wave and device; touches nothing"
    )
    pp.add_argument("name", help="a playbook name, or a JSON spec / Python module file")
    pp.add_argument("--area", required=True, help="the area an incident would be declared for")
    pp.add_argument("--kind", default="sabotage", help="the incident kind (default: sabotage)")
    pp.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="AREA",
        help="a further commune or former unit covered by the same incident (repeat)",
    )
    pp.add_argument(
        "--route",
        metavar="SEGMENT",
        help="the cut cable segment (the inventory's cable_routes), for a playbook that follows it",
    )
    pp.add_argument(
        "--inventory", type=Path, help="an inventory file (default: the loaded inventory)"
    )
    pp.add_argument("--json", action="store_true", help="the plan as JSON, with its hashes")
    pp.set_defaults(fn=_playbook_plan)
    pv = pb.add_parser("validate", help="check a playbook (a name, a .json spec or a .py module)")
    pv.add_argument("target", help="a playbook name, a JSON spec file or a Python module file")
    pv.set_defaults(fn=_playbook_validate)
    sub.add_parser(
        "doctor",
        help="check Temporal, the database, every device's credential and host key, telephony "
        "and the public URL; exit 1 on any failure",
    ).set_defaults(fn=_doctor)

    demo = sub.add_parser("demo", help="run the whole mission on the embedded stack and exit")
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR / "demo",
        help="where the store, the lab's keys and the saved histories go (default: %(default)s)",
    )
    demo.add_argument(
        "--inventory",
        type=Path,
        default=SAMPLE_INVENTORY,
        help="your network, simulated by the lab (default: the Kon Tum sample)",
    )
    demo.add_argument("--area", help="the area to declare for (default: the busiest one)")
    demo.set_defaults(fn=_demo)

    up = sub.add_parser("up", help="start the embedded stack and stay up")
    up.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR / "up",
        help="where the store, Temporal's file and the lab's keys go (default: %(default)s)",
    )
    up.add_argument(
        "--inventory",
        type=Path,
        default=SAMPLE_INVENTORY,
        help="your network, simulated by the lab and loaded into the store (default: the sample)",
    )
    up.add_argument("--api-port", type=int, default=8000, help="API and console port on 127.0.0.1")
    up.add_argument(
        "--temporal-port", type=int, default=7233, help="Temporal dev server port on 127.0.0.1"
    )
    up.add_argument("--ui-port", type=int, default=8233, help="Temporal Web UI port on 127.0.0.1")
    up.set_defaults(fn=_up)

    inv = sub.add_parser("inventory", help="inventory commands").add_subparsers(
        dest="sub", required=True
    )
    val = inv.add_parser("validate", help="check an inventory JSON file; change nothing")
    val.add_argument("file", type=Path, help="an inventory JSON file")
    val.set_defaults(fn=_inventory_validate)
    dif = inv.add_parser("diff", help="what loading FILE would add, remove and change")
    dif.add_argument("file", type=Path, help="an inventory JSON file")
    dif.set_defaults(fn=_inventory_diff)
    load = inv.add_parser("load", help="load an inventory JSON file into the store")
    load.add_argument("file", type=Path, help="an inventory JSON file")
    load.add_argument(
        "--replace",
        action="store_true",
        help="load even if it removes every device, circuit, area or person of a section",
    )
    load.add_argument("--force", action="store_true", help="load even while incidents are active")
    load.add_argument("--by", help="who loads it, for the record (default: $USER)")
    load.set_defaults(fn=_inventory_load)
    exp = inv.add_parser("export", help="the store's inventory as JSON")
    exp.add_argument("-o", "--out", type=Path, help="write to this file (default: stdout)")
    exp.set_defaults(fn=_inventory_export)
    inv.add_parser("history", help="every inventory load: when, who, which file").set_defaults(
        fn=_inventory_history
    )

    tok = sub.add_parser(
        "token", help="API principals: bearer tokens kept as hashes"
    ).add_subparsers(dest="sub", required=True)
    tc = tok.add_parser("create", help="make a token for a subject and role; shown only once")
    tc.add_argument("--subject", required=True, help="an operator or duty officer id, a name")
    tc.add_argument(
        "--role", required=True, choices=[r.value for r in Role], help="what the token may do"
    )
    tc.add_argument(
        "--expires", help="when it stops working: a duration (90d, 12h) or an ISO 8601 time"
    )
    tc.add_argument("--label", default="", help="what it is for, shown in `token list`")
    tc.set_defaults(fn=_token_create)
    tok.add_parser("list", help="every token: id, subject, role, state").set_defaults(
        fn=_token_list
    )
    tr = tok.add_parser("revoke", help="stop a token working at once")
    tr.add_argument("token_id", help="its id as `token list` shows it (tok-…)")
    tr.set_defaults(fn=_token_revoke)

    audit = sub.add_parser("audit", help="audit commands").add_subparsers(dest="sub", required=True)
    rp = audit.add_parser("replay", help="replay saved histories offline against this code")
    rp.add_argument(
        "files", type=Path, nargs="+", metavar="FILE", help="history JSON files (Temporal's format)"
    )
    rp.set_defaults(fn=_audit_replay)
    ex = audit.add_parser("export", help="export a workflow history from the Temporal server")
    ex.add_argument("workflow_id", help="the incident id (its workflow id) or a child's id")
    ex.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    ex.set_defaults(fn=_audit_export)

    bd = audit.add_parser(
        "bundle", help="write a closed incident's whole record into a signed directory"
    )
    bd.add_argument("incident_id", help="the incident id")
    bd.add_argument("-o", "--out", type=Path, required=True, help="a new or empty directory")
    bd.set_defaults(fn=_audit_bundle)
    vf = audit.add_parser(
        "verify", help="check a bundle offline (signature, hashes, replay, transcripts)"
    )
    vf.add_argument(
        "paths", type=Path, nargs="+", metavar="FILE|DIR", help="bundle directories or histories"
    )
    vf.add_argument(
        "--key",
        type=Path,
        action="append",
        default=[],
        help="a trusted public key (PEM); repeat for old keys. Default: the signing key's .pub",
    )
    vf.set_defaults(fn=_audit_verify)
    ar = audit.add_parser(
        "report",
        help="render an incident's timeline or 2c dossier from its history alone (offline)",
    )
    ar.add_argument(
        "path", type=Path, metavar="FILE|DIR", help="an incident's history JSON, or its bundle"
    )
    ar.add_argument(
        "--form", choices=["dossier_2c", "timeline"], default="dossier_2c", help="which report"
    )
    ar.add_argument("--lang", choices=["vi", "en"], default="vi", help="language")
    ar.add_argument(
        "--format", choices=["markdown", "html"], default="markdown", help="Markdown or HTML"
    )
    ar.add_argument("-o", "--out", type=Path, help="write it here (default: standard output)")
    ar.set_defaults(fn=_audit_report)

    report = sub.add_parser("report", help="reports upward").add_subparsers(
        dest="sub", required=True
    )
    rpp = report.add_parser(
        "period", help="every archived incident of a period, for the DIC's periodic report"
    )
    rpp.add_argument("--from", dest="start", required=True, help="first day (ISO 8601, UTC+7)")
    rpp.add_argument("--to", dest="end", required=True, help="the day after the last (ISO 8601)")
    rpp.add_argument(
        "--archive", type=Path, help="the bundles' directory (default: CONTINUITY_ARCHIVE_DIR)"
    )
    rpp.add_argument("--lang", choices=["vi", "en", "both"], default="both", help="language")
    rpp.set_defaults(fn=_report_period)

    keys = sub.add_parser("keys", help="the deployment's signing key").add_subparsers(
        dest="sub", required=True
    )
    kg = keys.add_parser("generate", help="make a new Ed25519 key pair for signing bundles")
    kg.add_argument(
        "--out", type=Path, help="the private key file (default: CONTINUITY_SIGNING_KEY)"
    )
    kg.add_argument("--force", action="store_true", help="replace an existing key pair")
    kg.set_defaults(fn=_keys_generate)

    lab = sub.add_parser("lab", help="the simulated lab").add_subparsers(dest="sub", required=True)
    serve = lab.add_parser("serve", help="serve simulated devices over SSH until Ctrl-C")
    serve.add_argument(
        "--inventory", type=Path, default=SAMPLE_INVENTORY, help="the devices to simulate"
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR / "lab",
        help="where the host keys and the served inventory go",
    )
    serve.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="device clocks run this much faster (commit-confirm timers)",
    )
    serve.set_defaults(fn=_lab_serve)

    wk = sub.add_parser("worker", help="run the Temporal worker")
    wk.add_argument(
        "--sites",
        help="comma-separated sites whose device activities this worker runs (a worker next to "
        "that gear); default: every site of the inventory",
    )
    wk.add_argument(
        "--sites-only",
        action="store_true",
        help="run only device activities (no workflows, store or telephony): a site worker",
    )
    wk.set_defaults(fn=_worker)
    sub.add_parser("api", help="run the HTTP API").set_defaults(fn=_api)
    return p


def main(argv: list[str] | None = None) -> None:
    configure_logging("WARNING")
    args = build_parser().parse_args(argv)
    _SETTINGS.clear()
    if args.config is not None:  # the settings this command makes read it
        os.environ["CONTINUITY_CONFIG"] = str(args.config)
    try:
        code = args.fn(args)
    except ContinuityError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # noqa: BLE001 - the one place a command's surprise becomes a line
        if args.debug:
            traceback.print_exc()
        else:
            print(
                f"error: {type(e).__name__}: {e} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        code = 1
    if code == 0 and _SETTINGS and args.fn is not _api:
        print(_data_dir_line(_SETTINGS[0]), file=sys.stderr)
    sys.stdout.flush()
    # The Temporal core runtime can crash at interpreter exit; nothing is left to flush here.
    os._exit(code)


if __name__ == "__main__":
    main()
