"""The SQLAlchemy store: inventory, transcripts, calls, locks, reports; one write path."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from continuity.circuits import circuit_state, path_key
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
    ChangeState,
    Circuit,
    CircuitState,
    Decision,
    Device,
    DutyOfficer,
    Inventory,
    Operator,
    PartState,
    Role,
    inventory_sha256,
)

if TYPE_CHECKING:
    from continuity.settings import Settings


class Base(DeclarativeBase):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and read back timezone-aware in UTC, on every backend.

    SQLite keeps no offset: an aware time in another zone would be stored as its wall clock
    and compare wrongly with a deadline, and it reads back naive. A naive time is taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _utc(value)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class AreaRow(Base):
    __tablename__ = "areas"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Added later (the area hierarchy): nullable, so older databases upgrade in place.
    kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    former: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class DeviceRow(Base):
    __tablename__ = "devices"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(64))
    credential: Mapped[str] = mapped_column(String(64))
    host_key: Mapped[str | None] = mapped_column(Text, nullable=True)


class CircuitRow(Base):
    __tablename__ = "circuits"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(200))
    priority_class: Mapped[str] = mapped_column(String(32))
    restoration_level: Mapped[int] = mapped_column(Integer)
    area: Mapped[str] = mapped_column(ForeignKey("areas.id"))
    paths: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # added later


class DutyOfficerRow(Base):
    __tablename__ = "duty_officers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(2))
    escalation_order: Mapped[int] = mapped_column(Integer)


class OperatorRow(Base):
    __tablename__ = "operators"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TranscriptRow(Base):
    __tablename__ = "transcripts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    change_id: Mapped[str] = mapped_column(String(200), index=True)
    device: Mapped[str] = mapped_column(String(63))
    step: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    # One row per activity attempt, written before each batch of configuration lines is sent.
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    sent: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    status: Mapped[str] = mapped_column(String(16), default="complete", server_default="complete")


class JournalEntry(NamedTuple):
    """A transcript row without its text: what a step's bookkeeping reads of its journal."""

    id: str
    sha256: str
    step: str
    attempt: int
    sent: list[str]
    status: str
    created_at: datetime


class InventoryLoadRow(Base):
    """Who loaded which inventory file, when: the record of what the store was told."""

    __tablename__ = "inventory_loads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    loaded_by: Mapped[str] = mapped_column(String(64), default="")
    file_name: Mapped[str] = mapped_column(Text, default="")
    file_sha256: Mapped[str] = mapped_column(String(64))
    inventory_sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")  # what it changed
    forced: Mapped[str] = mapped_column(String(64), default="")  # "--replace", "--force", …


class TokenRow(Base):
    """A principal's bearer token: only its SHA-256 is kept (the token is 256 random bits, so a
    fast hash is enough); it is shown once, at creation."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # "tok-…", shown in lists
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def active(self, at: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)


TOKEN_PREFIX = "ct_"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CallRow(Base):
    __tablename__ = "calls"
    __table_args__ = (UniqueConstraint("incident_id", "attempt", name="uq_call_attempt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    officer_id: Mapped[str] = mapped_column(String(64))
    to: Mapped[str] = mapped_column(String(20))
    call_sid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(32), default="creating")
    digits: Mapped[str] = mapped_column(String(8), default="")
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    # The DutyCall workflow that placed it (None: the incident's main escalation).
    workflow_id: Mapped[str | None] = mapped_column(String(200), nullable=True)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("incident_id", "key", name="uq_message_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    key: Mapped[str] = mapped_column(String(200))
    officer_id: Mapped[str] = mapped_column(String(64))
    to: Mapped[str] = mapped_column(String(20))
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="creating")
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)


class DeviceLockRow(Base):
    __tablename__ = "device_locks"
    device: Mapped[str] = mapped_column(String(63), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[float] = mapped_column(Float)  # epoch seconds; a lease, not a forever lock
    # The change that armed the device's pending commit or revert timer, written before the arm
    # command is sent: a pending commit on the device that is not this one is someone else's.
    armed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ChangeRow(Base):
    """One device change: what it acts on, its confirmation window and the decision that won."""

    __tablename__ = "changes"
    change_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    device: Mapped[str] = mapped_column(String(63), index=True)
    wave: Mapped[int] = mapped_column(Integer)
    direction: Mapped[str] = mapped_column(String(16))
    circuits: Mapped[list[str]] = mapped_column(JSON)
    step: Mapped[dict[str, Any]] = mapped_column(JSON)  # the device and routes it acts on
    state: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    declared_by: Mapped[str] = mapped_column(String(64), default="")
    confirmers: Mapped[list[str]] = mapped_column(JSON, default=list)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    window_closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_by: Mapped[str] = mapped_column(String(16), default="")
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decision_reason: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The API's signed attestation of the winning decision (continuity.attestation), so a
    # decision the incident finds here, not in a signal, carries it into the history too.
    decision_attestation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # SHA-256 of the lines the change sent (continuity.plan.lines_sha256), set when it awaits
    # its operator: a decision naming another hash was made on a stale screen and is refused.
    lines_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)


# The operator screen's columns, in the order of api.schemas.ChangePublic (a test holds them
# equal): the API sends each row as it comes, without building a model or a dict per field.
CHANGE_LIST_COLUMNS = (
    "change_id",
    "incident_id",
    "device",
    "wave",
    "direction",
    "circuits",
    "state",
    "detail",
    "deadline",
    "decision",
    "decided_by",
    "lines_sha256",
)


class DecisionAttemptRow(Base):
    """Every decision an operator sent, accepted or refused: the refusals are evidence too."""

    __tablename__ = "decision_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    change_id: Mapped[str] = mapped_column(String(200))
    operator: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(32))  # "accepted" or the refusal's type
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)


class CircuitHoldRow(Base):
    """An incident that needs a circuit on its backup path."""

    __tablename__ = "circuit_holds"
    circuit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    held_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CircuitPartRow(Base):
    """One circuit's path on one device, as the device activities last left it."""

    __tablename__ = "circuit_parts"
    circuit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device: Mapped[str] = mapped_column(String(63), primary_key=True)
    path_key: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(32))
    incident_id: Mapped[str] = mapped_column(String(64), default="")
    change_id: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)


class InventorySnapshotRow(Base):
    """The inventory an incident was declared with, by content hash (its workflow input has
    the same, so an auditor needs nothing else)."""

    __tablename__ = "inventory_snapshots"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    inventory: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)


class ReportRow(Base):
    __tablename__ = "reports"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    form: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)


# A device's first lock row raced by more takers than this is a store in trouble.

# Any fixed number: the key of the PostgreSQL advisory lock that serialises schema upgrades.
_SCHEMA_LOCK = 0x636F6E74


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class DecisionClaim:
    """An operator's decision on a change, as the API claims it (Store.claim_decisions)."""

    incident_id: str
    change_id: str
    decision: Decision
    operator: str
    reason: str
    now: datetime
    attestation: dict[str, Any] | None = None  # the API's signature of it
    shown: str | None = None  # SHA-256 of the lines the operator's screen showed


class Store:
    """The repository: every read and write of the app's tables goes through here."""

    @classmethod
    def for_settings(cls, settings: Settings, *, pool_size: int = 5) -> Store:
        """The app's store; the embedded SQLite file's directory is made on first use."""
        if not settings.database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings.sqlalchemy_url, pool_size=pool_size)

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        kwargs: dict[str, Any] = {}
        if ":memory:" not in url and url != "sqlite://":  # an in-memory SQLite has one connection
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # device -> [(circuit id, path key)], from the inventory; see _paths_on.
        self._path_index: tuple[str, dict[str, list[tuple[str, str]]]] | None = None
        self._index_lock = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._snapshots: dict[str, Inventory] = {}  # content-addressed: never stale
        self._unit: ContextVar[Session | None] = ContextVar(f"store-unit-{id(self)}", default=None)

    def create_schema(self) -> None:
        """Create missing tables, and add columns that newer versions added to old tables.

        Safe when the API and the worker start together on one database: the whole upgrade
        runs under one lock (a PostgreSQL advisory lock; SQLite's write lock).
        """
        with self._translate(), self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # pysqlite begins no transaction before DDL: take the write lock now.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            Base.metadata.create_all(conn)
            self._add_missing_columns(conn)
            conn.commit()

    @staticmethod
    def _add_missing_columns(conn: Connection) -> None:
        # Additive upgrades only: a new column is nullable or has a server default.
        insp = inspect(conn)
        quote = conn.dialect.identifier_preparer.quote
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in insp.get_columns(table.name)}
            for col in table.columns:
                if col.name in have:
                    continue
                ddl = f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(col.name)} "
                ddl += col.type.compile(dialect=conn.dialect)
                if col.server_default is not None:
                    default = str(col.server_default.arg)  # type: ignore[attr-defined]
                    ddl += " DEFAULT '" + default.replace("'", "''") + "'"
                conn.execute(text(ddl))

    def ping(self) -> None:
        """One cheap read of a table the schema has: the database answers (`/healthz`; a probe
        every few seconds must not parse a province's inventory)."""
        with self._translate(), self.engine.connect() as conn:
            conn.execute(select(_table(MetaRow).c.key).limit(1)).all()

    def probe_write(self) -> None:
        """Write and remove a row: the database takes writes (for `continuity doctor`)."""
        with self._session() as s:
            s.merge(MetaRow(key="doctor_probe", value=_now().isoformat()))
            s.flush()
            s.execute(delete(MetaRow).where(MetaRow.key == "doctor_probe"))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as e:
            raise StorageError(f"store: {type(e).__name__}: {e}".splitlines()[0]) from e

    @contextmanager
    def _session(self) -> Iterator[Session]:
        shared = self._unit.get()
        if shared is not None:
            yield shared  # inside unit(): one transaction for the whole block
            return
        with self._translate(), self._sessions.begin() as session:
            yield session

    @contextmanager
    def unit(self) -> Iterator[None]:
        """Every store call inside the block, on this thread, is one transaction.

        For a device step's bookkeeping: one commit instead of one per call.
        """
        if self._unit.get() is not None:
            yield
            return
        with self._translate(), self._sessions.begin() as session:
            token = self._unit.set(session)
            try:
                yield
            finally:
                self._unit.reset(token)

    # --- inventory -----------------------------------------------------------------------

    def replace_inventory(self, inv: Inventory) -> None:
        """Load a whole inventory atomically: the old one is gone only if the new one fits."""
        self._path_index = None
        with self._session() as s:
            for table in (CircuitRow, DeviceRow, AreaRow, DutyOfficerRow, OperatorRow):
                s.execute(delete(table))
            s.merge(MetaRow(key="province", value=inv.province))
            s.merge(
                MetaRow(
                    key="cable_routes",
                    value=json.dumps([r.model_dump(mode="json") for r in inv.cable_routes]),
                )
            )
            s.merge(MetaRow(key="inventory_version", value=uuid.uuid4().hex))
            s.add_all(AreaRow(**a.model_dump(mode="json")) for a in inv.areas)
            s.flush()
            s.add_all(DeviceRow(**d.model_dump(mode="json")) for d in inv.devices)
            s.add_all(
                CircuitRow(
                    **c.model_dump(mode="json", exclude={"paths"}),
                    paths=[p.model_dump(mode="json") for p in c.paths],
                )
                for c in inv.circuits
            )
            s.add_all(DutyOfficerRow(**o.model_dump(mode="json")) for o in inv.duty_officers)
            s.add_all(OperatorRow(**o.model_dump()) for o in inv.operators)

    def record_inventory_load(
        self,
        *,
        loaded_by: str,
        file_name: str,
        file_sha256: str,
        inventory_sha256: str,
        summary: str,
        forced: str = "",
    ) -> InventoryLoadRow:
        with self._session() as s:
            row = InventoryLoadRow(
                loaded_by=loaded_by,
                file_name=file_name,
                file_sha256=file_sha256,
                inventory_sha256=inventory_sha256,
                summary=summary,
                forced=forced,
            )
            s.add(row)
        return row

    def inventory_loads(self) -> list[InventoryLoadRow]:
        with self._session() as s:
            return list(s.scalars(select(InventoryLoadRow).order_by(InventoryLoadRow.id)))

    def active_incidents(self) -> list[str]:
        """Incidents that hold circuits or still have device work to do, per the ledger."""
        unsettled = [c.value for c in ChangeState if not c.settled]
        with self._session() as s:
            holding = s.scalars(
                select(CircuitHoldRow.incident_id).where(CircuitHoldRow.released_at.is_(None))
            )
            working = s.scalars(select(ChangeRow.incident_id).where(ChangeRow.state.in_(unsettled)))
            return sorted(set(holding) | set(working))

    def inventory(self) -> Inventory:
        with self._session() as s:
            return self._inventory_in(s)

    @staticmethod
    def _inventory_in(s: Session) -> Inventory:
        meta = s.get(MetaRow, "province")
        routes = s.get(MetaRow, "cable_routes")
        return Inventory(
            province=meta.value if meta else "",
            cable_routes=json.loads(routes.value) if routes else [],
            areas=[
                Area.model_validate(
                    {
                        "id": r.id,
                        "name": r.name,
                        "kind": r.kind or "area",
                        "parent": r.parent,
                        "former": r.former or [],
                    }
                )
                for r in s.scalars(select(AreaRow))
            ],
            devices=[
                Device(
                    name=r.name,
                    platform=r.platform,
                    host=r.host,
                    port=r.port,  # type: ignore[arg-type]
                    site=r.site,
                    credential=r.credential,
                    host_key=r.host_key,
                )
                for r in s.scalars(select(DeviceRow).order_by(DeviceRow.name))
            ],
            circuits=[
                _circuit_of(r) for r in s.scalars(select(CircuitRow).order_by(CircuitRow.id))
            ],
            duty_officers=[
                DutyOfficer.model_validate(
                    {
                        "id": r.id,
                        "name": r.name,
                        "phone": r.phone,
                        "language": r.language,
                        "escalation_order": r.escalation_order,
                    }
                )
                for r in s.scalars(select(DutyOfficerRow).order_by(DutyOfficerRow.escalation_order))
            ],
            operators=[Operator(id=r.id, name=r.name) for r in s.scalars(select(OperatorRow))],
        )

    @staticmethod
    def _inventory_version(s: Session) -> str:
        # Asked every time, in the caller's transaction: another process may have reloaded the
        # inventory, and the restore guard (held_elsewhere) must see the circuits as they are.
        meta = _table(MetaRow).c
        value = (
            s.connection()
            .execute(select(meta.value).where(meta.key == "inventory_version"))
            .scalar()
        )
        return value or ""

    def save_snapshot(self, inv: Inventory) -> str:
        """Keep an incident's inventory snapshot by its SHA-256; device steps read it by that."""
        digest = inventory_sha256(inv)
        with self._session() as s:
            if s.get(InventorySnapshotRow, digest) is None:
                s.add(InventorySnapshotRow(sha256=digest, inventory=inv.model_dump(mode="json")))
        self._snapshots[digest] = inv
        return digest

    def cached_snapshot(self, digest: str) -> Inventory | None:
        """The snapshot if this process has read it already (no database, no thread)."""
        return self._snapshots.get(digest)

    def snapshot(self, digest: str) -> Inventory:
        inv = self.cached_snapshot(digest)
        if inv is not None:
            return inv
        # One thread reads and parses it; the others wait for that one. (200 applies starting
        # at once each parsed the same snapshot: seconds of CPU before the first line was sent.)
        with self._snapshot_lock:
            inv = self._snapshots.get(digest)
            if inv is None:
                with self._session() as s:
                    row = s.get(InventorySnapshotRow, digest)
                    if row is None:
                        raise StorageError(f"no inventory snapshot {digest[:16]}… in the store")
                    inv = Inventory.model_validate(row.inventory)
                self._snapshots[digest] = inv
        return inv

    # --- transcripts ---------------------------------------------------------------------

    def save_transcript(
        self,
        *,
        incident_id: str,
        change_id: str,
        device: str,
        step: str,
        text: str,
        tid: str | None = None,
    ) -> tuple[str, str]:
        """Store a device session, or update it as it grows (same `tid`); returns (id, sha256).

        The history keeps only those two; a session cut short keeps what it had written.
        """
        digest = sha256_text(text)
        with self._session() as s:
            if tid is not None and (row := s.get(TranscriptRow, tid)) is not None:
                row.text, row.sha256 = text, digest
                return tid, digest
            tid = tid or f"tr-{uuid.uuid4().hex[:20]}"
            s.add(
                TranscriptRow(
                    id=tid,
                    incident_id=incident_id,
                    change_id=change_id,
                    device=device,
                    step=step,
                    sha256=digest,
                    text=text,
                )
            )
        return tid, digest

    def transcript(self, tid: str) -> TranscriptRow | None:
        with self._session() as s:
            return s.get(TranscriptRow, tid)

    def transcripts(self, incident_id: str) -> list[TranscriptRow]:
        with self._session() as s:
            return list(
                s.scalars(
                    select(TranscriptRow)
                    .where(TranscriptRow.incident_id == incident_id)
                    .order_by(TranscriptRow.created_at)
                )
            )

    # --- calls and messages --------------------------------------------------------------

    def call_for_attempt(self, incident_id: str, attempt: int) -> CallRow | None:
        with self._session() as s:
            return s.scalars(
                select(CallRow).where(
                    CallRow.incident_id == incident_id, CallRow.attempt == attempt
                )
            ).first()

    def reserve_call(
        self,
        *,
        incident_id: str,
        attempt: int,
        officer_id: str,
        to: str,
        workflow_id: str | None = None,
    ) -> CallRow:
        """Claim the (incident, attempt) slot before dialling; a retry finds the claim."""
        with self._session() as s:
            row = s.scalars(
                select(CallRow).where(
                    CallRow.incident_id == incident_id, CallRow.attempt == attempt
                )
            ).first()
            if row is None:
                row = CallRow(
                    incident_id=incident_id,
                    attempt=attempt,
                    officer_id=officer_id,
                    to=to,
                    status="creating",
                    events=[],
                    workflow_id=workflow_id,
                )
                s.add(row)
            return row

    def record_call_created(
        self, *, incident_id: str, attempt: int, call_sid: str, status: str
    ) -> None:
        with self._session() as s:
            row = s.scalars(
                select(CallRow).where(
                    CallRow.incident_id == incident_id, CallRow.attempt == attempt
                )
            ).one()
            row.call_sid, row.status = call_sid, status

    def record_call_event(
        self,
        *,
        call_sid: str,
        status: str = "",
        digits: str = "",
        raw: dict[str, str] | None = None,
    ) -> CallRow | None:
        with self._session() as s:
            row = s.scalars(select(CallRow).where(CallRow.call_sid == call_sid)).first()
            if row is None:
                return None
            if status:
                row.status = status
            if digits:
                row.digits = digits
            row.events = [
                *row.events,
                {"at": _now().isoformat(), "status": status, "digits": digits, **(raw or {})},
            ]
            return row

    # --- principals ----------------------------------------------------------------------

    def create_token(
        self,
        *,
        subject: str,
        role: Role,
        expires_at: datetime | None = None,
        label: str = "",
        created_by: str = "",
    ) -> tuple[TokenRow, str]:
        """A new token for `subject`; returns its row and the token, which is never stored."""
        now = _now()
        if expires_at is not None and expires_at <= now:
            raise ValidationFailed(f"expiry {expires_at.isoformat()} is in the past")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._session() as s:
            others = s.scalars(
                select(TokenRow).where(TokenRow.subject == subject, TokenRow.role != role.value)
            ).all()
            held = sorted({t.role for t in others if t.active(now)})
            if held:
                raise RoleConflict(
                    f"{subject} already holds the {', '.join(held)} role; one subject has one "
                    "role (revoke those tokens first)"
                )
            row = TokenRow(
                id=f"tok-{secrets.token_hex(6)}",
                sha256=token_sha256(token),
                subject=subject,
                role=role.value,
                label=label,
                created_by=created_by,
                created_at=now,
                expires_at=expires_at,
            )
            s.add(row)
        return row, token

    def tokens(self) -> list[TokenRow]:
        with self._session() as s:
            return list(s.scalars(select(TokenRow).order_by(TokenRow.created_at)))

    def revoke_token(self, token_id: str) -> TokenRow:
        with self._session() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                raise UnknownToken(f"no token {token_id!r}")
            if row.revoked_at is None:
                row.revoked_at = _now()
            return row

    def principal_for_token(self, token: str) -> TokenRow:
        """The active token row for a presented bearer token, or TokenRefused saying why."""
        with self._session() as s:
            row = s.scalars(select(TokenRow).where(TokenRow.sha256 == token_sha256(token))).first()
        now = _now()
        if row is None:
            raise TokenRefused("unknown token")
        if row.revoked_at is not None:
            raise TokenRefused(f"token {row.id} was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise TokenRefused(f"token {row.id} expired at {row.expires_at.isoformat()}")
        return row

    def call_for_sid(self, call_sid: str) -> CallRow | None:
        with self._session() as s:
            return s.scalars(select(CallRow).where(CallRow.call_sid == call_sid)).first()

    def calls(self, incident_id: str) -> list[CallRow]:
        with self._session() as s:
            return list(
                s.scalars(
                    select(CallRow)
                    .where(CallRow.incident_id == incident_id)
                    .order_by(CallRow.attempt)
                )
            )

    def reserve_message(
        self, *, incident_id: str, key: str, officer_id: str, to: str, body: str
    ) -> MessageRow:
        with self._session() as s:
            row = s.scalars(
                select(MessageRow).where(
                    MessageRow.incident_id == incident_id, MessageRow.key == key
                )
            ).first()
            if row is None:
                row = MessageRow(
                    incident_id=incident_id,
                    key=key,
                    officer_id=officer_id,
                    to=to,
                    body=body,
                    status="creating",
                )
                s.add(row)
            return row

    def messages(self, incident_id: str) -> list[MessageRow]:
        with self._session() as s:
            return list(
                s.scalars(
                    select(MessageRow)
                    .where(MessageRow.incident_id == incident_id)
                    .order_by(MessageRow.id)
                )
            )

    def message_for_key(self, incident_id: str, key: str) -> MessageRow | None:
        with self._session() as s:
            return s.scalars(
                select(MessageRow).where(
                    MessageRow.incident_id == incident_id, MessageRow.key == key
                )
            ).first()

    def record_message_sent(self, *, incident_id: str, key: str, sid: str, status: str) -> None:
        with self._session() as s:
            row = s.scalars(
                select(MessageRow).where(
                    MessageRow.incident_id == incident_id, MessageRow.key == key
                )
            ).one()
            row.sid, row.status = sid, status

    # --- device locks --------------------------------------------------------------------

    def try_lock_device(
        self, *, device: str, holder: str, lease_s: float, now: float
    ) -> str | None:
        """Take or renew the device's lease; returns the current other holder if busy."""
        try:
            with self._session() as s:
                row = s.get(DeviceLockRow, device, with_for_update=True)
                if row is None:
                    s.add(DeviceLockRow(device=device, holder=holder, expires_at=now + lease_s))
                    return None
                if row.holder == holder or row.expires_at < now:
                    row.holder, row.expires_at = holder, now + lease_s
                    return None
                return row.holder
        except StorageError as e:
            if isinstance(e.__cause__, IntegrityError):  # two takers raced for a new row
                return "another holder"
            raise

    def write_off_device(self, *, incident_id: str, device: str, detail: str) -> list[str]:
        """A device written off by a duty officer: the parts this incident changed on it are of
        unknown state from now on, and its leases on the device are given up."""
        with self._session() as s:
            changes = s.scalars(
                select(ChangeRow).where(
                    ChangeRow.incident_id == incident_id, ChangeRow.device == device
                )
            ).all()
            circuits = sorted({c for row in changes for c in row.circuits})
            if circuits:
                s.execute(
                    update(CircuitPartRow)
                    .where(
                        CircuitPartRow.device == device,
                        CircuitPartRow.circuit_id.in_(circuits),
                    )
                    .values(
                        state=PartState.UNKNOWN.value,
                        incident_id=incident_id,
                        change_id=f"write-off-{device}",
                        detail=detail,
                        updated_at=_now(),
                    )
                )
            s.execute(
                delete(DeviceLockRow).where(
                    DeviceLockRow.device == device,
                    DeviceLockRow.holder.in_([row.change_id for row in changes]),
                )
            )
        return circuits

    def unlock_device(self, *, device: str, holder: str) -> None:
        locks = _table(DeviceLockRow)
        with self._session() as s:
            s.connection().execute(
                delete(locks).where(locks.c.device == device, locks.c.holder == holder)
            )

    # --- transcripts, written ahead of what is sent ------------------------------------

    def journal(
        self,
        *,
        tid: str,
        incident_id: str,
        change_id: str,
        device: str,
        step: str,
        attempt: int,
        text: str,
        sent: list[str],
        status: str,
    ) -> tuple[str, str]:
        """Create or update one attempt's transcript; returns (id, sha256).

        Called before configuration lines go out, with them already in `sent`, so a worker
        killed mid-session leaves a row naming every line the device may have received.
        """
        digest = sha256_text(text)
        with self._session() as s:
            _upsert(
                s,
                TranscriptRow,
                [
                    {
                        "id": tid,
                        "incident_id": incident_id,
                        "change_id": change_id,
                        "device": device,
                        "step": step,
                        "sha256": digest,
                        "text": text,
                        "attempt": attempt,
                        "sent": list(sent),
                        "status": status,
                        "created_at": _now(),
                    }
                ],
                key=["id"],
                update_cols=["text", "sha256", "sent", "status"],
            )
        return tid, digest

    def change_transcripts(self, change_id: str) -> list[JournalEntry]:
        """Every transcript of one change, every step and attempt, oldest first; without their
        text (a step's bookkeeping reads these several times a step, never the text)."""
        t = _table(TranscriptRow).c
        with self._session() as s:
            return [
                JournalEntry(*r)
                for r in s.connection().execute(
                    select(t.id, t.sha256, t.step, t.attempt, t.sent, t.status, t.created_at)
                    .where(t.change_id == change_id)
                    .order_by(t.created_at, t.attempt)
                )
            ]

    def step_transcripts(self, change_id: str, step: str) -> list[TranscriptRow]:
        """Every attempt's transcript of one step of one change, oldest first."""
        with self._session() as s:
            return list(
                s.scalars(
                    select(TranscriptRow)
                    .where(TranscriptRow.change_id == change_id, TranscriptRow.step == step)
                    .order_by(TranscriptRow.attempt, TranscriptRow.created_at)
                )
            )

    # --- device locks: one incident at a time, and who armed the pending commit ---------

    def lock_device(
        self, *, device: str, holder: str, lease_s: float, now: float
    ) -> tuple[str | None, str | None]:
        """Take or renew the device's lease for `holder` (an incident).

        Returns (other holder or None, armed_by): the other holder when busy; armed_by is the
        change that armed the device's pending commit, as we recorded it. One statement when
        the lease is ours to take (an upsert that updates only a free or our own row).
        """
        locks = _table(DeviceLockRow).c
        with self._session() as s:
            conn = s.connection()
            for _ in range(3):
                won = conn.execute(
                    _lock_upsert(conn.dialect.name),
                    {"device": device, "holder": holder, "expires_at": now + lease_s, "now": now},
                ).first()
                if won is not None:
                    return None, won.armed_by
                row = conn.execute(
                    select(locks.holder, locks.armed_by).where(locks.device == device)
                ).first()
                if row is not None:
                    return row.holder, row.armed_by
                # Released between the two statements: ask again.
        raise StorageError(f"store: the lock of {device} kept changing hands; try again")

    def set_armed(self, *, device: str, holder: str, change_id: str | None) -> None:
        locks = _table(DeviceLockRow)
        with self._session() as s:
            s.connection().execute(
                update(locks)
                .where(locks.c.device == device, locks.c.holder == holder)
                .values(armed_by=change_id)
            )

    def disarm(self, *, device: str, holder: str, change_id: str) -> None:
        """Forget `change_id`'s arm on the device, and only its own (a later arm stays)."""
        locks = _table(DeviceLockRow).c
        with self._session() as s:
            s.connection().execute(
                update(_table(DeviceLockRow))
                .where(locks.device == device, locks.holder == holder, locks.armed_by == change_id)
                .values(armed_by=None)
            )

    def armed_by(self, device: str) -> str | None:
        locks = _table(DeviceLockRow).c
        with self._session() as s:
            return (
                s.connection()
                .execute(select(locks.armed_by).where(locks.device == device))
                .scalar()
            )

    # --- changes: the arbiter of each confirmation window -------------------------------

    def open_change(
        self,
        *,
        change_id: str,
        incident_id: str,
        device: str,
        wave: int,
        direction: str,
        circuits: list[str],
        step: dict[str, Any],
        declared_by: str,
        confirmers: list[str],
        state: str,
        detail: str = "",
    ) -> None:
        """Record a change as it starts; a retry finds the row and only moves its state."""
        with self._session() as s:
            _upsert(
                s,
                ChangeRow,
                [
                    {
                        "change_id": change_id,
                        "incident_id": incident_id,
                        "device": device,
                        "wave": wave,
                        "direction": direction,
                        "circuits": circuits,
                        "step": step,
                        "state": state,
                        "detail": detail,
                        "declared_by": declared_by,
                        "confirmers": confirmers,
                        "decision_reason": "",
                        "closed_by": "",
                        "updated_at": _now(),
                    }
                ],
                key=["change_id"],
                update_cols=["state", "detail", "updated_at"],
                # A decided or closed change keeps its state: the step that carries it out says.
                where=ChangeRow.decision.is_(None) & ChangeRow.window_closed_at.is_(None),
            )

    def change(self, change_id: str) -> ChangeRow | None:
        with self._session() as s:
            return s.get(ChangeRow, change_id)

    def changes(self, incident_id: str, *, state: str | None = None) -> list[ChangeRow]:
        with self._session() as s:
            q = select(ChangeRow).where(ChangeRow.incident_id == incident_id)
            if state is not None:
                q = q.where(ChangeRow.state == state)
            return list(s.scalars(q.order_by(ChangeRow.wave, ChangeRow.change_id)))

    def change_list(self, incident_id: str, *, state: str | None = None) -> list[Any]:
        """What an operator's screen polls: the listed columns only, no ORM objects (200 rows
        polled by a busy screen cost the API more than the decisions it was waiting for)."""
        t = _table(ChangeRow)
        q = select(*(t.c[name] for name in CHANGE_LIST_COLUMNS)).where(
            t.c.incident_id == incident_id
        )
        if state is not None:
            q = q.where(t.c.state == state)
        with self._session() as s:
            return list(s.connection().execute(q.order_by(t.c.wave, t.c.change_id)))

    def set_change_state(
        self,
        change_id: str,
        state: str,
        *,
        detail: str = "",
        deadline: datetime | None = None,
        lines_sha256: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state, "detail": detail, "updated_at": _now()}
        if deadline is not None:
            values["deadline"] = deadline
        if lines_sha256 is not None:
            values["lines_sha256"] = lines_sha256
        with self._session() as s:
            s.connection().execute(
                update(_table(ChangeRow))
                .where(_table(ChangeRow).c.change_id == change_id)
                .values(**values)
            )

    def claim_decision(
        self,
        *,
        incident_id: str,
        change_id: str,
        decision: Decision,
        operator: str,
        reason: str,
        now: datetime,
        attestation: dict[str, Any] | None = None,
        shown: str | None = None,
    ) -> datetime:
        """One claim (see claim_decisions): when it was taken; raises a DecisionRefused."""
        [out] = self.claim_decisions(
            [
                DecisionClaim(
                    incident_id=incident_id,
                    change_id=change_id,
                    decision=decision,
                    operator=operator,
                    reason=reason,
                    now=now,
                    attestation=attestation,
                    shown=shown,
                )
            ]
        )
        if isinstance(out, DecisionRefused):
            raise out
        return out

    def claim_decisions(self, claims: Sequence[DecisionClaim]) -> list[datetime | DecisionRefused]:
        """The one place operators' decisions win changes, or are refused with the reason:
        per claim, in order, when it was taken or the refusal.

        A claim wins when the operator is an operator of the inventory as it is now, not the
        declarer, a confirmer of the wave, and the change still awaits in its window; only a
        refusal reads the row to say why. `shown`, when given, is the SHA-256 of the lines
        the operator was shown: another than the change's is a stale screen (StaleChange).
        Every attempt is logged in decision_attempts, the accepted ones by the statement that
        wins them. On PostgreSQL the claims on distinct changes are won by one statement in one
        round trip (no BEGIN, no COMMIT: it commits alone), however many there are: a burst of
        decisions on a busy host waited for a thread and a CPU for each of its statements.
        Claims on one change are taken in order (the second finds it decided)."""
        out: dict[int, datetime | DecisionRefused] = {}
        rest = list(enumerate(claims))
        while rest:
            first: dict[str, tuple[int, DecisionClaim]] = {}
            for i, c in rest:
                first.setdefault(c.change_id, (i, c))
            out.update(self._claim_round(list(first.values())))
            rest = [(i, c) for i, c in rest if i not in out]
        return [out[i] for i in range(len(claims))]

    def _claim_round(
        self, claims: list[tuple[int, DecisionClaim]]
    ) -> list[tuple[int, datetime | DecisionRefused]]:
        """Claims on distinct changes."""
        if self.engine.dialect.name == "postgresql":
            won = self._claim_on_postgresql([c for _, c in claims])
            answered: list[tuple[int, datetime | DecisionRefused]] = []
            for i, c in claims:
                if c.change_id in won:
                    answered.append((i, _utc(c.now)))
                    continue
                with self._session() as s:
                    refusal = self._why_refused(
                        s, c.incident_id, c.change_id, c.operator, _utc(c.now), c.shown
                    )
                answered.append((i, self._refused(c, refusal)))
            return answered
        return [(i, self._claim_one(c)) for i, c in claims]

    def _claim_on_postgresql(self, claims: list[DecisionClaim]) -> set[str]:
        """The ids of the changes the claims won, by one statement."""
        params = {
            "p_change_id": [c.change_id for c in claims],
            "p_incident_id": [c.incident_id for c in claims],
            "p_operator": [c.operator for c in claims],
            "p_decision": [c.decision.value for c in claims],
            "p_reason": [c.reason for c in claims],
            "p_now": [_utc(c.now) for c in claims],
            "p_attestation": [
                None if c.attestation is None else json.dumps(c.attestation) for c in claims
            ],
            "p_shown": [c.shown for c in claims],
        }
        with (
            self._translate(),
            self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        ):
            return {row.change_id for row in conn.execute(_CLAIM_ON_POSTGRESQL, params)}

    def _claim_one(self, c: DecisionClaim) -> datetime | DecisionRefused:
        now = _utc(c.now)
        params = {  # named p_*: a bind parameter may not share a column's name in an UPDATE
            "p_change_id": c.change_id,
            "p_incident_id": c.incident_id,
            "p_operator": c.operator,
            "p_decision": c.decision.value,
            "p_reason": c.reason,
            "p_now": now,
            "p_attestation": c.attestation,
        }
        try:
            with self._session() as s:
                conn = s.connection()
                won = conn.execute(_claim(), params).first()
                if won is None or (won.confirmers and c.operator not in won.confirmers):
                    # Raised inside the transaction: a won row that may not be won rolls back.
                    raise self._why_refused(s, c.incident_id, c.change_id, c.operator, now, c.shown)
                if c.shown is not None and won.lines_sha256 != c.shown:
                    raise _stale(c.change_id, c.operator, won.lines_sha256, c.shown)
                conn.execute(
                    insert(_table(DecisionAttemptRow)).values(
                        incident_id=c.incident_id,
                        change_id=c.change_id,
                        operator=c.operator,
                        decision=c.decision.value,
                        reason=c.reason,
                        outcome="accepted",
                        detail="",
                        at=now,
                    )
                )
                return now
        except DecisionRefused as e:
            return self._refused(c, e)

    def _refused(self, c: DecisionClaim, e: DecisionRefused) -> DecisionRefused:
        """A refusal, logged in decision_attempts: the refusals are evidence too."""
        self._log_attempt(
            c.incident_id, c.change_id, c.operator, c.decision, c.reason, e.type, e.message
        )
        return e

    @staticmethod
    def _why_refused(
        s: Session,
        incident_id: str,
        change_id: str,
        operator: str,
        now: datetime,
        shown: str | None = None,
    ) -> DecisionRefused:
        ctx = {"change_id": change_id, "operator": operator}
        if s.get(OperatorRow, operator) is None:
            return UnknownOperator(f"{operator} is not an operator of the inventory", **ctx)
        row = s.get(ChangeRow, change_id)
        if row is None or row.incident_id != incident_id:
            return UnknownChange(f"incident {incident_id} has no change {change_id!r}", **ctx)
        if operator == row.declared_by:
            return SelfDecision(
                f"{operator} declared incident {incident_id} and may not decide its changes",
                **ctx,
            )
        if row.confirmers and operator not in row.confirmers:
            return NotAConfirmer(
                f"{operator} may not decide {change_id}; its wave's confirmers are "
                + ", ".join(row.confirmers),
                **ctx,
            )
        problem = _why_not_pending(row, now, operator)
        if (
            isinstance(problem, ChangeNotPending)
            and row.state == ChangeState.AWAITING_CONFIRMATION.value
            and shown is not None
            and row.lines_sha256 != shown
        ):
            return _stale(change_id, operator, row.lines_sha256, shown)
        return problem

    def _log_attempt(
        self,
        incident_id: str,
        change_id: str,
        operator: str,
        decision: Decision,
        reason: str,
        outcome: str,
        detail: str,
    ) -> None:
        with self._session() as s:
            s.add(
                DecisionAttemptRow(
                    incident_id=incident_id,
                    change_id=change_id,
                    operator=operator,
                    decision=decision.value,
                    reason=reason,
                    outcome=outcome,
                    detail=detail,
                )
            )

    def decision_attempts(self, incident_id: str) -> list[DecisionAttemptRow]:
        with self._session() as s:
            return list(
                s.scalars(
                    select(DecisionAttemptRow)
                    .where(DecisionAttemptRow.incident_id == incident_id)
                    .order_by(DecisionAttemptRow.id)
                )
            )

    def close_window(self, change_id: str, *, by: str, now: datetime) -> ChangeRow | None:
        """Close a change's window unless a decision won it first; returns the row after.

        `by` is "timeout" or "order" (stand-down, abort, a partial pull-back). A row whose
        `decision` is set was decided before the window closed: carry that decision out.
        """
        now = _utc(now)
        with self._session() as s:
            s.execute(
                update(ChangeRow)
                .where(
                    ChangeRow.change_id == change_id,
                    ChangeRow.decision.is_(None),
                    ChangeRow.window_closed_at.is_(None),
                )
                .execution_options(synchronize_session=False)
                .values(window_closed_at=now, closed_by=by, updated_at=now)
            )
            return s.get(ChangeRow, change_id)

    # --- the circuit ledger: holds and parts ---------------------------------------------

    def hold_circuits(self, incident_id: str, circuits: list[str]) -> dict[str, list[str]]:
        """Hold circuits for an incident; returns, per circuit, the other incidents holding it."""
        with self._session() as s:
            # One read of this incident's rows, not one per circuit (hundreds at declaration).
            have = {
                r.circuit_id: r
                for r in s.scalars(
                    select(CircuitHoldRow).where(
                        CircuitHoldRow.incident_id == incident_id,
                        CircuitHoldRow.circuit_id.in_(circuits),
                    )
                )
            }
            for cid in dict.fromkeys(circuits):
                row = have.get(cid)
                if row is None:
                    s.add(CircuitHoldRow(circuit_id=cid, incident_id=incident_id))
                elif row.released_at is not None:
                    # Held again after a release: it counts again (a silent no-op would not).
                    row.held_at, row.released_at = _now(), None
            s.flush()
            return self._holders(s, circuits, exclude=incident_id)

    def release_circuits(self, incident_id: str) -> dict[str, list[str]]:
        """Release every hold of an incident; returns, per circuit, who still holds it."""
        with self._session() as s:
            held = list(
                s.scalars(
                    select(CircuitHoldRow.circuit_id).where(
                        CircuitHoldRow.incident_id == incident_id
                    )
                )
            )
            s.execute(
                update(CircuitHoldRow)
                .where(
                    CircuitHoldRow.incident_id == incident_id,
                    CircuitHoldRow.released_at.is_(None),
                )
                .execution_options(synchronize_session=False)
                .values(released_at=_now())
            )
            s.flush()
            return self._holders(s, held, exclude=incident_id)

    @staticmethod
    def _holders(s: Session, circuits: list[str], *, exclude: str) -> dict[str, list[str]]:
        """Circuit -> the other active incidents holding it, for every circuit asked about."""
        out: dict[str, list[str]] = {c: [] for c in circuits}
        if not circuits:
            return out
        for row in s.scalars(
            select(CircuitHoldRow)
            .where(
                CircuitHoldRow.circuit_id.in_(circuits),
                CircuitHoldRow.released_at.is_(None),
                CircuitHoldRow.incident_id != exclude,
            )
            .order_by(CircuitHoldRow.held_at)
        ):
            out[row.circuit_id].append(row.incident_id)
        return out

    def held_elsewhere(
        self, *, device: str, keys: list[str], incident_id: str
    ) -> dict[str, list[tuple[str, str]]]:
        """Per path key on `device`: (circuit, incident) pairs that still need it on backup.

        A key is needed while any circuit using it on this device is held by another active
        incident (a shared aggregate route serves every circuit behind it).
        """
        out: dict[str, list[tuple[str, str]]] = {k: [] for k in keys}
        with self._session() as s:
            users = [(cid, key) for cid, key in self._paths_on(s, device) if key in keys]
            if not users:
                return out
            holders = self._holders(s, sorted({c for c, _ in users}), exclude=incident_id)
        for cid, key in users:
            out[key] += [(cid, inc) for inc in holders.get(cid, [])]
        return out

    def set_parts(
        self,
        *,
        device: str,
        states: dict[str, PartState],
        incident_id: str,
        change_id: str,
        detail: str = "",
        circuits: dict[str, str] | None = None,
    ) -> dict[str, PartState]:
        """Record path states on a device by path key; every circuit sharing a key moves too.

        `circuits` (circuit id -> key) names the step's own circuits, recorded even when the
        inventory no longer lists them. Returns circuit id -> the state recorded.
        """
        now = _now()
        with self._session() as s:
            users = [(c, k) for c, k in self._paths_on(s, device) if k in states]
            # A step circuit whose key was given no state is left as last recorded, not guessed.
            users += [
                (c, k) for c, k in (circuits or {}).items() if k in states and (c, k) not in users
            ]
            recorded = {cid: states[key] for cid, key in users}
            _upsert(
                s,
                CircuitPartRow,
                [
                    {
                        "circuit_id": cid,
                        "device": device,
                        "path_key": key,
                        "state": states[key].value,
                        "incident_id": incident_id,
                        "change_id": change_id,
                        "detail": detail,
                        "updated_at": now,
                    }
                    for cid, key in dict(users).items()
                ],
                key=["circuit_id", "device"],
                update_cols=[
                    "path_key",
                    "state",
                    "incident_id",
                    "change_id",
                    "detail",
                    "updated_at",
                ],
            )
        return recorded

    def part_rows(self, device: str, circuit_ids: list[str]) -> dict[str, CircuitPartRow]:
        with self._session() as s:
            return {
                r.circuit_id: r
                for r in s.scalars(
                    select(CircuitPartRow).where(
                        CircuitPartRow.device == device, CircuitPartRow.circuit_id.in_(circuit_ids)
                    )
                )
            }

    def circuit_views(self, circuit_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Every circuit (or those named) with its parts, its holders and its one state."""
        with self._session() as s:
            # The circuits' rows alone: a console polls this, and the whole inventory (devices,
            # areas, officers) parsed per poll was most of its cost.
            q = select(CircuitRow).order_by(CircuitRow.id)
            if circuit_ids is not None:
                q = q.where(CircuitRow.id.in_(circuit_ids))
            wanted = [_circuit_of(r) for r in s.scalars(q)]
            ids = [c.id for c in wanted]
            parts = {
                (r.circuit_id, r.device): r
                for r in s.scalars(select(CircuitPartRow).where(CircuitPartRow.circuit_id.in_(ids)))
            }
            holders = self._holders(s, ids, exclude="")
        views = []
        for c in wanted:
            part_rows = {p.device: parts.get((c.id, p.device)) for p in c.paths}
            states = {
                d: PartState(r.state) if r is not None else PartState.PRIMARY
                for d, r in part_rows.items()
            }
            views.append(
                {
                    "circuit": c,
                    "state": circuit_state(states.values()),
                    "parts": states,
                    "part_rows": part_rows,
                    "holders": holders.get(c.id, []),
                }
            )
        return views

    def circuit_state(self, circuit_id: str) -> CircuitState | None:
        views = self.circuit_views([circuit_id])
        return views[0]["state"] if views else None

    def _paths_on(self, s: Session, device: str) -> list[tuple[str, str]]:
        """(circuit id, path key) of every inventory circuit with a path on `device`, as the
        inventory is in `s`'s transaction."""
        version = self._inventory_version(s)
        if self._path_index is None or self._path_index[0] != version:
            # One thread builds it; the others wait for that one instead of each building.
            with self._index_lock:
                if self._path_index is None or self._path_index[0] != version:
                    index: dict[str, list[tuple[str, str]]] = {}
                    for c in self._inventory_in(s).circuits:
                        for p in c.paths:
                            index.setdefault(p.device, []).append((c.id, path_key(p, c.id)))
                    self._path_index = (version, index)
        return list(self._path_index[1].get(device, []))

    # --- reports -------------------------------------------------------------------------

    def save_report(self, *, incident_id: str, form: str, text: str) -> tuple[str, str]:
        """Idempotent: the same report text for the same incident is stored once."""
        digest = sha256_text(text)
        with self._session() as s:
            existing = s.scalars(
                select(ReportRow).where(
                    ReportRow.incident_id == incident_id, ReportRow.sha256 == digest
                )
            ).first()
            if existing is not None:
                return existing.id, digest
            rid = f"rp-{uuid.uuid4().hex[:20]}"
            s.add(ReportRow(id=rid, incident_id=incident_id, form=form, sha256=digest, text=text))
        return rid, digest

    def reports(self, incident_id: str) -> list[ReportRow]:
        with self._session() as s:
            return list(s.scalars(select(ReportRow).where(ReportRow.incident_id == incident_id)))

    # --- counts for GET /metrics: read-only, nothing named -------------------------------

    def incident_counts(self) -> dict[str, int]:
        """How many incidents the ledger knows, by state: "active" (as active_incidents()),
        "closed" (its reports are written, the run's last act) and "ending" (neither: winding
        down, or a run that ended without its reports, e.g. terminated).

        Known means holding or having held a circuit, a change or a report: an incident
        declared moments ago that has not held its circuits yet is not counted.
        """
        active = set(self.active_incidents())
        with self._session() as s:
            known: set[str] = set()
            for column in (
                CircuitHoldRow.incident_id,
                ChangeRow.incident_id,
                ReportRow.incident_id,
            ):
                known.update(s.scalars(select(column).distinct()))
            reported = set(s.scalars(select(ReportRow.incident_id).distinct()))
        return {
            "active": len(active),
            "ending": len(known - active - reported),
            "closed": len(reported - active),
        }

    def reported_incidents(self) -> list[str]:
        """Incidents whose reports are written (their run's last act): what the archive takes."""
        with self._session() as s:
            return sorted(s.scalars(select(ReportRow.incident_id).distinct()))

    def change_counts(self) -> list[tuple[str, str | None, int]]:
        """(state, platform, count) of every device change; platform None: the device is no
        longer in the inventory."""
        with self._session() as s:
            rows = s.execute(
                select(ChangeRow.state, DeviceRow.platform, func.count())
                .select_from(ChangeRow)
                .outerjoin(DeviceRow, DeviceRow.name == ChangeRow.device)
                .group_by(ChangeRow.state, DeviceRow.platform)
            )
            return [(state, platform, n) for state, platform, n in rows]

    def device_sites(self) -> dict[str, int]:
        """Site -> how many inventory devices it has (whose queues a worker must poll)."""
        with self._session() as s:
            rows = s.execute(select(DeviceRow.site, func.count()).group_by(DeviceRow.site))
            return {site: n for site, n in rows}

    def restore_times(self) -> list[tuple[int | None, float]]:
        """(restoration level, seconds) for each circuit each incident put on backup.

        The store records neither when an incident was declared nor when a reroute verified
        (a change's updated_at moves on when it is confirmed), so this is the time from the
        incident's first circuit hold (its select step, moments after the declaration; it
        comes before any change row) to the last of the circuit's reroute changes, one per
        device, settling on backup: confirmed, or kept when the window closed. The operator's
        decision is included. Level None: the circuit is no longer in the inventory.
        """
        from sqlalchemy import func

        on_backup = {ChangeState.CONFIRMED.value, ChangeState.KEPT_ON_TIMEOUT.value}
        with self._session() as s:
            started: dict[str, datetime] = {
                inc: at
                for inc, at in s.execute(
                    select(CircuitHoldRow.incident_id, func.min(CircuitHoldRow.held_at)).group_by(
                        CircuitHoldRow.incident_id
                    )
                )
            }
            circuits = {
                cid: (level, {p["device"] for p in paths})
                for cid, level, paths in s.execute(
                    select(CircuitRow.id, CircuitRow.restoration_level, CircuitRow.paths)
                )
            }
            changes = s.execute(
                select(
                    ChangeRow.incident_id,
                    ChangeRow.device,
                    ChangeRow.wave,
                    ChangeRow.circuits,
                    ChangeRow.state,
                    ChangeRow.updated_at,
                ).where(ChangeRow.direction == "reroute")
            ).all()
        # (incident, circuit) -> device -> its latest wave's (wave, state, at): a later wave
        # that moved the circuit again is the one that counts.
        parts: dict[tuple[str, str], dict[str, tuple[int, str, datetime]]] = {}
        for inc, device, wave, cids, state, at in changes:
            if inc not in started:
                continue
            for cid in cids:
                mine = parts.setdefault((inc, cid), {})
                if device not in mine or mine[device][0] < wave:
                    mine[device] = (wave, state, at)
        out: list[tuple[int | None, float]] = []
        for (inc, cid), by_device in parts.items():
            level, devices = circuits.get(cid, (None, set(by_device)))
            if not devices or not devices <= by_device.keys():
                continue  # a device of the circuit was never moved by this incident
            if any(by_device[d][1] not in on_backup for d in devices):
                continue
            done = max(by_device[d][2] for d in devices)
            # The hold and the change are written by different processes' clocks.
            out.append((level, max(0.0, (_utc(done) - _utc(started[inc])).total_seconds())))
        return out

    def failed_session_tails(self, *, chars: int = 400) -> list[str]:
        """The last `chars` characters of every device session transcript that ended failed
        (one per attempt; its last line says why, see NetworkActivities._session)."""
        from sqlalchemy import func

        body = TranscriptRow.text
        tail = case(
            (func.length(body) > chars, func.substr(body, func.length(body) - chars + 1)),
            else_=body,
        )
        with self._session() as s:
            return list(s.scalars(select(tail).where(TranscriptRow.status == "failed")))

    def call_counts(self) -> list[tuple[str, str, int]]:
        """(status, digits pressed, count) of every call placed."""
        from sqlalchemy import func

        with self._session() as s:
            rows = s.execute(
                select(CallRow.status, CallRow.digits, func.count()).group_by(
                    CallRow.status, CallRow.digits
                )
            )
            return [(status, digits, n) for status, digits, n in rows]


def _upsert(
    s: Session,
    table: type[Base],
    rows: list[dict[str, Any]],
    *,
    key: list[str],
    update_cols: list[str],
    where: Any = None,
) -> None:
    """INSERT ... ON CONFLICT DO UPDATE, on PostgreSQL and SQLite alike, in one round trip.

    The statement is built once per shape and executed with the rows as parameters, so
    SQLAlchemy compiles it once, not per call (a device step writes several per second).
    """
    if not rows:
        return
    dialect = s.get_bind().dialect.name
    shape = (dialect, table, tuple(key), tuple(update_cols), where is not None)
    stmt = _UPSERTS.get(shape)
    if stmt is None:
        # Core, not ORM: no unit-of-work bookkeeping for rows nobody reads back here.
        base = (pg_insert if dialect == "postgresql" else sqlite_insert)(_table(table))
        stmt = base.on_conflict_do_update(
            index_elements=key, set_={c: base.excluded[c] for c in update_cols}, where=where
        )
        _UPSERTS[shape] = stmt
    # One row: a plain execute (executemany pipelines, which costs more than it saves here).
    s.connection().execute(stmt, rows[0] if len(rows) == 1 else rows)


@cache
def _lock_upsert(dialect: str) -> Any:
    """INSERT the lease, or take over a row that is ours or expired; RETURNING only when won."""
    locks = _table(DeviceLockRow)
    base = (pg_insert if dialect == "postgresql" else sqlite_insert)(locks).values(
        device=bindparam("device"),
        holder=bindparam("holder"),
        expires_at=bindparam("expires_at"),
    )
    return base.on_conflict_do_update(
        index_elements=["device"],
        set_={"holder": base.excluded.holder, "expires_at": base.excluded.expires_at},
        where=(locks.c.holder == base.excluded.holder) | (locks.c.expires_at < bindparam("now")),
    ).returning(locks.c.armed_by)


def _circuit_of(r: CircuitRow) -> Circuit:
    return Circuit.model_validate(
        {
            "id": r.id,
            "name": r.name,
            "owner": r.owner,
            "priority_class": r.priority_class,
            "restoration_level": r.restoration_level,
            "area": r.area,
            "paths": r.paths,
            "tags": r.tags or [],
        }
    )


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# (dialect, table, key, update columns, conditional) -> the compiled-once upsert
_UPSERTS: dict[tuple[Any, ...], Any] = {}


@cache
def _claim() -> Any:
    """A decision's claim on SQLite, run with its values as parameters: an operator of the
    inventory as it is now, not the declarer, the change awaiting in its window. The wave's
    confirmers and the lines shown are checked on the row it returns, in the caller's
    transaction (PostgreSQL checks them in its statement: _CLAIM_ON_POSTGRESQL)."""
    changes, operators = _table(ChangeRow), _table(OperatorRow)
    p: dict[str, Any] = {
        k: bindparam(f"p_{k}", type_=String())
        for k in ("change_id", "incident_id", "operator", "decision", "reason")
    }
    now = bindparam("p_now", type_=UTCDateTime())
    return (
        update(changes)
        .values(
            decision=p["decision"],
            decided_by=p["operator"],
            decision_reason=p["reason"],
            decided_at=now,
            decision_attestation=bindparam(
                "p_attestation", type_=changes.c.decision_attestation.type
            ),
            updated_at=now,
        )
        .where(
            changes.c.change_id == p["change_id"],
            changes.c.incident_id == p["incident_id"],
            changes.c.declared_by != p["operator"],
            changes.c.state == ChangeState.AWAITING_CONFIRMATION.value,
            changes.c.decision.is_(None),
            changes.c.window_closed_at.is_(None),
            changes.c.deadline > now,
            exists().where(operators.c.id == p["operator"]),
        )
        .returning(changes.c.confirmers, changes.c.lines_sha256)
    )


# Every claim of a batch (on distinct changes: one row each) as a row of arrays, won by one
# UPDATE and its accepted attempts logged by the same statement. A wave without confirmers (an
# empty list, or a JSON null) lets any operator decide, as the row check on SQLite does; CASE,
# since SQL's OR does not promise to skip jsonb_array_length on a value that is no array.
_CLAIM_ON_POSTGRESQL = text(
    f"""
WITH v AS (
    SELECT * FROM unnest(
        CAST(:p_change_id AS text[]), CAST(:p_incident_id AS text[]),
        CAST(:p_operator AS text[]), CAST(:p_decision AS text[]), CAST(:p_reason AS text[]),
        CAST(:p_now AS timestamptz[]), CAST(:p_attestation AS text[]), CAST(:p_shown AS text[])
    ) AS v(change_id, incident_id, operator, decision, reason, now, attestation, shown)
), won AS (
    UPDATE changes AS c SET
        decision = v.decision, decided_by = v.operator, decision_reason = v.reason,
        decided_at = v.now, decision_attestation = CAST(v.attestation AS json),
        updated_at = v.now
    FROM v
    WHERE c.change_id = v.change_id AND c.incident_id = v.incident_id
        AND c.declared_by <> v.operator
        AND c.state = '{ChangeState.AWAITING_CONFIRMATION.value}'
        AND c.decision IS NULL AND c.window_closed_at IS NULL AND c.deadline > v.now
        AND EXISTS (SELECT 1 FROM operators AS o WHERE o.id = v.operator)
        AND CASE WHEN jsonb_typeof(CAST(c.confirmers AS jsonb)) = 'array'
            THEN jsonb_array_length(CAST(c.confirmers AS jsonb)) = 0
                OR jsonb_exists(CAST(c.confirmers AS jsonb), v.operator)
            ELSE true END
        AND (v.shown IS NULL OR c.lines_sha256 = v.shown)
    RETURNING c.change_id, v.incident_id, v.operator, v.decision, v.reason, v.now
)
INSERT INTO decision_attempts (incident_id, change_id, operator, decision, reason, outcome,
    detail, at)
SELECT incident_id, change_id, operator, decision, reason, 'accepted', '', now FROM won
RETURNING change_id
"""
)


def _stale(change_id: str, operator: str, sent: str | None, shown: str) -> StaleChange:
    return StaleChange(
        f"{change_id} sent other lines (sha256 {(sent or 'none')[:16]}) than the screen "
        f"{operator} decided on showed (sha256 {shown[:16]}): reload it",
        change_id=change_id,
        operator=operator,
    )


def _why_not_pending(row: ChangeRow, now: datetime, operator: str) -> DecisionRefused:
    ctx = {"change_id": row.change_id, "operator": operator}
    if row.decision is not None:
        return AlreadyDecided(
            f"{row.change_id} was already decided: {row.decision} by {row.decided_by}", **ctx
        )
    if row.window_closed_at is not None or (row.deadline is not None and row.deadline <= now):
        closed = row.closed_by or "timeout"
        what = "its confirmation window closed" if closed == "timeout" else "the incident ended"
        return WindowClosed(f"{row.change_id} can no longer be decided: {what}", **ctx)
    return ChangeNotPending(f"{row.change_id} is {row.state}, not awaiting confirmation", **ctx)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL survives a killed process (what the write-ahead transcripts guard against).
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


__all__ = [
    "TOKEN_PREFIX",
    "ChangeRow",
    "InventoryLoadRow",
    "Store",
    "TokenRow",
    "sha256_text",
    "token_sha256",
]
