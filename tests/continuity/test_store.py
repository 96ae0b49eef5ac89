"""The store on SQLite (the embedded default) and on PostgreSQL (production), same behaviour."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from continuity.errors import StorageError
from continuity.models import Inventory
from continuity.stack import SAMPLE_INVENTORY
from continuity.store import Store

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _postgres_reason() -> str | None:
    try:
        with create_engine(PG_ADMIN_URL).connect() as c:
            c.execute(text("select 1"))
    except OperationalError as e:
        return f"PostgreSQL not reachable on 127.0.0.1:5432: {str(e).splitlines()[0]}"
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'c.db'}")
        s.create_schema()
        yield s
        s.close()
        return
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    name = f"continuity_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    s = Store(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    s.create_schema()
    try:
        yield s
    finally:
        s.close()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _sample() -> Inventory:
    return Inventory.model_validate_json(SAMPLE_INVENTORY.read_text(encoding="utf-8"))


def test_inventory_loaded_reads_back_identical(store: Store):
    inv = _sample()
    store.replace_inventory(inv)
    assert store.inventory() == inv.model_copy(
        update={
            "duty_officers": sorted(inv.duty_officers, key=lambda o: o.escalation_order),
            "devices": sorted(inv.devices, key=lambda d: d.name),
            "circuits": sorted(inv.circuits, key=lambda c: c.id),
        }
    )


def test_inventory_replaced_whole_old_one_gone(store: Store):
    inv = _sample()
    store.replace_inventory(inv)
    smaller = inv.model_copy(update={"circuits": inv.circuits[:2]})
    store.replace_inventory(smaller)
    assert [c.id for c in store.inventory().circuits] == sorted(c.id for c in inv.circuits[:2])


def test_sample_inventory_is_kon_tum_with_required_bodies():
    inv = _sample()
    owners = {c.owner for c in inv.circuits}
    assert {
        "Provincial Military Command",
        "Border Guard Command",
        "Provincial Police",
        "Provincial Party Committee",
        "Provincial People's Committee",
        "Department of Information and Communications",
    } <= owners
    assert len(inv.devices) >= 6 and len(inv.circuits) >= 12
    assert len({c.area for c in inv.circuits}) >= 2
    assert len(inv.duty_officers) == 3 and len(inv.operators) == 2
    assert len({d.platform for d in inv.devices}) == 4
    # Both reroute mechanisms: static routes and policy routing of a source prefix.
    assert {p.mechanism.value for c in inv.circuits for p in c.paths} == {
        "static_route",
        "source_pbr",
    }


def test_device_lock_lease_excludes_others_until_it_expires(store: Store):
    assert store.try_lock_device(device="r1", holder="a", lease_s=10, now=100) is None
    assert store.try_lock_device(device="r1", holder="b", lease_s=10, now=105) == "a"
    assert store.try_lock_device(device="r1", holder="a", lease_s=10, now=106) is None  # renew
    assert store.try_lock_device(device="r1", holder="b", lease_s=10, now=117) is None  # expired
    store.unlock_device(device="r1", holder="a")  # not the holder: no effect
    assert store.try_lock_device(device="r1", holder="c", lease_s=10, now=118) == "b"


def test_call_reservation_same_attempt_one_row(store: Store):
    a = store.reserve_call(incident_id="INC-1", attempt=1, officer_id="o1", to="+84905100201")
    b = store.reserve_call(incident_id="INC-1", attempt=1, officer_id="o1", to="+84905100201")
    assert a.id == b.id
    store.record_call_created(incident_id="INC-1", attempt=1, call_sid="CA1", status="queued")
    assert store.call_for_attempt("INC-1", 1).call_sid == "CA1"
    assert len(store.calls("INC-1")) == 1


def test_transcript_stored_with_its_digest(store: Store):
    tid, digest = store.save_transcript(
        incident_id="INC-1",
        change_id="c1",
        device="r1",
        step="apply",
        text="r1#ip route 10.0.0.0/8 10.1.1.1\n",
    )
    row = store.transcript(tid)
    assert row is not None and row.sha256 == digest and row.text.startswith("r1#")


def test_report_saved_twice_stored_once(store: Store):
    a = store.save_report(incident_id="INC-1", form="timeline", text="# t")
    b = store.save_report(incident_id="INC-1", form="timeline", text="# t")
    assert a == b and len(store.reports("INC-1")) == 1


def test_unreachable_database_is_a_storage_error(tmp_path: Path):
    s = Store(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(StorageError):
        s.create_schema()
