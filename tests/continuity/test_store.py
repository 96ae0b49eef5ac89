"""The store on SQLite (the embedded default) and on PostgreSQL (production), same behaviour."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError

from api.claims import DecisionClaims
from app.stack import SAMPLE_INVENTORY
from continuity.circuits import path_key
from continuity.errors import (
    AlreadyDecided,
    ChangeNotPending,
    DecisionRefused,
    NotAConfirmer,
    RoleConflict,
    SelfDecision,
    StaleChange,
    StorageError,
    TokenRefused,
    UnknownChange,
    UnknownOperator,
    UnknownToken,
    ValidationFailed,
    WindowClosed,
)
from continuity.models import (
    Area,
    Circuit,
    CircuitPath,
    CircuitState,
    Decision,
    Device,
    Inventory,
    NextHop,
    Operator,
    PartState,
    Platform,
    PriorityClass,
    RerouteMechanism,
    Role,
)
from continuity.store import DecisionClaim, Store
from tests.conftest import wait_until

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _postgres_reason() -> str | None:
    try:
        with create_engine(PG_ADMIN_URL).connect() as c:
            c.execute(text("select 1"))
    except OperationalError as e:
        return f"PostgreSQL not reachable on 127.0.0.1:5432: {str(e).splitlines()[0]}"
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'c.db'}"
        return
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    name = f"continuity_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.create_schema()
    try:
        yield s
    finally:
        s.close()


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


def test_device_sites_count_the_inventory_devices_per_site(store: Store):
    assert store.device_sites() == {}
    inv = _sample()
    store.replace_inventory(inv)
    assert store.device_sites() == dict(Counter(d.site for d in inv.devices))
    assert len(store.device_sites()) > 1  # the sample spreads its devices over sites


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


def test_ping_is_one_cheap_read_whatever_the_inventory(store: Store):
    """`/healthz` asks this every few seconds: one statement, never the province's inventory."""
    store.replace_inventory(_sample())
    seen: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    store.ping()
    reads = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1 and "FROM meta" in reads[0], seen


def test_ping_without_the_schema_or_the_database_is_a_storage_error(tmp_path: Path):
    with pytest.raises(StorageError):
        Store(f"sqlite:///{tmp_path / 'empty.db'}").ping()  # no tables: not a usable store
    with pytest.raises(StorageError):
        Store(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}").ping()


# --- the circuit ledger ------------------------------------------------------------------

SHARED = CircuitPath(
    device="r1",
    prefix="10.1.0.0/24",
    primary=NextHop(address="10.255.0.1"),
    backup=NextHop(address="10.254.0.1"),
)


def _circuit(cid: str, *paths: CircuitPath) -> Circuit:
    return Circuit(
        id=cid,
        name=f"circuit {cid}",
        owner="Provincial Police",
        priority_class=PriorityClass.ARMED_FORCES,
        restoration_level=1,
        area="north",
        paths=list(paths),
    )


def _ledger_inventory(*, b_path: CircuitPath = SHARED) -> Inventory:
    """Circuits a and b share one static route on r1; a also crosses r2; c is policy-routed."""
    a_on_r2 = CircuitPath(
        device="r2",
        prefix="10.1.0.0/24",
        primary=NextHop(address="10.255.2.1"),
        backup=NextHop(address="10.254.2.1"),
    )
    c_pbr = CircuitPath(
        device="r1",
        prefix="10.3.0.0/24",
        primary=NextHop(address="10.255.0.1"),
        backup=NextHop(address="10.254.0.1"),
        mechanism=RerouteMechanism.SOURCE_PBR,
        source_prefix="10.9.0.0/24",
        ingress_interface="Gi0/0/3",
    )
    return Inventory(
        province="Test",
        areas=[Area(id="north", name="North")],
        devices=[
            Device(name=n, platform=Platform.CISCO_IOSXE, host="127.0.0.1", credential="lab")
            for n in ("r1", "r2")
        ],
        circuits=[
            _circuit("a", SHARED, a_on_r2),
            _circuit("b", b_path),
            _circuit("c", c_pbr),
        ],
    )


KEY = path_key(SHARED, "a")


def _views(store: Store) -> dict[str, dict[str, Any]]:
    return {v["circuit"].id: v for v in store.circuit_views()}


def test_hold_circuits_repeated_is_idempotent(store: Store):
    store.replace_inventory(_ledger_inventory())
    assert store.hold_circuits("INC-A", ["a", "b"]) == {"a": [], "b": []}
    assert store.hold_circuits("INC-A", ["a", "b"]) == {"a": [], "b": []}
    holders = {cid: v["holders"] for cid, v in _views(store).items()}
    assert holders == {"a": ["INC-A"], "b": ["INC-A"], "c": []}


def test_hold_circuits_held_by_another_incident_reports_it(store: Store):
    store.hold_circuits("INC-A", ["a"])
    assert store.hold_circuits("INC-B", ["a", "b"]) == {"a": ["INC-A"], "b": []}


def test_release_circuits_returns_remaining_holders(store: Store):
    store.hold_circuits("INC-A", ["a", "b"])
    store.hold_circuits("INC-B", ["a"])
    assert store.release_circuits("INC-A") == {"a": ["INC-B"], "b": []}
    # A retried release gives the same answer.
    assert store.release_circuits("INC-A") == {"a": ["INC-B"], "b": []}


def test_released_hold_no_longer_counts(store: Store):
    store.replace_inventory(_ledger_inventory())
    store.hold_circuits("INC-A", ["a", "b"])
    store.release_circuits("INC-A")
    assert store.hold_circuits("INC-B", ["a", "b"]) == {"a": [], "b": []}
    assert store.release_circuits("INC-B") == {"a": [], "b": []}
    assert store.held_elsewhere(device="r1", keys=[KEY], incident_id="INC-C") == {KEY: []}
    assert all(v["holders"] == [] for v in store.circuit_views())


def test_hold_circuits_after_release_holds_again(store: Store):
    store.hold_circuits("INC-A", ["a"])
    store.release_circuits("INC-A")
    store.hold_circuits("INC-A", ["a"])
    assert store.hold_circuits("INC-B", ["a"]) == {"a": ["INC-A"]}


def test_set_parts_by_shared_key_moves_every_circuit_on_the_route(store: Store):
    store.replace_inventory(_ledger_inventory())
    recorded = store.set_parts(
        device="r1",
        states={KEY: PartState.BACKUP},
        incident_id="INC-A",
        change_id="chg-a-r1",
        circuits={"a": KEY},
    )
    assert recorded == {"a": PartState.BACKUP, "b": PartState.BACKUP}
    rows = store.part_rows("r1", ["a", "b", "c"])
    assert sorted(rows) == ["a", "b"]
    assert {(r.state, r.path_key, r.change_id) for r in rows.values()} == {
        ("backup", KEY, "chg-a-r1")
    }


def test_set_parts_step_circuit_gone_from_inventory_still_recorded(store: Store):
    store.replace_inventory(_ledger_inventory())
    gone_key = path_key(SHARED.model_copy(update={"prefix": "10.7.0.0/24"}), "gone")
    recorded = store.set_parts(
        device="r1",
        states={gone_key: PartState.PRIMARY},
        incident_id="INC-A",
        change_id="chg",
        circuits={"gone": gone_key},
    )
    assert recorded == {"gone": PartState.PRIMARY}
    assert store.part_rows("r1", ["gone"])["gone"].state == "primary"


def test_set_parts_step_circuit_without_a_state_left_as_it_was(store: Store):
    store.replace_inventory(_ledger_inventory())
    store.set_parts(
        device="r2",
        states={"k-r2": PartState.BACKUP},
        incident_id="INC-A",
        change_id="chg-1",
        circuits={"a": "k-r2"},
    )
    recorded = store.set_parts(
        device="r2", states={}, incident_id="INC-A", change_id="chg-2", circuits={"a": "k-r2"}
    )
    assert recorded == {}
    assert store.part_rows("r2", ["a"])["a"].change_id == "chg-1"


def test_held_elsewhere_reports_other_incidents_hold_on_sharing_circuit(store: Store):
    store.replace_inventory(_ledger_inventory())
    store.hold_circuits("INC-A", ["a"])
    store.hold_circuits("INC-B", ["b"])
    pbr = path_key(_ledger_inventory().circuits[2].paths[0], "c")
    assert store.held_elsewhere(device="r1", keys=[KEY, pbr], incident_id="INC-A") == {
        KEY: [("b", "INC-B")],
        pbr: [],
    }
    # On r2 only a crosses: nobody else needs a's route there.
    r2_key = path_key(_ledger_inventory().circuits[0].paths[1], "a")
    assert store.held_elsewhere(device="r2", keys=[r2_key], incident_id="INC-A") == {r2_key: []}


def test_circuit_views_one_state_per_circuit_from_its_parts(store: Store):
    store.replace_inventory(_ledger_inventory())
    inv = _ledger_inventory()
    r2_key = path_key(inv.circuits[0].paths[1], "a")
    for device, key in (("r1", KEY), ("r2", r2_key)):
        store.set_parts(
            device=device,
            states={key: PartState.BACKUP_UNCONFIRMED},
            incident_id="INC-A",
            change_id=f"chg-{device}",
        )
    views = _views(store)
    assert {cid: v["state"] for cid, v in views.items()} == {
        "a": CircuitState.ON_BACKUP_UNCONFIRMED,
        "b": CircuitState.ON_BACKUP_UNCONFIRMED,
        "c": CircuitState.ON_PRIMARY,
    }
    assert views["a"]["parts"] == {
        "r1": PartState.BACKUP_UNCONFIRMED,
        "r2": PartState.BACKUP_UNCONFIRMED,
    }
    assert views["c"]["part_rows"] == {"r1": None}


def test_circuit_views_half_moved_circuit_needs_attention(store: Store):
    store.replace_inventory(_ledger_inventory())
    store.set_parts(
        device="r1", states={KEY: PartState.BACKUP}, incident_id="INC-A", change_id="chg-r1"
    )
    views = _views(store)
    # a is on backup at r1 but still on primary at r2: half rerouted.
    assert views["a"]["state"] is CircuitState.NEEDS_ATTENTION
    assert views["b"]["state"] is CircuitState.ON_BACKUP
    assert store.circuit_state("a") is CircuitState.NEEDS_ATTENTION
    assert store.circuit_state("nope") is None


def _paths_on(store: Store, device: str) -> list[tuple[str, str]]:
    with store._session() as s:
        return store._paths_on(s, device)


def test_paths_on_after_inventory_replaced_sees_new_inventory(store: Store):
    store.replace_inventory(_ledger_inventory())
    assert sorted(c for c, _ in _paths_on(store, "r1")) == ["a", "b", "c"]
    moved = SHARED.model_copy(update={"device": "r2"})
    store.replace_inventory(_ledger_inventory(b_path=moved))
    assert sorted(c for c, _ in _paths_on(store, "r1")) == ["a", "c"]
    store.hold_circuits("INC-B", ["b"])
    assert store.held_elsewhere(device="r1", keys=[KEY], incident_id="INC-A") == {KEY: []}


def test_paths_on_inventory_replaced_by_another_process_sees_new_inventory(store: Store):
    store.replace_inventory(_ledger_inventory())
    store.hold_circuits("INC-B", ["b"])
    assert store.held_elsewhere(device="r1", keys=[KEY], incident_id="INC-A") == {
        KEY: [("b", "INC-B")]
    }
    other = Store(store.engine.url.render_as_string(hide_password=False))
    try:
        moved = SHARED.model_copy(update={"device": "r2"})
        other.replace_inventory(_ledger_inventory(b_path=moved))
    finally:
        other.close()
    assert store.held_elsewhere(device="r1", keys=[KEY], incident_id="INC-A") == {KEY: []}
    assert ("b", KEY) in _paths_on(store, "r2")


# --- the decision arbiter ----------------------------------------------------------------


# Who may decide: the arbiter checks the inventory's operators in the claim's transaction.
OPERATORS = ["duty-1", *(f"op-{i}" for i in range(8))]


def _with_operators(store: Store, ids: list[str] = OPERATORS) -> None:
    if {o.id for o in store.inventory().operators} != set(ids):
        inv = _sample().model_copy(update={"operators": [Operator(id=i, name=i) for i in ids]})
        store.replace_inventory(inv)


def _awaiting(
    store: Store,
    change_id: str = "chg-1",
    *,
    incident_id: str = "INC-1",
    confirmers: list[str] | None = None,
    deadline: datetime | None = None,
) -> datetime:
    _with_operators(store)
    store.open_change(
        change_id=change_id,
        incident_id=incident_id,
        device="r1",
        wave=1,
        direction="reroute",
        circuits=["a"],
        step={},
        declared_by="duty-1",
        confirmers=confirmers or [],
        state="applying",
    )
    deadline = deadline or datetime.now(UTC) + timedelta(seconds=60)
    store.set_change_state(change_id, "awaiting_confirmation", detail="in place", deadline=deadline)
    return deadline


def _claim(
    store: Store,
    operator: str,
    *,
    change_id: str = "chg-1",
    incident_id: str = "INC-1",
    decision: Decision = Decision.CONFIRM,
    now: datetime | None = None,
) -> datetime:
    return store.claim_decision(
        incident_id=incident_id,
        change_id=change_id,
        decision=decision,
        operator=operator,
        reason=f"{operator} says {decision.value}",
        now=now or datetime.now(UTC),
    )


def test_claim_decision_awaiting_change_is_won(store: Store):
    _awaiting(store)
    at = _claim(store, "op-1")
    row = store.change("chg-1")
    assert row is not None
    assert (row.decision, row.decided_by, row.decision_reason, row.decided_at) == (
        "confirm",
        "op-1",
        "op-1 says confirm",
        at,
    )
    attempts = store.decision_attempts("INC-1")
    assert [(a.operator, a.outcome) for a in attempts] == [("op-1", "accepted")]


def test_claim_decision_by_someone_not_an_operator_refused_and_logged(store: Store):
    _awaiting(store)
    with pytest.raises(UnknownOperator):
        _claim(store, "op-stranger")
    # The inventory is reloaded without op-1: from then on op-1 may not decide either.
    _with_operators(store, ["duty-1", "op-2"])
    with pytest.raises(UnknownOperator):
        _claim(store, "op-1")
    assert store.change("chg-1").decision is None
    attempts = store.decision_attempts("INC-1")
    assert [(a.operator, a.outcome) for a in attempts] == [
        ("op-stranger", "UnknownOperator"),
        ("op-1", "UnknownOperator"),
    ]
    assert _claim(store, "op-2")


@pytest.mark.parametrize(
    ("change_id", "incident_id"), [("chg-none", "INC-1"), ("chg-1", "INC-OTHER")]
)
def test_claim_decision_unknown_or_other_incidents_change_refused(
    store: Store, change_id: str, incident_id: str
):
    _awaiting(store)
    with pytest.raises(UnknownChange):
        _claim(store, "op-1", change_id=change_id, incident_id=incident_id)
    assert store.change("chg-1").decision is None


def test_claim_decision_by_declarer_refused(store: Store):
    _awaiting(store)
    with pytest.raises(SelfDecision) as e:
        _claim(store, "duty-1")
    assert (e.value.change_id, e.value.operator) == ("chg-1", "duty-1")
    assert store.change("chg-1").decision is None


def test_claim_decision_not_among_confirmers_refused(store: Store):
    _awaiting(store, confirmers=["op-1", "op-2"])
    with pytest.raises(NotAConfirmer):
        _claim(store, "op-3")
    assert _claim(store, "op-2")
    assert store.change("chg-1").decided_by == "op-2"
    # The refused claim changed nothing, though its conditional update had matched the row.
    assert [a.outcome for a in store.decision_attempts("INC-1")] == ["NotAConfirmer", "accepted"]


def test_claim_decision_on_a_row_without_confirmers_is_open_to_any_operator(store: Store):
    # A JSON null where the wave's confirmers go (what SQLAlchemy writes for None): no
    # confirmer restriction, on either database's claim, and no error from reading it.
    _awaiting(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE changes SET confirmers = 'null' WHERE change_id = 'chg-1'"))
    assert _claim(store, "op-3")
    assert store.change("chg-1").decided_by == "op-3"


def test_claim_decision_change_not_awaiting_refused(store: Store):
    _awaiting(store)
    store.set_change_state("chg-1", "rolled_back", detail="failed verification")
    with pytest.raises(ChangeNotPending):
        _claim(store, "op-1")


def test_claim_decision_change_never_awaiting_refused(store: Store):
    _with_operators(store)
    store.open_change(
        change_id="chg-1",
        incident_id="INC-1",
        device="r1",
        wave=1,
        direction="reroute",
        circuits=["a"],
        step={},
        declared_by="duty-1",
        confirmers=[],
        state="applying",
    )
    with pytest.raises(ChangeNotPending):
        _claim(store, "op-1")


def test_claim_decision_after_deadline_refused(store: Store):
    deadline = _awaiting(store)
    with pytest.raises(WindowClosed):
        _claim(store, "op-1", now=deadline + timedelta(milliseconds=1))
    with pytest.raises(WindowClosed):
        _claim(store, "op-1", now=deadline)
    assert store.change("chg-1").decision is None


def test_claim_decision_deadline_in_another_zone_compared_as_instant(store: Store):
    hanoi = timezone(timedelta(hours=7))
    now = datetime.now(UTC)
    _awaiting(store, "chg-past", deadline=(now - timedelta(seconds=5)).astimezone(hanoi))
    _awaiting(store, "chg-open", deadline=(now + timedelta(seconds=60)).astimezone(hanoi))
    with pytest.raises(WindowClosed):
        _claim(store, "op-1", change_id="chg-past", now=now)
    assert _claim(store, "op-1", change_id="chg-open", now=now.astimezone(hanoi)) == now
    assert store.change("chg-open").deadline == now + timedelta(seconds=60)


def test_claim_decision_after_window_closed_refused(store: Store):
    _awaiting(store)
    closed = store.close_window("chg-1", by="order", now=datetime.now(UTC))
    assert closed is not None and closed.closed_by == "order" and closed.decision is None
    with pytest.raises(WindowClosed) as e:
        _claim(store, "op-1")
    assert "the incident ended" in e.value.message


def test_claim_decision_second_decision_refused_first_stands(store: Store):
    _awaiting(store)
    _claim(store, "op-1")
    with pytest.raises(AlreadyDecided) as e:
        _claim(store, "op-2", decision=Decision.REJECT)
    assert "confirm by op-1" in e.value.message
    row = store.change("chg-1")
    assert (row.decision, row.decided_by) == ("confirm", "op-1")


def test_close_window_after_decision_returns_the_decision(store: Store):
    _awaiting(store)
    _claim(store, "op-1", decision=Decision.REJECT)
    row = store.close_window("chg-1", by="timeout", now=datetime.now(UTC))
    assert row is not None
    assert (row.decision, row.decided_by, row.window_closed_at) == ("reject", "op-1", None)
    assert store.close_window("chg-none", by="timeout", now=datetime.now(UTC)) is None


def test_decision_attempts_record_every_outcome(store: Store):
    _awaiting(store, confirmers=["op-1", "op-2"])
    refused = [
        ("duty-1", "chg-1", "INC-1"),
        ("op-3", "chg-1", "INC-1"),
        ("op-1", "chg-nope", "INC-1"),
    ]
    for operator, change_id, incident_id in refused:
        with pytest.raises(DecisionRefused):
            _claim(store, operator, change_id=change_id, incident_id=incident_id)
    _claim(store, "op-1")  # the accepted attempt is logged with the claim, in its transaction
    with pytest.raises(AlreadyDecided):
        _claim(store, "op-2", decision=Decision.REJECT)
    attempts = store.decision_attempts("INC-1")
    assert [(a.operator, a.change_id, a.decision, a.outcome) for a in attempts] == [
        ("duty-1", "chg-1", "confirm", "SelfDecision"),
        ("op-3", "chg-1", "confirm", "NotAConfirmer"),
        ("op-1", "chg-nope", "confirm", "UnknownChange"),
        ("op-1", "chg-1", "confirm", "accepted"),
        ("op-2", "chg-1", "reject", "AlreadyDecided"),
    ]
    assert all(a.detail for a in attempts if a.outcome != "accepted")
    assert attempts[-1].reason == "op-2 says reject"
    assert store.decision_attempts("INC-OTHER") == []


def _is_utc(at: datetime | None) -> bool:
    return at is not None and at.utcoffset() == timedelta(0)


def test_change_times_read_back_timezone_aware_utc(store: Store):
    deadline = _awaiting(store)
    now = datetime.now(UTC)
    _claim(store, "op-1", now=now)
    row = store.change("chg-1")
    assert _is_utc(row.deadline) and row.deadline == deadline
    assert _is_utc(row.decided_at) and row.decided_at == now
    assert _is_utc(row.updated_at)
    with pytest.raises(AlreadyDecided):
        _claim(store, "op-2")
    assert all(_is_utc(a.at) for a in store.decision_attempts("INC-1"))
    _awaiting(store, "chg-2")
    assert _is_utc(store.close_window("chg-2", by="timeout", now=now).window_closed_at)
    assert _is_utc(store.changes("INC-1")[0].deadline)


def test_ledger_and_transcript_times_read_back_timezone_aware_utc(store: Store):
    store.hold_circuits("INC-1", ["a"])
    store.set_parts(
        device="r1",
        states={KEY: PartState.BACKUP},
        incident_id="INC-1",
        change_id="chg-1",
        circuits={"a": KEY},
    )
    assert _is_utc(store.part_rows("r1", ["a"])["a"].updated_at)
    tid, _ = store.journal(**_journal_args(attempt=1, text="r1#"))
    assert _is_utc(store.transcript(tid).created_at)
    store.reserve_call(incident_id="INC-1", attempt=1, officer_id="o1", to="+84905100201")
    assert _is_utc(store.calls("INC-1")[0].created_at)


# --- races: exactly one winner, chosen in one transaction --------------------------------

THREADS = 8


def _together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls on their own threads, released at once; their results in order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        start.wait()
        try:
            return call()
        except DecisionRefused as e:
            return e

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_claim_decision_concurrent_operators_exactly_one_wins(store: Store):
    operators = [f"op-{i}" for i in range(THREADS)]
    rounds = 5
    for i in range(rounds):
        change_id = f"chg-{i}"
        _awaiting(store, change_id, confirmers=operators)
        outcomes = _together([partial(_claim, store, op, change_id=change_id) for op in operators])
        won = [op for op, o in zip(operators, outcomes, strict=True) if isinstance(o, datetime)]
        assert len(won) == 1, outcomes
        refused = [type(o) for o in outcomes if not isinstance(o, datetime)]
        assert refused == [AlreadyDecided] * (THREADS - 1)
        assert store.change(change_id).decided_by == won[0]
    refusals = [a for a in store.decision_attempts("INC-1") if a.outcome == "AlreadyDecided"]
    assert len(refusals) == rounds * (THREADS - 1)


def test_claim_decision_racing_close_window_exactly_one_outcome(store: Store):
    rounds = 100
    won_by = {"decision": 0, "window": 0}
    for i in range(rounds):
        change_id = f"chg-{i}"
        _awaiting(store, change_id)
        claimed, closed = _together(
            [
                partial(_claim, store, "op-1", change_id=change_id),
                partial(store.close_window, change_id, by="timeout", now=datetime.now(UTC)),
            ]
        )
        assert closed is not None
        final = store.change(change_id)
        if isinstance(claimed, datetime):
            won_by["decision"] += 1
            assert closed.decision == "confirm" and closed.decided_by == "op-1"
            assert closed.window_closed_at is None
            assert final.window_closed_at is None and final.decision == "confirm"
        else:
            won_by["window"] += 1
            assert isinstance(claimed, WindowClosed), claimed
            assert closed.decision is None and closed.window_closed_at is not None
            assert final.decision is None and final.closed_by == "timeout"
    assert sum(won_by.values()) == rounds


# --- device locks ------------------------------------------------------------------------


def test_lock_device_free_same_holder_or_expired_is_taken(store: Store):
    assert store.lock_device(device="r1", holder="INC-A", lease_s=10, now=100) == (None, None)
    assert store.lock_device(device="r1", holder="INC-A", lease_s=10, now=105) == (None, None)
    # Renewed at 105: still INC-A's at 112, free from 115.
    assert store.lock_device(device="r1", holder="INC-B", lease_s=10, now=112)[0] == "INC-A"
    assert store.lock_device(device="r1", holder="INC-B", lease_s=10, now=116) == (None, None)


def test_lock_device_held_by_other_returns_holder_and_armed_by(store: Store):
    store.lock_device(device="r1", holder="INC-A", lease_s=10, now=100)
    store.set_armed(device="r1", holder="INC-A", change_id="chg-a")
    assert store.lock_device(device="r1", holder="INC-B", lease_s=10, now=101) == (
        "INC-A",
        "chg-a",
    )


def test_lock_device_armed_by_set_and_read_back(store: Store):
    assert store.armed_by("r1") is None
    store.lock_device(device="r1", holder="INC-A", lease_s=10, now=100)
    store.set_armed(device="r1", holder="INC-B", change_id="chg-b")  # not the holder
    assert store.armed_by("r1") is None
    store.set_armed(device="r1", holder="INC-A", change_id="chg-a")
    assert store.armed_by("r1") == "chg-a"
    assert store.lock_device(device="r1", holder="INC-A", lease_s=10, now=101) == (None, "chg-a")
    # Whoever takes an expired lease learns what was armed, as we recorded it.
    assert store.lock_device(device="r1", holder="INC-B", lease_s=10, now=200) == (None, "chg-a")
    store.set_armed(device="r1", holder="INC-B", change_id=None)
    assert store.armed_by("r1") is None


def test_unlock_device_only_by_its_holder(store: Store):
    store.lock_device(device="r1", holder="INC-A", lease_s=10, now=100)
    store.unlock_device(device="r1", holder="INC-B")
    assert store.lock_device(device="r1", holder="INC-B", lease_s=10, now=101)[0] == "INC-A"
    store.unlock_device(device="r1", holder="INC-A")
    assert store.lock_device(device="r1", holder="INC-B", lease_s=10, now=102) == (None, None)


def _lockers(store: Store, device: str, *, now: float) -> dict[str, str | None]:
    holders = [f"INC-{i}" for i in range(THREADS)]
    others = _together(
        [partial(store.lock_device, device=device, holder=h, lease_s=30, now=now) for h in holders]
    )
    return {h: other for h, (other, _) in zip(holders, others, strict=True)}


def test_lock_device_concurrent_lockers_on_new_device_one_wins(store: Store):
    for i in range(5):
        others = _lockers(store, f"r-new-{i}", now=time.time())
        winners = [h for h, other in others.items() if other is None]
        assert len(winners) == 1, others
        assert {o for o in others.values() if o is not None} == set(winners), others


def test_lock_device_concurrent_lockers_on_expired_lease_one_wins(store: Store):
    store.lock_device(device="r1", holder="INC-OLD", lease_s=1, now=100)
    others = _lockers(store, "r1", now=200)
    winners = [h for h, other in others.items() if other is None]
    assert len(winners) == 1, others
    assert {o for o in others.values() if o is not None} == set(winners), others


# --- write-ahead transcripts -------------------------------------------------------------


def _journal_args(**over: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "tid": "tr-1",
        "incident_id": "INC-1",
        "change_id": "chg-1",
        "device": "r1",
        "step": "apply",
        "attempt": 1,
        "text": "r1#",
        "sent": [],
        "status": "open",
    }
    return args | over


def test_journal_same_tid_updates_one_row(store: Store):
    store.journal(**_journal_args())
    lines = ["ip route 10.1.0.0 255.255.255.0 10.254.0.1"]
    text_after = "r1#configure terminal\nr1(config)#" + lines[0] + "\n"
    tid, digest = store.journal(**_journal_args(text=text_after, sent=lines, status="sending"))
    rows = store.step_transcripts("chg-1", "apply")
    assert [r.id for r in rows] == [tid] == ["tr-1"]
    assert (rows[0].text, rows[0].sent, rows[0].status) == (text_after, lines, "sending")
    assert rows[0].sha256 == digest == hashlib.sha256(text_after.encode()).hexdigest()
    assert store.transcripts("INC-1")[0].sha256 == digest


def test_journal_sent_list_is_copied_not_shared(store: Store):
    sent = ["line 1"]
    store.journal(**_journal_args(sent=sent))
    sent.append("line 2")
    assert store.transcript("tr-1").sent == ["line 1"]


def test_step_transcripts_orders_attempts_of_one_step(store: Store):
    store.journal(**_journal_args(tid="tr-3", attempt=3))
    store.journal(**_journal_args(tid="tr-1", attempt=1))
    store.journal(**_journal_args(tid="tr-2", attempt=2))
    store.journal(**_journal_args(tid="tr-c", step="confirm"))
    store.journal(**_journal_args(tid="tr-x", change_id="chg-2"))
    assert [r.id for r in store.step_transcripts("chg-1", "apply")] == ["tr-1", "tr-2", "tr-3"]
    assert [r.attempt for r in store.step_transcripts("chg-1", "confirm")] == [1]


# --- schema upgrade ----------------------------------------------------------------------

OLD_STORE_COMMIT = "183d82f"


def _old_store_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """continuity/store.py as it was at OLD_STORE_COMMIT, importable under its own name."""
    repo = Path(__file__).resolve().parents[2]
    shown = subprocess.run(
        ["git", "-C", str(repo), "show", f"{OLD_STORE_COMMIT}:continuity/store.py"],
        capture_output=True,
        text=True,
    )
    if shown.returncode != 0:
        pytest.skip(f"git cannot show the store at {OLD_STORE_COMMIT}: {shown.stderr.strip()}")
    path = tmp_path / f"old_store_{OLD_STORE_COMMIT}.py"
    path.write_text(shown.stdout, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its mapped classes resolve their string annotations through sys.modules.
    monkeypatch.setitem(sys.modules, path.stem, module)
    spec.loader.exec_module(module)
    return module


def test_create_schema_on_old_database_adds_columns_and_keeps_rows(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    old = _old_store_module(tmp_path, monkeypatch).Store(db_url)
    old.create_schema()
    tid, digest = old.save_transcript(
        incident_id="INC-1", change_id="chg-1", device="r1", step="apply", text="r1#show run\n"
    )
    assert old.try_lock_device(device="r1", holder="INC-1", lease_s=10, now=100) is None
    old.reserve_call(incident_id="INC-1", attempt=1, officer_id="o1", to="+84905100201")
    old.close()
    engine = create_engine(db_url)
    try:
        before = {
            t: {c["name"] for c in inspect(engine).get_columns(t)}
            for t in ("transcripts", "device_locks", "calls")
        }
    finally:
        engine.dispose()
    assert "attempt" not in before["transcripts"] and "armed_by" not in before["device_locks"]

    store = Store(db_url)
    try:
        store.create_schema()
        store.create_schema()  # a second start finds nothing to add
        row = store.transcript(tid)
        assert row is not None and row.sha256 == digest and row.text == "r1#show run\n"
        assert (row.attempt, row.sent, row.status) == (1, [], "complete")
        assert [r.id for r in store.step_transcripts("chg-1", "apply")] == [tid]
        assert store.armed_by("r1") is None
        assert store.lock_device(device="r1", holder="INC-2", lease_s=10, now=105) == (
            "INC-1",
            None,
        )
        store.lock_device(device="r1", holder="INC-1", lease_s=10, now=106)
        store.set_armed(device="r1", holder="INC-1", change_id="chg-1")
        assert store.armed_by("r1") == "chg-1"
        call = store.calls("INC-1")[0]
        assert (call.officer_id, call.workflow_id) == ("o1", None)
        store.journal(**_journal_args(tid="tr-new", attempt=2, sent=["x"], status="sending"))
        assert [r.attempt for r in store.step_transcripts("chg-1", "apply")] == [1, 2]
        _awaiting(store)
        assert _claim(store, "op-1")
        assert store.change("chg-1").decided_by == "op-1"
    finally:
        store.close()


def test_create_schema_concurrent_starts_all_succeed(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The API and the worker start together after an upgrade: neither may fail."""
    old = _old_store_module(tmp_path, monkeypatch).Store(db_url)
    old.create_schema()
    old.close()
    stores = [Store(db_url) for _ in range(4)]
    try:
        results = _together([s.create_schema for s in stores])
        assert results == [None] * len(stores)
        stores[0].journal(**_journal_args(sent=["x"]))
        assert stores[1].transcript("tr-1").sent == ["x"]
    finally:
        for s in stores:
            s.close()


# --- principals ---------------------------------------------------------------------------


def test_token_kept_only_as_hash_and_names_its_principal(store: Store, db_url: str):
    row, token = store.create_token(subject="op-1", role=Role.OPERATOR, label="night")
    assert token.startswith("ct_") and len(token) > 40
    dump = "\n".join(
        str(v)
        for r in create_engine(db_url).connect().execute(text("SELECT * FROM api_tokens"))
        for v in r
    )
    assert token not in dump and row.sha256 in dump
    found = store.principal_for_token(token)
    assert (found.id, found.subject, found.role) == (row.id, "op-1", "operator")


def test_revoked_or_expired_token_refused_saying_which(store: Store):
    revoked, token = store.create_token(subject="op-1", role=Role.OPERATOR)
    store.revoke_token(revoked.id)
    with pytest.raises(TokenRefused, match="was revoked"):
        store.principal_for_token(token)
    soon = datetime.now(UTC) + timedelta(milliseconds=200)
    _, short = store.create_token(subject="op-2", role=Role.OPERATOR, expires_at=soon)
    assert store.principal_for_token(short).subject == "op-2"
    time.sleep(0.3)
    with pytest.raises(TokenRefused, match="expired at"):
        store.principal_for_token(short)
    with pytest.raises(TokenRefused, match="unknown token"):
        store.principal_for_token("ct_nobody")
    with pytest.raises(UnknownToken):
        store.revoke_token("tok-none")
    with pytest.raises(ValidationFailed, match="in the past"):
        store.create_token(subject="op-3", role=Role.OPERATOR, expires_at=soon)


def test_one_subject_one_role_until_the_other_role_is_revoked(store: Store):
    officer, _ = store.create_token(subject="do-1", role=Role.DUTY_OFFICER)
    store.create_token(subject="do-1", role=Role.DUTY_OFFICER)  # a second device, same role
    with pytest.raises(RoleConflict, match="already holds the duty_officer role"):
        store.create_token(subject="do-1", role=Role.OPERATOR)
    for row in store.tokens():
        if row.subject == "do-1":
            store.revoke_token(row.id)
    _, token = store.create_token(subject="do-1", role=Role.OPERATOR)
    assert store.principal_for_token(token).role == "operator"
    assert officer.id in {r.id for r in store.tokens()}  # revoked tokens stay listed


def test_claim_decision_on_a_stale_screen_refused_and_logged(store: Store):
    _awaiting(store)
    store.set_change_state("chg-1", "awaiting_confirmation", lines_sha256="a" * 64)
    with pytest.raises(StaleChange, match="reload"):
        store.claim_decision(
            incident_id="INC-1",
            change_id="chg-1",
            decision=Decision.CONFIRM,
            operator="op-1",
            reason="",
            now=datetime.now(UTC),
            shown="b" * 64,
        )
    assert store.change("chg-1").decision is None  # the won row rolled back
    assert store.claim_decision(
        incident_id="INC-1",
        change_id="chg-1",
        decision=Decision.CONFIRM,
        operator="op-1",
        reason="",
        now=datetime.now(UTC),
        shown="a" * 64,
    )
    outcomes = [a.outcome for a in store.decision_attempts("INC-1")]
    assert outcomes == ["StaleChange", "accepted"]


def test_claims_in_one_batch_each_answered_as_alone(store: Store):
    """A batch of claims (what the API sends while the previous batch is in the store): each
    wins or is refused exactly as it would be alone, in order, and every one is logged."""
    now = datetime.now(UTC)
    _awaiting(store, "chg-1")
    _awaiting(store, "chg-2")
    _awaiting(store, "chg-3", confirmers=["op-2"])
    _awaiting(store, "chg-4")
    store.set_change_state("chg-4", "awaiting_confirmation", lines_sha256="a" * 64)
    _awaiting(store, "chg-5", deadline=now - timedelta(seconds=1))

    def claim(change_id: str, operator: str, **kw: Any) -> DecisionClaim:
        return DecisionClaim(
            incident_id="INC-1",
            change_id=change_id,
            decision=Decision.CONFIRM,
            operator=operator,
            reason=f"{operator} on {change_id}",
            now=now,
            **kw,
        )

    batch = [
        claim("chg-1", "op-1", attestation={"sig": "s1"}),
        claim("chg-1", "op-2"),  # the same change again: the first one won it
        claim("chg-2", "duty-1"),  # the declarer
        claim("chg-3", "op-1"),  # not the wave's confirmer
        claim("chg-3", "op-2"),  # the confirmer, after the refusal: wins
        claim("chg-4", "op-1", shown="b" * 64),  # a stale screen
        claim("chg-5", "op-1"),  # its window has passed
        claim("chg-none", "op-1"),
        claim("chg-2", "op-stranger"),
        claim("chg-2", "op-2", shown=None),
    ]
    out = store.claim_decisions(batch)
    kinds = [type(o).__name__ if isinstance(o, DecisionRefused) else "won" for o in out]
    assert kinds == [
        "won",
        "AlreadyDecided",
        "SelfDecision",
        "NotAConfirmer",
        "won",
        "StaleChange",
        "WindowClosed",
        "UnknownChange",
        "UnknownOperator",
        "won",
    ]
    assert out[0] == now
    rows = {c: store.change(c) for c in ("chg-1", "chg-2", "chg-3", "chg-4", "chg-5")}
    assert {c: r.decided_by for c, r in rows.items()} == {
        "chg-1": "op-1",
        "chg-2": "op-2",
        "chg-3": "op-2",
        "chg-4": None,
        "chg-5": None,
    }
    assert rows["chg-1"].decision_attestation == {"sig": "s1"}
    assert rows["chg-2"].decision_attestation is None
    assert rows["chg-1"].decision_reason == "op-1 on chg-1" and rows["chg-1"].decided_at == now
    attempts = [(a.change_id, a.operator, a.outcome) for a in store.decision_attempts("INC-1")]
    assert sorted(attempts) == sorted(
        (c.change_id, c.operator, k if k != "won" else "accepted")
        for c, k in zip(batch, kinds, strict=True)
    )


def test_snapshot_first_read_by_many_threads_at_once_reads_and_parses_once(db_url: str):
    writer = Store(db_url)
    writer.create_schema()
    digest = writer.save_snapshot(
        Inventory.model_validate_json(SAMPLE_INVENTORY.read_text(encoding="utf-8"))
    )
    writer.close()
    # A worker's store that has never read it: 32 device steps start at once.
    store = Store(db_url, pool_size=16)
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "inventory_snapshots" in statement:
            reads.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        assert store.cached_snapshot(digest) is None
        with ThreadPoolExecutor(max_workers=32) as pool:
            got = list(pool.map(lambda _: store.snapshot(digest), range(32)))
        assert len(reads) == 1, reads
        assert all(inv is got[0] for inv in got)  # one parsed copy, shared
        assert store.cached_snapshot(digest) is got[0]
    finally:
        store.close()


# --- the API's claims in batches (api/claims.py), over each backend ------------------------


def _batch_claim(change_id: str, operator: str) -> DecisionClaim:
    return DecisionClaim(
        incident_id="INC-1",
        change_id=change_id,
        decision=Decision.CONFIRM,
        operator=operator,
        reason="",
        now=datetime.now(UTC),
    )


async def test_decisions_that_arrive_together_are_claimed_together(store: Store) -> None:
    for i in range(5):
        _awaiting(store, f"chg-{i}")
    claims = DecisionClaims(store)

    def signing_fails() -> DecisionClaim:
        raise RuntimeError("no signing key")

    outcomes = await asyncio.gather(
        *(claims.claim(lambda i=i: _batch_claim(f"chg-{i}", "op-1")) for i in range(4)),
        claims.claim(lambda: _batch_claim("chg-4", "duty-1")),  # the declarer: refused
        claims.claim(signing_fails),
        return_exceptions=True,
    )
    won = outcomes[:4]
    assert all(not isinstance(o, BaseException) and o.batch == 5 for o in won), outcomes
    assert isinstance(outcomes[4], SelfDecision)
    assert isinstance(outcomes[5], RuntimeError)
    assert [store.change(f"chg-{i}").decided_by for i in range(5)] == [  # type: ignore[union-attr]
        "op-1",
        "op-1",
        "op-1",
        "op-1",
        None,
    ]
    # The next arrivals make a batch of their own, after this one.
    again = await claims.claim(lambda: _batch_claim("chg-4", "op-2"))
    assert again.batch == 1 and store.change("chg-4").decided_by == "op-2"  # type: ignore[union-attr]


async def test_a_client_that_hangs_up_leaves_its_claim_in_the_batch(store: Store) -> None:
    _awaiting(store, "chg-1")
    claims = DecisionClaims(store)
    gone = asyncio.ensure_future(claims.claim(lambda: _batch_claim("chg-1", "op-1")))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone

    await wait_until(lambda: store.change("chg-1").decided_by, timeout_s=10, what="claimed")
    assert [a.outcome for a in store.decision_attempts("INC-1")] == ["accepted"]
