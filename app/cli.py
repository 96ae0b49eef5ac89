"""The `continuity` command: demo, up, inventory, token, audit, lab, worker, api."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from continuity.errors import ContinuityError, ValidationFailed
from continuity.models import Role
from continuity.settings import Settings
from continuity.validation import check_identifier, check_text

if TYPE_CHECKING:
    from continuity.store import Store

DEFAULT_DATA_DIR = Path("continuity-data")


def _demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return asyncio.run(run_demo(args.data_dir.resolve()))


def _up(args: argparse.Namespace) -> int:
    from app.stack import Stack

    async def run() -> None:
        stack = Stack(
            data_dir=args.data_dir.resolve(),
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


def _inventory_load(args: argparse.Namespace) -> int:
    from continuity.models import Inventory
    from continuity.store import Store

    try:
        inv = Inventory.model_validate_json(args.file.read_text(encoding="utf-8"))
    except ValidationError as e:
        print(
            f"error: {args.file} is not a valid inventory; nothing was loaded:\n{e}",
            file=sys.stderr,
        )
        return 2
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.sqlalchemy_url)
    store.create_schema()
    store.replace_inventory(inv)
    print(
        f"loaded {len(inv.devices)} devices, {len(inv.circuits)} circuits, "
        f"{len(inv.duty_officers)} duty officers, {len(inv.operators)} operators"
    )
    return 0


def _app_store() -> Store:
    from continuity.store import Store

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.sqlalchemy_url)
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
        created_by=os.environ.get("USER", ""),
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


def _api(_: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from continuity.temporal import temporal_tls_config

    settings = Settings()
    # Refuse here: inside uvicorn's lifespan the same error would come out as a traceback.
    temporal_tls_config(settings)
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from app.stack import SAMPLE_INVENTORY

    p = argparse.ArgumentParser(prog="continuity", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole mission on the embedded stack and exit")
    demo.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR / "demo")
    demo.set_defaults(fn=_demo)

    up = sub.add_parser("up", help="start the embedded stack and stay up")
    up.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR / "up")
    up.add_argument("--api-port", type=int, default=8000)
    up.add_argument("--temporal-port", type=int, default=7233)
    up.add_argument("--ui-port", type=int, default=8233)
    up.set_defaults(fn=_up)

    inv = sub.add_parser("inventory", help="inventory commands").add_subparsers(
        dest="sub", required=True
    )
    load = inv.add_parser("load", help="load an inventory JSON file into the store")
    load.add_argument("file", type=Path)
    load.set_defaults(fn=_inventory_load)

    tok = sub.add_parser(
        "token", help="API principals: bearer tokens kept as hashes"
    ).add_subparsers(dest="sub", required=True)
    tc = tok.add_parser("create", help="make a token for a subject and role; shown only once")
    tc.add_argument("--subject", required=True, help="an operator or duty officer id, a name")
    tc.add_argument("--role", required=True, choices=[r.value for r in Role])
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
    rp.add_argument("files", type=Path, nargs="+", metavar="FILE")
    rp.set_defaults(fn=_audit_replay)
    ex = audit.add_parser("export", help="export a workflow history from the Temporal server")
    ex.add_argument("workflow_id")
    ex.add_argument("--out", type=Path, required=True)
    ex.set_defaults(fn=_audit_export)

    lab = sub.add_parser("lab", help="the simulated lab").add_subparsers(dest="sub", required=True)
    serve = lab.add_parser("serve", help="serve simulated devices over SSH until Ctrl-C")
    serve.add_argument("--inventory", type=Path, default=SAMPLE_INVENTORY)
    serve.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR / "lab")
    serve.add_argument("--time-scale", type=float, default=1.0)
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
    logging.basicConfig(
        level=os.environ.get("CONTINUITY_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    args = build_parser().parse_args(argv)
    try:
        code = args.fn(args)
    except ContinuityError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    # The Temporal core runtime can crash at interpreter exit; nothing is left to flush here.
    os._exit(code)


if __name__ == "__main__":
    main()
